"""Task heads on top of the encoder's ``[b, s, h]`` hidden states.

* :class:`MaskedLMHead` — megatron-core's ``BertLMHead`` (dense → GELU → LayerNorm) and an
  output projection tied to the word embeddings, producing vocab-parallel logits; its loss is
  megatron-core's vocab-parallel cross-entropy, so the full-vocabulary logits never gather.
* :class:`SentenceOrderHead` — megatron-core ``Pooler`` ([CLS] → dense → tanh) + 2-way linear.
* :class:`TokenClassificationHead` — MLP over every position (NER).
* :class:`SequenceClassificationHead` — MLP over [CLS] or the pooler output (relation extraction).
* :class:`SpanQAHead` — start/end logits for extractive QA.

The classification heads are small and replicated on every tensor-parallel rank (their inputs
are identical there, so their gradients stay identical without communication).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.transformer_config import TransformerConfig

with warnings.catch_warnings():  # "Apex is not installed": torch LayerNorm is what we want
    warnings.simplefilter("ignore")
    from megatron.core.models.bert.bert_lm_head import BertLMHead
    from megatron.core.models.bert.pooler import Pooler

from biomegatron_nemo.common.config import Schema, option
from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.data.collate import IGNORE_INDEX
from biomegatron_nemo.encoder.linear import AutocastColumnParallelLinear

ACTIVATIONS = {"gelu": torch.nn.GELU, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
#: how a sequence classifier reads the encoder: the [CLS] vector, or it through a tanh pooler
POOLINGS = ("cls", "pooler")


@dataclass
class ClassificationHeadConfig(Schema):
    """The ``head:`` section of the classification models: an MLP on the encoder's output."""

    num_layers: int = option(2, "fully connected layers")
    hidden_size: Optional[int] = option(None, "size of the hidden layers; null: the encoder's hidden size")
    dropout: float = option(0.1, "dropout before every layer")
    activation: str = option("gelu", "activation between layers", choices=tuple(ACTIVATIONS))

    def check(self) -> None:
        if self.num_layers < 1:
            raise ConfigError(f"must be >= 1, got {self.num_layers}", key="num_layers")
        if self.hidden_size is not None and self.hidden_size < 1:
            raise ConfigError(f"must be >= 1, got {self.hidden_size}", key="hidden_size")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.dropout}", key="dropout")


