"""Tokenizers: WordPiece and SentencePiece behind one interface, built from a model config.

``build_tokenizer`` is what models call with their ``tokenizer:`` config section; the files it
reads are the tokenizer's ``artifacts``, which models ``register_artifact`` into the ``.nemo``
so a restored model finds its vocabulary again.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from biomegatron_nemo.tokenizers.base import SPECIAL_TOKENS, BioTokenizer, Encoding
from biomegatron_nemo.tokenizers.sentencepiece import SentencePieceTokenizer
from biomegatron_nemo.tokenizers.wordpiece import WordPieceTokenizer

__all__ = [
    "SPECIAL_TOKENS",
    "BioTokenizer",
    "Encoding",
    "SentencePieceTokenizer",
    "WordPieceTokenizer",
    "build_tokenizer",
]

#: library → (config key of its file, keys it accepts)
LIBRARIES = {
    "wordpiece": ("vocab_file", {"library", "vocab_file", "cased", "special_tokens"}),
    "sentencepiece": ("model_file", {"library", "model_file", "special_tokens"}),
}


def _as_dict(cfg: Any) -> dict:
    if isinstance(cfg, Mapping):
        return dict(cfg)
    try:  # OmegaConf DictConfig, without importing omegaconf when it is not used
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:
        pass
    raise ValueError(f"tokenizer config must be a mapping, got {type(cfg).__name__}")


def build_tokenizer(cfg: Any) -> BioTokenizer:
    """Build a tokenizer from ``{library, vocab_file | model_file, cased, special_tokens}``.

    ``library`` is ``wordpiece`` (needs ``vocab_file``; ``cased`` defaults to False) or
    ``sentencepiece`` (needs ``model_file``). Unknown or missing keys and missing files raise
    ``ValueError`` naming the key and the path.
    """
    # Keys set to null are unset: one config template can list vocab_file and model_file.
    cfg = {k: v for k, v in _as_dict(cfg).items() if v is not None}
    library = cfg.get("library")
    if library is None:
        raise ValueError(f"tokenizer config has no 'library' key; set it to one of {sorted(LIBRARIES)}")
    if library not in LIBRARIES:
        raise ValueError(f"tokenizer.library={library!r} is unknown; choose one of {sorted(LIBRARIES)}")
    file_key, allowed = LIBRARIES[library]
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ValueError(f"tokenizer config key(s) {unknown} are not used by library={library!r}; "
                         f"allowed keys: {sorted(allowed)}")
    path = cfg.get(file_key)
    if not path:
        raise ValueError(f"tokenizer.{file_key} is required for library={library!r}")
    if not os.path.isfile(path):
        raise ValueError(f"tokenizer.{file_key}={path!r}: file does not exist")
    special_tokens = cfg.get("special_tokens") or ()
    if isinstance(special_tokens, str) or not all(isinstance(t, str) for t in special_tokens):
        raise ValueError(f"tokenizer.special_tokens must be a list of strings, got {special_tokens!r}")
    if library == "wordpiece":
        cased = cfg.get("cased", False)
        if not isinstance(cased, bool):
            raise ValueError(f"tokenizer.cased must be true or false, got {cased!r}")
        return WordPieceTokenizer(path, cased=cased, special_tokens=special_tokens)
    return SentencePieceTokenizer(path, special_tokens=special_tokens)
