"""Pretraining corpus → megatron-core indexed dataset (``PREFIX.bin`` / ``PREFIX.idx``).

This module owns the first half of pretraining data: it reads corpora with
:func:`biomegatron_nemo.common.corpus.iter_documents` (plain text, JSON lines, gzip; bad input
named by file and line), has each document split into sentences and tokenized
(:mod:`biomegatron_nemo.data.preprocess_workers`), and writes the sentences with megatron-core's
``IndexedDatasetBuilder`` in the layout its BERT dataset expects: **one sequence per sentence**,
``end_document()`` after each document (so ``document_indices`` mark document boundaries and the
sample builder can pack consecutive sentences of one document and cut between them for the
sentence-order head). No [CLS]/[SEP] are stored; the dataset adds them.

Inputs (any number, concatenated in order into one output prefix) are plain text with one
document per line (or, with ``blank_line_documents``, separated by blank lines), or JSON lines
with the document in the ``json_key`` field, either possibly gzipped. A bad record (undecodable
or malformed line, a line over ``max_line_bytes``, a file without documents) stops the run with an
error naming file and line; with ``skip_bad_lines`` it is skipped and counted instead, and the
summary lists where the first ones were (a corrupt gzip stream drops the rest of its file).

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
import json
import multiprocessing
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Union

from tqdm import tqdm

from biomegatron_nemo.common.corpus import MAX_CORPUS_LINE_BYTES, CorpusCounts, check_files_exist, iter_documents
from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.data.preprocess_workers import (DOCUMENTS_PER_TASK, TokenizerSpec, batched,
                                                      encode_documents, init_worker,
                                                      ordered_results)

#: megatron-core's ``LONG_SENTENCE_LEN``: a document with a longer sentence is never sampled.
MEGATRON_LONG_SENTENCE_LEN = 512


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
    #: ``file:line: reason`` of the first skipped bad lines (the count is bad_lines_skipped)
    bad_line_examples: List[str] = field(default_factory=list)
    empty_files_skipped: List[str] = field(default_factory=list)
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
        lines += [f"  skipped empty file: {path}" for path in self.empty_files_skipped]
        lines += [f"  skipped bad line {where}" for where in self.bad_line_examples]
        if self.bad_lines_skipped > len(self.bad_line_examples):
            lines.append(f"  ... and {self.bad_lines_skipped - len(self.bad_line_examples):,} more bad lines")
        return "\n".join(lines)


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
    max_line_bytes: int = MAX_CORPUS_LINE_BYTES,
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
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be >= 1, got {max_line_bytes}")
    inputs = [os.fspath(p) for p in inputs]
    if not inputs:
        raise ValueError("no input files given")
    check_files_exist(inputs)
    output_prefix = os.fspath(output_prefix)
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)

    if isinstance(tokenizer, Mapping):
        from biomegatron_nemo.tokenizers import build_tokenizer

        parent_tokenizer = build_tokenizer(tokenizer)
    else:
        parent_tokenizer = tokenizer
    vocab_size = parent_tokenizer.vocab_size

    summary = PreprocessSummary(output_prefix=output_prefix, files=len(inputs))
    counts = CorpusCounts()
    t0 = time.perf_counter()

    def documents() -> Iterator[str]:
        for path in inputs:
            for _, text in iter_documents(path, blank_line_documents=blank_line_documents,
                                          json_key=json_key, skip_bad_lines=skip_bad_lines,
                                          counts=counts, max_line_bytes=max_line_bytes):
                yield text

    tasks = batched(documents(), DOCUMENTS_PER_TASK)
    pool = None
    if workers == 1:
        init_worker(parent_tokenizer, max_sentence_tokens, in_pool=False)
        results = map(encode_documents, tasks)
    else:
        spec = tokenizer if isinstance(tokenizer, Mapping) else parent_tokenizer
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init_worker,
                                   initargs=(spec, max_sentence_tokens, True))
        results = ordered_results(pool, tasks, max_in_flight=4 * workers)

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
    summary.empty_lines_skipped = counts.empty_lines
    summary.bad_lines_skipped = counts.bad_lines
    summary.truncated_files = counts.truncated_files
    summary.bad_line_examples = counts.bad_line_examples
    summary.empty_files_skipped = counts.empty_files
    summary.seconds = time.perf_counter() - t0
    return summary


# ----------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------
def build_arg_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m biomegatron_nemo.data.preprocess",
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
                     help="skip and count undecodable, malformed or over-long lines and empty files "
                          "instead of stopping; the summary lists where the first ones were "
                          "(a corrupt gzip stream drops the rest of its file)")
    fmt.add_argument("--max-line-bytes", type=int, default=MAX_CORPUS_LINE_BYTES,
                     help="a longer line is a bad record (lost line ends?); only this much of it is "
                          f"held in memory; default {MAX_CORPUS_LINE_BYTES:,}")
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


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> PreprocessSummary:
    args = build_arg_parser(prog).parse_args(argv)
    try:
        summary = preprocess_corpus(
            args.input, args.output_prefix, tokenizer_config_from_args(args),
            workers=args.workers, blank_line_documents=args.blank_line_documents,
            json_key=args.json_key, skip_bad_lines=args.skip_bad_lines,
            min_sentences=args.min_sentences, max_sentence_tokens=args.max_sentence_tokens,
            max_line_bytes=args.max_line_bytes, progress=not args.no_progress)
    except (DataFormatError, FileNotFoundError, ValueError) as err:
        # The reader serves callers without this option, so the hint is added here.
        hint = ("; --skip-bad-lines skips and counts bad lines (and the rest of a corrupt gzip "
                "file) instead of stopping"
                if isinstance(err, DataFormatError) and not args.skip_bad_lines else "")
        raise SystemExit(f"error: {err}{hint}") from err
    print(summary.format())
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as f:
            json.dump(summary.as_dict(), f, indent=2)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
