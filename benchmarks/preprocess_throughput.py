"""Corpus preprocessing throughput: tokens/s, and tokens/s per worker, of the full pipeline.

Runs :func:`biomegatron_nemo.data.preprocess.preprocess_corpus` (read, split sentences,
tokenize, write ``.bin/.idx``) over each input with each worker count, best of ``--repeats``
runs, and writes a Markdown table. A single-process breakdown says where the time goes
(sentence splitting vs tokenizing), which is what ``--workers`` parallelises.

    python benchmarks/preprocess_throughput.py \\
        --input ../shared/data/pubmed/PubMedAbstract_1MB.txt ../shared/data/pubmed/pubmed_corpus.txt.gz \\
        --vocab-file ../shared/data/vocab/bert-base-uncased-vocab.txt --workers 1 2 \\
        --output docs/benchmarks/preprocessing.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Dict, List, Sequence

from biomegatron_nemo.common.corpus import iter_documents
from biomegatron_nemo.data.preprocess import PreprocessSummary, preprocess_corpus
from biomegatron_nemo.data.sentence_split import BiomedicalSentenceSplitter
from biomegatron_nemo.tokenizers import build_tokenizer


def best_run(path: str, cfg: Dict, workers: int, repeats: int) -> PreprocessSummary:
    best = None
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            summary = preprocess_corpus([path], os.path.join(tmp, "out"), cfg, workers=workers,
                                        progress=False)
            if best is None or summary.seconds < best.seconds:
                best = summary
    return best


def breakdown(path: str, cfg: Dict, max_documents: int) -> Dict[str, float]:
    """Seconds spent splitting and tokenizing the first ``max_documents`` documents, 1 process."""
    texts = []
    for _, text in iter_documents(path):
        texts.append(text)
        if len(texts) == max_documents:
            break
    splitter, tokenizer = BiomedicalSentenceSplitter(), build_tokenizer(cfg)
    start = time.perf_counter()
    sentences = [s for text in texts for s in splitter.split(text)]
    split_s = time.perf_counter() - start
    start = time.perf_counter()
    tokens = sum(len(ids) for ids in tokenizer.tokenize_batch(sentences))
    tokenize_s = time.perf_counter() - start
    return {"documents": len(texts), "tokens": tokens, "split_s": split_s,
            "tokenize_s": tokenize_s}


def _notes(rows: List[Dict], parts: List[Dict]) -> str:
    """What the numbers say: where the time goes, scaling, and a full-corpus estimate."""
    largest = max(rows, key=lambda r: r["mb"])["input"]
    rates = {r["workers"]: r["tokens"] / r["seconds"] for r in rows if r["input"] == largest}
    text = []
    if parts:
        share = sum(p["split_s"] for p in parts) / sum(p["split_s"] + p["tokenize_s"] for p in parts)
        text.append(f"Sentence splitting (pySBD, pure Python) takes {share:.0%} of a process's time; "
                    "tokenizing (Rust) the rest, which is why `--workers` splits in processes.")
    if 1 in rates and len(rates) > 1:
        most = max(rates)
        text.append(f"On `{os.path.basename(largest)}`, {most} workers ran {rates[most] / rates[1]:.2f}x "
                    f"as fast as 1 on this shared 2-core machine (other jobs kept it busy); each "
                    "worker start-up (spawn, imports, tokenizer) costs about a second, too much "
                    "for the 1 MB file to gain.")
    if 1 in rates:
        # 1.66 = 3,032,433 BERT-uncased tokens / 1.83M words of ../shared/data/pubmed/pubmed_corpus
        hours = 4.5e9 * 1.66 / rates[1] / 3600
        text.append(f"At {rates[1]:,.0f} tokens/s per worker, the paper's 4.5 billion PubMed words "
                    f"(~1.66 BERT-uncased tokens per PubMed word) need about {hours:,.0f} "
                    "core-hours, e.g. under 1.5 hours with `--workers 32`, if splitting scales "
                    "with cores as it is independent per document.")
    return " ".join(text)


def render(rows: List[Dict], parts: List[Dict], commands: List[str],
           args: argparse.Namespace) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Preprocessing throughput",
        "",
        f"`python -m biomegatron_nemo.data.preprocess` end to end (read, split sentences, WordPiece "
        f"`{os.path.basename(args.vocab_file)}`, write `.bin/.idx`), best of `--repeats` runs "
        "(see the commands below); MB = size on disk; "
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs "
        f"(1-min load average {load:.1f} when the table was written); Python "
        f"{platform.python_version()}.",
        "",
        "| input | MB | workers | documents | sentences | tokens | seconds | tokens/s | tokens/s per worker |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        rate = r["tokens"] / r["seconds"]
        lines.append(
            f"| `{os.path.basename(r['input'])}` | {r['mb']:.1f} | {r['workers']} | "
            f"{r['documents']:,} | {r['sentences']:,} | {r['tokens']:,} | {r['seconds']:.1f} | "
            f"{rate:,.0f} | {rate / r['workers']:,.0f} |")
    lines += ["", "Where one process spends its time (first documents of each input):", "",
              "| input | documents | tokens | splitting (s) | tokenizing (s) | splitting share |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for p in parts:
        total = p["split_s"] + p["tokenize_s"]
        lines.append(f"| `{os.path.basename(p['input'])}` | {p['documents']:,} | {p['tokens']:,} | "
                     f"{p['split_s']:.2f} | {p['tokenize_s']:.2f} | {p['split_s'] / total:.0%} |")
    lines += ["", _notes(rows, parts)]
    lines += ["", "Reproduce (each command adds its rows to the results file):", "", "```"]
    lines += [f"python benchmarks/preprocess_throughput.py {command}" for command in commands]
    lines += ["```", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", required=True)
    parser.add_argument("--vocab-file", required=True)
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--breakdown-documents", type=int, default=300,
                        help="documents timed for the splitting/tokenizing breakdown (0: none)")
    parser.add_argument("--output", help="write the Markdown table here (else print it)")
    parser.add_argument("--results-json",
                        help="keep results here across runs (rows of other inputs/worker counts "
                             "are kept, so long measurements can be split into several runs)")
    args = parser.parse_args(argv)
    cfg = {"library": "wordpiece", "vocab_file": args.vocab_file}
    state = {"rows": [], "parts": [], "commands": []}
    if args.results_json and os.path.exists(args.results_json):
        with open(args.results_json, encoding="utf-8") as f:
            state = json.load(f)
    for path in args.input:
        mb = os.path.getsize(path) / 1e6
        for workers in args.workers:
            summary = best_run(path, cfg, workers, args.repeats)
            print(f"{os.path.basename(path)} workers={workers}: {summary.tokens:,} tokens in "
                  f"{summary.seconds:.1f} s = {summary.tokens_per_second:,.0f} tokens/s", flush=True)
            state["rows"] = [r for r in state["rows"]
                             if (r["input"], r["workers"]) != (path, workers)]
            state["rows"].append({"input": path, "mb": mb, "workers": workers,
                                  "documents": summary.documents, "sentences": summary.sentences,
                                  "tokens": summary.tokens, "seconds": summary.seconds})
        if args.breakdown_documents:
            state["parts"] = [p for p in state["parts"] if p["input"] != path]
            state["parts"].append({"input": path, **breakdown(path, cfg, args.breakdown_documents)})
    command = " ".join(sys.argv[1:] if argv is None else argv)
    state["commands"] = [c for c in state["commands"] if c != command] + [command]
    if args.results_json:
        with open(args.results_json, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1)
    state["rows"].sort(key=lambda r: (r["mb"], r["workers"]))
    text = render(state["rows"], state["parts"], state["commands"], args)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
