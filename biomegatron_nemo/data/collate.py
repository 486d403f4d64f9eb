"""Batching for the fine-tuning datasets: pad variable-length features to the batch's longest.

One collate function for NER, sequence classification and QA so every task pads the same way:
``input_ids`` with the tokenizer's pad id, ``attention_mask``/``token_type_ids`` with 0,
``labels`` with -100 (ignored by cross-entropy), ``word_ids`` with -1; scalar fields are stacked.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import torch

IGNORE_INDEX = -100

#: Padding value per sequence field; the ``input_ids`` value is the tokenizer's pad id.
PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "labels": IGNORE_INDEX, "word_ids": -1,
              "loss_mask": 0}


def pad_collate(features: Sequence[Mapping], pad_id: int) -> Dict[str, torch.Tensor]:
    """Stack a list of feature dicts into tensors, right-padding list-valued fields."""
    if not features:
        raise ValueError("cannot collate an empty batch")
    batch: Dict[str, torch.Tensor] = {}
    for key, first in features[0].items():
        values: List = [f[key] for f in features]
        if isinstance(first, (list, tuple)):
            width = max(len(v) for v in values)
            pad = pad_id if key == "input_ids" else PAD_VALUES.get(key)
            if pad is None:
                raise KeyError(f"no padding value known for sequence field {key!r}")
            batch[key] = torch.tensor([list(v) + [pad] * (width - len(v)) for v in values],
                                      dtype=torch.long)
        else:
            batch[key] = torch.tensor(values, dtype=torch.long)
    return batch


class Collator:
    """Picklable ``collate_fn`` (DataLoader workers) bound to a pad id."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: Sequence[Mapping]) -> Dict[str, torch.Tensor]:
        return pad_collate(features, self.pad_id)
