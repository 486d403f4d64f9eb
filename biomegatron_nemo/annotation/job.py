"""``biomegatron annotate``: NER models over a corpus file, resumable, on one process or many.

The documents are cut, in file order, into chunks of ``--chunk-documents``. Each chunk is
annotated and written to ``OUTPUT.parts/`` as a file that is complete or absent
(:func:`~biomegatron_nemo.common.atomic.atomic_write`), with its counts beside it; when every
chunk is there, they are joined into OUTPUT (again complete or absent) and the parts removed.

* **Resuming**: a rerun skips the chunks already written, so a run killed half-way and rerun
  writes the same bytes as one that was not. ``OUTPUT.parts/settings.json`` records the input,
  the models and every option that changes the output; a rerun with other ones is refused.
* **Many processes**: under ``torchrun`` (``RANK`` / ``WORLD_SIZE``), rank r annotates chunks
  r, r + N, ...; every rank reads the input (cheap next to the models), rank 0 joins the chunks
  once every rank has said it is done. The result is the single process's, byte for byte.
  Ranks do not talk to each other, so a SLURM array or separate hosts on a shared file system
  work the same way with ``RANK`` and ``WORLD_SIZE`` set by hand (docs/annotate.md).
* **Bad input**: a malformed JSON line or PubTator block stops the run naming ``file:line``;
  with ``--on-error skip`` it goes to ``OUTPUT.rejects.jsonl`` with the reason, and the summary
  counts it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from biomegatron_nemo.annotation.documents import INPUT_FORMATS, Document, Reject, detect_format, read_documents
from biomegatron_nemo.annotation.engines import BACKENDS, PRECISIONS, QUANTIZATIONS, EngineSettings
from biomegatron_nemo.annotation.writers import OUTPUT_FORMATS, SEPARATORS, document_text, head, tail
from biomegatron_nemo.common.atomic import atomic_write

REJECTS_SUFFIX = ".rejects.jsonl"


def annotate(annotator, documents: Iterable[Document]) -> Iterator[Tuple[Document, list]]:
    """The Python API: ``(document, entities)`` in input order, annotated in pools of 256; a
    :class:`Reject` from :func:`read_documents` is raised as the error it names."""
    documents = iter(documents)
    while True:
        pool = list(itertools.islice(documents, 256))
        for item in pool:
            if isinstance(item, Reject):
                raise item.error()
        if not pool:
            return
        yield from zip(pool, annotator.annotate(pool))


def _fingerprint(path) -> Dict:
    stat = os.stat(path)
    return {"path": str(Path(path).resolve()), "bytes": stat.st_size, "modified": int(stat.st_mtime)}


def _count_documents(path, input_format: str) -> int:
    """How many documents (for the progress bar's ETA): lines, non-blank lines or title lines."""
    from biomegatron_nemo.common.corpus import text_lines

    count = 0
    for _, line in text_lines(path):
        if input_format == "text":
            count += 1
        elif input_format == "jsonl":
            count += bool(line.strip())
        else:
            count += "|t|" in line
    return count


class Parts:
    """The chunk files of one run, in ``OUTPUT.parts/``."""

    def __init__(self, output: Path, settings: Dict):
        self.folder = output.with_name(output.name + ".parts")
        self.folder.mkdir(parents=True, exist_ok=True)
        recorded = self.folder / "settings.json"
        text = json.dumps(settings, indent=1, sort_keys=True)
        if recorded.exists():
            if recorded.read_text(encoding="utf-8") != text:
                raise ValueError(f"{self.folder}: written by a run with other settings (input, models or options; "
                                 "see its settings.json); delete the folder to start over, or rerun as it was")
        else:
            atomic_write(recorded, lambda f: f.write(text.encode("utf-8")))

    def chunk(self, number: int) -> Path:
        return self.folder / f"chunk-{number:07d}.part"

    def counts(self, number: int) -> Path:
        return self.folder / f"chunk-{number:07d}.json"

    def done(self, number: int) -> bool:
        return self.counts(number).exists()  # written after the chunk itself

    def write(self, number: int, text: str, counts: Dict) -> None:
        atomic_write(self.chunk(number), lambda f: f.write(text.encode("utf-8")))
        atomic_write(self.counts(number), lambda f: f.write(json.dumps(counts).encode("utf-8")))

    def rank_done(self, rank: int, chunks: int) -> None:
        atomic_write(self.folder / f"rank-{rank}.done", lambda f: f.write(str(chunks).encode()))

    def wait_for_ranks(self, world: int) -> int:
        """The number of chunks, once every rank has finished (ranks share no process group)."""
        while True:
            marks = [self.folder / f"rank-{r}.done" for r in range(world)]
            if all(m.exists() for m in marks):
                totals = {int(m.read_text()) for m in marks}
                if len(totals) != 1:
                    raise RuntimeError(f"{self.folder}: the ranks saw different numbers of chunks {totals}; "
                                       "did the input change during the run?")
                return totals.pop()
            time.sleep(0.5)


def _chunks(items: Iterator, size: int) -> Iterator[List]:
    """Lists of ``size`` documents (rejects ride along with the documents around them)."""
    chunk, documents = [], 0
    for item in items:
        chunk.append(item)
        documents += isinstance(item, Document)
        if documents == size:
            yield chunk
            chunk, documents = [], 0
    if chunk:
        yield chunk


def annotate_file(model_paths: Sequence[str], input_path, output_path, input_format: str = "auto",
                  output_format: str = "jsonl", chunk_documents: int = 1000, batch_size: Optional[int] = None,
                  on_error: str = "stop", progress: bool = True, rank: int = 0, world: int = 1,
                  engine: EngineSettings = EngineSettings()) -> Optional[Dict]:
    """Annotate ``input_path`` into ``output_path`` (module doc); rank 0 returns the summary."""
    from tqdm import tqdm

    from biomegatron_nemo.annotation.annotator import Annotator, load_ner_models

    input_format = detect_format(input_path) if input_format == "auto" else input_format
    output = Path(output_path)
    annotator = Annotator(load_ner_models(model_paths), batch_size=batch_size, engine=engine)
    settings = {"input": _fingerprint(input_path), "input_format": input_format, "format": output_format,
                "models": [_fingerprint(p) for p in model_paths], "chunk_documents": chunk_documents,
                "batch_size": annotator.batch_size, "engine": vars(engine)}  # not on_error: a stopped run wrote no reject
    parts = Parts(output, settings)
    types, names = annotator.entity_types, [Path(p).name for p in model_paths]
    started = time.perf_counter()
    bar = tqdm(total=_count_documents(input_path, input_format) if progress and rank == 0 else None,
               unit="doc", desc="annotate", disable=not progress or rank != 0, dynamic_ncols=True)
    entities_found, number = 0, -1
    for number, chunk in enumerate(_chunks(read_documents(input_path, input_format), chunk_documents)):
        documents = [item for item in chunk if isinstance(item, Document)]
        if number % world == rank and not parts.done(number):
            rejects = [item for item in chunk if isinstance(item, Reject)]
            if rejects and on_error == "stop":
                raise rejects[0].error()
            found = annotator.annotate(documents)
            text = SEPARATORS[output_format].join(document_text(output_format, d, e, types)
                                                  for d, e in zip(documents, found))
            parts.write(number, text, {"documents": len(documents), "entities": sum(map(len, found)),
                                       "rejects": [vars(r) for r in rejects]})
            entities_found += sum(map(len, found))
        bar.update(len(documents))
        bar.set_postfix(entities=entities_found, refresh=False)
    bar.close()
    chunks = number + 1
    parts.rank_done(rank, chunks)
    if rank != 0:
        return None
    parts.wait_for_ranks(world)
    return _join(parts, chunks, output, output_format, types, names, time.perf_counter() - started)


def _join(parts: Parts, chunks: int, output: Path, output_format: str, types, names, seconds: float) -> Dict:
    counts = [json.loads(parts.counts(n).read_text(encoding="utf-8")) for n in range(chunks)]
    separator = SEPARATORS[output_format].encode("utf-8")

    def write(f):
        f.write(head(output_format, types, names).encode("utf-8"))
        first = True
        for number, count in enumerate(counts):
            if not count["documents"]:
                continue
            if not first:
                f.write(separator)
            with open(parts.chunk(number), "rb") as chunk:
                shutil.copyfileobj(chunk, f)
            first = False
        f.write(tail(output_format).encode("utf-8"))

    atomic_write(output, write)
    rejects = [r for count in counts for r in count["rejects"]]
    rejects_file = output.with_name(output.name + REJECTS_SUFFIX)
    if rejects:
        atomic_write(rejects_file, lambda f: f.write("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                             for r in rejects).encode("utf-8")))
    shutil.rmtree(parts.folder)
    documents = sum(c["documents"] for c in counts)
    return {"documents": documents, "entities": sum(c["entities"] for c in counts), "rejected": len(rejects),
            "output": str(output), "rejects": str(rejects_file) if rejects else None,
            "seconds": round(seconds, 1), "documents_per_second": round(documents / max(seconds, 1e-9), 1)}


def main(argv: Optional[Sequence[str]] = None, prog: str = "biomegatron annotate") -> int:
    p = argparse.ArgumentParser(
        prog=prog, description="Tag a corpus with one or more NER .nemo models: entities at character offsets of the "
        "original documents, resumable after a kill, on one process or many (torchrun).",
        epilog="examples:\n  biomegatron annotate chem.nemo disease.nemo --input pubmed.pubtator --output tagged.pubtator\n"
               "  torchrun --nproc_per_node 4 -m biomegatron_nemo annotate ner.nemo --input abstracts.jsonl.gz "
               "--output tagged.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL.nemo", help="NER models; where their entities overlap, the "
                   "longer span wins, then the higher score, then the model named first")
    p.add_argument("--input", required=True, help="documents: text (one per line), JSON lines or PubTator; .gz too")
    p.add_argument("--output", required=True, help="the annotated corpus (written when complete)")
    p.add_argument("--input-format", choices=INPUT_FORMATS, default="auto",
                   help="auto: jsonl by the file name, pubtator by its first line, else text")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default=None,
                   help="output format (default: by OUTPUT's suffix, .pubtator/.json/.html, else jsonl)")
    p.add_argument("--chunk-documents", type=int, default=1000, help="documents per resumable chunk (default 1000)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="sentences per forward pass (default 16 on a CPU, 64 on a GPU)")
    p.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                   help="a malformed document: stop naming file:line, or skip it into OUTPUT.rejects.jsonl")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="bf16: matrix products in bfloat16 on a GPU or a CPU with AVX512-BF16/AMX (docs/annotate.md)")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="onnxruntime: run the models' ONNX export with ONNX Runtime (CPU)")
    p.add_argument("--quantize", choices=QUANTIZATIONS, default="none",
                   help="int8: ONNX Runtime's dynamic int8 quantisation (with --backend onnxruntime)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(list(argv) if argv is not None else None)
    if args.chunk_documents < 1 or (args.batch_size is not None and args.batch_size < 1):
        p.error("--chunk-documents and --batch-size must be positive")
    if not os.path.isfile(args.input):
        p.error(f"--input {args.input}: no such file")
    try:
        engine = EngineSettings(args.precision, args.backend, args.quantize)
    except ValueError as err:
        p.error(str(err))
    output_format = args.format or {".pubtator": "pubtator", ".json": "bioc-json", ".xml": None,
                                    ".html": "html"}.get(Path(args.output).suffix, "jsonl")
    if output_format is None:
        p.error("--output: BioC XML is not written; use .json (BioC JSON), .pubtator, .jsonl or .html")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    from biomegatron_nemo.common.errors import DataFormatError

    try:
        summary = annotate_file(args.models, args.input, args.output, args.input_format, output_format,
                                args.chunk_documents, args.batch_size, args.on_error, not args.no_progress,
                                rank, world, engine)
    except (DataFormatError, ValueError, OSError) as err:
        raise SystemExit(f"{prog}: {err}") from None
    if summary is not None:
        print(f"{summary['documents']:,} documents, {summary['entities']:,} entities, {summary['rejected']:,} "
              f"rejected, {summary['seconds']} s ({summary['documents_per_second']} documents/s): {summary['output']}")
        if summary["rejects"]:
            print(f"rejected documents and why: {summary['rejects']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
