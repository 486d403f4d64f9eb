"""NER as token classification: label maps, sub-token label alignment, windows, and the way back.

Alignment modes (the paper's NER comparison, section 5.1):

* ``first_subtoken`` — only a word's first sub-token carries the word's label; continuation
  sub-tokens get ``-100`` and are ignored by the loss (BioBERT's "whole-entity" labelling).
* ``all_subtokens`` — every sub-token is labelled: continuation sub-tokens of an entity word get
  the ``I-`` tag of its type, those of an ``O`` word get ``O`` (the paper's "labelling sub-tokens
  separately"). Labels must be IOB2 here (convert with :func:`~biomegatron_nemo.data.conll.to_iob2`).

A sentence longer than ``max_seq_length - 2`` sub-tokens is split into overlapping windows
(never truncated). Predictions map back to exactly one label per word: the label predicted at
the word's first sub-token, taken from the window in which that sub-token is furthest from a
window edge (most context on both sides).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.common.files import iter_lines
from biomegatron_nemo.data.collate import IGNORE_INDEX, Collator
from biomegatron_nemo.data.conll import Sentence, split_tag
from biomegatron_nemo.tokenizers.base import BioTokenizer

ALIGNMENT_MODES = ("first_subtoken", "all_subtokens")


class LabelMap:
    """Label ↔ id. For tags, ``outside`` (``O``) is id 0 so a zero-initialised head predicts "no
    entity"; ``outside=None`` keeps the labels as given (sequence classification)."""

    def __init__(self, labels: Sequence[str], outside: Optional[str] = "O"):
        labels = list(dict.fromkeys(labels))
        if outside is not None:
            if outside in labels:
                labels.remove(outside)
            labels = [outside] + labels
        if not labels:
            raise ValueError("a label map needs at least one label")
        self.labels: List[str] = labels
        self.label_to_id: Dict[str, int] = {lab: i for i, lab in enumerate(self.labels)}

    @classmethod
    def from_sentences(cls, sentences: Sequence[Sentence]) -> "LabelMap":
        """All tags seen, sorted by entity type then prefix (``B-X`` before ``I-X``)."""
        tags = {t for s in sentences for t in s.tags}
        # all_subtokens needs I-X even for types seen only as single-word B-X entities
        tags |= {continuation_tag(t) for t in tags if split_tag(t)[0] == "B"}
        return cls(sorted(tags, key=lambda t: (split_tag(t)[1], split_tag(t)[0])))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, label: str) -> int:
        return self.label_to_id[label]

    def encode(self, tags: Sequence[str], where: str = "") -> List[int]:
        try:
            return [self.label_to_id[t] for t in tags]
        except KeyError as e:
            raise ValueError(f"{where}: tag {e.args[0]!r} is not in the label map {self.labels}") from None

    def decode(self, ids: Sequence[int]) -> List[str]:
        return [self.labels[i] for i in ids]


def continuation_tag(tag: str) -> str:
    """Tag for a continuation sub-token of a word tagged ``tag`` in ``all_subtokens`` mode."""
    prefix, etype = split_tag(tag)
    if prefix == "O":
        return "O"
    if prefix not in ("B", "I"):
        raise ValueError(f"all_subtokens alignment needs IOB2 tags, got {tag!r} (use to_iob2)")
    return "I-" + etype if etype else "I"


def align_labels(word_ids: Sequence[int], tags: Sequence[str], mode: str) -> List[Optional[str]]:
    """Per-sub-token tag (``None`` = ignored) from per-word tags and the sub-tokens' word ids."""
    if mode not in ALIGNMENT_MODES:
        raise ValueError(f"unknown alignment mode {mode!r}; choose one of {ALIGNMENT_MODES}")
    out: List[Optional[str]] = []
    prev = None
    for w in word_ids:
        first = w != prev
        if first:
            out.append(tags[w])
        else:
            out.append(continuation_tag(tags[w]) if mode == "all_subtokens" else None)
        prev = w
    return out


