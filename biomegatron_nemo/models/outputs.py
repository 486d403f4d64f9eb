"""What a model's heads give back for one batch: named losses and the head outputs, as a value.

``head_forward`` returns one of these and the steps pass it on (logging, metric collection,
pipeline microbatch merging), so nothing travels between Lightning hooks through attributes —
the pattern of Hugging Face's ``TokenClassifierOutput`` / ``MaskedLMOutput``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, TypeVar

import torch

T = TypeVar("T", bound="HeadOutput")


@dataclass
class HeadOutput:
    """Named losses, each already normalised by whole-batch counts (so microbatch losses sum to
    the batch's); subclasses add the head outputs (``[b, ...]`` tensors)."""

    losses: Dict[str, torch.Tensor]

    @property
    def loss(self) -> torch.Tensor:
        return sum(self.losses.values())

    def detach(self: T) -> T:
        values = {f.name: _detach(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return type(self)(**values)

    @classmethod
    def concat(cls, parts: Sequence["HeadOutput"]) -> "HeadOutput":
        """One output for microbatches of one batch: losses summed, tensors concatenated on dim 0."""
        first = parts[0]
        values = {}
        for f in dataclasses.fields(first):
            items = [getattr(p, f.name) for p in parts]
            if f.name == "losses":
                values[f.name] = {k: sum(p[k] for p in items) for k in items[0]}
            elif isinstance(items[0], torch.Tensor):
                values[f.name] = torch.cat(items, dim=0)
            else:
                values[f.name] = items[0]
        return type(first)(**values)


def _detach(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


@dataclass
class TokenClassifierOutput(HeadOutput):
    """NER: label logits per position ``[b, s, num_labels]``."""

    logits: Optional[torch.Tensor] = None


@dataclass
class MaskedLMOutput(HeadOutput):
    """Pretraining: vocab-parallel MLM logits ``[b, s, padded_vocab / TP]`` and, with the
    sentence-order head, its logits ``[b, 2]``. ``forward_batch`` leaves ``mlm_logits`` empty: the
    loss computes in the logits' memory; ``model.mlm_logits(model.encode(batch))`` gives them."""

    mlm_logits: Optional[torch.Tensor] = None
    sentence_order_logits: Optional[torch.Tensor] = None


@dataclass
class SequenceClassifierOutput(HeadOutput):
    """Relation extraction / sentence classification: class logits ``[b, num_labels]``."""

    logits: Optional[torch.Tensor] = None


@dataclass
class SpanQAOutput(HeadOutput):
    """Extractive QA: start and end logits ``[b, s]`` (padding positions at -10000)."""

    start_logits: Optional[torch.Tensor] = None
    end_logits: Optional[torch.Tensor] = None
