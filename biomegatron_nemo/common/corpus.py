"""Pretraining corpora: the one reader of raw documents, shared by vocabulary training
(:mod:`biomegatron_nemo.tokenizers.train`) and preprocessing (:mod:`biomegatron_nemo.data.preprocess`).

Formats, told apart the same way for every caller:

* plain text, one document per line (PubMed abstract dumps), or with ``blank_line_documents``
  documents separated by blank lines (the lines of a document are joined with a space);
* JSON lines (``.jsonl`` / ``.json`` / ``.ndjson``, judged by the name once ``.gz`` is
  stripped), the document in the ``json_key`` field;
* either of them gzip-compressed, recognised by its magic bytes whatever the file is called.

A leading byte-order mark and CRLF line ends are accepted; documents come back stripped of
surrounding whitespace, and whitespace-only documents are skipped and counted.

Bad input (DESIGN.md rule 8) raises :class:`~biomegatron_nemo.common.errors.DataFormatError`
naming file and line: undecodable UTF-8 (with the byte and its column), a corrupt gzip stream, a
JSON line that does not parse or lacks a string text field, a line longer than
``max_line_bytes`` (:data:`MAX_CORPUS_LINE_BYTES`, 16 MiB, by default: a whole PMC article is a
few hundred KB, so a longer line means lost line ends; only that much of it is ever held in
memory), a file without any document (an empty shard is usually a failed download). With
``skip_bad_lines`` such lines (and empty files) are skipped and counted in :class:`CorpusCounts`
instead, the first :data:`REPORTED_BAD_LINES` of them logged and kept as ``file:line: reason``;
a corrupt gzip stream cannot be resumed, so the rest of that file is dropped and the file listed.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple, Union

from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.common.files import describe_decode_error

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
JSON_LINES_SUFFIXES = (".jsonl", ".json", ".ndjson")

#: Longest corpus line (bytes) read as a document; longer ones are bad lines (see the module doc).
MAX_CORPUS_LINE_BYTES = 16 << 20
#: Skipped bad lines logged and listed by location; the rest are counted only.
REPORTED_BAD_LINES = 20
_DISCARD_CHUNK = 1 << 20

PathLike = Union[str, os.PathLike]


@dataclass
class CorpusCounts:
    """What reading skipped, for the caller to report (one instance may span several files)."""

    empty_lines: int = 0
    bad_lines: int = 0
    truncated_files: List[str] = field(default_factory=list)
    #: ``file:line: reason`` of the first REPORTED_BAD_LINES skipped lines
    bad_line_examples: List[str] = field(default_factory=list)
    #: files skipped because they hold no document
    empty_files: List[str] = field(default_factory=list)

    def skip_or_raise(self, error: DataFormatError, skip: bool) -> None:
        """Raise ``error``, or (``skip``) count it, logging and keeping the first ones by location."""
        if not skip:
            raise error from None
        self.bad_lines += 1
        if len(self.bad_line_examples) < REPORTED_BAD_LINES:
            self.bad_line_examples.append(str(error))
            logger.warning("skipped bad line %s", error)
            if len(self.bad_line_examples) == REPORTED_BAD_LINES:
                logger.warning("further bad lines are counted, not logged")


def check_files_exist(paths: Sequence[PathLike]) -> None:
    """Fail before any work, not half-way through a long run, when an input file is missing."""
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"input file {os.fspath(path)!r} does not exist")


def is_gzip(path: PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def is_json_lines(path: PathLike) -> bool:
    name = os.fspath(path)
    return name.removesuffix(".gz").endswith(JSON_LINES_SUFFIXES)


def _discard_rest_of_line(reader) -> None:
    # in bounded chunks: the point of the line limit is never to hold such a line whole
    while True:
        chunk = reader.readline(_DISCARD_CHUNK)
        if not chunk or chunk.endswith(b"\n"):
            return


def _raw_lines(path: str, counts: CorpusCounts, skip_bad_lines: bool,
               max_line_bytes: int) -> Iterator[Tuple[int, bytes]]:
    """``(1-based line number, bytes)``; splitting bytes at ``\\n`` (not text at every Unicode
    line break, as ``str.splitlines`` would) keeps line numbers the ones editors show."""
    compressed = is_gzip(path)
    opener = gzip.open if compressed else open
    line_no = 0
    with opener(path, "rb") as reader:
        while True:
            try:
                raw = reader.readline(max_line_bytes + 1)
                too_long = len(raw) > max_line_bytes and not raw.endswith(b"\n")
                if too_long:
                    _discard_rest_of_line(reader)
            except (EOFError, zlib.error, OSError) as err:
                # gzip reports a truncated stream as EOFError and garbled data as zlib.error or
                # BadGzipFile (an OSError); an OSError from a plain file is not ours to rename.
                if not compressed:
                    raise
                if not skip_bad_lines:
                    raise DataFormatError(
                        path, line_no + 1, f"corrupt gzip stream ({type(err).__name__}: {err}) "
                        f"after {line_no} complete lines; re-download or re-compress the file"
                    ) from err
                logger.warning("%s:%d: corrupt gzip stream (%s); dropping the rest of the file",
                               path, line_no + 1, err)
                counts.truncated_files.append(path)
                return
            if not raw:
                return
            line_no += 1
            if too_long:
                counts.skip_or_raise(DataFormatError(
                    path, line_no, f"line longer than {max_line_bytes:,} bytes: lost line ends? (a real "
                    "document this long needs a larger max_line_bytes)"), skip_bad_lines)
                continue
            yield line_no, raw


def _text_lines(path: str, counts: CorpusCounts, skip_bad_lines: bool,
                max_line_bytes: int) -> Iterator[Tuple[int, str]]:
    for line_no, raw in _raw_lines(path, counts, skip_bad_lines, max_line_bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            counts.skip_or_raise(DataFormatError(path, line_no, describe_decode_error(raw, err.start, line_no == 1)),
                                 skip_bad_lines)
            continue
        if line_no == 1:
            text = text.removeprefix("\ufeff")
        yield line_no, text


def text_lines(path: PathLike, max_line_bytes: int = MAX_CORPUS_LINE_BYTES) -> Iterator[Tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file, gzip or not, read as a stream; a line too long, an
    undecodable line or a corrupt gzip stream is a :class:`DataFormatError` naming the line."""
    check_files_exist([path])
    for line_no, text in _text_lines(os.fspath(path), CorpusCounts(), False, max_line_bytes):
        yield line_no, text.rstrip("\r\n")


