"""A model config that names a pretrained checkpoint takes the encoder's architecture and the
vocabulary from it (DESIGN.md rule 9).

:func:`apply_pretrained` reads the checkpoint
(:func:`~biomegatron_nemo.checkpoints.pretrained.resolve_pretrained`: any supported kind, converted
once and cached) and writes its architecture keys and tokenizer section into the config. A key the
user set is kept when it agrees with the checkpoint and refused, in one line naming the key, the
checkpoint's value and the given one, when it does not: building a model the checkpoint does not
fit would only end in a wall of shape mismatches. Keys that are the user's to choose (dropout, the
layer implementation, recompute, extra special tokens) pass through.

Both the run layer (before the parallel layout is checked against the encoder's sizes) and the
model's constructor (for models built in Python) call it; the second call finds every key agreeing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, open_dict

from biomegatron_nemo.checkpoints.pretrained import PretrainedCheckpoint, resolve_pretrained
from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.encoder.config import ARCHITECTURE_KEYS, PRESETS
from biomegatron_nemo.models.config import pretrained_path
from biomegatron_nemo.tokenizers import DEFAULT_LIBRARY, LIBRARIES


def pretrained_checkpoint(cfg) -> Optional[PretrainedCheckpoint]:
    """The checkpoint the model config ``cfg`` (a DictConfig or the typed config) names, or None. A Megatron-LM checkpoint holds no
    vocabulary and may lack its head count: the config's ``tokenizer.vocab_file`` and
    ``encoder.num_attention_heads`` are then read as inputs of its conversion."""
    path = pretrained_path(cfg)
    if path is None:
        return None
    return resolve_pretrained(path, vocab_file=cfg.tokenizer.vocab_file,
                              num_attention_heads=cfg.encoder.num_attention_heads)


def _same(given: Any, value: Any) -> bool:
    if isinstance(value, float) or isinstance(given, float):
        return math.isclose(float(given), float(value), rel_tol=1e-9, abs_tol=0.0)
    return given == value


def _refuse(key: str, given: Any, value: Any, ckpt: PretrainedCheckpoint, where: str, prefix: str) -> ConfigError:
    return ConfigError(f"{given!r} disagrees with the pretrained checkpoint {ckpt.source}, which has {value!r}; "
                       "leave the key unset (the checkpoint decides it)", key=f"{prefix}{key}", where=where or None)


def _check_preset(preset: str, ckpt: PretrainedCheckpoint, where: str, prefix: str) -> None:
    sizes = dict(PRESETS[preset])
    sizes["ffn_hidden_size"] = 4 * sizes["hidden_size"]
    differ = {k: v for k, v in sizes.items() if ckpt.encoder[k] != v}
    if differ:
        have = ", ".join(f"{k}={ckpt.encoder[k]}" for k in differ)
        raise ConfigError(f"{preset!r} ({', '.join(f'{k}={v}' for k, v in differ.items())}) disagrees with the "
                          f"pretrained checkpoint {ckpt.source} ({have}); leave it unset (the checkpoint decides)",
                          key=f"{prefix}encoder.preset", where=where or None)


def _same_vocabulary(given: str, theirs: str) -> bool:
    def tokens(path):
        return [line.rstrip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]

    return Path(given).is_file() and tokens(given) == tokens(theirs)


def apply_pretrained(cfg: DictConfig, where: str = "", prefix: str = "") -> DictConfig:
    """``cfg`` (a model config, changed in place and returned) with the architecture and vocabulary
    of the checkpoint it names, and the tokenizer library filled in. ``where`` and ``prefix`` name
    the config in errors (a model class; ``model.`` inside a run config)."""
    ckpt = pretrained_checkpoint(cfg)
    with open_dict(cfg):
        if ckpt is None:
            if cfg.tokenizer.get("library") is None:
                cfg.tokenizer.library = DEFAULT_LIBRARY
            return cfg
        encoder = cfg.encoder
        if encoder.get("preset"):
            _check_preset(encoder.preset, ckpt, where, prefix)
        for key in ARCHITECTURE_KEYS:
            given = encoder.get(key)
            if given is not None and not _same(given, ckpt.encoder[key]):
                raise _refuse(f"encoder.{key}", given, ckpt.encoder[key], ckpt, where, prefix)
            encoder[key] = ckpt.encoder[key]
        _apply_tokenizer(cfg.tokenizer, ckpt, where, prefix)
    return cfg


def _apply_tokenizer(tokenizer: DictConfig, ckpt: PretrainedCheckpoint, where: str, prefix: str) -> None:
    theirs = ckpt.tokenizer
    library = theirs["library"]
    if tokenizer.get("library") not in (None, library):
        raise _refuse("tokenizer.library", tokenizer.library, library, ckpt, where, prefix)
    file_key = LIBRARIES[library]
    given = tokenizer.get(file_key)
    # a Megatron-LM checkpoint's vocabulary is the one the user gave (its conversion read it)
    if given and ckpt.kind != "megatron-lm" and not _same_vocabulary(given, theirs[file_key]):
        raise ConfigError(f"{given} is not the vocabulary of the pretrained checkpoint {ckpt.source}; leave the key "
                          "unset (the checkpoint decides it)", key=f"{prefix}tokenizer.{file_key}", where=where or None)
    declared = theirs.get("cased") is not None and not ckpt.cased_from_vocabulary
    if declared and tokenizer.get("cased") is not None and tokenizer.cased != theirs["cased"]:
        raise _refuse("tokenizer.cased", tokenizer.cased, theirs["cased"], ckpt, where, prefix)
    tokenizer.library = library
    tokenizer[file_key] = theirs[file_key]
    if theirs.get("cased") is not None and (declared or tokenizer.get("cased") is None):
        tokenizer.cased = theirs["cased"]
    # the checkpoint's own extra tokens own rows of its embeddings: they come first, then the user's
    own = list(theirs.get("special_tokens") or [])
    tokenizer.special_tokens = own + [t for t in (tokenizer.get("special_tokens") or []) if t not in own]
