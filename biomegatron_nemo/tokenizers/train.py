"""Vocabulary training: learn a SentencePiece model or a WordPiece ``vocab.txt`` from raw text.

Command line::

    python -m biomegatron_nemo.tokenizers.train --input corpus.txt.gz --kind sentencepiece \\
        --preset pubmed-30k --output vocab/pubmed-30k

Input is read by :func:`biomegatron_nemo.common.corpus.iter_documents`: one document per line,
plain text or JSON lines (``.jsonl``) with a ``text`` field, either possibly gzipped; bad input
stops training with an error naming file and line. The files written are the ones the loaders
take (``spm.model`` + ``spm.vocab`` for SentencePiece, ``vocab.txt`` for WordPiece), with the
BERT specials at ids 0-4 (``[PAD] [UNK] [CLS] [SEP] [MASK]``). Training is deterministic: the
same input and arguments write the same bytes in any process and on any number of cores
(``spm.model`` records its output path, so compare models written to the same place).

A corpus too small for the requested size fails with :class:`VocabularyTooLargeError`, which names
the largest size that fits; ``--soft-limit`` instead writes the vocabulary the corpus supports.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Iterator, List, Optional, Sequence

from tqdm import tqdm

from biomegatron_nemo.common.corpus import check_files_exist, iter_documents
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

# Not os.cpu_count(): the unigram trainer sums its EM statistics over per-thread shards of the
# corpus, so the thread count changes the floating-point sums and hence the pieces and scores
# (seen on PubMed: 1, 2, 4 and 8 threads gave four different models). A fixed count gives the same
# model on every machine; 16 is sentencepiece's own default.
SPM_NUM_THREADS = 16

WORDPIECE_PREFIX = "##"

_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


class VocabularyTooLargeError(ValueError):
    """The corpus cannot support the requested vocabulary size; ``largest`` is the size that fits."""

    def __init__(self, requested: int, largest: int, detail: str = ""):
        self.requested = requested
        self.largest = largest
        super().__init__(
            f"the corpus is too small for a vocabulary of {requested:,} units{detail}: the largest "
            f"size that fits is {largest:,}. Rerun with --vocab-size {largest} (or less), "
            f"add text, or pass --soft-limit to write the vocabulary the corpus supports.")


class VocabularyTooSmallError(ValueError):
    """The requested size cannot even hold the corpus's characters and the specials."""


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


def iter_corpus(paths: Sequence[str], progress: bool = True, stage: str = "") -> Iterator[str]:
    """Training text from all inputs, in chunks sentencepiece will not drop, with a progress bar."""
    for path in paths:
        with tqdm(iter_documents(path), desc=stage + os.path.basename(path), unit=" docs",
                  disable=not progress, file=sys.stderr) as docs:
            for _, doc in docs:
                yield from chunk(doc)


def train_sentencepiece(paths: Sequence[str], output: str, vocab_size: int, cased: bool = False,
                        model_type: str = "unigram", character_coverage: float = 0.9999,
                        soft_limit: bool = False, progress: bool = True) -> List[str]:
    """Train ``output/spm.model`` (+ ``.vocab``); returns the written paths."""
    import sentencepiece as spm

    check_files_exist(paths)
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
            num_threads=SPM_NUM_THREADS,
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


def _wordpiece_tokenizer(cased: bool):
    """An empty WordPiece tokenizer with BERT's normalisation and pre-tokenisation."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=not cased)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def _wordpiece_trainer(vocab_size: int, min_frequency: int, initial_tokens: Sequence[str]):
    from tokenizers import trainers

    return trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                     special_tokens=list(initial_tokens),
                                     continuing_subword_prefix=WORDPIECE_PREFIX,
                                     show_progress=False)


def _initial_wordpiece_tokens(paths: Sequence[str], cased: bool, progress: bool) -> List[str]:
    """The specials, then the corpus's characters, then their ``##`` forms, each sorted.

    Why this exists: ``tokenizers``' WordPiece trainer (its BPE trainer underneath) numbers the
    ``##c`` continuation tokens in the iteration order of a Rust hash map that is seeded at random
    in every process, and it breaks ties between equal-count merges by those ids, so the same
    corpus gave a different vocabulary in each run. The trainer adds its ``special_tokens`` first
    and reuses any entry that already exists when it builds the alphabet and the ``##c`` forms,
    so passing this list as the special tokens fixes every initial id, and with them the merge
    order. A vocabulary-size-0 run of the same trainer finds the list (it adds the alphabet and
    the ``##c`` forms, then stops before merging); it costs one more pass over the corpus.
    One theoretical source of variation remains inside the trainer: two stale queue entries for
    the same pair with equal counts pop in hash-map order. No run showed it (dozens of fresh
    processes on the shared PubMed corpora, 1 and 2 Rayon threads, sizes 4k-50k).
    """
    tok = _wordpiece_tokenizer(cased)
    tok.train_from_iterator(iter_corpus(paths, progress, stage="alphabet: "),
                            trainer=_wordpiece_trainer(0, 0, SPECIAL_TOKENS))
    learned = [t for t in tok.get_vocab() if t not in SPECIAL_TOKENS]
    # With no merges every learned entry is one character or a prefixed one ("#" is a character).
    characters = sorted(t for t in learned if len(t) == 1)
    continuations = sorted(t for t in learned if len(t) > 1)
    return list(SPECIAL_TOKENS) + characters + continuations


def train_wordpiece(paths: Sequence[str], output: str, vocab_size: int, cased: bool = False,
                    min_frequency: int = 2, soft_limit: bool = False,
                    progress: bool = True) -> List[str]:
    """Train ``output/vocab.txt`` with BERT's normalisation and pre-tokenisation; returns its path.

    The same input and arguments give the same file, byte for byte, in any process.
    """
    check_files_exist(paths)
    initial = _initial_wordpiece_tokens(paths, cased, progress)
    tok = _wordpiece_tokenizer(cased)
    tok.train_from_iterator(iter_corpus(paths, progress),
                            trainer=_wordpiece_trainer(vocab_size, min_frequency, initial))
    learned = tok.get_vocab_size()
    # The WordPiece trainer stops quietly when it runs out of merges; say so like sentencepiece.
    if learned < vocab_size and not soft_limit:
        raise VocabularyTooLargeError(vocab_size, learned, f" (min frequency {min_frequency})")
    os.makedirs(output, exist_ok=True)
    return tok.model.save(output)


def _parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "python -m biomegatron_nemo.tokenizers.train",
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


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    parser = _parser(prog)
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
