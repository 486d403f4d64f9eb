"""Vocabulary training: learn a SentencePiece model or a WordPiece ``vocab.txt`` from raw text.

Command line::

    python -m biomegatron_nemo.tokenizers.train --input corpus.txt.gz --kind sentencepiece \\
        --preset pubmed-30k --output vocab/pubmed-30k

Input is one document per line, plain text or ``.jsonl`` with a ``text`` field, either possibly
gzipped. The files written are the ones the loaders take (``spm.model`` + ``spm.vocab`` for
SentencePiece, ``vocab.txt`` for WordPiece), with the BERT specials at ids 0-4
(``[PAD] [UNK] [CLS] [SEP] [MASK]``).

A corpus too small for the requested size fails with :class:`VocabularyTooLargeError`, which names
the largest size that fits; ``--soft-limit`` instead writes the vocabulary the corpus supports.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

from tqdm import tqdm

from biomegatron_nemo.data.errors import DataFormatError
from biomegatron_nemo.tokenizers.base import SPECIAL_TOKENS

#: The paper's PubMed vocabularies (Shin et al. 2020, Table 4): SentencePiece, 30k and 50k units.
PRESETS = {
    "pubmed-30k": {"kind": "sentencepiece", "vocab_size": 30_000},
    "pubmed-50k": {"kind": "sentencepiece", "vocab_size": 50_000},
}

SPM_MODEL_PREFIX = "spm"
# sentencepiece silently drops "sentences" longer than max_sentence_length bytes, and our inputs
# are whole documents (PMC articles run to 80 KB). Pieces never cross whitespace
# (split_by_whitespace), so cutting a long line at whitespace changes nothing else.
MAX_CHUNK_CHARS = 4_000
SPM_MAX_SENTENCE_BYTES = 4 * MAX_CHUNK_CHARS + 1_024

_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


class VocabularyTooLargeError(ValueError):
    """The corpus cannot support the requested vocabulary size; ``largest`` is the size that fits."""

    def __init__(self, requested: int, largest: int, detail: str = "", about: bool = False):
        self.requested = requested
        self.largest = largest
        approx = "about " if about else ""
        super().__init__(
            f"the corpus is too small for a vocabulary of {requested:,} units{detail}: the largest "
            f"size that fits is {approx}{largest:,}. Rerun with --vocab-size {largest} (or less), "
            f"add text, or pass --soft-limit to write the vocabulary the corpus supports.")


class VocabularyTooSmallError(ValueError):
    """The requested size cannot even hold the corpus's characters and the specials."""


