"""Layer specs: which modules make up a Megatron-BERT transformer layer, chosen by backend.

Specs are data (megatron-core ``ModuleSpec``), as in ``megatron.core.models.bert.bert_layer_specs``:

* ``te`` — Transformer Engine modules (fused LayerNorm+linear, fused attention, fp8); GPU only.
* ``local`` — megatron-core's own modules, including its ``DotProductAttention`` (CUDA only,
  it allocates from a CUDA memory buffer).
* ``portable`` — megatron-core's parallel linears and LayerNorm with
  :class:`~biomegatron_nemo.encoder.attention.PortableDotProductAttention`; runs on CPU and GPU.

``local`` and ``portable`` use megatron-core's linears through :mod:`.linear`, which also run
under CPU autocast (bf16-mixed training and inference on CPU).
* ``auto`` — ``te`` when Transformer Engine imports and CUDA is present, else ``portable``.

All are pre-LayerNorm layers (Megatron-BERT's residual ordering): LayerNorm → attention →
residual add, LayerNorm → MLP → residual add.
"""

from __future__ import annotations

import copy

import torch
from megatron.core.transformer.spec_utils import ModuleSpec

from .attention import PortableDotProductAttention
from .config import LAYER_SPECS
from .linear import AutocastColumnParallelLinear, AutocastRowParallelLinear


def transformer_engine_available() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except Exception:  # TE raises more than ImportError when its CUDA libraries are missing
        return False
    return True


def resolve_backend(backend: str) -> str:
    """``auto`` → ``te`` on CUDA with Transformer Engine, else ``portable``."""
    if backend not in LAYER_SPECS:
        raise ValueError(f"layer spec backend must be one of {LAYER_SPECS}, got {backend!r}")
    if backend == "auto":
        return "te" if torch.cuda.is_available() and transformer_engine_available() else "portable"
    if backend == "te" and not (torch.cuda.is_available() and transformer_engine_available()):
        raise ValueError("layer_spec 'te' needs CUDA and transformer-engine (pip install '.[gpu]')")
    if backend == "local" and not torch.cuda.is_available():
        raise ValueError("layer_spec 'local' uses megatron-core's CUDA-only attention; use 'portable' on CPU")
    return backend


def get_layer_spec(backend: str = "auto") -> ModuleSpec:
    """The transformer-layer ``ModuleSpec`` for a backend (a fresh copy each call)."""
    backend = resolve_backend(backend)
    import warnings

    with warnings.catch_warnings():  # "Apex is not installed": torch LayerNorm is what we want
        warnings.simplefilter("ignore")
        from megatron.core.models.bert import bert_layer_specs
    if backend == "te":
        return bert_layer_specs.get_bert_layer_with_transformer_engine_spec()
    spec = copy.deepcopy(bert_layer_specs.bert_layer_local_spec)
    if backend == "portable":
        spec.submodules.self_attention.submodules.core_attention = PortableDotProductAttention
    # megatron-core's linears, able to run under CPU autocast as well (encoder/linear.py)
    attention, mlp = spec.submodules.self_attention.submodules, spec.submodules.mlp.submodules
    attention.linear_qkv = mlp.linear_fc1 = AutocastColumnParallelLinear
    attention.linear_proj = mlp.linear_fc2 = AutocastRowParallelLinear
    return spec
