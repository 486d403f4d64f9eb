"""Megatron-LM BERT checkpoints (NGC's BioMegatron, users' own Megatron-LM runs) → weights and
sizes of this library's pretraining model.

A checkpoint is a folder with ``latest_checkpointed_iteration.txt`` (``release`` or an iteration)
and ``release/`` or ``iter_NNNNNNN/``, holding one ``mp_rank_XX/model_optim_rng.pt`` per
tensor-parallel rank (``model_rng.pt`` in early releases). Any of these may be given: the folder,
the iteration folder, or one ``.pt`` file of a single-rank checkpoint. Each file is read with
:func:`~biomegatron_nemo.checkpoints.safe_load.safe_torch_load` (nothing in it runs) and holds
``model`` (nested state dicts), ``checkpoint_version`` and ``args``.

Sizes come from ``args`` and are checked against the tensors' shapes — never guessed: the 345m
cased and uncased checkpoints differ in vocabulary size, Megatron's LayerNorm epsilon (1e-5) is
kept, and the vocabulary rows past the vocabulary file (Megatron pads to a multiple of 128 × TP)
are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch

from biomegatron_nemo.checkpoints import megatron_legacy as legacy
from biomegatron_nemo.checkpoints.safe_load import safe_torch_load

CHECKPOINT_FILES = ("model_optim_rng.pt", "model_rng.pt")
_SHARD = re.compile(r"^mp_rank_(\d+)(_\d+)?$")


@dataclass
class ImportedWeights:
    """A converted checkpoint: our layout-free weights, the encoder's sizes, what was found."""

    state: Dict[str, torch.Tensor]
    encoder: Dict[str, Any]
    binary_head: bool
    cased: Optional[bool] = None  # from the checkpoint's tokenizer type, when it says
    summary: List[str] = field(default_factory=list)


def iteration_dir(path: Path) -> Path:
    """The folder holding ``mp_rank_XX`` of the checkpoint at ``path``."""
    marker = path / "latest_checkpointed_iteration.txt"
    if marker.is_file():
        text = marker.read_text().strip()
        sub = path / ("release" if text == "release" else f"iter_{int(text):07d}")
        if not sub.is_dir():
            raise FileNotFoundError(f"{marker} names {text!r} but {sub} does not exist")
        return sub
    return path


def shard_files(path: Union[str, Path]) -> List[Path]:
    """The checkpoint files of every tensor-parallel rank, in rank order."""
    path = Path(path)
    if path.is_file():
        return [path]
    folder = iteration_dir(path)
    shards = {}
    for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = _SHARD.match(sub.name)
        if not match:
            continue
        if match.group(2):
            raise ValueError(f"{sub}: pipeline-parallel shards (mp_rank_TT_PPP) are not supported; "
                             "merge the pipeline stages with Megatron-LM's checkpoint util first")
        found = [sub / name for name in CHECKPOINT_FILES if (sub / name).is_file()]
        if not found:
            raise FileNotFoundError(f"{sub}: no {' or '.join(CHECKPOINT_FILES)}")
        shards[int(match.group(1))] = found[0]
    if not shards:
        raise FileNotFoundError(f"{path}: no Megatron-LM checkpoint (expected latest_checkpointed_iteration.txt, "
                                "release/ or iter_NNNNNNN/ with mp_rank_XX/model_optim_rng.pt)")
    if sorted(shards) != list(range(len(shards))):
        raise ValueError(f"{folder}: tensor-parallel ranks {sorted(shards)} are not 0..{len(shards) - 1}")
    return [shards[r] for r in range(len(shards))]


def _arg(args, name: str, default=None):
    return getattr(args, name, default) if args is not None else default


