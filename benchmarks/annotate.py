"""Corpus annotation speed: ``biomegatron annotate``'s engines against transformers'
``pipeline("token-classification")`` on the same model exported to Hugging Face, on the same
documents, one thread each. Prints one JSON line per row (docs/benchmarks.md shows the table).

    python benchmarks/annotate.py --model chem_ner.nemo --output annotate.jsonl

Documents: the BC5CDR-chem dev sentences (CoNLL tokens joined by single spaces) regrouped into
abstracts of ``--sentences-per-document`` consecutive sentences; the gold entities are their
character spans. Every row runs in its own process (so its peak resident memory is its own),
annotates one warm-up document, then times all of them:

* ``hf-bN``: the pipeline (``aggregation_strategy="first"``) at batch size N (``--hf-batch-sizes``;
  the fastest is the reference) over the same sentences (the library's splitter), its entities
  moved to document offsets;
* ``fp32``, ``bf16``, ``onnxruntime``, ``int8``: :class:`~biomegatron_nemo.annotation.annotator.Annotator`
  with that engine (:mod:`biomegatron_nemo.annotation.engines`).

Each row reports documents/s, its speed over the fastest pipeline row's, whether its entities
equal the fp32 row's and the pipeline's (document, start, end, type), entity F1 against the gold
spans and its change from fp32, and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ner" / "BC5CDR-chem" / "devel.tsv"
ROWS = ("hf", "fp32", "bf16", "onnxruntime", "int8")  # hf: one row per --hf-batch-sizes
ENGINES = {"fp32": {}, "bf16": {"precision": "bf16"}, "onnxruntime": {"backend": "onnxruntime"},
           "int8": {"backend": "onnxruntime", "quantize": "int8"}}


def documents_and_gold(conll: str, per_document: int, limit: int):
    """``[(id, text)]`` and the gold ``{(document, start, end, type)}`` of the regrouped sentences."""
    from biomegatron_nemo.data.conll import read_iob2
    from biomegatron_nemo.metrics.ner import entity_spans

    sentences = read_iob2(conll)
    documents, gold = [], set()
    for first in range(0, len(sentences), per_document):
        if len(documents) == limit:
            break
        number, text = len(documents), ""
        for sentence in sentences[first:first + per_document]:
            text += " " if text else ""
            starts = []
            for number_in_sentence, word in enumerate(sentence.words):
                if number_in_sentence == len(sentence.words) - 1 and word in ".?!" and text.endswith(" "):
                    text = text[:-1]  # "study." not "study .": the sentence splitter needs the stop attached
                starts.append(len(text))
                text += word + " "
            text = text[:-1]
            for kind, a, b in entity_spans(sentence.tags):
                gold.add((number, starts[a], starts[b] + len(sentence.words[b]), kind))
        documents.append((str(number), text))
    return documents, gold


def run_ours(model_path: str, engine: str, documents, batch_size: int):
    from biomegatron_nemo.annotation.annotator import Annotator, load_ner_models
    from biomegatron_nemo.annotation.documents import Document, Passage
    from biomegatron_nemo.annotation.engines import EngineSettings

    annotator = Annotator(load_ner_models([model_path]), batch_size=batch_size,
                          engine=EngineSettings(**ENGINES[engine]))
    docs = [Document(i, (Passage("text", 0, text),)) for i, text in documents]
    annotator.annotate(docs[:1])
    started = time.perf_counter()
    found = annotator.annotate(docs)
    seconds = time.perf_counter() - started
    return seconds, {(n, e.start, e.end, e.type) for n, entities in enumerate(found) for e in entities}


def run_hf(hf_dir: str, documents, batch_size: int):
    from transformers import pipeline

    from biomegatron_nemo.data.sentence_split import sentence_spans

    tagger = pipeline("token-classification", model=hf_dir, aggregation_strategy="first", device=-1)
    tagger(documents[0][1])
    started = time.perf_counter()
    pieces = [(n, start, text[start:end]) for n, (_, text) in enumerate(documents)
              for start, end in sentence_spans(text)]
    rows = tagger([sentence for _, _, sentence in pieces], batch_size=batch_size)
    seconds = time.perf_counter() - started
    return seconds, {(n, offset + e["start"], offset + e["end"], e["entity_group"])
                     for (n, offset, _), entities in zip(pieces, rows) for e in entities}


def f1(found, gold) -> float:
    correct = len(found & gold)
    return 2 * correct / (len(found) + len(gold)) if found or gold else 1.0


def one_row(args) -> dict:
    """Runs in a child process: one row's timing, entities and peak memory."""
    import torch

    torch.set_num_threads(args.threads)
    documents, gold = documents_and_gold(args.data, args.sentences_per_document, args.documents)
    if args.row == "hf":
        batch_size = args.hf_batch_size
        seconds, found = run_hf(args.hf_dir, documents, batch_size)
    else:
        from biomegatron_nemo.annotation.annotator import default_batch_size

        batch_size = args.batch_size or default_batch_size(torch.device("cpu"))
        seconds, found = run_ours(args.model, args.row, documents, batch_size)
    return {"row": args.row, "batch_size": batch_size, "documents": len(documents), "seconds": round(seconds, 2),
            "documents_per_second": round(len(documents) / seconds, 2), "entities": sorted(found),
            "f1": round(f1(found, gold), 4), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "threads": args.threads}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a NER .nemo (its head exportable to transformers: head.num_layers=1)")
    p.add_argument("--hf-dir", default=None, help="its Hugging Face export (default: written next to --output)")
    p.add_argument("--data", default=str(DATA), help="CoNLL sentences (default: BC5CDR-chem dev)")
    p.add_argument("--sentences-per-document", type=int, default=10, help="sentences per abstract (default 10)")
    p.add_argument("--documents", type=int, default=200, help="how many documents (default 200)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"which rows, comma-separated (default {','.join(ROWS)})")
    p.add_argument("--batch-size", type=int, default=None, help="our sentences per forward (default: annotate's)")
    p.add_argument("--hf-batch-sizes", default="1,4,16", help="the pipeline's batch sizes, a row each (default 1,4,16)")
    p.add_argument("--hf-batch-size", type=int, help=argparse.SUPPRESS)  # the child process's
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", default="annotate.jsonl", help="JSON lines, one per row (appended)")
    p.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)  # the child process's row
    p.add_argument("--table", metavar="JSONL", help="print the Markdown table of a results file and exit")
    args = p.parse_args(argv)
    if args.table:
        print(table([json.loads(line) for line in Path(args.table).read_text().splitlines() if line.strip()]))
        return 0
    if args.row:
        print(json.dumps(one_row(args)))
        return 0
    if not args.model:
        p.error("--model is required (a NER .nemo)")
    if args.hf_dir is None:
        args.hf_dir = str(Path(args.output).with_suffix("")) + "_hf"
        if "hf" in args.rows.split(",") and not Path(args.hf_dir, "config.json").exists():
            from biomegatron_nemo.export.hf import export_nemo_hf

            export_nemo_hf(args.model, args.hf_dir)
    rows = {}
    for row in args.rows.split(","):
        for hf_batch in (args.hf_batch_sizes.split(",") if row == "hf" else [None]):
            child = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--row", row,
                     "--hf-dir", args.hf_dir] + (["--hf-batch-size", hf_batch] if hf_batch else [])
            done = subprocess.run(child, capture_output=True, text=True, env=_one_thread_env(args.threads))
            if done.returncode != 0:
                raise SystemExit(f"the {row} row failed:\n{done.stderr[-3000:]}")
            rows[f"hf-b{hf_batch}" if hf_batch else row] = json.loads(done.stdout.strip().splitlines()[-1])
    found = {name: {tuple(e) for e in result.pop("entities")} for name, result in rows.items()}
    pipeline_rows = [name for name in rows if name.startswith("hf-")]
    fastest = max(pipeline_rows, key=lambda name: rows[name]["documents_per_second"]) if pipeline_rows else None
    with open(args.output, "a", encoding="utf-8") as out:
        for name, result in rows.items():
            result["row"] = name
            if "fp32" in rows:
                result["identical_to_fp32"] = found[name] == found["fp32"]
                result["entities_differing_from_fp32"] = len(found[name] ^ found["fp32"])
                result["f1_change_from_fp32"] = round(result["f1"] - rows["fp32"]["f1"], 4)
            if fastest:
                result["entities_differing_from_pipeline"] = len(found[name] ^ found[fastest])
                result["speed_over_pipeline"] = round(result["documents_per_second"]
                                                      / rows[fastest]["documents_per_second"], 2)
            result["model"] = Path(args.model).name
            print(json.dumps(result))
            out.write(json.dumps(result) + "\n")
    return 0


ROW_NAMES = {"fp32": "ours, fp32", "bf16": "ours, `--precision bf16`", "onnxruntime": "ours, `--backend onnxruntime`",
             "int8": "ours, `--backend onnxruntime --quantize int8`"}


def table(rows) -> str:
    """The Markdown table of docs/benchmarks.md from the JSON lines of one run."""
    lines = ["| system | batch | documents/s | over the fastest pipeline | entity F1 | F1 change from fp32 "
             "| entities unlike fp32's | entities unlike the pipeline's | peak memory |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        name = ROW_NAMES.get(r["row"], f"transformers pipeline, batch {r['batch_size']}")
        lines.append(f"| {name} | {r['batch_size']} | {r['documents_per_second']:.2f} | "
                     f"**{r['speed_over_pipeline']:.2f}×** | {100 * r['f1']:.2f} | {100 * r['f1_change_from_fp32']:+.2f} | "
                     f"{r['entities_differing_from_fp32']} | {r['entities_differing_from_pipeline']} | "
                     f"{r['peak_rss_mib']:,} MiB |")
    return "\n".join(lines)


def _one_thread_env(threads: int) -> dict:
    import os

    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false"}


if __name__ == "__main__":
    sys.exit(main())
