"""CoNLL-style NER files: reading (with validation), tag-scheme conversion, and prediction output.

Two layouts are read by one function:

* ``token<TAB>tag`` — BioBERT / MTL-Bioinformatics-2016 files (BC5CDR, NCBI-disease);
* whitespace-separated multi-column CoNLL with the tag in the last column and ``-DOCSTART-``
  document lines (SciBERT files).

Sentences are separated by blank lines. Tags follow IOB1, IOB2 or IOBES, typed (``B-Chemical``)
or untyped (``B``). An ``I-`` after ``O`` is accepted as conlleval accepts it (it opens an
entity); the metrics (seqeval's default, conlleval-compatible mode) give it the same meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Sequence, Union

from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.common.files import iter_lines

#: Tag prefixes allowed per scheme (``O`` is always allowed).
SCHEMES = {
    "IOB1": frozenset("BI"),
    "IOB2": frozenset("BI"),
    "IOBES": frozenset("BIES"),
}

_DOCSTART = "-DOCSTART-"
_WHITESPACE = re.compile(r"\s")
_TAG_RE = re.compile(r"^(?:O|([A-Z])(?:-(\S+))?)$")


@dataclass
class Sentence:
    """One sentence: parallel ``words`` and ``tags``; ``line`` is its first line in the file."""

    words: List[str]
    tags: List[str]
    line: int = 0
    source: str = ""

    def __len__(self) -> int:
        return len(self.words)

    def __iter__(self):
        # Unpacks as ``words, tags = sentence``.
        return iter((self.words, self.tags))


@dataclass
class _Layout:
    """Column layout fixed by a file's first token line."""

    tab_separated: bool
    n_columns: int
    first_line: int = field(default=0)


def _split(line: str, tab_separated: bool) -> List[str]:
    return line.split("\t") if tab_separated else line.split()


def check_tag(tag: str, scheme: str) -> bool:
    """True when ``tag`` is ``O`` or ``<prefix>[-<type>]`` with a prefix the scheme allows."""
    m = _TAG_RE.match(tag)
    if m is None:
        return False
    return m.group(1) is None or m.group(1) in SCHEMES[scheme]


def read_conll(path: Union[str, Path], scheme: str = "IOB2") -> List[Sentence]:
    """Read a CoNLL NER file into sentences, validating every line.

    ``scheme`` is one of ``IOB1``, ``IOB2``, ``IOBES`` and only restricts which tag prefixes
    are legal. Raises :class:`DataFormatError` (file and line in the message) for a wrong column
    count, an empty token, a tag outside the scheme, or a file without sentences.
    """
    scheme = scheme.upper()
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
    path = Path(path)
    sentences: List[Sentence] = []
    words: List[str] = []
    tags: List[str] = []
    start = 0
    layout = None

    def flush():
        nonlocal words, tags
        if words:
            sentences.append(Sentence(words, tags, start, str(path)))
        words, tags = [], []

    for lineno, line in iter_lines(path):
        if not line.strip():
            flush()
            continue
        if line.split()[0] == _DOCSTART:
            flush()
            continue
        if layout is None:
            tab = "\t" in line
            layout = _Layout(tab, len(_split(line, tab)), lineno)
            if layout.n_columns < 2:
                raise DataFormatError(path, lineno, "expected at least 2 columns (token and tag), "
                                      f"found {layout.n_columns}", field="columns")
        cols = _split(line, layout.tab_separated)
        if len(cols) != layout.n_columns:
            # the usual cause: a hand-edited line typed with spaces in a tab-separated file
            mixed = layout.tab_separated and len(line.split()) == layout.n_columns
            hint = f"; this line separates them with spaces, line {layout.first_line} with tabs" if mixed else ""
            raise DataFormatError(
                path, lineno, f"expected {layout.n_columns} columns as on line "
                f"{layout.first_line}, found {len(cols)}{hint}", field="columns")
        token, tag = cols[0].strip(), cols[-1].strip()
        if not token:
            raise DataFormatError(path, lineno, "empty token", field="token")
        if not check_tag(tag, scheme):
            raise DataFormatError(path, lineno, f"tag {tag!r} is not a valid {scheme} tag",
                                  field="tag")
        if not words:
            start = lineno
        words.append(token)
        tags.append(tag)
    flush()
    if not sentences:
        raise DataFormatError(path, None, "no sentences found (empty file or only -DOCSTART-/blank lines)")
    return sentences


def split_tag(tag: str):
    """``'B-Chemical'`` → ``('B', 'Chemical')``; ``'B'`` → ``('B', '')``; ``'O'`` → ``('O', '')``."""
    prefix, _, etype = tag.partition("-")
    return prefix, etype


def to_iob2(tags: Sequence[str]) -> List[str]:
    """Convert one sentence's IOB1 / IOBES / IOB2 tags to IOB2 (conlleval chunk semantics).

    A chunk starts wherever conlleval would start one (``B``/``S``, an ``I``/``E`` after ``O``
    or after another type, or after an ``E``/``S``), and is rewritten as ``B-`` then ``I-``.
    """
    out = []
    prev_prefix, prev_type = "O", ""
    for tag in tags:
        prefix, etype = split_tag(tag)
        if prefix == "O":
            out.append("O")
        else:
            starts = (prefix in ("B", "S") or prev_prefix in ("O", "E", "S") or etype != prev_type)
            sep = "-" if etype else ""
            out.append(("B" if starts else "I") + sep + etype)
        prev_prefix, prev_type = prefix, etype
    return out


def write_conll_predictions(path: Union[str, Path], words: Iterable[Sequence[str]],
                            gold: Iterable[Sequence[str]], pred: Iterable[Sequence[str]]) -> None:
    """Write ``word gold pred`` lines, a blank line between sentences (conlleval's input).

    Whitespace inside a word would shift conlleval's columns, so it is replaced with ``_``.
    """
    with open(path, "w", encoding="utf-8") as f:
        for i, (ws, gs, ps) in enumerate(zip(words, gold, pred, strict=True)):
            if not len(ws) == len(gs) == len(ps):
                raise ValueError(f"sentence {i}: {len(ws)} words, {len(gs)} gold tags, "
                                 f"{len(ps)} predicted tags")
            for w, g, p in zip(ws, gs, ps):
                f.write(f"{_WHITESPACE.sub('_', w)} {g} {p}\n")
            f.write("\n")


def read_iob2(path: str, scheme: str = "IOB2") -> List[Sentence]:
    """Sentences of a CoNLL file with tags converted to IOB2 (conlleval chunk semantics)."""
    return [Sentence(s.words, to_iob2(s.tags), s.line, s.source) for s in read_conll(path, scheme)]
