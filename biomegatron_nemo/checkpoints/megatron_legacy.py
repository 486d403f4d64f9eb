"""Legacy Megatron-LM BERT weights (Megatron-LM's own checkpoints and NeMo 1.x's MegatronBert) →
this library's layout-free names, and back.

Legacy names (after :func:`flatten`): ``language_model.embedding.{word,position,tokentype}_embeddings.weight``,
``language_model.{encoder|transformer}.layers.N.{input_layernorm, self_attention|attention.{query_key_value,
dense}, post_attention_layernorm, mlp.{dense_h_to_4h, dense_4h_to_h}}``, ``...final_layernorm``,
``language_model.pooler.dense``, ``lm_head.{dense, layernorm, bias}``, ``binary_head``.

The fused QKV matrix is stored in the order of the checkpoint's ``checkpoint_version``:

* absent / 0: ``[3, heads, head_dim]`` (all queries, then keys, then values);
* 1.0: ``[heads, head_dim, 3]``;
* ≥ 2.0: ``[heads, 3, head_dim]`` — megatron-core's order (``linear_qkv`` with one query group per
  head), the one this library stores.

Converting with the wrong order is silent and ruins accuracy (NeMo 1.x once shipped a BioMegatron
that could not reproduce its scores for this reason), so the version is always read, never assumed.
Tensor-parallel shards are merged here too: column-parallel tensors (QKV, ``dense_h_to_4h``, the
vocabulary rows of the word embeddings and the LM-head bias) along dim 0 — QKV per head, after
reordering each shard — and row-parallel ones (``attention.dense``, ``dense_4h_to_h``) along dim 1.
"""

from __future__ import annotations

import re
from typing import Dict, List, Mapping, Sequence, Tuple

import torch

#: legacy suffix → our suffix, inside a transformer layer
_LAYER_MAP = {
    "input_layernorm.weight": "input_layernorm.weight",
    "input_layernorm.bias": "input_layernorm.bias",
    "self_attention.query_key_value.weight": "self_attention.linear_qkv.weight",
    "self_attention.query_key_value.bias": "self_attention.linear_qkv.bias",
    "self_attention.dense.weight": "self_attention.linear_proj.weight",
    "self_attention.dense.bias": "self_attention.linear_proj.bias",
    "post_attention_layernorm.weight": "pre_mlp_layernorm.weight",
    "post_attention_layernorm.bias": "pre_mlp_layernorm.bias",
    "mlp.dense_h_to_4h.weight": "mlp.linear_fc1.weight",
    "mlp.dense_h_to_4h.bias": "mlp.linear_fc1.bias",
    "mlp.dense_4h_to_h.weight": "mlp.linear_fc2.weight",
    "mlp.dense_4h_to_h.bias": "mlp.linear_fc2.bias",
}
#: legacy name → our name, outside the layers
_FIXED_MAP = {
    "language_model.embedding.word_embeddings.weight": "encoder.embedding.word_embeddings.weight",
    "language_model.embedding.position_embeddings.weight": "encoder.embedding.position_embeddings.weight",
    "language_model.embedding.tokentype_embeddings.weight": "encoder.embedding.tokentype_embeddings.weight",
    "language_model.encoder.final_layernorm.weight": "encoder.encoder.final_layernorm.weight",
    "language_model.encoder.final_layernorm.bias": "encoder.encoder.final_layernorm.bias",
    "language_model.pooler.dense.weight": "binary_head.pooler.dense.weight",
    "language_model.pooler.dense.bias": "binary_head.pooler.dense.bias",
    "lm_head.dense.weight": "mlm_head.lm_head.dense.weight",
    "lm_head.dense.bias": "mlm_head.lm_head.dense.bias",
    "lm_head.layernorm.weight": "mlm_head.lm_head.layer_norm.weight",
    "lm_head.layernorm.bias": "mlm_head.lm_head.layer_norm.bias",
    "lm_head.bias": "mlm_head.output_layer.bias",
    "binary_head.weight": "binary_head.classifier.weight",
    "binary_head.bias": "binary_head.classifier.bias",
}
_LAYER = re.compile(r"^language_model\.encoder\.layers\.(\d+)\.(.+)$")
#: tensor-parallel split dimension by legacy suffix (others are replicated)
_COLUMN_PARALLEL = ("query_key_value.weight", "query_key_value.bias", "dense_h_to_4h.weight",
                    "dense_h_to_4h.bias", "word_embeddings.weight", "lm_head.bias")
_ROW_PARALLEL = ("self_attention.dense.weight", "mlp.dense_4h_to_h.weight")
#: the vocabulary-sized tensors (rows past the vocabulary file are padding)
VOCAB_SIZED = ("encoder.embedding.word_embeddings.weight", "mlm_head.output_layer.bias")