def window_spans(word_ids: Sequence[int], max_len: int, overlap: int) -> List[tuple]:
    """``[start, end)`` sub-token windows of at most ``max_len`` covering every sub-token.

    Consecutive windows share about ``overlap`` sub-tokens; a window starts at a word's first
    sub-token whenever one lies in the allowed range, so words are rarely cut.
    """
    n = len(word_ids)
    if max_len < 1:
        raise ValueError(f"window length must be positive, got {max_len}")
    if not 0 <= overlap < max_len:
        raise ValueError(f"window overlap must be in [0, {max_len}), got {overlap}")
    spans = []
    start = 0
    while True:
        end = min(start + max_len, n)
        spans.append((start, end))
        if end == n:
            return spans
        target = end - overlap
        nxt = target
        # move back to a word start, but never so far back that the window makes no progress
        while nxt > start + 1 and word_ids[nxt] == word_ids[nxt - 1]:
            nxt -= 1
        start = nxt if word_ids[nxt] != word_ids[nxt - 1] else target


@dataclass
class NERWindow:
    """One model input: a window of one sentence."""

    sentence_index: int
    start: int  # first sub-token of the sentence in this window
    input_ids: List[int]
    labels: List[int]
    word_ids: List[int]  # per position; -1 for [CLS]/[SEP]
    first_positions: List[int]  # positions holding the first sub-token of their word


