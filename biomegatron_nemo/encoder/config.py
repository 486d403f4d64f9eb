"""Encoder sizes: the paper's presets, small presets for CPU, and the megatron-core config.

:class:`EncoderConfig` is the one place that says how big a Megatron-BERT encoder is. It owns
the presets of the BioMegatron paper's Table 1 (``345m``, ``800m``, ``1.2b``), the small ones
used by tests and CPU try-outs, Megatron's vocabulary padding rule, the analytic parameter
count, and the translation into megatron-core's :class:`TransformerConfig`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from biomegatron_nemo.common.config import Schema, option, to_plain
from biomegatron_nemo.common.errors import ConfigError

__all__ = ["ARCHITECTURE_KEYS", "EncoderConfig", "PRESETS", "padded_vocab_size"]

# name -> (num_layers, hidden_size, num_attention_heads). FFN is 4 x hidden everywhere, as in
# the paper's Table 1 and in Megatron-LM's BERT.
PRESETS: Dict[str, Dict[str, int]] = {
    # Small presets for tests and CPU runs.
    "micro": dict(num_layers=2, hidden_size=64, num_attention_heads=4),
    "tiny": dict(num_layers=4, hidden_size=256, num_attention_heads=4),
    "small": dict(num_layers=6, hidden_size=512, num_attention_heads=8),
    # BERT-base geometry, for CPU benchmarks against Hugging Face.
    "base": dict(num_layers=12, hidden_size=768, num_attention_heads=12),
    # BioMegatron, Table 1.
    "345m": dict(num_layers=24, hidden_size=1024, num_attention_heads=16),
    "800m": dict(num_layers=36, hidden_size=1280, num_attention_heads=20),
    "1.2b": dict(num_layers=24, hidden_size=2048, num_attention_heads=16),
}


def padded_vocab_size(vocab_size: int, make_divisible_by: int = 128, tensor_parallel_size: int = 1) -> int:
    """Megatron's rule: pad the vocabulary to a multiple of ``make_divisible_by * TP``.

    Padding keeps every tensor-parallel shard of the embedding the same, aligned size.
    """
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    multiple = make_divisible_by * tensor_parallel_size
    return ((vocab_size + multiple - 1) // multiple) * multiple


#: Used when neither a preset nor the sizes are given (nor a pretrained checkpoint, which decides them).
DEFAULT_PRESET = "tiny"
#: The other architecture keys when neither the user nor a pretrained checkpoint sets them. They
#: default to null in the schema so that a key the user set can be told from one left alone.
ARCHITECTURE_DEFAULTS: Dict[str, Any] = {"max_position_embeddings": 512, "num_tokentypes": 2,
                                         "layernorm_epsilon": 1e-5, "layernorm_order": "pre"}
#: The keys that describe the trained network, which a pretrained checkpoint decides (dropout, the
#: layer implementation and recompute stay the user's choice).
ARCHITECTURE_KEYS = ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size",
                     *ARCHITECTURE_DEFAULTS)
#: BERT's WordPiece vocabulary size: the vocabulary of a bare encoder built without a tokenizer.
BERT_VOCAB_SIZE = 30522
#: the layer implementations (:mod:`~biomegatron_nemo.encoder.specs` builds them)
LAYER_SPECS = ("auto", "te", "local", "portable")
RECOMPUTE_GRANULARITIES = ("none", "full", "selective")


@dataclass
class EncoderConfig(Schema):
    """Size and regularisation of a Megatron-BERT (pre-LayerNorm) encoder — the ``encoder:`` section.

    ``preset`` supplies ``num_layers``/``hidden_size``/``num_attention_heads``; any of them given
    explicitly wins. After construction every size is concrete. ``vocab_size`` is the tokenizer's
    size; the embedding holds ``padded_vocab_size(tp)`` rows.
    """

    preset: Optional[str] = option(None, f"size preset; null: {DEFAULT_PRESET} unless the sizes are given",
                                   choices=tuple(PRESETS))
    num_layers: Optional[int] = option(None, "transformer layers (default: the preset's)")
    hidden_size: Optional[int] = option(None, "hidden size (default: the preset's)")
    num_attention_heads: Optional[int] = option(None, "attention heads (default: the preset's)")
    ffn_hidden_size: Optional[int] = option(None, "MLP inner size; null: 4 x hidden_size")
    vocab_size: Optional[int] = option(None, "vocabulary size; models take their tokenizer's "
                                             f"(a bare encoder: {BERT_VOCAB_SIZE:,}, BERT's)")
    max_position_embeddings: Optional[int] = option(None, "longest input in tokens (learned absolute positions); "
                                                          f"null: {ARCHITECTURE_DEFAULTS['max_position_embeddings']}")
    num_tokentypes: Optional[int] = option(None, "token-type (segment) embeddings, 0: none; "
                                                 f"null: {ARCHITECTURE_DEFAULTS['num_tokentypes']}")
    layernorm_epsilon: Optional[float] = option(None, "LayerNorm epsilon; null: Megatron's "
                                                      f"{ARCHITECTURE_DEFAULTS['layernorm_epsilon']:g} (HF BERT: 1e-12)")
    hidden_dropout: float = option(0.1, "dropout after attention and MLP")
    attention_dropout: float = option(0.1, "dropout on attention probabilities")
    init_method_std: float = option(0.02, "standard deviation of the normal weight initialisation")
    make_vocab_size_divisible_by: int = option(128, "vocabulary rows are padded to a multiple of this x TP")
    layer_spec: str = option("auto", "layer implementation: auto = te on CUDA with Transformer Engine, "
                                     "else portable (SDPA attention, CPU and GPU)", choices=LAYER_SPECS)
    packed_sequences: bool = option(False, "run each batch's real tokens only, example after example "
                                           "(megatron-core's thd layout: attention within each example, "
                                           "positions restarting), so nothing is computed for padding; "
                                           "outputs and losses equal the padded run's. A batch under 5% "
                                           "padding runs padded (docs/training_speed.md)")
    compile: bool = option(False, "training: torch.compile the transformer layers (inductor, dynamic shapes). The "
                                  "first steps pay the compilation; measured in docs/training_speed.md")
    layernorm_order: Optional[str] = option(None, "pre: Megatron-BERT (LayerNorm before attention and MLP, a "
                                                  "final LayerNorm); post: the original BERT (LayerNorm after each "
                                                  "residual add and on the embeddings) — BioBERT, PubMedBERT; null: "
                                                  f"{ARCHITECTURE_DEFAULTS['layernorm_order']}",
                                            choices=("pre", "post"))
    recompute_granularity: str = option("none", "activation recompute: full = keep each chunk of layers' "
                                                "input and rerun the chunk in the backward (CPU and GPU); "
                                                "selective = megatron-core's core-attention recompute (CUDA)",
                                        choices=RECOMPUTE_GRANULARITIES)
    recompute_method: str = option("uniform", "full recompute: uniform = every chunk of recompute_num_layers "
                                              "layers is rerun; block = only the first recompute_num_layers "
                                              "layers of each pipeline stage", choices=("uniform", "block"))
    recompute_num_layers: int = option(1, "full recompute: layers per chunk (uniform) or rerun layers (block)")
    extra: Dict[str, Any] = option(doc="more megatron-core TransformerConfig fields, passed through",
                                   factory=dict)

    def __post_init__(self) -> None:
        preset = self.preset or DEFAULT_PRESET
        if preset not in PRESETS:
            raise ConfigError(f"unknown encoder preset {preset!r}; expected one of {sorted(PRESETS)}", key="preset")
        for name, value in PRESETS[preset].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.ffn_hidden_size is None:
            self.ffn_hidden_size = 4 * self.hidden_size
        for name, value in ARCHITECTURE_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.vocab_size is None:
            self.vocab_size = BERT_VOCAB_SIZE
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "EncoderConfig":
        """A preset by name (``tiny``, ``345m``, ...), with any field overridden."""
        if name not in PRESETS:
            raise ConfigError(f"unknown encoder preset {name!r}; expected one of {sorted(PRESETS)}", key="preset")
        return cls(preset=name, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "EncoderConfig":
        """From a plain or OmegaConf mapping (the ``encoder:`` section).

        Unknown keys are an error (a misspelt ``hiden_size`` must not be silently ignored).
        """
        values = to_plain(cfg)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown encoder config keys {unknown}; known keys are {sorted(known)}",
                              key=unknown[0])
        return cls(**{k: v for k, v in values.items() if v is not None})

    # ------------------------------------------------------------------ checks
    def validate(self, tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1) -> None:
        """Raise :class:`ConfigError` (a ValueError) naming the inconsistent sizes."""
        for name in ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size",
                     "vocab_size", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"must be positive, got {getattr(self, name)}", key=name)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                              f"{self.num_attention_heads}", key="num_attention_heads")
        if tensor_parallel_size < 1 or pipeline_parallel_size < 1:
            raise ValueError("tensor and pipeline parallel sizes must be >= 1")
        if self.num_attention_heads % tensor_parallel_size:
            raise ConfigError(f"num_attention_heads {self.num_attention_heads} is not divisible by "
                              f"tensor_model_parallel_size {tensor_parallel_size}", key="num_attention_heads")
        if self.hidden_size % tensor_parallel_size or self.ffn_hidden_size % tensor_parallel_size:
            raise ConfigError(f"hidden_size {self.hidden_size} / ffn_hidden_size {self.ffn_hidden_size} not "
                              f"divisible by tensor_model_parallel_size {tensor_parallel_size}", key="hidden_size")
        if self.num_layers % pipeline_parallel_size:
            raise ConfigError(f"num_layers {self.num_layers} is not divisible by pipeline_model_parallel_size "
                              f"{pipeline_parallel_size}", key="num_layers")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"must be in [0, 1), got {getattr(self, name)}", key=name)
        if self.packed_sequences and pipeline_parallel_size > 1:
            raise ConfigError("pipeline stages exchange fixed [s, b, h] shapes; packed sequences need "
                              "pipeline_model_parallel_size 1", key="packed_sequences")
        if self.packed_sequences and self.layer_spec == "local":
            raise ConfigError("megatron-core's local attention takes no packed sequences; use layer_spec "
                              "auto, te or portable", key="packed_sequences")
        if self.packed_sequences and self.extra.get("sequence_parallel"):
            raise ConfigError("sequence parallelism splits the padded sequence; packed sequences cannot "
                              "be combined with it", key="packed_sequences")
        layers_per_stage = self.num_layers // pipeline_parallel_size
        if self.recompute_granularity == "full" and not 1 <= self.recompute_num_layers <= layers_per_stage:
            raise ConfigError(f"must be in [1, {layers_per_stage}] (the layers of a pipeline stage), got "
                              f"{self.recompute_num_layers}", key="recompute_num_layers")

    # ------------------------------------------------------------------ derived sizes
    def padded_vocab_size(self, tensor_parallel_size: int = 1) -> int:
        return padded_vocab_size(self.vocab_size, self.make_vocab_size_divisible_by, tensor_parallel_size)

    def num_parameters(self, tensor_parallel_size: int = 1, include_mlm_head: bool = True) -> int:
        """Analytic parameter count of encoder (+ MLM head, output weight tied to embeddings).

        Counts Table 1's architecture: embeddings (word, position, token type), per layer
        two LayerNorms, QKV + output projection, a 4h MLP (all with biases), the final
        LayerNorm, and the MLM head's dense + LayerNorm + output bias.
        """
        h, f, L = self.hidden_size, self.ffn_hidden_size, self.num_layers
        v = self.padded_vocab_size(tensor_parallel_size)
        embeddings = v * h + self.max_position_embeddings * h + self.num_tokentypes * h
        per_layer = (2 * h) + (3 * h * h + 3 * h) + (h * h + h) + (2 * h) + (h * f + f) + (f * h + h)
        total = embeddings + L * per_layer + 2 * h
        if include_mlm_head:
            total += (h * h + h) + 2 * h + v
        return total

    # ------------------------------------------------------------------ megatron-core
    def transformer_config(self, tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1,
                           params_dtype=None, use_cpu_initialization: bool = True, **overrides: Any):
        """The megatron-core ``TransformerConfig`` for this encoder and parallel layout."""
        import torch
        from megatron.core.transformer.transformer_config import TransformerConfig

        self.validate(tensor_parallel_size, pipeline_parallel_size)
        values: Dict[str, Any] = dict(
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            ffn_hidden_size=self.ffn_hidden_size,
            layernorm_epsilon=self.layernorm_epsilon,
            hidden_dropout=self.hidden_dropout,
            attention_dropout=self.attention_dropout,
            init_method_std=self.init_method_std,
            activation_func=torch.nn.functional.gelu,
            add_bias_linear=True,
            gated_linear_unit=False,
            normalization="LayerNorm",
            tensor_model_parallel_size=tensor_parallel_size,
            pipeline_model_parallel_size=pipeline_parallel_size,
            # CPU initialisation builds each full master weight from the seed and splits it,
            # so a TP=2 model holds exactly the shards of the TP=1 model (parity by design).
            use_cpu_initialization=use_cpu_initialization,
            # Fusions that need CUDA kernels or apex are off; TE specs bring their own.
            bias_activation_fusion=False,
            masked_softmax_fusion=False,
            bias_dropout_fusion=False,
            apply_rope_fusion=False,
            persist_layer_norm=False,
            gradient_accumulation_fusion=False,
            params_dtype=params_dtype or torch.float32,
            # dtype of the activations sent between pipeline stages
            pipeline_dtype=params_dtype or torch.float32,
        )
        if self.recompute_granularity == "selective" and not torch.cuda.is_available():
            raise ConfigError("selective recompute is megatron-core's, which saves CUDA RNG states: CUDA only; "
                              "use recompute_granularity=full (any device)", key="recompute_granularity")
        if self.recompute_granularity == "full":
            values.update(recompute_granularity="full", recompute_method=self.recompute_method,
                          recompute_num_layers=self.recompute_num_layers)
        elif self.recompute_granularity == "selective":
            values.update(recompute_granularity="selective")
        values.update(self.extra)
        values.update(overrides)
        return TransformerConfig(**values)
