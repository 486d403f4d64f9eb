"""The vocabulary and casing of a Hugging Face BERT folder, as a ``vocab.txt`` this library reads.

A published BERT keeps its WordPiece vocabulary in ``vocab.txt``, or only inside the fast
tokenizer's ``tokenizer.json`` (sentence-transformers models, for instance). The casing is
``do_lower_case`` of ``tokenizer_config.json``, else the ``lowercase`` of ``tokenizer.json``'s
BERT normaliser; where neither says, :func:`~biomegatron_nemo.tokenizers.wordpiece.looks_cased` reads it from the vocabulary itself (an
uncased vocabulary has no upper-case word pieces). Anything else (a BPE or Unigram tokenizer, ids with gaps) is refused by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

def _json(path: Path) -> Dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def tokens_of_tokenizer_json(path: Path) -> List[str]:
    """The WordPiece vocabulary of a fast tokenizer's ``tokenizer.json``, in id order."""
    data = _json(path)
    model = data.get("model") or {}
    if model.get("type") != "WordPiece":
        raise ValueError(f"{path}: a {model.get('type') or 'unknown'} tokenizer; this library reads WordPiece "
                         "vocabularies (BERT's) only")
    if model.get("continuing_subword_prefix", "##") != "##":
        raise ValueError(f"{path}: word pieces continue with {model['continuing_subword_prefix']!r}; "
                         "BERT's WordPiece uses '##'")
    by_id = {int(i): t for t, i in (model.get("vocab") or {}).items()}
    for added in data.get("added_tokens") or []:
        by_id.setdefault(int(added["id"]), added["content"])
    if not by_id:
        raise ValueError(f"{path}: the WordPiece vocabulary is empty")
    gaps = sorted(set(range(max(by_id) + 1)) - set(by_id))
    if gaps:
        raise ValueError(f"{path}: token ids are not 0..{max(by_id)}: {len(gaps)} missing, from id {gaps[0]}")
    return [by_id[i] for i in range(len(by_id))]


def _lowercase_setting(folder: Path) -> Optional[bool]:
    config = folder / "tokenizer_config.json"
    if config.is_file():
        lower = _json(config).get("do_lower_case")
        if lower is not None:
            return bool(lower)
    fast = folder / "tokenizer.json"
    if fast.is_file():
        normalizer = _json(fast).get("normalizer") or {}
        if normalizer.get("type") == "BertNormalizer" and normalizer.get("lowercase") is not None:
            return bool(normalizer["lowercase"])
    return None


def hf_vocabulary(folder: Path, workdir: Path) -> Tuple[Path, Optional[bool], List[str]]:
    """(the folder's ``vocab.txt``, or one written into ``workdir`` from ``tokenizer.json``; whether
    the folder declares it cased, None when nothing says; notes for the conversion summary)."""
    notes = []
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        if not (folder / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{folder}: no vocab.txt and no tokenizer.json: the model's vocabulary is missing")
        tokens = tokens_of_tokenizer_json(folder / "tokenizer.json")
        vocab = Path(workdir) / "vocab.txt"
        vocab.write_text("\n".join(tokens) + "\n", encoding="utf-8")
        notes.append(f"vocabulary: {len(tokens)} word pieces from tokenizer.json (the folder has no vocab.txt)")
    lower = _lowercase_setting(folder)
    return vocab, None if lower is None else not lower, notes
