"""Losses of the classification heads for imbalanced labels (the paper's section 5.5).

* :func:`summed_cross_entropy` — (class-weighted) cross-entropy *summed* over labelled
  positions; the caller divides by a count that may span data-parallel ranks, so the loss equals
  the global batch's mean (with weights: torch's weighted mean, ``Σ w_y·CE / Σ w_y``).
* :func:`dice_loss` — soft (Sørensen–)Dice loss over the classes.
* :func:`balanced_class_weights` — "auto" class weights from label counts.

Shared by the token- and sequence-classification models; labels equal to ``-100`` are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from biomegatron_nemo.common.config import Schema, option
from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.data.collate import IGNORE_INDEX

LOSSES = ("cross_entropy", "weighted_cross_entropy", "dice")


@dataclass
class ClassificationLossConfig(Schema):
    """The ``loss:`` section of the classification models (the paper's section 5.5)."""

    name: str = option("cross_entropy", "loss over the labels", choices=LOSSES)
    class_weights: Any = option(None, "weighted_cross_entropy: auto (balanced, from the training labels) "
                                      "or one weight per label")
    dice_smooth: float = option(1.0, "dice: smoothing added to numerator and denominator")

    def check(self) -> None:
        weights = self.class_weights
        if weights is not None and self.name != "weighted_cross_entropy":
            raise ConfigError(f"is set but loss.name={self.name!r} does not use it (use weighted_cross_entropy)",
                              key="class_weights")
        if isinstance(weights, str) and weights != "auto":
            raise ConfigError(f"must be auto or a list of numbers, got {weights!r}", key="class_weights")
        if isinstance(weights, (list, tuple)) and not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights):
            raise ConfigError(f"weights must be positive numbers, got {list(weights)}", key="class_weights")
        if not isinstance(weights, (type(None), str, list, tuple)):
            raise ConfigError(f"must be auto or a list of numbers, got {weights!r}", key="class_weights")
        if self.dice_smooth < 0:
            raise ConfigError(f"must be >= 0, got {self.dice_smooth}", key="dice_smooth")


def summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                         class_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``Σ_i w[y_i] · CE_i`` over positions with ``labels != -100`` (``w`` = 1 without weights)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           weight=class_weights, ignore_index=IGNORE_INDEX, reduction="sum")


def cross_entropy_normalizer(labels: torch.Tensor, class_weights: Optional[torch.Tensor] = None) -> float:
    """The count that turns :func:`summed_cross_entropy` into a mean: labelled positions, or
    the sum of their class weights."""
    labelled = labels[labels != IGNORE_INDEX]
    if class_weights is None:
        return float(labelled.numel())
    return float(class_weights[labelled].sum())


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss over classes, averaged over the classes (Milletari et al. 2016; the form
    Li et al. 2020, "Dice Loss for Data-imbalanced NLP Tasks", use for NER):

        dice_c = (2 Σ_i p_ic y_ic + smooth) / (Σ_i p_ic² + Σ_i y_ic² + smooth),  loss = mean_c (1 − dice_c)

    with ``p`` the softmax probabilities and ``y`` one-hot labels over the labelled positions.
    Every class weighs the same however rare, which is why it helps imbalanced labels.

    Written here because none of our dependencies has one: torch has no Dice loss, and the
    libraries that do (MONAI, segmentation-models-pytorch) target image segmentation and would
    pull in a large dependency for ten lines. Computed per batch on each data-parallel rank (it
    does not decompose into a sum over examples, so DP=2 averages two batch Dice losses).
    """
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_labels = labels.reshape(-1)
    keep = flat_labels != IGNORE_INDEX
    probs = flat_logits[keep].softmax(-1)
    onehot = F.one_hot(flat_labels[keep], num_classes=flat_logits.shape[-1]).to(probs.dtype)
    intersection = (probs * onehot).sum(0)
    denominator = (probs * probs).sum(0) + onehot.sum(0)  # y² = y for one-hot
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return (1 - dice).mean()


def balanced_class_weights(counts: Sequence[int]) -> list:
    """``N / (C · n_c)`` per class — scikit-learn's "balanced" rule. Classes with no examples get
    1.0 (sklearn refuses them; they arise here as ``I-`` tags only ``all_subtokens`` produces, and
    a class that never is a target never weighs in the loss)."""
    total, n_classes = sum(counts), len(counts)
    return [total / (n_classes * c) if c else 1.0 for c in counts]
