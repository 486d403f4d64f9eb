"""Pretraining corpus → megatron-core indexed dataset (``PREFIX.bin`` / ``PREFIX.idx``).

This module owns the first half of pretraining data: reading corpora, splitting documents into
sentences (:mod:`biomegatron_nemo.data.sentence_split`), tokenizing each sentence with a
:class:`~biomegatron_nemo.tokenizers.base.BioTokenizer`, and writing them with megatron-core's
``IndexedDatasetBuilder`` in the layout its BERT dataset expects: **one sequence per sentence**,
``end_document()`` after each document (so ``document_indices`` mark document boundaries and the
sample builder can pack consecutive sentences of one document and cut between them for the
sentence-order head). No [CLS]/[SEP] are stored; the dataset adds them.

Inputs (any number, concatenated in order into one output prefix):

* plain text, one document per line (PubMed abstract dumps), or with ``blank_line_documents``
  documents separated by blank lines (lines inside a document are joined with a space);
* ``.jsonl`` / ``.json`` lines with the document in the ``text`` field (``json_key``);
* either of them gzip-compressed (recognised by its magic bytes, whatever the file name).

Bad input (DESIGN.md rule 7) raises :class:`~biomegatron_nemo.data.errors.DataFormatError`
naming file and line: undecodable UTF-8, a corrupt gzip stream, a JSON line that does not parse
or lacks the text field. With ``skip_bad_lines`` such lines are skipped and counted instead (a
corrupt gzip stream cannot be resumed: the rest of that file is dropped and the file counted).

Two things megatron-core does silently are made visible here: its sample builder drops every
document that contains a sentence longer than 512 tokens (``LONG_SENTENCE_LEN`` in
``helpers.cpp``), so longer "sentences" (tables, reference lists) are cut into 512-token pieces
and counted; and documents with fewer than ``min_sentences`` sentences are dropped and counted
(set 2 when training with the sentence-order head, which needs two sentences per sample).

``workers > 1`` splits and tokenizes in a ``spawn`` process pool (splitting is pure Python and
dominates the cost); results come back in input order, so the output is byte-identical to
``workers=1``. Reading, error reporting and writing stay in the parent process.

Command line: ``python -m biomegatron_nemo.data.preprocess --help``.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import logging
import multiprocessing
import os
import sys
import time
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from biomegatron_nemo.data.errors import DataFormatError
from biomegatron_nemo.data.sentence_split import BiomedicalSentenceSplitter
from biomegatron_nemo.tokenizers.base import BioTokenizer

logger = logging.getLogger(__name__)

#: megatron-core's ``LONG_SENTENCE_LEN``: a document with a longer sentence is never sampled.
MEGATRON_LONG_SENTENCE_LEN = 512

#: Documents sent to a worker at a time (large enough to amortise pickling).
DOCUMENTS_PER_TASK = 32

_GZIP_MAGIC = b"\x1f\x8b"
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


@dataclass
class PreprocessSummary:
    """Counts of one preprocessing run (what the command line prints)."""

    output_prefix: str
    files: int = 0
    documents: int = 0
    sentences: int = 0
    tokens: int = 0
    empty_lines_skipped: int = 0
    bad_lines_skipped: int = 0
    short_documents_skipped: int = 0
    long_sentences_split: int = 0
    truncated_files: List[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> Dict:
        return {**asdict(self), "tokens_per_second": self.tokens_per_second}

    def format(self) -> str:
        rows = [
            ("input files", self.files),
            ("documents written", self.documents),
            ("sentences", self.sentences),
            ("tokens", self.tokens),
            ("skipped empty lines", self.empty_lines_skipped),
            ("skipped bad lines", self.bad_lines_skipped),
            ("skipped short documents", self.short_documents_skipped),
            ("long sentences split", self.long_sentences_split),
        ]
        lines = [f"wrote {self.output_prefix}.bin and {self.output_prefix}.idx "
                 f"in {self.seconds:.1f} s ({self.tokens_per_second:,.0f} tokens/s)"]
        lines += [f"  {name:<24}{value:>14,}" for name, value in rows]
        lines += [f"  truncated (corrupt gzip): {path}" for path in self.truncated_files]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Reading: (line number, document text), errors named by file and line.
# ----------------------------------------------------------------------------------------------
def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _is_json_lines(path: str) -> bool:
    name = path[:-3] if path.endswith(".gz") else path
    return name.endswith(_JSON_SUFFIXES)


def _raw_lines(path: str, summary: PreprocessSummary, skip_bad_lines: bool
               ) -> Iterator[Tuple[int, bytes]]:
    """(1-based line number, bytes) of a plain or gzip file; a corrupt stream is an error."""
    opener = gzip.open if _is_gzip(path) else open
    line_no = 0
    with opener(path, "rb") as reader:
        while True:
            try:
                raw = reader.readline()
            except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as err:
                if not skip_bad_lines:
                    raise DataFormatError(
                        path, line_no + 1, f"corrupt gzip stream ({type(err).__name__}: {err}); "
                        "re-download the file or pass --skip-bad-lines to keep the "
                        f"{line_no} lines read before it") from err
                logger.warning("%s:%d: corrupt gzip stream (%s); dropping the rest of the file",
                               path, line_no + 1, err)
                summary.truncated_files.append(path)
                return
            if not raw:
                return
            line_no += 1
            yield line_no, raw


def _decoded_lines(path: str, summary: PreprocessSummary, skip_bad_lines: bool
                   ) -> Iterator[Tuple[int, str]]:
    for line_no, raw in _raw_lines(path, summary, skip_bad_lines):
        try:
            yield line_no, raw.decode("utf-8")
        except UnicodeDecodeError as err:
            if not skip_bad_lines:
                raise DataFormatError(
                    path, line_no, f"invalid UTF-8 (byte 0x{raw[err.start]:02x} at column "
                    f"{err.start + 1}); re-encode the file or pass --skip-bad-lines") from err
            summary.bad_lines_skipped += 1


def iter_documents(path: str, summary: PreprocessSummary, *, blank_line_documents: bool = False,
                   json_key: str = "text", skip_bad_lines: bool = False
                   ) -> Iterator[Tuple[int, str]]:
    """Yield ``(first line number, text)`` per non-empty document of ``path``.

    Empty documents are counted in ``summary.empty_lines_skipped``; bad lines raise
    :class:`DataFormatError` or, with ``skip_bad_lines``, are counted in
    ``summary.bad_lines_skipped``.
    """
    lines = _decoded_lines(path, summary, skip_bad_lines)
    if _is_json_lines(path):
        for line_no, line in lines:
            if not line.strip():
                summary.empty_lines_skipped += 1
                continue
            try:
                record = json.loads(line)
                text = record[json_key]
                if not isinstance(text, str):
                    raise TypeError(f"{json_key!r} is {type(text).__name__}, not a string")
            except (ValueError, KeyError, TypeError) as err:
                if not skip_bad_lines:
                    what = (f"no {json_key!r} field" if isinstance(err, KeyError)
                            else f"{type(err).__name__}: {err}")
                    raise DataFormatError(path, line_no, f"bad JSON line ({what})",
                                          field=json_key) from err
                summary.bad_lines_skipped += 1
                continue
            if not text.strip():
                summary.empty_lines_skipped += 1
                continue
            yield line_no, text
    elif blank_line_documents:
        block: List[str] = []
        start = 0
        for line_no, line in lines:
            if line.strip():
                if not block:
                    start = line_no
                block.append(line.strip())
            elif block:
                yield start, " ".join(block)
                block = []
        if block:
            yield start, " ".join(block)
    else:
        for line_no, line in lines:
            if not line.strip():
                summary.empty_lines_skipped += 1
                continue
            yield line_no, line


# ----------------------------------------------------------------------------------------------
# Splitting + tokenizing (runs in the worker processes, or in-process for workers=1).
# ----------------------------------------------------------------------------------------------
#: A tokenizer, or its config for :func:`biomegatron_nemo.tokenizers.build_tokenizer`.
TokenizerSpec = Union[Mapping, BioTokenizer]

_WORKER: Dict[str, object] = {}


def _init_worker(tokenizer_spec, max_sentence_tokens: int, in_pool: bool) -> None:
    if in_pool:
        # One core per worker: HF tokenizers' own thread pool would oversubscribe the pool.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if isinstance(tokenizer_spec, Mapping):
        from biomegatron_nemo.tokenizers import build_tokenizer

        tokenizer_spec = build_tokenizer(tokenizer_spec)
    _WORKER["tokenizer"] = tokenizer_spec
    _WORKER["splitter"] = BiomedicalSentenceSplitter()
    _WORKER["max_sentence_tokens"] = max_sentence_tokens


# One encoded document: all its token ids, the length of each sentence, long sentences cut.
EncodedDocument = Tuple[np.ndarray, List[int], int]


def _encode_documents(texts: Sequence[str]) -> List[EncodedDocument]:
    tokenizer = _WORKER["tokenizer"]
    splitter = _WORKER["splitter"]
    limit = _WORKER["max_sentence_tokens"]
    per_document = [splitter.split(text) for text in texts]
    # One ids-only batch call for the whole task: the tokenizer's fastest path.
    flat = [sentence for sentences in per_document for sentence in sentences]
    encoded = iter(tokenizer.tokenize_batch(flat) if flat else [])
    out: List[EncodedDocument] = []
    for sentences in per_document:
        ids: List[int] = []
        lengths: List[int] = []
        n_cut = 0
        for _ in sentences:
            sentence = next(encoded)
            if len(sentence) > limit:
                n_cut += 1
            for start in range(0, len(sentence), limit):
                piece = sentence[start:start + limit]
                ids.extend(piece)
                lengths.append(len(piece))
        out.append((np.asarray(ids, dtype=np.int64), lengths, n_cut))
    return out


def _batched(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _ordered_results(pool: ProcessPoolExecutor, tasks: Iterator[list], max_in_flight: int
                     ) -> Iterator[list]:
    """Results of ``_encode_documents`` over ``tasks`` in input order, reading lazily.

    Not ``Pool.imap`` / ``Executor.map``: they drain the whole input into their queue first
    (a corpus in memory), and read errors would surface in a helper thread. Here the parent
    reads, keeps at most ``max_in_flight`` batches queued, and yields them first-in first-out.
    A ``ProcessPoolExecutor`` (not ``multiprocessing.Pool``, which silently respawns a worker
    that dies in its initializer, forever) raises ``BrokenProcessPool`` when a worker dies.
    """
    in_flight = collections.deque()
    for task in tasks:
        in_flight.append(pool.submit(_encode_documents, task))
        if len(in_flight) >= max_in_flight:
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()


# ----------------------------------------------------------------------------------------------
# The whole run.
# ----------------------------------------------------------------------------------------------
def preprocess_corpus(
    inputs: Sequence[Union[str, os.PathLike]],
    output_prefix: Union[str, os.PathLike],
    tokenizer: TokenizerSpec,
    *,
    workers: int = 1,
    blank_line_documents: bool = False,
    json_key: str = "text",
    skip_bad_lines: bool = False,
    min_sentences: int = 1,
    max_sentence_tokens: int = MEGATRON_LONG_SENTENCE_LEN,
    progress: bool = True,
) -> PreprocessSummary:
    """Split, tokenize and write ``inputs`` to ``output_prefix.{bin,idx}``; return the counts.

    ``tokenizer`` is a :class:`BioTokenizer` or a config for
    :func:`biomegatron_nemo.tokenizers.build_tokenizer` (``{library, vocab_file, model_file,
    cased}``); with ``workers > 1`` a config is rebuilt in each worker, an instance is pickled.
    The output's dtype is megatron-core's choice for the vocabulary size (uint16 below 65,500).
    """
    with warnings.catch_warnings():
        # megatron.core's package import warns that Transformer Engine / Apex are missing, which
        # says nothing about writing an indexed dataset.
        warnings.filterwarnings("ignore", message="Transformer Engine and Apex")
        from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if min_sentences < 1:
        raise ValueError(f"min_sentences must be >= 1, got {min_sentences}")
    if not 0 < max_sentence_tokens <= MEGATRON_LONG_SENTENCE_LEN:
        raise ValueError(f"max_sentence_tokens must be in 1..{MEGATRON_LONG_SENTENCE_LEN} "
                         f"(megatron-core never samples documents with longer sentences)")
    inputs = [os.fspath(p) for p in inputs]
    if not inputs:
        raise ValueError("no input files given")
    for path in inputs:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"input file {path!r} does not exist")
    output_prefix = os.fspath(output_prefix)
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)

    if isinstance(tokenizer, Mapping):
        from biomegatron_nemo.tokenizers import build_tokenizer

        parent_tokenizer = build_tokenizer(tokenizer)
    else:
        parent_tokenizer = tokenizer
    vocab_size = parent_tokenizer.vocab_size

    summary = PreprocessSummary(output_prefix=output_prefix, files=len(inputs))
    t0 = time.perf_counter()

    def documents() -> Iterator[str]:
        for path in inputs:
            for _, text in iter_documents(path, summary, blank_line_documents=blank_line_documents,
                                          json_key=json_key, skip_bad_lines=skip_bad_lines):
                yield text

    tasks = _batched(documents(), DOCUMENTS_PER_TASK)
    pool = None
    if workers == 1:
        _init_worker(parent_tokenizer, max_sentence_tokens, in_pool=False)
        results = map(_encode_documents, tasks)
    else:
        spec = tokenizer if isinstance(tokenizer, Mapping) else parent_tokenizer
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker,
                                   initargs=(spec, max_sentence_tokens, True))
        results = _ordered_results(pool, tasks, max_in_flight=4 * workers)

    builder = IndexedDatasetBuilder(output_prefix + ".bin", dtype=DType.optimal_dtype(vocab_size))
    bar = tqdm(total=None, unit="docs", desc="preprocess", disable=not progress, smoothing=0.1)
    try:
        for batch in results:
            for ids, lengths, n_cut in batch:
                bar.update(1)
                summary.long_sentences_split += n_cut
                if len(lengths) < min_sentences:
                    summary.short_documents_skipped += 1
                    continue
                if ids.size and int(ids.max()) >= vocab_size:
                    raise ValueError(f"token id {int(ids.max())} >= vocab_size {vocab_size}")
                builder.add_document(ids, lengths)
                summary.documents += 1
                summary.sentences += len(lengths)
                summary.tokens += int(ids.size)
            bar.set_postfix(tokens=f"{summary.tokens:,}", refresh=False)
    except BaseException:
        builder.data_file.close()
        for suffix in (".bin", ".idx"):
            if os.path.exists(output_prefix + suffix):
                os.remove(output_prefix + suffix)
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    builder.finalize(output_prefix + ".idx")
    summary.seconds = time.perf_counter() - t0
    return summary


# ----------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------
def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m biomegatron_nemo.data.preprocess",
        description="Split biomedical documents into sentences, tokenize them and write a "
                    "megatron-core indexed dataset (PREFIX.bin/PREFIX.idx; one sequence per "
                    "sentence, document boundaries kept) for masked-LM pretraining.",
    )
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE",
                        help="plain text (one document per line), .jsonl, optionally gzipped; "
                             "several files are concatenated into one output")
    parser.add_argument("--output-prefix", required=True, metavar="PREFIX",
                        help="writes PREFIX.bin and PREFIX.idx")
    tok = parser.add_argument_group("tokenizer")
    tok.add_argument("--tokenizer-library", choices=("wordpiece", "sentencepiece"),
                     default="wordpiece")
    tok.add_argument("--vocab-file", help="WordPiece vocab.txt")
    tok.add_argument("--tokenizer-model", help="SentencePiece .model file")
    tok.add_argument("--cased", action="store_true",
                     help="WordPiece: keep case (default: lower-case)")
    fmt = parser.add_argument_group("input format")
    fmt.add_argument("--blank-line-documents", action="store_true",
                     help="plain text documents are separated by blank lines, not one per line")
    fmt.add_argument("--json-key", default="text", help="document field of .jsonl input")
    fmt.add_argument("--skip-bad-lines", action="store_true",
                     help="skip and count undecodable or malformed lines instead of stopping "
                          "(a corrupt gzip stream drops the rest of its file)")
    out = parser.add_argument_group("output")
    out.add_argument("--min-sentences", type=int, default=1,
                     help="drop documents with fewer sentences (use 2 with the sentence-order "
                          "head); default 1")
    out.add_argument("--max-sentence-tokens", type=int, default=MEGATRON_LONG_SENTENCE_LEN,
                     help="cut longer sentences into pieces (megatron-core skips documents with "
                          f"a sentence over {MEGATRON_LONG_SENTENCE_LEN}); default "
                          f"{MEGATRON_LONG_SENTENCE_LEN}")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes splitting and tokenizing; output identical for any N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--summary-json", metavar="FILE", help="also write the counts as JSON")
    return parser


def tokenizer_config_from_args(args: argparse.Namespace) -> Dict:
    if args.tokenizer_library == "wordpiece" and not args.vocab_file:
        raise SystemExit("error: --tokenizer-library wordpiece needs --vocab-file")
    if args.tokenizer_library == "sentencepiece" and not args.tokenizer_model:
        raise SystemExit("error: --tokenizer-library sentencepiece needs --tokenizer-model")
    if args.tokenizer_library == "wordpiece":
        return {"library": "wordpiece", "vocab_file": args.vocab_file, "cased": args.cased}
    if args.cased:
        raise SystemExit("error: --cased applies to WordPiece; a SentencePiece model keeps its case")
    return {"library": "sentencepiece", "model_file": args.tokenizer_model}


def main(argv: Optional[Sequence[str]] = None) -> PreprocessSummary:
    args = build_arg_parser().parse_args(argv)
    try:
        summary = preprocess_corpus(
            args.input, args.output_prefix, tokenizer_config_from_args(args),
            workers=args.workers, blank_line_documents=args.blank_line_documents,
            json_key=args.json_key, skip_bad_lines=args.skip_bad_lines,
            min_sentences=args.min_sentences, max_sentence_tokens=args.max_sentence_tokens,
            progress=not args.no_progress)
    except (DataFormatError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err
    print(summary.format())
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as f:
            json.dump(summary.as_dict(), f, indent=2)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
