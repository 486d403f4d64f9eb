"""The one tokenizer interface every dataset and model in biomegatron_nemo talks to.

Datasets never care which vocabulary is in use (DESIGN.md rule 5): they ask a
:class:`BioTokenizer` for ids, sub-token strings, character offsets and word indices, and for
the special ids. The same object also satisfies what megatron-core's BERT dataset reads from a
``MegatronLegacyTokenizer`` (``vocab``, ``inv_vocab``, ``vocab_size``, ``cls``, ``sep``, ``pad``,
``mask``, ``eod``, ``tokenize``, ``unique_identifiers``), so pretraining uses it directly.

Continuation convention: ``inv_vocab`` presents every vocabulary in WordPiece form, a sub-token
that continues a word starts with ``##``. megatron-core's whole-word masking and our
first-sub-token labelling read that marker, so they work identically for SentencePiece.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass
class Encoding:
    """One tokenized text (no [CLS]/[SEP] added).

    ``offsets[i]`` is the ``(start, end)`` character span of sub-token ``i`` in the input text;
    ``word_ids[i]`` is the index of the word it belongs to: words as given to
    :meth:`BioTokenizer.encode_words`; for :meth:`BioTokenizer.encode`, the tokenizer's own
    units (WordPiece: whitespace- and punctuation-separated pre-tokens; SentencePiece:
    whitespace words); there a new word starts exactly where a sub-token is not a continuation
    (:meth:`BioTokenizer.is_continuation`), the boundary megatron-core's whole-word masking sees.
    A given word may hold several such units ("IL-2" → ``il - 2`` under WordPiece).
    """

    ids: List[int]
    tokens: List[str]
    offsets: List[Tuple[int, int]] = field(default_factory=list)
    word_ids: List[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


class BioTokenizer(abc.ABC):
    """Text ↔ sub-token ids with offsets, special tokens, and megatron-core compatibility."""

    # --- the vocabulary -------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (before Megatron's padding)."""

    @property
    @abc.abstractmethod
    def vocab(self) -> Dict[str, int]:
        """Token string (WordPiece form, ``##`` continuations) → id."""

    @property
    @abc.abstractmethod
    def inv_vocab(self) -> Dict[int, str]:
        """Id → token string (WordPiece form, ``##`` continuations)."""

    @abc.abstractmethod
    def token_to_id(self, token: str) -> Optional[int]:
        """Id of a token string, or None when it is not in the vocabulary."""

    @abc.abstractmethod
    def id_to_token(self, token_id: int) -> str:
        """Token string of an id."""

    # --- special tokens ------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def special_ids(self) -> Dict[str, int]:
        """Special token → id: the five of :data:`SPECIAL_TOKENS` and the extra ones."""

    @property
    def pad_id(self) -> int:
        return self.special_ids["[PAD]"]

    @property
    def unk_id(self) -> int:
        return self.special_ids["[UNK]"]

    @property
    def cls_id(self) -> int:
        return self.special_ids["[CLS]"]

    @property
    def sep_id(self) -> int:
        return self.special_ids["[SEP]"]

    @property
    def mask_id(self) -> int:
        return self.special_ids["[MASK]"]

    @property
    def extra_special_tokens(self) -> List[str]:
        """User-registered tokens that are never split (e.g. ``@CHEMICAL$``, ``@GENE$``)."""
        return [t for t in self.special_ids if t not in SPECIAL_TOKENS]

    # --- encoding ------------------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, text: str) -> Encoding:
        """Tokenize raw text: ids, sub-token strings, character offsets and word ids."""

    @abc.abstractmethod
    def encode_words(self, words: Sequence[str]) -> Encoding:
        """Tokenize pre-split words; ``word_ids[i]`` is the index in ``words`` of sub-token i.

        Offsets are relative to each word. A word that yields no sub-token (e.g. a control
        character) is represented by ``[UNK]`` so every word has at least one sub-token.
        """

    @abc.abstractmethod
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Ids → text."""

    def encode_batch(self, texts: Sequence[str]) -> List[Encoding]:
        """Tokenize many texts; subclasses override with a parallel implementation."""
        return [self.encode(t) for t in texts]

    def tokenize_batch(self, texts: Sequence[str]) -> List[List[int]]:
        """Ids only of many texts (corpus preprocessing): skips building tokens and offsets."""
        return [self.tokenize(t) for t in texts]

    def is_continuation(self, token_id: int) -> bool:
        """True when the sub-token continues a word (``##`` in WordPiece form)."""
        return self.inv_vocab[token_id].startswith("##")

    # --- files ---------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def artifacts(self) -> Dict[str, str]:
        """Config key → path of each file that defines the tokenizer (for ``register_artifact``)."""

    # --- megatron-core ``MegatronLegacyTokenizer`` surface ---------------------------------
    def tokenize(self, text: str) -> List[int]:
        """megatron-core's name for text → ids."""
        return self.encode(text).ids

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.decode(ids)

    @property
    def cls(self) -> int:
        return self.cls_id

    @property
    def sep(self) -> int:
        return self.sep_id

    @property
    def pad(self) -> int:
        return self.pad_id

    @property
    def mask(self) -> int:
        return self.mask_id

    @property
    def unique_identifiers(self) -> Dict[str, object]:
        """What megatron-core hashes into its dataset cache names (it JSON-dumps this).

        The vocabulary's content, not its file path, so a cache is reused on another machine
        and never for another vocabulary.
        """
        inv = self.inv_vocab
        digest = hashlib.sha256("\n".join(inv[i] for i in sorted(inv)).encode("utf-8")).hexdigest()
        return {"class": type(self).__name__, "vocab_size": self.vocab_size, "vocab_sha256": digest}

    @property
    def eod(self) -> int:
        return self.sep_id

    @property
    def bos(self) -> int:
        return self.cls_id

    @property
    def eos(self) -> int:
        return self.sep_id


def with_bert_specials(extra_special_tokens: Sequence[str]) -> List[str]:
    """The five BERT specials, then the extra ones in order, without repeats."""
    return list(dict.fromkeys((*SPECIAL_TOKENS, *extra_special_tokens)))


def fill_empty_words(encoding: Encoding, words: Sequence[str], unk_id: int,
                     unk_token: str = "[UNK]") -> Encoding:
    """Give every word of ``words`` at least one sub-token, ``[UNK]`` where it produced none.

    Both libraries drop words that normalise to nothing (empty strings, control characters);
    labels are aligned per word, so a silently vanished word would shift every later label.
    """
    if len(set(encoding.word_ids)) == len(words):
        return encoding
    out = Encoding([], [], [], [])
    i = 0
    for w, word in enumerate(words):
        if i < len(encoding) and encoding.word_ids[i] == w:
            while i < len(encoding) and encoding.word_ids[i] == w:
                out.ids.append(encoding.ids[i])
                out.tokens.append(encoding.tokens[i])
                out.offsets.append(encoding.offsets[i])
                out.word_ids.append(w)
                i += 1
        else:
            out.ids.append(unk_id)
            out.tokens.append(unk_token)
            out.offsets.append((0, len(word)))
            out.word_ids.append(w)
    return out
