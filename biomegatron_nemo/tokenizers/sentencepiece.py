"""SentencePiece models (unigram or BPE ``.model`` files) behind :class:`BioTokenizer`.

Three things sentencepiece does not do are added here:

* **WordPiece form.** A piece starting with ``▁`` begins a whitespace word and is shown without
  the ``▁``; every other piece is shown as a ``##`` continuation. ``vocab``, ``inv_vocab`` and
  ``Encoding.tokens`` use that form, so megatron-core's whole-word masking and first-sub-token
  labelling treat both vocabularies alike. A lone ``▁`` piece (a word whose first character has
  no piece of its own with the marker) stays ``▁`` and starts the word.
* **BERT specials.** ``[PAD] [UNK] [CLS] [SEP] [MASK]`` and the extra ``special_tokens`` keep the
  model's id when it has a piece of that name (models from our trainer have all five; the model's
  unknown piece is ``[UNK]`` whatever its name), and otherwise get ids after the model's pieces.
  Specials are matched whole in the text before sentencepiece sees it, so they are never split.
* **Offsets.** sentencepiece's ``offset_mapping`` output gives character spans into the original
  text, but a ``▁`` piece's span starts at the whitespace before the word; we move it to the word.

Requires sentencepiece >= 0.2.2 (``out_type="offset_mapping"``).
"""

from __future__ import annotations

import os
import re
from itertools import accumulate
from typing import Dict, List, Optional, Sequence, Tuple

import sentencepiece as spm

from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.tokenizers.base import BioTokenizer, Encoding, fill_empty_words, with_bert_specials

WORD_START = "\u2581"  # ▁, sentencepiece's whitespace marker

_Pieces = Tuple[List[int], List[Tuple[int, int]]]


def _why_not_a_model(model_file: str, err: Exception) -> str:
    """sentencepiece's reason is "could not parse ModelProto" (or "unk is not defined" for an empty
    file) whatever the file is; say what it looks like instead."""
    with open(model_file, "rb") as f:
        head = f.read(4096)
    if not head:
        return "empty file; expected a SentencePiece .model"
    try:
        head.decode("utf-8")
        text = True
    except UnicodeDecodeError as e:
        text = e.start >= len(head) - 3  # only a character cut at the end of what was read
    if text and b"\0" not in head:  # a model's piece scores put NUL bytes in its first KB
        looks = "a text file (a .vocab or vocab.txt?); give the .model file sentencepiece wrote"
    else:
        looks = "truncated, or another binary file"
    return f"not a SentencePiece model: {looks} [sentencepiece: {str(err).splitlines()[0]}]"


