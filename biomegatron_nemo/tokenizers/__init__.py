"""Tokenizers: WordPiece and SentencePiece behind one interface, built from a model config.

``build_tokenizer`` is what models call with their ``tokenizer:`` config section; the files it
reads are the tokenizer's ``artifacts``, which models ``register_artifact`` into the ``.nemo``
so a restored model finds its vocabulary again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional


from biomegatron_nemo.common.config import Schema, option, validate_config
from biomegatron_nemo.common.errors import ConfigError

from biomegatron_nemo.tokenizers.base import SPECIAL_TOKENS, BioTokenizer, Encoding
from biomegatron_nemo.tokenizers.sentencepiece import SentencePieceTokenizer
from biomegatron_nemo.tokenizers.wordpiece import WordPieceTokenizer

__all__ = [
    "SPECIAL_TOKENS",
    "BioTokenizer",
    "DEFAULT_LIBRARY",
    "Encoding",
    "SentencePieceTokenizer",
    "TokenizerConfig",
    "WordPieceTokenizer",
    "build_tokenizer",
]

#: library → the config key of its file
LIBRARIES = {"wordpiece": "vocab_file", "sentencepiece": "model_file"}
DEFAULT_LIBRARY = "wordpiece"


@dataclass
class TokenizerConfig(Schema):
    """The ``tokenizer:`` section: which vocabulary, from which file."""

    library: Optional[str] = option(None, f"vocabulary kind; null: {DEFAULT_LIBRARY}, or the pretrained "
                                          "checkpoint's", choices=tuple(LIBRARIES))
    vocab_file: Optional[str] = option(None, "WordPiece vocab.txt (library=wordpiece); copied into the .nemo")
    model_file: Optional[str] = option(None, "SentencePiece .model (library=sentencepiece); copied into the .nemo")
    cased: Optional[bool] = option(None, "WordPiece: keep case (cased vocabularies); null/false lower-cases. "
                                         "A SentencePiece model's casing is fixed when it is trained")
    special_tokens: List[str] = option(doc="extra tokens never split, e.g. entity markers", factory=list)

    @property
    def kind(self) -> str:
        """The library in use (``library``, else the default)."""
        return self.library or DEFAULT_LIBRARY

    def check(self) -> None:
        file_key = LIBRARIES[self.kind]
        unused = [k for k in LIBRARIES.values() if k != file_key and getattr(self, k)]
        if self.kind == "sentencepiece" and self.cased is not None:
            unused.append("cased")
        if unused:
            raise ConfigError(f"{unused} are not used by library={self.kind!r}", key=unused[0])


def build_tokenizer(cfg: Any) -> BioTokenizer:
    """Build a tokenizer from a ``tokenizer:`` section (:class:`TokenizerConfig`; mapping or DictConfig).

    Unknown keys, a file key the library does not use, a missing key and a missing file raise
    :class:`~biomegatron_nemo.common.errors.ConfigError` naming the key and the path.
    """
    checked: TokenizerConfig = validate_config(cfg, TokenizerConfig, where="tokenizer")
    # The file is checked here, not in the schema: a model config being restored names it as a
    # .nemo artifact until NeMo has unpacked it.
    file_key = LIBRARIES[checked.kind]
    path = getattr(checked, file_key)
    if not path:
        raise ConfigError(f"is required for library={checked.kind!r}", key=file_key, where="tokenizer")
    if not os.path.isfile(path):
        raise ConfigError(f"{path!r}: file does not exist", key=file_key, where="tokenizer")
    if checked.kind == "wordpiece":
        return WordPieceTokenizer(path, cased=bool(checked.cased), special_tokens=checked.special_tokens)
    return SentencePieceTokenizer(path, special_tokens=checked.special_tokens)