def _json_text(line: str, json_key: str) -> str:
    """The document of one JSON line; raises ``ValueError`` saying what is wrong with it."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON: {err.msg} (column {err.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected an object with a string {json_key!r} field, "
                         f"got {type(record).__name__}")
    if json_key not in record:
        raise ValueError(f"no {json_key!r} field")
    text = record[json_key]
    if not isinstance(text, str):
        raise ValueError(f"{json_key!r} is {type(text).__name__}, not a string")
    return text


def iter_documents(path: PathLike, *, blank_line_documents: bool = False, json_key: str = "text",
                   skip_bad_lines: bool = False, counts: Optional[CorpusCounts] = None,
                   max_line_bytes: int = MAX_CORPUS_LINE_BYTES) -> Iterator[Tuple[int, str]]:
    """``(first line number, stripped text)`` for each non-empty document of ``path``.

    Skipped empty documents and (with ``skip_bad_lines``) bad lines, truncated and empty files
    are added to ``counts``. ``blank_line_documents`` applies to plain text only.
    """
    check_files_exist([path])
    path = os.fspath(path)
    counts = CorpusCounts() if counts is None else counts
    found, bad_before = 0, counts.bad_lines
    for found, document in enumerate(_documents(path, blank_line_documents, json_key, skip_bad_lines, counts,
                                                max_line_bytes), start=1):
        yield document
    # a file whose lines were all bad (or cut short) is already reported as such
    if not found and counts.bad_lines == bad_before and path not in counts.truncated_files:
        if not skip_bad_lines:
            raise DataFormatError(path, None, "no documents (an empty file, or only blank lines; a failed "
                                  "download?)")
        counts.empty_files.append(path)
        logger.warning("%s: no documents; skipped", path)


def _documents(path: str, blank_line_documents: bool, json_key: str, skip_bad_lines: bool,
               counts: CorpusCounts, max_line_bytes: int) -> Iterator[Tuple[int, str]]:
    lines = _text_lines(path, counts, skip_bad_lines, max_line_bytes)
    if is_json_lines(path):
        for line_no, line in lines:
            if not line.strip():
                counts.empty_lines += 1
                continue
            try:
                text = _json_text(line, json_key).strip()
            except ValueError as err:
                counts.skip_or_raise(DataFormatError(path, line_no, f"bad JSON line ({err})", field=json_key),
                                     skip_bad_lines)
                continue
            if not text:
                counts.empty_lines += 1
                continue
            yield line_no, text
    elif blank_line_documents:
        block: List[str] = []
        start = 0
        for line_no, line in lines:
            line = line.strip()
            if line:
                if not block:
                    start = line_no
                block.append(line)
            elif block:
                yield start, " ".join(block)
                block = []
        if block:
            yield start, " ".join(block)
    else:
        for line_no, line in lines:
            text = line.strip()
            if not text:
                counts.empty_lines += 1
                continue
            yield line_no, text