class MaskedLMHead(torch.nn.Module):
    """Masked-LM head with output weights tied to the (vocab-parallel) word embeddings.

    On a pipeline's last stage that does not hold the embeddings, ``own_output_weight=True``
    gives the head its own copy of the word-embedding matrix, kept equal to the first stage's
    by :mod:`biomegatron_nemo.parallel.pipeline` (the megatron-core arrangement).
    """

    def __init__(self, config: TransformerConfig, padded_vocab_size: int, vocab_size: int,
                 own_output_weight: bool = False):
        super().__init__()
        from megatron.core import parallel_state

        # Rows past the tokenizer's vocabulary exist only so TP shards are equal (Megatron's
        # padding rule). Their logits are masked out, so outputs and losses do not depend on the
        # padding — and hence not on the tensor-parallel size a checkpoint was saved with.
        tp = parallel_state.get_tensor_model_parallel_world_size()
        local = padded_vocab_size // tp
        first_id = parallel_state.get_tensor_model_parallel_rank() * local
        is_padding = torch.arange(first_id, first_id + local) >= vocab_size
        self.register_buffer("vocab_padding", is_padding, persistent=False)
        self.lm_head = BertLMHead(config.hidden_size, config)
        self.output_layer = AutocastColumnParallelLinear(
            config.hidden_size,
            padded_vocab_size,
            config=config,
            init_method=config.init_method,
            bias=True,
            skip_bias_add=False,
            gather_output=False,
            skip_weight_param_allocation=not own_output_weight,
        )
        if own_output_weight:
            # megatron-core's marker for a copy of the tied embeddings: counted once in norms
            self.output_layer.weight.shared = True

    def forward(self, hidden_states: torch.Tensor, output_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[b, s, h]`` → vocab-parallel logits ``[b, s, padded_vocab / TP]``."""
        hidden = self.lm_head(hidden_states)
        logits, _ = self.output_layer(hidden, weight=output_weight)
        return logits.masked_fill(self.vocab_padding, -10000.0)

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor, loss_mask: Optional[torch.Tensor] = None,
             normalizer: Optional[float] = None) -> torch.Tensor:
        """Cross-entropy summed over positions where ``loss_mask`` is 1 (default: labels != -100),
        divided by ``normalizer`` (default: the number of those positions).

        ``logits`` are vocab-parallel; megatron-core's cross-entropy all-reduces the softmax
        statistics across the tensor-parallel group instead of gathering the logits, and works in
        their memory: fp32 ``logits`` hold ``exp(logit - max)`` afterwards (no copy of a
        ``[b, s, vocab]`` tensor is made).
        """
        if loss_mask is None:
            loss_mask = labels != IGNORE_INDEX
        loss_mask = loss_mask.float()
        per_token = tensor_parallel.vocab_parallel_cross_entropy(logits.float(), labels.clamp(min=0))
        if normalizer is None:
            normalizer = loss_mask.sum().clamp(min=1.0)
        return (per_token * loss_mask).sum() / normalizer


class SentenceOrderHead(torch.nn.Module):
    """Binary (next-sentence / sentence-order) head: pooler over [CLS], then 2 logits."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.pooler = Pooler(config.hidden_size, config.init_method, config, config.sequence_parallel)
        self.classifier = torch.nn.Linear(config.hidden_size, 2)
        config.init_method(self.classifier.weight)
        torch.nn.init.zeros_(self.classifier.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # Pooler reads position 0 of an [s, b, h] tensor.
        pooled = self.pooler(hidden_states.transpose(0, 1), 0)
        return self.classifier(pooled)


class _MLP(torch.nn.Sequential):
    """``config.num_layers`` linear layers; hidden ones (``config.hidden_size`` wide, default the
    input's) are followed by activation and dropout; dropout comes first."""

    def __init__(self, hidden_size: int, out_size: int, config: ClassificationHeadConfig):
        inner = config.hidden_size or hidden_size
        layers = [torch.nn.Dropout(config.dropout)]
        width = hidden_size
        for _ in range(config.num_layers - 1):
            layers += [torch.nn.Linear(width, inner), ACTIVATIONS[config.activation](), torch.nn.Dropout(config.dropout)]
            width = inner
        layers.append(torch.nn.Linear(width, out_size))
        super().__init__(*layers)
        self.num_layers = config.num_layers

    def single_linear(self, state: Dict[str, torch.Tensor], prefix: str, hf_name: str) -> Dict[str, torch.Tensor]:
        """This MLP's weights (``state`` layout-free, under ``prefix``) as one linear layer named
        ``hf_name`` — what a Hugging Face task head is; a deeper MLP has no counterpart there."""
        if self.num_layers != 1:
            raise ValueError(f"Hugging Face's task heads are one linear layer; this model's head has {self.num_layers} "
                             "(train with head.num_layers=1 to export it)")
        last = f"{prefix}.{len(self) - 1}"
        return {f"{hf_name}.weight": state[f"{last}.weight"], f"{hf_name}.bias": state[f"{last}.bias"]}


class TokenClassificationHead(torch.nn.Module):
    """Per-position label logits ``[b, s, num_labels]`` (NER); exports as ``BertForTokenClassification``'s
    ``classifier``."""

    def __init__(self, hidden_size: int, num_labels: int, config: ClassificationHeadConfig):
        super().__init__()
        self.mlp = _MLP(hidden_size, num_labels, config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.mlp(hidden_states)

    def hf_tensors(self, state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
        """This head's tensors of the layout-free ``state`` (under ``prefix``) by their HF names."""
        return self.mlp.single_linear(state, f"{prefix}.mlp", "classifier")


class SequenceClassificationHead(torch.nn.Module):
    """Sequence label logits ``[b, num_classes]`` from [CLS] (``pooling='cls'``) or a tanh pooler;
    exports (with the pooler) as ``BertForSequenceClassification``'s pooler and ``classifier``."""

    def __init__(self, hidden_size: int, num_classes: int, config: ClassificationHeadConfig, pooling: str = "cls"):
        super().__init__()
        self.pooler = torch.nn.Linear(hidden_size, hidden_size) if pooling == "pooler" else None
        self.mlp = _MLP(hidden_size, num_classes, config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        first = hidden_states[:, 0]
        if self.pooler is not None:
            first = torch.tanh(self.pooler(first))
        return self.mlp(first)

    def hf_tensors(self, state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
        if self.pooler is None:
            raise ValueError("Hugging Face's sequence classifier reads a tanh pooler: export needs pooling=pooler")
        return {"bert.pooler.dense.weight": state[f"{prefix}.pooler.weight"],
                "bert.pooler.dense.bias": state[f"{prefix}.pooler.bias"],
                **self.mlp.single_linear(state, f"{prefix}.mlp", "classifier")}


class SpanQAHead(torch.nn.Module):
    """Start and end logits ``[b, s]`` each, for extractive question answering: an MLP over every
    position with two outputs (the paper's QA head: 2 layers, dropout 0.1; one layer is BERT's);
    exports as ``BertForQuestionAnswering``'s ``qa_outputs``."""

    def __init__(self, hidden_size: int, config: ClassificationHeadConfig):
        super().__init__()
        self.mlp = _MLP(hidden_size, 2, config)

    def forward(self, hidden_states: torch.Tensor):
        start, end = self.mlp(hidden_states).unbind(dim=-1)
        return start, end

    def hf_tensors(self, state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
        return self.mlp.single_linear(state, f"{prefix}.mlp", "qa_outputs")