def iter_documents(path: str) -> Iterator[str]:
    """Non-empty documents of one input file; errors name the file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input file {path!r} does not exist")
    name = path[:-3] if path.endswith(".gz") else path
    is_jsonl = name.endswith(".jsonl")
    opener = gzip.open if path.endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                # Decoding line by line (not a text-mode file) is what lets the error say which line.
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError as err:
                    raise DataFormatError(path, lineno, f"not valid UTF-8 ({err.reason} at byte "
                                                        f"{err.start})") from err
                if not line:
                    continue
                if is_jsonl:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise DataFormatError(path, lineno, f"invalid JSON: {err.msg}") from err
                    text = record.get("text") if isinstance(record, dict) else None
                    if not isinstance(text, str):
                        raise DataFormatError(path, lineno, "expected an object with a string "
                                                            "'text' field", field="text")
                    line = text.strip()
                    if not line:
                        continue
                yield line
    except (gzip.BadGzipFile, EOFError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise DataFormatError(path, lineno + 1 if lineno else None,
                              f"cannot read: {err}") from err


def chunk(document: str, max_chars: int = MAX_CHUNK_CHARS) -> Iterator[str]:
    """Cut a long document at whitespace into pieces of at most ``max_chars`` (longer words stay whole)."""
    if len(document) <= max_chars:
        yield document
        return
    words: List[str] = []
    size = 0
    for word in document.split():
        if words and size + len(word) > max_chars:
            yield " ".join(words)
            words, size = [], 0
        words.append(word)
        size += len(word) + 1
    if words:
        yield " ".join(words)


def check_inputs(paths: Sequence[str]) -> None:
    """Fail before training, not half-way through it, when an input file is missing."""
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"input file {path!r} does not exist")


def iter_corpus(paths: Sequence[str], progress: bool = True) -> Iterator[str]:
    """Training text from all inputs, in chunks sentencepiece will not drop, with a progress bar."""
    for path in paths:
        with tqdm(iter_documents(path), desc=os.path.basename(path), unit=" docs",
                  disable=not progress, file=sys.stderr) as docs:
            for doc in docs:
                yield from chunk(doc)


def train_sentencepiece(paths: Sequence[str], output: str, vocab_size: int, cased: bool = False,
                        model_type: str = "unigram", character_coverage: float = 0.9999,
                        soft_limit: bool = False, progress: bool = True) -> List[str]:
    """Train ``output/spm.model`` (+ ``.vocab``); returns the written paths."""
    import sentencepiece as spm

    check_inputs(paths)
    os.makedirs(output, exist_ok=True)
    prefix = os.path.join(output, SPM_MODEL_PREFIX)
    # sentencepiece turns an exception raised by the iterator into a RuntimeError that carries
    # only its text; keep the original (a DataFormatError naming file and line) to re-raise it.
    read_errors: List[Exception] = []

    def corpus() -> Iterator[str]:
        try:
            yield from iter_corpus(paths, progress)
        except (ValueError, OSError) as err:
            read_errors.append(err)

    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=corpus(),
            model_prefix=prefix,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            # nmt_nfkc_cf = NFKC + case folding: uncased models lower-case at encode time too.
            normalization_rule_name="nmt_nfkc" if cased else "nmt_nfkc_cf",
            pad_id=0, unk_id=1, bos_id=2, eos_id=3,
            pad_piece="[PAD]", unk_piece="[UNK]", bos_piece="[CLS]", eos_piece="[SEP]",
            control_symbols=["[MASK]"],
            max_sentence_length=SPM_MAX_SENTENCE_BYTES,
            hard_vocab_limit=not soft_limit,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as err:
        if read_errors:
            raise read_errors[0] from None
        message = str(err)
        too_high = _TOO_HIGH.search(message)
        if too_high:
            raise VocabularyTooLargeError(vocab_size, int(too_high.group(2))) from None
        too_low = _TOO_LOW.search(message)
        if too_low:
            raise VocabularyTooSmallError(
                f"--vocab-size {vocab_size} cannot hold the corpus's {too_low.group(2)} required "
                f"characters and specials; use at least {too_low.group(2)} or lower "
                f"--character-coverage") from None
        raise
    if read_errors:
        for path in (prefix + ".model", prefix + ".vocab"):
            os.remove(path)  # trained on part of the corpus: not a vocabulary to keep
        raise read_errors[0]
    return [prefix + ".model", prefix + ".vocab"]


def train_wordpiece(paths: Sequence[str], output: str, vocab_size: int, cased: bool = False,
                    min_frequency: int = 2, soft_limit: bool = False,
                    progress: bool = True) -> List[str]:
    """Train ``output/vocab.txt`` with BERT's normalisation and pre-tokenisation; returns its path."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    check_inputs(paths)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=not cased)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS),
                                        continuing_subword_prefix="##", show_progress=False)
    tok.train_from_iterator(iter_corpus(paths, progress), trainer=trainer)
    learned = tok.get_vocab_size()
    # The WordPiece trainer stops quietly when it runs out of merges; say so like sentencepiece.
    # Its merge order among equal counts varies between runs, so where it stops varies a little.
    if learned < vocab_size and not soft_limit:
        raise VocabularyTooLargeError(vocab_size, learned, f" (min frequency {min_frequency})",
                                      about=True)
    os.makedirs(output, exist_ok=True)
    return tok.model.save(output)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m biomegatron_nemo.tokenizers.train",
        description="Learn a SentencePiece or WordPiece vocabulary from raw text "
                    "(one document per line; .jsonl with a 'text' field; .gz accepted).")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE", help="training text files")
    p.add_argument("--kind", choices=("sentencepiece", "wordpiece"),
                   help="vocabulary kind (default: the preset's, else sentencepiece)")
    p.add_argument("--vocab-size", type=int, help="number of units, specials included")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="the paper's PubMed vocabularies: sets --kind and --vocab-size "
                        "unless given explicitly")
    p.add_argument("--cased", action="store_true", help="keep case (default: lower-case)")
    p.add_argument("--output", required=True, metavar="DIR", help="directory for the vocabulary files")
    p.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram",
                   help="SentencePiece algorithm (default: unigram)")
    p.add_argument("--character-coverage", type=float, default=0.9999,
                   help="SentencePiece: share of characters covered; rarer ones map to [UNK]")
    p.add_argument("--min-frequency", type=int, default=2,
                   help="WordPiece: minimum count of a merged pair")
    p.add_argument("--soft-limit", action="store_true",
                   help="write a smaller vocabulary when the corpus cannot fill --vocab-size")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    preset = PRESETS.get(args.preset, {})
    kind = args.kind or preset.get("kind", "sentencepiece")
    vocab_size = args.vocab_size or preset.get("vocab_size")
    if vocab_size is None:
        parser.error("give --vocab-size or --preset")
    if vocab_size <= len(SPECIAL_TOKENS):
        parser.error(f"--vocab-size must be larger than the {len(SPECIAL_TOKENS)} special tokens")
    progress = not args.no_progress
    try:
        if kind == "sentencepiece":
            written = train_sentencepiece(args.input, args.output, vocab_size, args.cased,
                                          args.model_type, args.character_coverage,
                                          args.soft_limit, progress)
            cfg = {"library": "sentencepiece", "model_file": written[0]}
            spec = f"sentencepiece:{written[0]}"
        else:
            written = train_wordpiece(args.input, args.output, vocab_size, args.cased,
                                      args.min_frequency, args.soft_limit, progress)
            cfg = {"library": "wordpiece", "vocab_file": written[0], "cased": args.cased}
            spec = f"wordpiece{'-cased' if args.cased else ''}:{written[0]}"
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from biomegatron_nemo.tokenizers import build_tokenizer

    tokenizer = build_tokenizer(cfg)
    print(f"wrote {', '.join(written)} ({tokenizer.vocab_size:,} units)")
    print("load it with:")
    print("  from biomegatron_nemo.tokenizers import build_tokenizer")
    print(f"  tokenizer = build_tokenizer({cfg!r})")
    print(f"break-rate spec: --tokenizer {spec}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
