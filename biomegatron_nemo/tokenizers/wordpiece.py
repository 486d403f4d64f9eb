"""BERT WordPiece vocabularies (``vocab.txt``) behind :class:`BioTokenizer`, on Hugging Face ``tokenizers``.

The pipeline is BERT's: ``BertNormalizer`` (clean-up, CJK spacing; lower-casing and accent
stripping when uncased), ``BertPreTokenizer`` (whitespace and punctuation), greedy longest-match
WordPiece with ``[UNK]`` for words longer than 100 characters or not coverable. The Rust
library tracks alignments through normalisation, so offsets index the original text even when
"naïve" is matched as "naive".
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.common.files import iter_lines
from biomegatron_nemo.tokenizers.base import BioTokenizer, Encoding, fill_empty_words, with_bert_specials

#: BERT's ``max_input_chars_per_word``: longer words become a single [UNK].
MAX_WORD_CHARS = 100


def read_vocab(vocab_file: str, specials: Sequence[str]) -> Dict[str, int]:
    """Token → id (line number) of a ``vocab.txt``, then any missing specials appended.

    Validated here because ``tokenizers`` accepts a repeated token silently (the id of its first
    line is lost and a later added token is given a taken id) and reports bad UTF-8 without a line.
    Trailing whitespace is dropped, as ``tokenizers``' own reader does; whitespace inside a token
    is an error (BERT's pre-tokenizer splits there, so no text could ever reach such a token).
    """
    with open(vocab_file, "rb") as f:
        head = f.read(4096)
    # a SentencePiece .model starts with a blank "line": say what it is (UTF-16 text is named below)
    if b"\0" in head and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataFormatError(vocab_file, None, "a binary file, not a vocab.txt (a SentencePiece .model? "
                              "give it as model_file with library: sentencepiece)")
    vocab: Dict[str, int] = {}
    for lineno, line in iter_lines(vocab_file):
        token = line.rstrip()
        if not token.strip():
            raise DataFormatError(vocab_file, lineno, "empty token; a vocab.txt has one token a line")
        if any(c.isspace() for c in token):
            hint = (" (a 'token<TAB>score' file such as SentencePiece's .vocab is not a vocab.txt; "
                    "give a SentencePiece model as its .model file)" if "\t" in token else "")
            raise DataFormatError(vocab_file, lineno, f"token {token!r} contains whitespace; a vocab.txt "
                                  f"has one token a line{hint}")
        if token in vocab:
            raise DataFormatError(vocab_file, lineno, f"token {token!r} repeats line "
                                  f"{vocab[token] + 1}")
        vocab[token] = lineno - 1
    if not vocab:
        raise DataFormatError(vocab_file, None, "empty vocabulary")
    for token in specials:
        vocab.setdefault(token, len(vocab))
    return vocab


#: share of word pieces with an upper-case letter above which a vocabulary counts as cased
CASED_SHARE = 0.01


def looks_cased(vocab_file) -> bool:
    """Whether a vocabulary keeps case: uncased BERT vocabularies hold no upper-case word pieces
    (bracketed specials such as ``[UNK]`` aside)."""
    tokens = Path(vocab_file).read_text(encoding="utf-8").split()
    pieces = [t for t in tokens if not (t.startswith("[") and t.endswith("]"))]
    upper = sum(1 for t in pieces if any(c.isupper() for c in t))
    return upper > CASED_SHARE * max(len(pieces), 1)


def _to_encoding(enc) -> Encoding:
    return Encoding(enc.ids, enc.tokens, enc.offsets, enc.word_ids)


class WordPieceTokenizer(BioTokenizer):
    """A BERT ``vocab.txt`` (one token per line, id = line number), cased or uncased.

    ``special_tokens`` are extra tokens that are never split nor normalised (ChemProt's
    ``@CHEMICAL$``); they keep their id when the vocabulary has them, else get new ids after it.
    The five BERT specials are added the same way when a vocabulary lacks them. The file is
    validated (UTF-8, no empty or repeated token) with errors naming the line.
    """

    def __init__(self, vocab_file: str, cased: bool = False, special_tokens: Sequence[str] = ()):
        vocab_file = os.fspath(vocab_file)
        if not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"WordPiece vocab_file {vocab_file!r} does not exist")
        self._vocab_file = vocab_file
        self.cased = cased
        specials = with_bert_specials(special_tokens)
        tok = Tokenizer(models.WordPiece(read_vocab(vocab_file, specials), unk_token="[UNK]",
                                         max_input_chars_per_word=MAX_WORD_CHARS))
        # strip_accents=None follows lowercase, exactly BERT's BasicTokenizer behaviour.
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=not cased)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
        self._tok = tok
        self._vocab: Optional[Dict[str, int]] = None
        self._inv_vocab: Optional[Dict[int, str]] = None
        self._special_ids = {t: tok.token_to_id(t) for t in specials}

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (for callers that want its batch API)."""
        return self._tok

    # --- vocabulary ----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def vocab(self) -> Dict[str, int]:
        if self._vocab is None:
            self._vocab = self._tok.get_vocab(with_added_tokens=True)
        return self._vocab

    @property
    def inv_vocab(self) -> Dict[int, str]:
        if self._inv_vocab is None:
            # Ordered by id: `tokenizers` returns its vocabulary from a hash map in an order that
            # changes between processes, and megatron-core draws its 10% random replacement
            # tokens from `list(inv_vocab)` — unordered, pretraining data would not be seeded.
            self._inv_vocab = {i: t for t, i in sorted(self.vocab.items(), key=lambda item: item[1])}
        return self._inv_vocab

    def token_to_id(self, token: str) -> Optional[int]:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str:
        token = self._tok.id_to_token(token_id)
        if token is None:
            raise IndexError(f"id {token_id} is outside the vocabulary (size {self.vocab_size})")
        return token

    # --- specials ------------------------------------------------------------------------
    @property
    def special_ids(self) -> Dict[str, int]:
        return self._special_ids

    # --- encoding ------------------------------------------------------------------------
    def encode(self, text: str) -> Encoding:
        return _to_encoding(self._tok.encode(text, add_special_tokens=False))

    def encode_batch(self, texts: Sequence[str]) -> List[Encoding]:
        return [_to_encoding(e) for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode_words(self, words: Sequence[str]) -> Encoding:
        words = list(words)
        enc = self._tok.encode(words, is_pretokenized=True, add_special_tokens=False)
        return fill_empty_words(_to_encoding(enc), words, self.unk_id)

    def tokenize(self, text: str) -> List[int]:
        # megatron-core's hot path during pretraining: skip building tokens/offsets.
        return self._tok.encode(text, add_special_tokens=False).ids

    def tokenize_batch(self, texts: Sequence[str]) -> List[List[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # --- files ---------------------------------------------------------------------------
    @property
    def artifacts(self) -> Dict[str, str]:
        return {"vocab_file": self._vocab_file}

    def __repr__(self) -> str:
        return (f"WordPieceTokenizer({self._vocab_file!r}, cased={self.cased}, "
                f"vocab_size={self.vocab_size})")
