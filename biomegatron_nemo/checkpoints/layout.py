"""Layout-free state dicts: the same checkpoint whatever the tensor / pipeline parallel layout.

A model at TP=2 holds half of every partitioned weight per rank; at PP=2 each rank holds half
of the layers, numbered from 0 on every stage. NeMo's default ``save_to`` writes rank 0's
state dict only, which silently drops the rest. Here:

* :func:`gather_layout_free_state_dict` (collective over all ranks) concatenates every
  tensor-parallel shard along its ``partition_dim`` (megatron-core marks each partitioned
  parameter with ``tensor_model_parallel`` / ``partition_dim``), trims vocabulary padding so the
  checkpoint holds exactly ``vocab_size`` rows (padding depends on TP), renumbers transformer
  layers globally, and merges the pipeline stages.
* :func:`shard_layout_free_state_dict` does the reverse for this rank: picks its layers,
  slices its shard, and pads the vocabulary rows to the local padded size.

megatron-core's ``dist_checkpointing`` also reshards, but its save path calls CUDA on 0.16.1
(see KNOWN-TRAPS.md); a plain ``torch.save``-able dict also fits NeMo's ``.nemo`` format and
Lightning's checkpoints unchanged.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Iterable, Mapping, Optional

import torch
import torch.distributed as dist
from megatron.core import parallel_state

LAYER_KEY = re.compile(r"^(?P<prefix>.*?\blayers\.)(?P<index>\d+)(?P<suffix>\..*)$")


def _layer_numbering(module: torch.nn.Module) -> Dict[str, str]:
    """Local layer prefix → global layer prefix, e.g. ``encoder.encoder.layers.0.`` →
    ``encoder.encoder.layers.12.`` on the second of two pipeline stages of a 24-layer model.

    megatron-core gives every ``TransformerLayer`` its global, 1-based ``layer_number``
    (stage offset included), while the stage's ``ModuleList`` counts from 0.
    """
    from megatron.core.transformer.transformer_block import TransformerBlock

    renames = {}
    for name, block in module.named_modules():
        if isinstance(block, TransformerBlock):
            prefix = f"{name}.layers." if name else "layers."
            for index, layer in enumerate(block.layers):
                renames[f"{prefix}{index}."] = f"{prefix}{layer.layer_number - 1}."
    return renames


def _renumber(key: str, renames: Mapping[str, str]) -> str:
    match = LAYER_KEY.match(key)
    if not match:
        return key
    local = f"{match['prefix']}{match['index']}."
    return renames.get(local, local) + match["suffix"][1:]


def _partition_info(module: torch.nn.Module) -> Dict[str, int]:
    """State-dict key → partition dim, for every tensor-parallel-partitioned parameter."""
    info = {}
    for name, param in module.named_parameters():
        if getattr(param, "tensor_model_parallel", False):
            info[name] = int(getattr(param, "partition_dim", 0))
    return info


def tensor_shapes(module: torch.nn.Module) -> Dict[str, torch.Size]:
    """State-dict key → shape for the entries that are tensors."""
    return {k: v.shape for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


def gather_layout_free_state_dict(
    module: torch.nn.Module,
    vocab_keys: Iterable[str] = (),
    vocab_size: Optional[int] = None,
    drop_keys: Iterable[str] = (),
) -> Dict[str, torch.Tensor]:
    """Full, layout-independent state dict. Collective: every rank must call it.

    ``vocab_keys`` name tensors whose dim 0 is the (padded) vocabulary; they are trimmed to
    ``vocab_size`` rows. ``drop_keys`` are local duplicates (e.g. a last pipeline stage's copy of
    the tied word embeddings) left out of the checkpoint.
    """
    drop_keys = set(drop_keys)
    # megatron-core linears report ``_extra_state`` as None (it matters only for TE's fp8
    # metadata); only tensors describe the weights.
    local = {k: v.detach().cpu() for k, v in module.state_dict().items()
             if k not in drop_keys and isinstance(v, torch.Tensor)}
    return gather_named_tensors(module, local, vocab_keys, vocab_size)


def gather_named_tensors(
    module: torch.nn.Module,
    local: Mapping[str, torch.Tensor],
    vocab_keys: Iterable[str] = (),
    vocab_size: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Layout-free copies of tensors shaped and named like ``module``'s local state-dict entries
    (its weights, or optimizer moments keyed by parameter name). Collective: every rank calls it
    with the same keys as the other ranks of its pipeline stage."""
    vocab_keys = set(vocab_keys)
    partitioned = _partition_info(module)
    tp = parallel_state.get_tensor_model_parallel_world_size() if parallel_state.model_parallel_is_initialized() else 1
    full: Dict[str, torch.Tensor] = {}
    for key, tensor in local.items():
        tensor = tensor.detach().cpu()
        if key in partitioned and tp > 1:
            group = parallel_state.get_tensor_model_parallel_group()
            shards = [torch.empty_like(tensor) for _ in range(tp)]
            dist.all_gather(shards, tensor.contiguous(), group=group)
            tensor = torch.cat(shards, dim=partitioned[key])
        if key in vocab_keys and vocab_size is not None:
            tensor = tensor[:vocab_size].clone()
        full[key] = tensor
    return merge_pipeline_stages(module, full)