class TokenClassificationDataset(torch.utils.data.Dataset):
    """CoNLL sentences → windows of ``input_ids, attention_mask, token_type_ids, labels``.

    Each item also carries ``word_ids`` (word index per position, -1 for specials) and
    ``sentence_index`` so :meth:`predictions_to_tags` can map predictions back to words.
    """

    def __init__(self, sentences: Sequence[Sentence], tokenizer: BioTokenizer, label_map: LabelMap,
                 max_seq_length: int = 128, mode: str = "first_subtoken", window_overlap: int = 32):
        if mode not in ALIGNMENT_MODES:
            raise ValueError(f"unknown alignment mode {mode!r}; choose one of {ALIGNMENT_MODES}")
        self.sentences = list(sentences)
        self.tokenizer = tokenizer
        self.label_map = label_map
        self.mode = mode
        self.max_seq_length = max_seq_length
        inner = max_seq_length - 2
        overlap = min(window_overlap, inner // 2)
        self.windows: List[NERWindow] = []
        for si, sent in enumerate(self.sentences):
            enc = tokenizer.encode_words(sent.words)
            where = f"{sent.source}:{sent.line}" if sent.source else f"sentence {si}"
            missing = set(range(len(sent.words))) - set(enc.word_ids)
            if missing:
                raise ValueError(f"{where}: tokenizer produced no sub-token for word(s) {sorted(missing)}")
            tags = align_labels(enc.word_ids, sent.tags, mode)
            ids = [IGNORE_INDEX if t is None else i for t, i in
                   zip(tags, label_map.encode([t or "O" for t in tags], where))]
            is_first = [k == 0 or enc.word_ids[k] != enc.word_ids[k - 1]
                        for k in range(len(enc.word_ids))]
            for start, end in window_spans(enc.word_ids, inner, overlap):
                self.windows.append(NERWindow(
                    si, start,
                    [tokenizer.cls_id] + enc.ids[start:end] + [tokenizer.sep_id],
                    [IGNORE_INDEX] + ids[start:end] + [IGNORE_INDEX],
                    [-1] + list(enc.word_ids[start:end]) + [-1],
                    [1 + k - start for k in range(start, end) if is_first[k]]))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> Dict:
        w = self.windows[i]
        n = len(w.input_ids)
        return {"input_ids": w.input_ids, "attention_mask": [1] * n, "token_type_ids": [0] * n,
                "labels": w.labels, "word_ids": w.word_ids, "sentence_index": w.sentence_index,
                "window_index": i}

    def collate_fn(self, features):
        return Collator(self.tokenizer.pad_id)(features)

    def lengths(self) -> List[int]:
        """Tokens per window (what a batch is padded to), for length-grouped batching."""
        return [len(w.input_ids) for w in self.windows]

    def predictions_to_tags(self, predictions: Sequence[Sequence[int]],
                            window_indices: Optional[Sequence[int]] = None) -> List[List[str]]:
        """Per-position predicted label ids (one row per window) → one tag per original word.

        ``window_indices`` gives the dataset index of each row (default: rows are windows in
        order). Rows may be padded beyond the window length. Every word gets the label predicted
        at its first sub-token; when that sub-token is in several windows, the window where it
        is furthest from an edge wins.
        """
        if window_indices is None:
            window_indices = range(len(predictions))
        values = self.word_values(predictions, window_indices)
        out = []
        for si, sent in enumerate(self.sentences):
            if si not in values:
                seen = {self.windows[wi].word_ids[p] for wi in window_indices
                        if self.windows[wi].sentence_index == si for p in self.windows[wi].first_positions}
                missing = [wd for wd in range(len(sent.words)) if wd not in seen]
                raise ValueError(f"no prediction for sentence {si} word(s) {missing}: predictions "
                                 "must cover every window of the sentence")
            out.append([self.label_map.labels[int(v)] for v in values[si]])
        return out

    def word_values(self, values: Sequence[Sequence], window_indices: Optional[Sequence[int]] = None
                    ) -> Dict[int, List]:
        """Per-position values of windows (label ids, scores, ...) → ``{sentence: [value per word]}``.

        The rule of :meth:`predictions_to_tags` for any per-position value, so a tag and its
        score come from the same window. Sentences with a word no row covers are left out
        (e.g. a validation pass limited to some batches).
        """
        if window_indices is None:
            window_indices = range(len(values))
        best: Dict[tuple, tuple] = {}  # (sentence, word) → (distance to edge, value)
        for row, wi in zip(values, window_indices, strict=True):
            w = self.windows[wi]
            inner = len(w.input_ids) - 2
            for pos in w.first_positions:
                dist = min(pos - 1, inner - pos)
                key = (w.sentence_index, w.word_ids[pos])
                if key not in best or dist > best[key][0]:
                    best[key] = (dist, row[pos])
        out: Dict[int, List] = {}
        for si, sent in enumerate(self.sentences):
            if all((si, wd) in best for wd in range(len(sent.words))):
                out[si] = [best[(si, wd)][1] for wd in range(len(sent.words))]
        return out


def read_label_file(path: str) -> List[str]:
    """The labels of a label map file (``label_map_file``), one a line in id order; blank lines
    and surrounding whitespace are ignored, a repeated label or a tab is an error naming the line."""
    labels: Dict[str, int] = {}  # label → its line
    for lineno, line in iter_lines(path):
        tag = line.strip()
        if not tag:
            continue
        if "\t" in tag:
            raise DataFormatError(path, lineno, f"{tag!r} holds a tab; a label map file has one label a "
                                  "line (not 'label<TAB>id' columns)", field="label")
        if tag in labels:
            raise DataFormatError(path, lineno, f"label {tag!r} repeats line {labels[tag]}", field="label")
        labels[tag] = lineno
    if not labels:
        raise DataFormatError(path, None, "no labels in label map file")
    return list(labels)


def word_spans(encoding) -> List[Tuple[int, int]]:
    """``(start, end)`` characters of each of the tokenizer's words, in order."""
    spans: Dict[int, List[int]] = {}
    for wid, (start, end) in zip(encoding.word_ids, encoding.offsets):
        if wid is None or end <= start:
            continue
        span = spans.setdefault(wid, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    return [tuple(spans[w]) for w in sorted(spans)]
