"""Documents to annotate, read as a stream from text, JSON-lines or PubTator files.

* ``text``: one document per line; its id is the line number.
* ``jsonl``: ``{"id", "text"}`` or ``{"id", "title", "abstract"}`` per line.
* ``pubtator``: blocks of ``ID|t|title`` and ``ID|a|abstract`` lines (annotation lines that
  follow them are ignored), separated by blank lines.

A document with a title and an abstract is their concatenation with one space between them, as
PubTator writes offsets; its passages remember where each part starts. Input is read line by
line (gzip or not, :func:`~biomegatron_nemo.common.corpus.text_lines`), so memory stays bounded
whatever the file's size. A malformed line or block is a :class:`Reject` carrying its
``file:line`` and what was expected; the reader of the job decides whether it stops the run.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Iterator, List, Tuple, Union

from biomegatron_nemo.common.corpus import JSON_LINES_SUFFIXES, text_lines
from biomegatron_nemo.common.errors import DataFormatError

INPUT_FORMATS = ("auto", "text", "jsonl", "pubtator")
_PUBTATOR_TEXT = re.compile(r"^([^|\t]+)\|([ta])\|(.*)$")


@dataclass(frozen=True)
class Passage:
    kind: str  # "title", "abstract" or "text"
    offset: int  # where it starts in the document's text
    text: str


@dataclass(frozen=True)
class Document:
    id: str
    passages: Tuple[Passage, ...]

    @property
    def text(self) -> str:
        return " ".join(p.text for p in self.passages)

    @classmethod
    def of_text(cls, id: str, text: str) -> "Document":
        return cls(id, (Passage("text", 0, text),))

    @classmethod
    def of_title_abstract(cls, id: str, title: str, abstract: str) -> "Document":
        return cls(id, (Passage("title", 0, title), Passage("abstract", len(title) + 1, abstract)))


@dataclass(frozen=True)
class Reject:
    """An input line or block that is not a document of the format, and why."""
    path: str
    line: int
    reason: str

    def error(self) -> DataFormatError:
        return DataFormatError(self.path, self.line, self.reason)


Item = Union[Document, Reject]


def detect_format(path) -> str:
    """``jsonl`` by the file name (``.jsonl``, ``.json``, ``.ndjson``, also gzipped), ``pubtator``
    when the first non-blank line is ``ID|t|...``, else ``text``."""
    if os.fspath(path).removesuffix(".gz").endswith(JSON_LINES_SUFFIXES):
        return "jsonl"
    for _, line in text_lines(path):
        if line.strip():
            match = _PUBTATOR_TEXT.match(line)
            return "pubtator" if match and match.group(2) == "t" else "text"
    return "text"


def read_documents(path, input_format: str = "auto") -> Iterator[Item]:
    """Documents (and rejects) of ``path`` in file order."""
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input format {input_format!r}; expected one of {INPUT_FORMATS}")
    if input_format == "auto":
        input_format = detect_format(path)
    return {"text": _text, "jsonl": _jsonl, "pubtator": _pubtator}[input_format](os.fspath(path))


def _text(path: str) -> Iterator[Item]:
    for line_no, line in text_lines(path):
        yield Document.of_text(str(line_no), line)


def _jsonl(path: str) -> Iterator[Item]:
    for line_no, line in text_lines(path):
        if not line.strip():
            continue
        try:
            yield _json_document(line)
        except ValueError as err:
            yield Reject(path, line_no, str(err))


def _json_document(line: str) -> Document:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON: {err.msg} (column {err.colno}); expected {{\"id\", \"text\"}} or "
                         "{\"id\", \"title\", \"abstract\"}") from None
    if not isinstance(record, dict) or "id" not in record:
        raise ValueError("expected an object with an \"id\" and a \"text\" (or \"title\" and \"abstract\")")
    if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
        raise ValueError(f"\"id\" is {type(record['id']).__name__}; expected a string or an integer")
    fields = [k for k in ("text", "title", "abstract") if k in record]
    for key in fields:
        if not isinstance(record[key], str):
            raise ValueError(f"{key!r} is {type(record[key]).__name__}, not a string")
    if "text" in record and ("title" in record or "abstract" in record):
        raise ValueError("both \"text\" and \"title\"/\"abstract\"; expected one of the two forms")
    if "text" in record:
        return Document.of_text(str(record["id"]), record["text"])
    if "title" not in record or "abstract" not in record:
        raise ValueError("no \"text\", and not both \"title\" and \"abstract\"")
    return Document.of_title_abstract(str(record["id"]), record["title"], record["abstract"])


def _pubtator(path: str) -> Iterator[Item]:
    block: List[Tuple[int, str]] = []
    for line_no, line in text_lines(path):
        if line.strip():
            block.append((line_no, line))
            continue
        if block:
            yield _pubtator_document(path, block)
            block = []
    if block:
        yield _pubtator_document(path, block)


def _pubtator_document(path: str, block: List[Tuple[int, str]]) -> Item:
    first_line = block[0][0]
    texts = []
    for line_no, line in block:
        match = _PUBTATOR_TEXT.match(line)
        if match:
            texts.append((line_no, match))
        elif "\t" not in line:  # annotation lines are ID<TAB>start<TAB>end...: ignored
            return Reject(path, line_no, f"expected 'ID|t|title', 'ID|a|abstract' or a tab-separated annotation "
                                         f"line, got {line[:60]!r}")
    kinds = [m.group(2) for _, m in texts]
    if kinds != ["t", "a"]:
        return Reject(path, first_line, f"a PubTator document is one 'ID|t|' line, then one 'ID|a|' line; this "
                                        f"block has {kinds or 'neither'}")
    (_, title), (line_no, abstract) = texts
    if title.group(1) != abstract.group(1):
        return Reject(path, line_no, f"the abstract's id {abstract.group(1)!r} is not the title's "
                                     f"{title.group(1)!r}")
    return Document.of_title_abstract(title.group(1), title.group(3), abstract.group(3))
