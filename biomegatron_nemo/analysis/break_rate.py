"""Sub-token break rate of named entities (the paper's Table 4 / Figure 1).

For each tokenizer and entity type of an IOB NER file:

* ``entities`` — number of entity mentions;
* ``split %`` — share of mentions that become more than one sub-token (all their words together);
* ``sub-tokens/entity`` — mean number of sub-tokens per mention;
* ``sub-tokens/word`` — mean number of sub-tokens per word inside mentions.

Words are tokenised as the NER models see them (``encode_words``: each word on its own, so a
word's count does not depend on its neighbours). Command line::

    python -m biomegatron_nemo.analysis.break_rate --ner train.tsv \\
        --tokenizer wordpiece:bert-base-uncased-vocab.txt --tokenizer sentencepiece:spm.model [--json] \\
        [--plot break_rate.png]

``--plot`` also draws Table 4 as a bar chart: ``split %`` per entity type, one bar per tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from biomegatron_nemo.common.plots import bar_chart, check_picture_path, draw_for_command
from biomegatron_nemo.data.conll import Sentence, read_conll
from biomegatron_nemo.metrics.ner import entity_spans
from biomegatron_nemo.tokenizers import BioTokenizer, SentencePieceTokenizer, WordPieceTokenizer

ALL_TYPES = "ALL"
UNTYPED = "entity"  # label for untyped tags (plain B / I)
SPEC_KINDS = ("wordpiece", "wordpiece-cased", "sentencepiece")


@dataclass
class BreakRate:
    """Counts for one tokenizer and entity type; the rates are derived from them."""

    tokenizer: str
    entity_type: str
    entities: int = 0
    split_entities: int = 0
    entity_words: int = 0
    entity_subtokens: int = 0

    @property
    def split_pct(self) -> float:
        return 100.0 * self.split_entities / self.entities if self.entities else 0.0

    @property
    def subtokens_per_entity(self) -> float:
        return self.entity_subtokens / self.entities if self.entities else 0.0

    @property
    def subtokens_per_word(self) -> float:
        return self.entity_subtokens / self.entity_words if self.entity_words else 0.0

    def as_dict(self) -> Dict[str, object]:
        return {**asdict(self), "split_pct": round(self.split_pct, 2),
                "subtokens_per_entity": round(self.subtokens_per_entity, 3),
                "subtokens_per_word": round(self.subtokens_per_word, 3)}


def break_rates(sentences: Iterable[Sentence], tokenizer: BioTokenizer,
                name: str = "tokenizer") -> List[BreakRate]:
    """One :class:`BreakRate` per entity type (sorted), then the ``ALL`` row."""
    rows: Dict[str, BreakRate] = {}
    total = BreakRate(name, ALL_TYPES)
    for sentence in sentences:
        # (type, first, last) word spans by conlleval's chunk rules; untyped tags (B / I) have type "_"
        spans = [(UNTYPED if t == "_" else t, first, last + 1) for t, first, last in entity_spans(sentence.tags)]
        if not spans:
            continue
        per_word = Counter(tokenizer.encode_words(sentence.words).word_ids)
        for etype, start, end in spans:
            n = sum(per_word[w] for w in range(start, end))
            for row in (rows.setdefault(etype, BreakRate(name, etype)), total):
                row.entities += 1
                row.split_entities += n > 1
                row.entity_words += end - start
                row.entity_subtokens += n
    return [rows[t] for t in sorted(rows)] + [total]


def load_tokenizer_spec(spec: str) -> Tuple[str, BioTokenizer]:
    """``[LABEL=]KIND:PATH`` → (label, tokenizer); KIND is wordpiece, wordpiece-cased or sentencepiece.

    A wordpiece PATH may be the ``vocab.txt`` or its directory.
    """
    label, eq, rest = spec.partition("=")
    if not eq or ":" in label:
        label, rest = "", spec
    kind, colon, path = rest.partition(":")
    if not colon or kind not in SPEC_KINDS or not path:
        raise ValueError(f"--tokenizer {spec!r}: expected [LABEL=]KIND:PATH with KIND one of "
                         f"{', '.join(SPEC_KINDS)} (e.g. wordpiece:vocab.txt)")
    if kind.startswith("wordpiece") and os.path.isdir(path):
        path = os.path.join(path, "vocab.txt")
    if not os.path.isfile(path):
        raise ValueError(f"--tokenizer {spec!r}: file {path!r} does not exist")
    # Default label: kind and the last two path parts (models are often all named spm.model).
    label = label or f"{kind}:{os.path.join(*os.path.normpath(path).split(os.sep)[-2:])}"
    if kind == "sentencepiece":
        return label, SentencePieceTokenizer(path)
    return label, WordPieceTokenizer(path, cased=kind == "wordpiece-cased")


COLUMNS = ("tokenizer", "entity type", "entities", "split %", "sub-tokens/entity", "sub-tokens/word")


def format_table(rows: Sequence[BreakRate]) -> str:
    cells = [COLUMNS] + [(r.tokenizer, r.entity_type, f"{r.entities:,}", f"{r.split_pct:.1f}",
                          f"{r.subtokens_per_entity:.2f}", f"{r.subtokens_per_word:.2f}")
                         for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = []
    for k, row in enumerate(cells):
        # Text columns left-aligned, numbers right-aligned.
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_break_rates(rows: Sequence[BreakRate], path: Path, title: str) -> Path:
    """Table 4 as bars: ``split %`` per entity type (``ALL`` last), one bar per tokenizer."""
    types = list(dict.fromkeys(r.entity_type for r in rows))
    tokenizers = list(dict.fromkeys(r.tokenizer for r in rows))
    split = {(r.tokenizer, r.entity_type): r.split_pct for r in rows}
    return bar_chart(path, types, {t: [split.get((t, e), 0.0) for e in types] for t in tokenizers},
                     ylabel="entities split into sub-tokens (%)", title=title, ylim=(0.0, 108.0),
                     value_format="{:.1f}")


def _short_name(path: str) -> str:
    # the folder names the data set (BC5CDR-chem/train.tsv); the full path is too long for a title
    return os.path.join(*Path(path).parts[-2:])


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m biomegatron_nemo.analysis.break_rate",
        description="How often named entities of an IOB NER file break into sub-tokens, per "
                    "tokenizer and entity type (BioMegatron, Table 4).")
    parser.add_argument("--ner", required=True, metavar="FILE",
                        help="IOB NER file: token<TAB>tag lines, blank line between sentences")
    parser.add_argument("--tokenizer", action="append", required=True, metavar="SPEC",
                        help="[LABEL=]KIND:PATH, KIND one of " + ", ".join(SPEC_KINDS)
                             + "; repeat to compare")
    parser.add_argument("--scheme", choices=("IOB1", "IOB2", "IOBES"), default="IOB2",
                        help="tag scheme of the NER file (default IOB2)")
    parser.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw split %% per entity type and tokenizer as a bar chart (Table 4)")
    args = parser.parse_args(argv)
    try:
        plot = check_picture_path(args.plot) if args.plot else None
        tokenizers = [load_tokenizer_spec(s) for s in args.tokenizer]
        if not os.path.isfile(args.ner):
            raise FileNotFoundError(f"--ner file {args.ner!r} does not exist")
        sentences = read_conll(args.ner, scheme=args.scheme)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = [row for label, tok in tokenizers for row in break_rates(sentences, tok, label)]
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print(f"{args.ner}: {len(sentences):,} sentences")
        print(format_table(rows))
    if plot is not None:
        title = f"{_short_name(args.ner)}: entities broken into sub-tokens (Table 4)"
        return draw_for_command(lambda path: plot_break_rates(rows, path, title), plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
