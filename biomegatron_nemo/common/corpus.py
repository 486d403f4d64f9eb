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
JSON line that does not parse or lacks a string text field. With ``skip_bad_lines`` such lines
are skipped and counted in :class:`CorpusCounts` instead; a corrupt gzip stream cannot be resumed,
so the rest of that file is dropped and the file listed.
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

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
JSON_LINES_SUFFIXES = (".jsonl", ".json", ".ndjson")

PathLike = Union[str, os.PathLike]


@dataclass
class CorpusCounts:
    """What reading skipped, for the caller to report (one instance may span several files)."""

    empty_lines: int = 0
    bad_lines: int = 0
    truncated_files: List[str] = field(default_factory=list)


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


def _raw_lines(path: str, counts: CorpusCounts, skip_bad_lines: bool) -> Iterator[Tuple[int, bytes]]:
    """``(1-based line number, bytes)``; splitting bytes at ``\\n`` (not text at every Unicode
    line break, as ``str.splitlines`` would) keeps line numbers the ones editors show."""
    compressed = is_gzip(path)
    opener = gzip.open if compressed else open
    line_no = 0
    with opener(path, "rb") as reader:
        while True:
            try:
                raw = reader.readline()
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
            yield line_no, raw


def _text_lines(path: str, counts: CorpusCounts, skip_bad_lines: bool) -> Iterator[Tuple[int, str]]:
    for line_no, raw in _raw_lines(path, counts, skip_bad_lines):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            if not skip_bad_lines:
                raise DataFormatError(path, line_no, f"invalid UTF-8 (byte 0x{raw[err.start]:02x} "
                                      f"at column {err.start + 1}); re-encode the file as UTF-8"
                                      ) from err
            counts.bad_lines += 1
            continue
        if line_no == 1:
            text = text.removeprefix("\ufeff")
        yield line_no, text


def _json_text(line: str, json_key: str) -> str:
    """The document of one JSON line; raises ``ValueError`` saying what is wrong with it."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON: {err.msg} at column {err.colno}") from None
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
                   skip_bad_lines: bool = False, counts: Optional[CorpusCounts] = None
                   ) -> Iterator[Tuple[int, str]]:
    """``(first line number, stripped text)`` for each non-empty document of ``path``.

    Skipped empty documents and (with ``skip_bad_lines``) bad lines and truncated files are
    added to ``counts``. ``blank_line_documents`` applies to plain text only.
    """
    check_files_exist([path])
    path = os.fspath(path)
    counts = CorpusCounts() if counts is None else counts
    lines = _text_lines(path, counts, skip_bad_lines)
    if is_json_lines(path):
        for line_no, line in lines:
            if not line.strip():
                counts.empty_lines += 1
                continue
            try:
                text = _json_text(line, json_key).strip()
            except ValueError as err:
                if not skip_bad_lines:
                    raise DataFormatError(path, line_no, f"bad JSON line ({err})",
                                          field=json_key) from None
                counts.bad_lines += 1
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
