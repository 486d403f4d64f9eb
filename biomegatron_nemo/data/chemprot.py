"""Sequence-classification files (ChemProt in BLUE format, generic ``sentence<TAB>label``) and
the torch dataset that feeds them to a classifier.

ChemProt (BLUE release) rows are ``id<TAB>sentence<TAB>label`` with the two entities masked as
``@CHEMICAL$`` and ``@GENE$`` (``@CHEM-GENE$`` where one mention is both), labels ``CPR:3``,
``CPR:4``, ``CPR:5``, ``CPR:6``, ``CPR:9`` and ``false``; some copies start with a header line
``index<TAB>sentence<TAB>label``.

The masks must reach the model as single tokens. They are registered as the tokenizer's extra
special tokens **when the tokenizer is built**, e.g.
``WordPieceTokenizer(vocab, special_tokens=CHEMPROT_SPECIAL_TOKENS)``;
:class:`SequenceClassificationDataset` refuses a tokenizer that would split them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from biomegatron_nemo.common.config import option
from biomegatron_nemo.common.errors import ConfigError, DataFormatError
from biomegatron_nemo.common.files import iter_lines
from biomegatron_nemo.data.collate import Collator
from biomegatron_nemo.data.batching import FineTuningDataConfig
from biomegatron_nemo.tokenizers.base import BioTokenizer

logger = logging.getLogger(__name__)

#: Entity masks in BLUE's ChemProt; pass as ``special_tokens`` when building the tokenizer.
CHEMPROT_SPECIAL_TOKENS = ("@CHEMICAL$", "@GENE$", "@CHEM-GENE$")
#: ChemProt labels as in the BLUE release; ``false`` is the negative class (left out of micro-F1).
CHEMPROT_LABELS = ("CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9", "false")
CHEMPROT_NEGATIVE = "false"

_HEADERS = ({"index", "sentence", "label"}, {"id", "sentence", "label"}, {"sentence", "label"})


@dataclass
class ClassificationExample:
    """One row: ``guid`` (the file's id column, or ``<file>:<line>``), text and label."""

    guid: str
    text: str
    label: Optional[str]
    line: int = 0
    source: str = ""


def _rows(path: Path):
    # Plain tab splitting, not csv: sentences contain quotes that are text, not quoting.
    for lineno, line in iter_lines(path):
        if line.strip():
            yield lineno, line.split("\t")


def read_classification_tsv(path: Union[str, Path], labels: Optional[Sequence[str]] = None,
                            has_id: Optional[bool] = None, has_label: bool = True) -> List[ClassificationExample]:
    """Read ``[id<TAB>]sentence<TAB>label`` rows (``has_id=None``: decided by the first row).

    A header line (``index/id, sentence, label``) is skipped. With ``labels`` given, a label
    outside the set raises :class:`DataFormatError` naming the row. ``has_label=False`` reads
    unlabelled ``[id<TAB>]sentence`` rows (prediction input).
    """
    path = Path(path)
    out: List[ClassificationExample] = []
    allowed = set(labels) if labels is not None else None
    n_cols = None
    for lineno, row in _rows(path):
        if n_cols is None:
            if {c.strip().lower() for c in row} in _HEADERS:
                continue
            if has_id is None:
                has_id = len(row) == 2 + has_label
            n_cols = 1 + has_id + has_label
        if len(row) != n_cols:
            # a row typed with spaces instead of tabs has its columns run together
            hint = "; are its columns separated by spaces instead of tabs?" if len(row) < n_cols else ""
            raise DataFormatError(path, lineno, f"expected {n_cols} tab-separated columns "
                                  f"({'id, ' if has_id else ''}sentence{', label' if has_label else ''}), "
                                  f"found {len(row)}{hint}", field="columns")
        guid = row[0] if has_id else f"{path.name}:{lineno}"
        text = row[1 if has_id else 0].strip()
        if not text:
            raise DataFormatError(path, lineno, "empty sentence", field="sentence")
        label = row[-1].strip() if has_label else None
        if has_label and allowed is not None and label not in allowed:
            raise DataFormatError(path, lineno, f"label {label!r} is not one of {sorted(allowed)}",
                                  field="label")
        out.append(ClassificationExample(guid, text, label, lineno, str(path)))
    if not out:
        raise DataFormatError(path, None, "no rows found")
    return out


def read_chemprot(path: Union[str, Path]) -> List[ClassificationExample]:
    """Read a BLUE ChemProt file (``id<TAB>sentence<TAB>label``), checking the label set."""
    return read_classification_tsv(path, labels=CHEMPROT_LABELS, has_id=True)


MISSING_MARKER_POLICIES = ("error", "warn")


@dataclass
class RelationDataConfig(FineTuningDataConfig):
    """A ``train_ds`` / ``validation_ds`` / ``test_ds`` section of the sequence-classification model."""

    oversample: bool = option(False, "training: draw every class equally often (with replacement), "
                                     "one epoch = as many draws as rows")

    def check(self) -> None:
        super().check()
        if self.oversample and self.max_tokens is not None:
            raise ConfigError("oversample draws single examples; it cannot be combined with max_tokens batches "
                              "(set one of them off)", key="oversample")


def _marker_window(ids: Sequence[int], positions: Sequence[int], length: int) -> Tuple[int, bool]:
    """Start of a ``length``-token window over ``ids`` that holds every marker position, centred
    on them; and whether they all fit."""
    first, last = min(positions), max(positions)
    span = last - first + 1
    if span > length:
        return first, False
    start = first - (length - span) // 2
    return max(0, min(start, len(ids) - length)), True


class SequenceClassificationDataset(torch.utils.data.Dataset):
    """Examples → ``input_ids, attention_mask, token_type_ids, labels, example_index`` (``[CLS] text [SEP]``).

    ``markers`` are the entity masks; they must be registered in the tokenizer (one token each).
    A text needs two marker tokens (``pair_marker``, a mention that is both entities, counts as
    two); one without raises :class:`DataFormatError` naming file and line
    (``missing_markers="error"``) or is kept and counted in ``n_missing_markers`` (``"warn"``).
    Texts longer than ``max_seq_length`` keep the window around the markers, so both entities
    survive (counted in ``n_truncated``; ``n_markers_cut`` when they are too far apart to fit).
    ``labels`` is the label list (``label_to_id`` its ids); an example without a label gets -100.
    """

    def __init__(self, examples: Sequence[ClassificationExample], tokenizer: BioTokenizer,
                 labels: Sequence[str] = CHEMPROT_LABELS, max_seq_length: int = 128,
                 markers: Sequence[str] = CHEMPROT_SPECIAL_TOKENS, pair_marker: Optional[str] = "@CHEM-GENE$",
                 missing_markers: str = "error"):
        unregistered = [t for t in markers if t not in tokenizer.extra_special_tokens]
        if unregistered:
            raise ValueError(f"tokenizer does not keep {unregistered} whole; build it with "
                             f"special_tokens={tuple(markers)}")
        if missing_markers not in MISSING_MARKER_POLICIES:
            raise ValueError(f"missing_markers must be one of {MISSING_MARKER_POLICIES}, got {missing_markers!r}")
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.label_to_id: Dict[str, int] = {lab: i for i, lab in enumerate(self.labels)}
        self.examples = list(examples)
        marker_ids = {tokenizer.token_to_id(t) for t in markers}
        pair_id = tokenizer.token_to_id(pair_marker) if pair_marker else None
        self.features = []
        self.n_truncated = self.n_markers_cut = self.n_missing_markers = 0
        length = max_seq_length - 2
        for ex in self.examples:
            if ex.label is not None and ex.label not in self.label_to_id:
                raise DataFormatError(ex.source or "<examples>", ex.line or None,
                                      f"label {ex.label!r} is not one of {self.labels}", field="label")
            ids = tokenizer.encode(ex.text).ids
            positions = [i for i, t in enumerate(ids) if t in marker_ids]
            if len(positions) + sum(t == pair_id for t in ids) < 2:
                if missing_markers == "error":
                    raise DataFormatError(ex.source or "<examples>", ex.line or None,
                                          f"expected two entity markers of {list(markers)} in {ex.text!r}",
                                          field="sentence")
                self.n_missing_markers += 1
            if len(ids) > length:
                self.n_truncated += 1
                start, fits = _marker_window(ids, positions, length) if positions else (0, True)
                self.n_markers_cut += not fits
                ids = ids[start:start + length]
            label = -100 if ex.label is None else self.label_to_id[ex.label]
            self.features.append(([tokenizer.cls_id] + ids + [tokenizer.sep_id], label))
        for count, what in ((self.n_truncated, f"longer than {max_seq_length} tokens were cut around their markers"),
                            (self.n_markers_cut, "have markers too far apart to keep both"),
                            (self.n_missing_markers, "lack two entity markers")):
            if count:
                logger.warning("%d of %d texts %s", count, len(self.examples), what)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> Dict:
        ids, label = self.features[i]
        n = len(ids)
        return {"input_ids": ids, "attention_mask": [1] * n, "token_type_ids": [0] * n,
                "labels": label, "example_index": i}

    def collate_fn(self, features):
        return Collator(self.tokenizer.pad_id)(features)

    def lengths(self) -> List[int]:
        """Tokens per example (what a batch is padded to), for length-grouped batching."""
        return [len(ids) for ids, _ in self.features]

    def label_targets(self) -> List[int]:
        return [label for _, label in self.features]
