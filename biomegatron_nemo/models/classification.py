"""What the classification task models (NER, relation extraction) share on top of the base lifecycle.

:class:`ClassificationTaskModel` owns

* the label map: given (``label_map`` / ``label_map_file``) or collected from the training file,
  stored in the config and ``register_artifact``-ed as ``label_map.txt`` so a restored ``.nemo``
  needs no data files — read in ``__init__``, while NeMo has a restored file unpacked;
* the loss of the paper's section 5.5 (cross-entropy, class-weighted cross-entropy with ``auto``
  weights resolved from the training labels and written back into the config, soft Dice),
  normalised by whole-batch, data-parallel counts;
* an optionally frozen encoder.

Loaders and the gathering of evaluation rows come from
:class:`~biomegatron_nemo.models.finetuning.FineTuningTaskModel`.

A subclass provides ``training_labels(path)`` (the labels of a training file, for the label map),
``label_targets(dataset)`` (label ids the loss sees, for ``auto`` weights), its heads and data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from lightning.pytorch import Trainer
from omegaconf import DictConfig

from biomegatron_nemo.common.config import option, section
from biomegatron_nemo.data.token_classification import LabelMap, read_label_file
from biomegatron_nemo.encoder.heads import ClassificationHeadConfig
from biomegatron_nemo.encoder.losses import (
    ClassificationLossConfig,
    balanced_class_weights,
    cross_entropy_normalizer,
    dice_loss,
    summed_cross_entropy,
)
from biomegatron_nemo.models.config import BioMegatronModelConfig
from biomegatron_nemo.models.finetuning import FineTuningTaskModel
from biomegatron_nemo.parallel.state import data_parallel_normalizer

LABEL_MAP_KEY = "label_map_file"


@dataclass
class ClassificationModelConfig(BioMegatronModelConfig):
    """``model:`` keys of every classification model."""

    label_map: Optional[List[str]] = option(None, "the labels; null: every label of label_map_file or train_ds.file")
    label_map_file: Optional[str] = option(None, "one label a line; copied into the .nemo")
    freeze_encoder: bool = option(False, "train the head only")
    head: ClassificationHeadConfig = section(ClassificationHeadConfig, "the classifier")
    loss: ClassificationLossConfig = section(ClassificationLossConfig, "the training loss")


class ClassificationTaskModel(FineTuningTaskModel):
    """Label map, losses and evaluation gathering of the classification models."""

    config_class = ClassificationModelConfig
    #: the name of the loss in logs (``train_<name>_loss`` when there are several)
    loss_name = "classification"

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        self._label_map: Optional[LabelMap] = None
        self._class_weights: Optional[torch.Tensor] = None
        super().__init__(cfg=cfg, trainer=trainer)
        # Now, not on first use: a restored .nemo's label file is readable only while NeMo has
        # it unpacked, and a pipeline stage without the head would otherwise never read it.
        _ = self.label_map

    # ------------------------------------------------------------------ labels
    def training_labels(self, path: str) -> List[str]:
        """The labels of a training file, in the order the label map should list them."""
        raise NotImplementedError

    def expand_labels(self, labels: List[str]) -> List[str]:
        """Labels the model needs beyond those seen (NER: ``I-X`` continuations); default none."""
        return labels

    def make_label_map(self, labels: Sequence[str]) -> LabelMap:
        """The label map of these labels (tags: ``O`` first)."""
        return LabelMap(labels)

    @property
    def label_map(self) -> LabelMap:
        """Label ↔ id, from the config, its label file or the training file (built in ``__init__``)."""
        if self._label_map is None:
            self._label_map = self._setup_label_map()
        return self._label_map

    def _setup_label_map(self) -> LabelMap:
        config = self.config
        labels = list(config.label_map or [])
        label_file = config.label_map_file
        if label_file:
            # the user's file, or the copy inside the unpacked .nemo when restoring
            label_file = self.register_artifact(LABEL_MAP_KEY, label_file)
            from_file = read_label_file(label_file)
            if labels and self.make_label_map(labels).labels != self.make_label_map(from_file).labels:
                raise ValueError(f"label_map {labels} differs from {LABEL_MAP_KEY} {label_file}: {from_file}")
            labels = from_file
        if not labels:
            train_file = config.train_ds.file if config.train_ds is not None else None
            if not train_file:
                raise ValueError("label_map is not set and there is no train_ds.file to build it from")
            labels = self.training_labels(train_file)
        label_map = self.make_label_map(self.expand_labels(labels))
        if not label_file:
            label_file = self.register_artifact(LABEL_MAP_KEY, self._write_label_file(label_map))
        self.set_config("label_map", list(label_map.labels))
        self.set_config(LABEL_MAP_KEY, label_file)
        return label_map

    def _write_label_file(self, label_map: LabelMap) -> str:
        # Lives until the model does: save_to copies it into the .nemo whenever that happens.
        folder = tempfile.mkdtemp(prefix="biomegatron_labels_")
        weakref.finalize(self, shutil.rmtree, folder, True)
        path = os.path.join(folder, "label_map.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(label_map.labels) + "\n")
        return path

    def label_names(self) -> List[str]:
        return list(self.label_map.labels)

    def hf_label_config(self) -> Dict:
        """``id2label`` / ``label2id`` of an exported Hugging Face model."""
        labels = self.label_map.labels
        return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                "label2id": {lab: i for i, lab in enumerate(labels)}}

    # ------------------------------------------------------------------ modules
    def configure_model(self) -> None:
        first_build = not self._modules_built
        super().configure_model()
        if first_build and self.config.freeze_encoder:
            self.encoder.requires_grad_(False)

    # ------------------------------------------------------------------ losses
    def class_weights(self) -> Optional[torch.Tensor]:
        """Weights of weighted_cross_entropy (None for the other losses)."""
        loss = self.config.loss
        if loss.name != "weighted_cross_entropy":
            return None
        if self._class_weights is None:
            weights = loss.class_weights
            if weights in (None, "auto"):
                raise ValueError("loss.class_weights=auto is computed from the training data; set up "
                                 "train_ds (or give the weights as a list)")
            weights = list(weights)
            if len(weights) != len(self.label_map):
                raise ValueError(f"loss.class_weights has {len(weights)} values but there are "
                                 f"{len(self.label_map)} labels {self.label_map.labels}")
            self._class_weights = torch.tensor(weights, dtype=torch.float32)
        return self._class_weights.to(self.device)

    def resolve_auto_class_weights(self, targets: Sequence[int]) -> None:
        """``auto`` weights from the training targets (label ids, -100 ignored), stored back into
        the config so a restored or resumed model trains with the same weights."""
        loss = self.config.loss
        if loss.name != "weighted_cross_entropy" or loss.class_weights not in (None, "auto"):
            return
        counts = [0] * len(self.label_map)
        for label in targets:
            if label >= 0:
                counts[label] += 1
        self.set_config("loss.class_weights", [round(x, 6) for x in balanced_class_weights(counts)])
        self._class_weights = None

    def loss_normalizers(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        weights = self.class_weights()
        return {self.loss_name: data_parallel_normalizer(cross_entropy_normalizer(batch["labels"], weights))}

    def loss(self, output, batch: Dict[str, torch.Tensor],
             normalizers: Optional[Dict[str, float]] = None) -> Dict[str, torch.Tensor]:
        """The configured loss of ``output.logits`` (``[..., num_labels]``) against ``batch["labels"]``."""
        config = self.config.loss
        if config.name == "dice":
            loss = dice_loss(output.logits, batch["labels"], config.dice_smooth)
        else:
            normalizers = normalizers or self.loss_normalizers(batch)
            loss = summed_cross_entropy(output.logits, batch["labels"], self.class_weights()) / normalizers[self.loss_name]
        return {self.loss_name: loss}