def flatten(tree: Mapping, prefix: str = "") -> Dict[str, torch.Tensor]:
    """Nested state dicts (Megatron-LM's ``state_dict_for_save_checkpoint``) → dotted names."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, torch.Tensor):
            out[name] = value
        elif value is not None and not name.endswith("_extra_state"):
            raise ValueError(f"{name}: expected a tensor or a nested dict, found {type(value).__name__}")
    return out


def normalise_names(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Older spellings → current ones: ``transformer`` → ``encoder``, ``attention`` → ``self_attention``."""
    out = {}
    for key, value in state.items():
        key = key.replace("language_model.transformer.", "language_model.encoder.")
        key = re.sub(r"\.attention\.", ".self_attention.", key)
        out[key] = value
    return out


def split_qkv(tensor: torch.Tensor, version: float, heads: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values (each ``[heads * head_dim, ...]``) of one fused QKV tensor."""
    rest = tensor.shape[1:]
    head_dim = tensor.shape[0] // (3 * heads)
    if 3 * heads * head_dim != tensor.shape[0]:
        raise ValueError(f"fused QKV of {tensor.shape[0]} rows is not 3 x {heads} heads")
    if version < 1.0:
        parts = tensor.view(3, heads, head_dim, *rest).unbind(0)
    elif version < 2.0:
        parts = tensor.view(heads, head_dim, 3, *rest).unbind(2)
    else:
        parts = tensor.view(heads, 3, head_dim, *rest).unbind(1)
    return tuple(p.reshape(heads * head_dim, *rest) for p in parts)


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """megatron-core's ``linear_qkv`` order, ``[heads, 3, head_dim]``, from queries, keys, values."""
    rest = q.shape[1:]
    head_dim = q.shape[0] // heads
    stacked = torch.stack([t.view(heads, head_dim, *rest) for t in (q, k, v)], dim=1)
    return stacked.reshape(3 * heads * head_dim, *rest).contiguous()


def merge_tensor_parallel(shards: Sequence[Mapping[str, torch.Tensor]], version: float, heads: int,
                          source: str) -> Dict[str, torch.Tensor]:
    """One state dict of the full model from its tensor-parallel shards (legacy names); fused QKV
    comes out in megatron-core's order. Replicated tensors must agree across shards."""
    tp = len(shards)
    if heads % tp:
        raise ValueError(f"{source}: {heads} attention heads do not split over {tp} tensor-parallel shards")
    keys = list(shards[0])
    for rank, shard in enumerate(shards[1:], start=1):
        if set(shard) != set(keys):
            diff = sorted(set(shard) ^ set(keys))
            raise ValueError(f"{source}: shard {rank} and shard 0 hold different tensors: {diff[:5]}")
    merged = {}
    for key in keys:
        parts = [s[key] for s in shards]
        if key.endswith(("query_key_value.weight", "query_key_value.bias")):
            q, k, v = zip(*(split_qkv(p, version, heads // tp) for p in parts))
            merged[key] = fuse_qkv(torch.cat(q), torch.cat(k), torch.cat(v), heads)
        elif key.endswith(_COLUMN_PARALLEL):
            merged[key] = torch.cat(parts, dim=0)
        elif key.endswith(_ROW_PARALLEL):
            merged[key] = torch.cat(parts, dim=1)
        else:
            if any(not torch.equal(p, parts[0]) for p in parts[1:]):
                raise ValueError(f"{source}: {key} differs between tensor-parallel shards (it should be replicated)")
            merged[key] = parts[0]
    return merged


def to_ours(legacy: Mapping[str, torch.Tensor], source: str) -> Dict[str, torch.Tensor]:
    """Merged legacy tensors → our layout-free names (vocabulary rows still padded: see
    :func:`cut_vocabulary`). Tensors with no place in our model are an error naming them."""
    ours, unused = {}, []
    for key, value in legacy.items():
        layer = _LAYER.match(key)
        if layer and layer.group(2) in _LAYER_MAP:
            ours[f"encoder.encoder.layers.{layer.group(1)}.{_LAYER_MAP[layer.group(2)]}"] = value
        elif key in _FIXED_MAP:
            ours[_FIXED_MAP[key]] = value
        else:
            unused.append(key)
    if unused:
        raise ValueError(f"{source}: tensors this converter does not know (nothing was converted): {sorted(unused)}")
    return ours


def cut_vocabulary(state: Dict[str, torch.Tensor], vocab_size: int, source: str) -> int:
    """Cut the vocabulary-sized tensors of our layout-free ``state`` (in place) to the tokenizer's
    ``vocab_size`` rows — the rest is padding (Megatron pads to a multiple of 128 × TP). Returns
    the rows there were; a vocabulary larger than the embedding is an error."""
    rows = state[VOCAB_SIZED[0]].shape[0]
    for key in VOCAB_SIZED:
        if key in state:
            if vocab_size > state[key].shape[0]:
                raise ValueError(f"{source}: the vocabulary has {vocab_size} entries but {key} has only "
                                 f"{state[key].shape[0]} rows; is it the checkpoint's vocabulary file?")
            state[key] = state[key][:vocab_size].clone()
    return rows


def layer_count(legacy: Mapping[str, torch.Tensor]) -> int:
    indices = {int(m.group(1)) for m in map(_LAYER.match, legacy) if m}
    if indices != set(range(len(indices))):
        raise ValueError(f"layer indices are not 0..N-1: {sorted(indices)}")
    return len(indices)

