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
from typing import Dict, List, Optional, Sequence, Union

import torch

from biomegatron_nemo.data.collate import Collator
from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.common.files import iter_lines
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
            raise DataFormatError(path, lineno, f"expected {n_cols} tab-separated columns "
                                  f"({'id, ' if has_id else ''}sentence{', label' if has_label else ''}), "
                                  f"found {len(row)}", field="columns")
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


class SequenceClassificationDataset(torch.utils.data.Dataset):
    """Examples → ``input_ids, attention_mask, token_type_ids, labels`` (``[CLS] text [SEP]``).

    Texts longer than ``max_seq_length`` are cut at the end (sequence classification has one
    label per text, unlike NER); the number cut is logged and kept in ``n_truncated``.
    ``special_tokens`` (default: the ChemProt masks) must be registered in the tokenizer.
    """

    def __init__(self, examples: Sequence[ClassificationExample], tokenizer: BioTokenizer,
                 labels: Sequence[str] = CHEMPROT_LABELS, max_seq_length: int = 128,
                 special_tokens: Sequence[str] = CHEMPROT_SPECIAL_TOKENS):
        unregistered = [t for t in special_tokens if t not in tokenizer.extra_special_tokens]
        if unregistered:
            raise ValueError(f"tokenizer does not keep {unregistered} whole; build it with "
                             f"special_tokens={tuple(special_tokens)}")
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.label_to_id: Dict[str, int] = {lab: i for i, lab in enumerate(self.labels)}
        self.examples = list(examples)
        self.features = []
        self.n_truncated = 0
        for ex in self.examples:
            if ex.label is not None and ex.label not in self.label_to_id:
                raise DataFormatError(ex.source or "<examples>", ex.line or None,
                                      f"label {ex.label!r} is not one of {self.labels}", field="label")
            ids = tokenizer.encode(ex.text).ids
            if len(ids) > max_seq_length - 2:
                self.n_truncated += 1
                ids = ids[: max_seq_length - 2]
            self.features.append(([tokenizer.cls_id] + ids + [tokenizer.sep_id],
                                  -100 if ex.label is None else self.label_to_id[ex.label]))
        if self.n_truncated:
            logger.warning("%d of %d texts longer than %d tokens were truncated",
                           self.n_truncated, len(self.examples), max_seq_length)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> Dict:
        ids, label = self.features[i]
        n = len(ids)
        return {"input_ids": ids, "attention_mask": [1] * n, "token_type_ids": [0] * n,
                "labels": label}

    def collate_fn(self, features):
        return Collator(self.tokenizer.pad_id)(features)