class SentencePieceTokenizer(BioTokenizer):
    """A SentencePiece model with BERT-style specials and WordPiece-form tokens.

    Casing is a property of the model (our trainer uses the ``nmt_nfkc_cf`` case-folding rule for
    uncased vocabularies), so there is no ``cased`` argument.
    """

    def __init__(self, model_file: str, special_tokens: Sequence[str] = ()):
        model_file = os.fspath(model_file)
        if not os.path.isfile(model_file):
            raise FileNotFoundError(f"SentencePiece model_file {model_file!r} does not exist")
        try:
            sp = spm.SentencePieceProcessor(model_file=model_file)
        except (OSError, RuntimeError) as err:
            raise DataFormatError(model_file, None, _why_not_a_model(model_file, err)) from None
        self._sp = sp
        self._model_file = model_file
        self._n_pieces = sp.get_piece_size()
        forms = [self._form(i) for i in range(self._n_pieces)]

        self._special_ids: Dict[str, int] = {}
        for token in with_bert_specials(special_tokens):
            if token == "[UNK]":
                token_id = sp.unk_id()
            else:
                token_id = sp.piece_to_id(token)
                if sp.id_to_piece(token_id) != token:  # piece_to_id answers unk_id when absent
                    token_id = len(forms)
                    forms.append(token)
            forms[token_id] = token
            self._special_ids[token] = token_id
        self._forms = forms
        self._continues = [f.startswith("##") for f in forms]
        self._starts = [0 if c else 1 for c in self._continues]
        self._special_id_set = frozenset(self._special_ids.values())
        # Longest first, so a special that contains another one wins.
        alternatives = sorted(self._special_ids, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, alternatives)))
        self._vocab: Optional[Dict[str, int]] = None
        self._inv_vocab: Optional[Dict[int, str]] = None

    def _form(self, i: int) -> str:
        piece = self._sp.id_to_piece(i)
        if self._sp.is_unknown(i):
            return "[UNK]"
        if self._sp.is_control(i) or self._sp.is_unused(i):
            return piece
        if piece.startswith(WORD_START):
            return piece[1:] or WORD_START
        return "##" + piece

    @property
    def backend(self) -> spm.SentencePieceProcessor:
        return self._sp

    # --- vocabulary ----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._forms)

    @property
    def vocab(self) -> Dict[str, int]:
        if self._vocab is None:
            vocab: Dict[str, int] = {}
            for i, form in enumerate(self._forms):
                # Two pieces can share a form (a user-defined "abc" and "▁abc"); keep the lower id.
                vocab.setdefault(form, i)
            for token, i in self._special_ids.items():
                vocab[token] = i
            self._vocab = vocab
        return self._vocab

    @property
    def inv_vocab(self) -> Dict[int, str]:
        if self._inv_vocab is None:
            self._inv_vocab = dict(enumerate(self._forms))
        return self._inv_vocab

    def token_to_id(self, token: str) -> Optional[int]:
        return self.vocab.get(token)

    def id_to_token(self, token_id: int) -> str:
        if not 0 <= token_id < len(self._forms):
            raise IndexError(f"id {token_id} is outside the vocabulary (size {self.vocab_size})")
        return self._forms[token_id]

    def is_continuation(self, token_id: int) -> bool:
        return self._continues[token_id]

    # --- specials ------------------------------------------------------------------------
    @property
    def special_ids(self) -> Dict[str, int]:
        return self._special_ids

    # --- encoding ------------------------------------------------------------------------
    def _encode_pieces(self, texts: Sequence[str]) -> List[_Pieces]:
        """Ids and character offsets per text: specials matched whole, the rest by sentencepiece.

        All non-special segments of all texts go to sentencepiece in one batched call.
        """
        segments: List[str] = []
        plans = []  # per text: (start, segment index) or (start, end, special id)
        for text in texts:
            plan = []
            pos = 0
            for m in self._special_re.finditer(text):
                if m.start() > pos:
                    plan.append((pos, len(segments)))
                    segments.append(text[pos:m.start()])
                plan.append((m.start(), m.end(), self._special_ids[m.group()]))
                pos = m.end()
            if pos < len(text):
                plan.append((pos, len(segments)))
                segments.append(text[pos:])
            plans.append(plan)
        results = self._sp.encode(segments, out_type="offset_mapping") if segments else []
        out = []
        for plan in plans:
            ids: List[int] = []
            offsets: List[Tuple[int, int]] = []
            for item in plan:
                if len(item) == 3:
                    ids.append(item[2])
                    offsets.append((item[0], item[1]))
                    continue
                base, k = item
                seg = segments[k]
                r = results[k]
                ids.extend(r["ids"])
                # Move each span's start past the whitespace a ▁ piece covers (as C-level string
                # ops: this loop is most of our per-sentence cost).
                offsets.extend([(base + e - len(seg[s:e].lstrip()), base + e) for s, e in r["offsets"]])
            out.append((ids, offsets))
        return out

    def _make_encoding(self, ids: List[int], offsets: List[Tuple[int, int]]) -> Encoding:
        # word index = number of word-initial tokens so far - 1; a leading continuation is word 0
        first = 1 if ids and self._continues[ids[0]] else 0
        word_ids = list(accumulate(map(self._starts.__getitem__, ids), initial=first - 1))[1:]
        return Encoding(ids, list(map(self._forms.__getitem__, ids)), offsets, word_ids)

    def encode(self, text: str) -> Encoding:
        return self._make_encoding(*self._encode_pieces([text])[0])

    def encode_batch(self, texts: Sequence[str]) -> List[Encoding]:
        return [self._make_encoding(ids, offsets) for ids, offsets in self._encode_pieces(texts)]

    def encode_words(self, words: Sequence[str]) -> Encoding:
        words = list(words)
        enc = Encoding([], [], [], [])
        for w, (ids, offsets) in enumerate(self._encode_pieces(words)):
            enc.ids.extend(ids)
            enc.tokens.extend(self._forms[i] for i in ids)
            enc.offsets.extend(offsets)
            enc.word_ids.extend([w] * len(ids))
        return fill_empty_words(enc, words, self.unk_id)

    def tokenize(self, text: str) -> List[int]:
        if self._special_re.search(text) is None:
            return self._sp.encode(text)  # megatron-core's hot path: ids only
        return self._encode_pieces([text])[0][0]

    def tokenize_batch(self, texts: Sequence[str]) -> List[List[int]]:
        texts = list(texts)
        if any(self._special_re.search(t) for t in texts):
            return [ids for ids, _ in self._encode_pieces(texts)]
        return self._sp.encode(texts)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        parts: List[str] = []
        run: List[int] = []
        for i in ids:
            if i in self._special_id_set:
                if run:
                    parts.append(self._sp.decode(run))
                    run = []
                if not skip_special_tokens:
                    parts.append(self._forms[i])
            else:
                run.append(i)
        if run:
            parts.append(self._sp.decode(run))
        return " ".join(p for p in parts if p)

    # --- files ---------------------------------------------------------------------------
    @property
    def artifacts(self) -> Dict[str, str]:
        return {"model_file": self._model_file}

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self._model_file!r}, vocab_size={self.vocab_size})"
