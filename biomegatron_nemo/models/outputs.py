"""What a model's ``forward`` returns: the head outputs of one batch, typed, as a value.

Every model's ``forward(input_ids, attention_mask, token_type_ids=None)`` returns one of these
(the pattern of Hugging Face's ``TokenClassifierOutput`` / ``MaskedLMOutput``); the loss is computed
from it separately (``model.loss(output, batch)``), so training, evaluation, ``predict``, ONNX and
Hugging Face export all run the same call. Each output class declares what the tools around it
need without looking at the model: its ``task`` (ONNX metadata) and the names its tensors have in
``transformers``' outputs (the export check).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Dict, Optional, Sequence, Tuple, TypeVar

import torch

T = TypeVar("T", bound="ModelOutput")


@dataclass
class ModelOutput:
    """Head outputs ``[b, ...]`` (``None`` where a model has no such head)."""

    #: the task, as ONNX metadata names it
    task: ClassVar[str] = ""
    #: field → the attribute names ``transformers``' output of the exported class may give it under
    hf_names: ClassVar[Dict[str, Tuple[str, ...]]] = {}
    #: field → the names of its leading axes that vary with the input (ONNX's dynamic axes)
    axes: ClassVar[Dict[str, Tuple[str, ...]]] = {}

    @classmethod
    def per_position(cls, field: str) -> bool:
        """Whether ``field`` has a value per token (``[b, s, ...]``), which padding positions do not
        define: a packed model computes none there, so comparisons read real tokens only."""
        return "sequence" in cls.axes.get(field, ())

    def tensors(self) -> Dict[str, torch.Tensor]:
        """The output tensors by field name, in field order (those that are set)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)}

    def export_tensors(self) -> Dict[str, torch.Tensor]:
        """What a server reads (ONNX outputs); by default every tensor."""
        return self.tensors()

    def detach(self: T) -> T:
        return dataclasses.replace(self, **{k: v.detach() for k, v in self.tensors().items()})

    @classmethod
    def concat(cls: type, parts: Sequence["ModelOutput"]) -> "ModelOutput":
        """One output for the microbatches of one batch: tensors concatenated on dim 0."""
        first = parts[0]
        return dataclasses.replace(first, **{k: torch.cat([getattr(p, k) for p in parts], dim=0)
                                             for k in first.tensors()})


@dataclass
class TokenClassifierOutput(ModelOutput):
    """NER: label logits per position ``[b, s, num_labels]``."""

    task: ClassVar[str] = "token_classification"
    hf_names: ClassVar[Dict[str, Tuple[str, ...]]] = {"logits": ("logits",)}
    axes: ClassVar[Dict[str, Tuple[str, ...]]] = {"logits": ("batch", "sequence")}
    logits: Optional[torch.Tensor] = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    """Relation extraction / sentence classification: class logits ``[b, num_labels]``."""

    task: ClassVar[str] = "sequence_classification"
    hf_names: ClassVar[Dict[str, Tuple[str, ...]]] = {"logits": ("logits",)}
    axes: ClassVar[Dict[str, Tuple[str, ...]]] = {"logits": ("batch",)}
    logits: Optional[torch.Tensor] = None


@dataclass
class SpanQAOutput(ModelOutput):
    """Extractive QA: start and end logits ``[b, s]`` (fp32; padding positions at -10000)."""

    task: ClassVar[str] = "question_answering"
    hf_names: ClassVar[Dict[str, Tuple[str, ...]]] = {"start_logits": ("start_logits",),
                                                      "end_logits": ("end_logits",)}
    axes: ClassVar[Dict[str, Tuple[str, ...]]] = {"start_logits": ("batch", "sequence"),
                                                  "end_logits": ("batch", "sequence")}
    start_logits: Optional[torch.Tensor] = None
    end_logits: Optional[torch.Tensor] = None


@dataclass
class MaskedLMOutput(ModelOutput):
    """Pretraining: masked-LM logits over Megatron's padded vocabulary (this tensor-parallel rank's
    share), ``[b, s, vocab]``, or ``[n, 1, vocab]`` for the ``n`` positions ``forward`` was asked to
    predict; with the sentence-order head, its logits ``[b, 2]``.

    The masked-LM loss consumes ``logits``: megatron-core's vocab-parallel cross-entropy computes in
    their memory (a copy would cost a ``[b, s, vocab]`` tensor a step). Read them before the loss."""

    task: ClassVar[str] = "masked_lm"
    hf_names: ClassVar[Dict[str, Tuple[str, ...]]] = {"logits": ("logits", "prediction_logits"),
                                                      "sentence_order_logits": ("seq_relationship_logits",)}
    axes: ClassVar[Dict[str, Tuple[str, ...]]] = {"logits": ("batch", "sequence"), "sentence_order_logits": ("batch",)}
    logits: Optional[torch.Tensor] = None
    sentence_order_logits: Optional[torch.Tensor] = None
    #: the tokenizer's size: the columns past it are Megatron's padding (masked to -10000)
    vocab_size: Optional[int] = None

    def export_tensors(self) -> Dict[str, torch.Tensor]:
        """One logit per tokenizer id (the padding columns left out)."""
        out = self.tensors()
        out["logits"] = out["logits"][..., : self.vocab_size]
        return out