def encoder_sizes(merged: Dict[str, torch.Tensor], args, source: str, heads: Optional[int] = None) -> Dict[str, Any]:
    """The encoder's sizes from ``args``, checked against the tensors."""
    word = merged["language_model.embedding.word_embeddings.weight"]
    hidden = word.shape[1]
    heads = heads or _arg(args, "num_attention_heads")
    if not heads:
        raise ValueError(f"{source}: the checkpoint has no args.num_attention_heads; give the number of heads")
    layers = legacy.layer_count(merged)
    fc1 = merged["language_model.encoder.layers.0.mlp.dense_h_to_4h.weight"]
    positions = merged["language_model.embedding.position_embeddings.weight"].shape[0]
    sizes = {"num_layers": layers, "hidden_size": hidden, "num_attention_heads": int(heads),
             "ffn_hidden_size": fc1.shape[0], "max_position_embeddings": positions,
             "num_tokentypes": merged.get("language_model.embedding.tokentype_embeddings.weight",
                                          torch.empty(0)).shape[0],
             "layernorm_epsilon": float(_arg(args, "layernorm_epsilon", 1e-5))}
    for key, arg in (("num_layers", "num_layers"), ("hidden_size", "hidden_size"),
                     ("ffn_hidden_size", "ffn_hidden_size"), ("max_position_embeddings", "max_position_embeddings")):
        given = _arg(args, arg)
        if given is not None and int(given) != sizes[key]:
            raise ValueError(f"{source}: args.{arg}={given} but the tensors say {sizes[key]}")
    if hidden % sizes["num_attention_heads"]:
        raise ValueError(f"{source}: hidden size {hidden} is not a multiple of {heads} heads")
    for name in ("hidden_dropout", "attention_dropout"):
        if _arg(args, name) is not None:
            sizes[name] = float(_arg(args, name))
    return sizes


def cased_from_args(args) -> Optional[bool]:
    tokenizer = str(_arg(args, "tokenizer_type", "") or "")
    if tokenizer.endswith("LowerCase"):
        return False
    if tokenizer.endswith("Case"):
        return True
    return None


def read_megatron_lm(path: Union[str, Path], num_attention_heads: Optional[int] = None) -> ImportedWeights:
    """A Megatron-LM BERT checkpoint → :class:`ImportedWeights` (vocabulary rows still padded)."""
    files = shard_files(path)
    loaded = [safe_torch_load(f) for f in files]
    for f, ckpt in zip(files, loaded):
        if not isinstance(ckpt, dict) or "model" not in ckpt:
            raise ValueError(f"{f}: not a Megatron-LM checkpoint (no 'model' entry)")
    version = float(loaded[0].get("checkpoint_version") or 0.0)
    args = loaded[0].get("args")
    recorded = _arg(args, "num_attention_heads")
    if recorded and num_attention_heads and int(recorded) != int(num_attention_heads):
        raise ValueError(f"{files[0]}: args.num_attention_heads is {recorded} but {num_attention_heads} heads were "
                         "given; the checkpoint's own value holds")
    heads = recorded or num_attention_heads
    if not heads:
        raise ValueError(f"{files[0]}: the checkpoint has no args.num_attention_heads; give the number of heads "
                         "(model.encoder.num_attention_heads, or --num-attention-heads)")
    shards = [legacy.normalise_names(legacy.flatten(c["model"])) for c in loaded]
    merged = legacy.merge_tensor_parallel(shards, version, int(heads), str(path))
    sizes = encoder_sizes(merged, args, str(path), int(heads))
    state = legacy.to_ours(merged, str(path))
    binary = "binary_head.classifier.weight" in state
    order = "[3, heads, head_dim]" if version < 1 else "[heads, head_dim, 3]" if version < 2 else "[heads, 3, head_dim]"
    summary = [f"Megatron-LM checkpoint {path}: {len(files)} tensor-parallel shard(s), checkpoint_version {version:g} "
               f"(fused QKV {order}), iteration {loaded[0].get('iteration', '?')}",
               f"encoder: {sizes}",
               f"heads: masked LM{' + binary (sentence order)' if binary else ''}; {len(state)} tensors mapped"]
    return ImportedWeights(state, sizes, binary, cased_from_args(args), summary)