def merge_pipeline_stages(module: torch.nn.Module, named: Mapping[str, object]) -> Dict[str, object]:
    """``named`` (local keys) under global layer numbers, merged over the pipeline stages.
    Collective over the pipeline group."""
    renames = _layer_numbering(module)
    full = {_renumber(k, renames): v for k, v in named.items()}
    if parallel_state.model_parallel_is_initialized() and parallel_state.get_pipeline_model_parallel_world_size() > 1:
        stages = [None] * parallel_state.get_pipeline_model_parallel_world_size()
        dist.all_gather_object(stages, full, group=parallel_state.get_pipeline_model_parallel_group())
        merged: Dict[str, object] = {}
        for stage in stages:
            merged.update(stage)
        full = merged
    return full


def global_names(module: torch.nn.Module) -> Callable[[str], str]:
    """local state-dict key → its layout-free name (layers numbered over all pipeline stages); the
    module's layer numbering is read once."""
    renames = _layer_numbering(module)
    return lambda key: _renumber(key, renames)


def shard_layout_free_state_dict(
    module: torch.nn.Module,
    full: Mapping[str, torch.Tensor],
    vocab_keys: Iterable[str] = (),
    aliases: Optional[Mapping[str, str]] = None,
) -> Dict[str, torch.Tensor]:
    """This rank's state dict cut from a layout-free one (the reverse of the gather).

    ``aliases`` maps a local key to the layout-free key it is filled from (a last stage's copy
    of the tied word embeddings is filled from the embedding). Keys the layout-free dict lacks
    are left out, so ``load_state_dict(strict=...)`` reports them by name.
    """
    return shard_named_tensors(module, full, tensor_shapes(module), vocab_keys, aliases)


def shard_named_tensors(
    module: torch.nn.Module,
    full: Mapping[str, torch.Tensor],
    local_shapes: Mapping[str, torch.Size],
    vocab_keys: Iterable[str] = (),
    aliases: Optional[Mapping[str, str]] = None,
) -> Dict[str, torch.Tensor]:
    """This rank's pieces of layout-free tensors, for the local keys and shapes in ``local_shapes``
    (the module's state dict, or its parameters for optimizer moments)."""
    vocab_keys = set(vocab_keys)
    aliases = dict(aliases or {})
    partitioned = _partition_info(module)
    tp = parallel_state.get_tensor_model_parallel_world_size() if parallel_state.model_parallel_is_initialized() else 1
    tp_rank = parallel_state.get_tensor_model_parallel_rank() if tp > 1 else 0
    renames = _layer_numbering(module)
    out: Dict[str, torch.Tensor] = {}
    for key, shape in local_shapes.items():
        source = aliases.get(key, _renumber(key, renames))
        if source not in full:
            continue
        tensor = full[source]
        if key in vocab_keys:
            padded_rows = shape[0] * (tp if key in partitioned and partitioned[key] == 0 else 1)
            if tensor.shape[0] > padded_rows:
                raise ValueError(
                    f"{source}: checkpoint has {tensor.shape[0]} vocabulary rows, the model only "
                    f"{padded_rows}; the tokenizer does not match this checkpoint")
            if tensor.shape[0] < padded_rows:
                pad = torch.zeros((padded_rows - tensor.shape[0],) + tuple(tensor.shape[1:]), dtype=tensor.dtype)
                tensor = torch.cat([tensor, pad], dim=0)
        if key in partitioned and tp > 1:
            dim = partitioned[key]
            tensor = torch.chunk(tensor, tp, dim=dim)[tp_rank]
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(
                f"{source}: checkpoint tensor of shape {tuple(full[source].shape)} does not fit the "
                f"model's {tuple(shape)} (after sharding for TP={tp}); check the encoder preset/sizes")
        out[key] = tensor.contiguous()
    return out
