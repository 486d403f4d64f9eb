"""NeMo 1.x ``.nemo`` files of MegatronBert / BioMegatron → weights, sizes and vocabulary.

A NeMo 1.x ``.nemo`` is a tar with ``model_config.yaml``, ``model_weights.ckpt`` and the
vocabulary artifact (``tokenizer.vocab_file: nemo:<name>``). Its weights carry the legacy Megatron
names (:mod:`~biomegatron_nemo.checkpoints.megatron_legacy`) under ``model.`` (``MegatronBertModel``)
or ``bert_model.`` (the NeMo 1.x task models, whose own heads — ``classifier.*`` and the like — are
left out and listed in the summary). The sizes come from the config (top level, or
``language_model.config`` of task models) and are checked against the tensors. Fused QKV is in
Megatron's current order (``checkpoint_version`` 3.0) unless the config or the caller says otherwise.
The archive is read member by member, never extracted as a whole, and the weights weights-only.
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import yaml

from biomegatron_nemo.checkpoints import megatron_legacy as legacy
from biomegatron_nemo.checkpoints.megatron_lm import ImportedWeights, encoder_sizes
from biomegatron_nemo.checkpoints.safe_load import safe_torch_load

PREFIXES = ("model.", "bert_model.")
_SIZE_KEYS = ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "max_position_embeddings",
              "layernorm_epsilon")


def _member(tar: tarfile.TarFile, name: str, source: Path) -> tarfile.TarInfo:
    for member in tar.getmembers():
        if member.isfile() and Path(member.name).name == name:
            return member
    raise ValueError(f"{source}: no {name} inside (is it a NeMo 1.x .nemo file?)")


def _sizes_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    language_model = cfg.get("language_model")
    nested = (language_model.get("config") or {}) if isinstance(language_model, dict) else {}
    return {k: cfg.get(k, nested.get(k)) for k in _SIZE_KEYS if cfg.get(k, nested.get(k)) is not None}


def read_nemo1(path: Union[str, Path], workdir: Union[str, Path], checkpoint_version: Optional[float] = None) -> Tuple[ImportedWeights, Optional[Path], Dict]:
    """A NeMo 1.x ``.nemo`` → (:class:`ImportedWeights`, its vocabulary file extracted into
    ``workdir`` or None, its config). Vocabulary rows are still padded."""
    path = Path(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            cfg = yaml.safe_load(tar.extractfile(_member(tar, "model_config.yaml", path)).read()) or {}
            tokenizer = cfg.get("tokenizer") or {}
            vocab_ref = str(tokenizer.get("vocab_file") or "")
            vocab = None
            if vocab_ref:
                member = _member(tar, Path(vocab_ref.removeprefix("nemo:")).name, path)
                vocab = Path(workdir) / "vocab.txt"
                vocab.write_bytes(tar.extractfile(member).read())
            with tempfile.TemporaryDirectory() as tmp:
                weights = Path(tmp) / "model_weights.ckpt"
                weights.write_bytes(tar.extractfile(_member(tar, "model_weights.ckpt", path)).read())
                state = safe_torch_load(weights)
    except (tarfile.TarError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .nemo file (a tar archive): {err}") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    kept, dropped = {}, []
    for key, value in state.items():
        prefix = next((p for p in PREFIXES if key.startswith(p)), None)
        if prefix is None:
            dropped.append(key)
        else:
            kept[key[len(prefix):]] = value
    sizes_cfg = _sizes_config(cfg)
    version = float(checkpoint_version if checkpoint_version is not None
                    else cfg.get("megatron_checkpoint_version", cfg.get("checkpoint_version", 3.0)))
    legacy_state = legacy.normalise_names(kept)
    if version < 2.0:  # reorder into megatron-core's layout (one "shard")
        legacy_state = legacy.merge_tensor_parallel([legacy_state], version, int(sizes_cfg["num_attention_heads"]),
                                                    str(path))
    args = argparse.Namespace(**sizes_cfg)
    sizes = encoder_sizes(legacy_state, args, str(path))
    ours = legacy.to_ours(legacy_state, str(path))
    binary = "binary_head.classifier.weight" in ours
    summary = [f"NeMo 1.x .nemo {path}: {cfg.get('target', '?')}, QKV order of checkpoint_version {version:g}",
               f"encoder: {sizes}", f"vocabulary: {vocab_ref or 'none in the file'}",
               f"{len(ours)} tensors mapped" + (f"; left out (outside the encoder and its pretraining heads, e.g. a task "
                                               f"model's head): {sorted(dropped)[:8]}{' …' if len(dropped) > 8 else ''}"
                                               if dropped else "")]
    cased = None if tokenizer.get("do_lower_case") is None else not tokenizer["do_lower_case"]
    return ImportedWeights(ours, sizes, binary, cased, summary), vocab, cfg
