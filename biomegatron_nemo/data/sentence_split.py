"""Sentence splitting for biomedical text: the first stage of pretraining-corpus preprocessing.

BERT-style pretraining (and megatron-core's BERT dataset) wants one sequence per sentence, so
that samples start on sentence boundaries and the sentence-order head can cut between them.
Biomedical prose is full of periods that do not end a sentence: "e.g.", "i.e.", "et al.",
"vs.", "Fig. 2", "2.5 mg", species names such as "E. coli", author initials, dosing
abbreviations ("b.i.d.", "i.v."). A naive ``". "`` split breaks all of them.

The splitting itself is done by pySBD (Sadvilkar & Neumann, 2020; the rule set of the
"Golden Rules" benchmark), which already handles "e.g.", "i.e.", "et al.", "Fig.", "vs.",
decimals and single-letter initials. This module owns what pySBD lacks for this domain:

* **Biomedical abbreviations** missing from pySBD's English list ("cf.", "approx.", "spp.",
  "b.i.d.", "i.v.", "Figs.", "Suppl.", ...). They are added to a *subclass* of pySBD's English
  language, so other users of pySBD in the same process are not affected. pySBD only keeps
  such a period when the next word starts in lower case, with a digit or with a bracket, so
  "... measured at 37 C approx. The next ..." still splits.
* **Long documents** (PMC full text, one article per line). pySBD applies its rules to the
  whole text at once: its abbreviation pass runs one ``re.sub`` over the whole text per
  abbreviation occurrence (cost grows with the square of the length: seconds for one 72 KB
  article, against ~200 KB/s on abstracts), and its text-between-brackets rule protects
  everything from an opening bracket to the next closing one, so one unbalanced "[" in a PMC
  article ("[mean ± SEM ... g)") swallowed 19 sentences up to a citation "[6]". Long
  documents are therefore first cut at *unambiguous* boundaries — a lower-case word of four
  or more letters that is not a known abbreviation, then ``.``/``!``/``?``, whitespace and an
  upper-case letter, where pySBD splits anyway — into chunks of at least ``chunk_chars``
  characters, each segmented separately (≈7× faster on those articles, damage bounded).
* **No list-item detection.** pySBD cuts at anything resembling a list marker ("i)", "a.",
  "1."), which fragments inline enumerations and even "given i.v. for 2 h." in running text;
  see :class:`_RunningTextProcessor`.
* **Units with periods** in older abstracts ("0.6 mg. per kilogram", "22 mg./kg. in mice"):
  units are abbreviations, and a period inside or closing a "/unit" is hidden from pySBD.
* **Whitespace.** Sentences come back stripped; empty ones are dropped; newlines inside a
  document are treated as spaces (documents may be wrapped).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import List, Tuple

import pysbd
from pysbd.lang.english import English
from pysbd.processor import Processor
from pysbd.utils import Text

# Abbreviations common in PubMed/PMC text and absent from pySBD 0.3.4's English list (which
# already has e.g, i.e, al, fig, vs, no, ref, pp, min, hr, exp, etc, viz, ...). Lower case,
# without the final period, as pySBD stores them.
BIOMEDICAL_ABBREVIATIONS = (
    "approx", "ca", "cf", "resp", "incl", "excl", "est",
    "figs", "suppl", "eq", "eqs", "refs", "vol", "vols", "ed", "eds", "chap", "sect",
    "sp", "spp", "subsp", "var", "ssp", "gen", "nov", "comb", "str",
    "b.i.d", "t.i.d", "q.i.d", "q.d", "p.o", "i.v", "i.p", "i.m", "s.c", "i.c.v", "p.r.n",
    "yr", "yrs", "wk", "wks", "mos", "max", "avg", "conc", "temp", "std",
    "pt", "pts", "tab", "dil", "diam", "wt", "corr", "prep",
    # Units, which older abstracts write with a period ("0.6 mg. per kilogram"); kept only
    # before a lower-case word or a digit, so "... of 2 mg. The next ..." still splits.
    "mg", "kg", "gm", "ml", "cc", "cm", "mm", "ng", "mcg", "mmol", "meq", "hrs", "h", "d",
)

# Abbreviations that always lead into the next word, so their period never ends a sentence
# even before a capital ("cf. Table 1", "Figs. S2", "Eq. 3"); pySBD treats its own
# prepositive list ("Dr.", "Fig.", "vs.") the same way.
BIOMEDICAL_PREPOSITIVE_ABBREVIATIONS = (
    "cf", "approx", "ca", "figs", "eq", "eqs", "ref", "refs", "suppl", "tab", "vol", "vols",
    "chap", "sect",
)


class _RunningTextProcessor(Processor):
    """pySBD's ``Processor.process`` without its first step, ``ListItemReplacer``.

    That step turns anything that looks like a list marker into a sentence break: inline
    enumerations ("outcomes were i) survival, ii) relapse", "the steps were 1. lysis, 2. ...")
    and, worse, dosing routes with a later unit ("given i.v. for 2 h." is cut after "given",
    "i.v." and "for 2", because "i." and "h." read as list letters). Corpus documents are
    running text, one per line, where list items are rare and such cuts are common. The body
    is pySBD 0.3.4's, minus that one call (pySBD has no switch for it).
    """

    def process(self):
        if not self.text:
            return self.text
        self.text = self.text.replace("\n", "\r")
        self.replace_abbreviations()
        self.replace_numbers()
        self.replace_continuous_punctuation()
        self.replace_periods_before_numeric_references()
        self.text = Text(self.text).apply(
            self.lang.Abbreviation.WithMultiplePeriodsAndEmailRule,
            self.lang.GeoLocationRule, self.lang.FileFormatRule)
        return self.split_into_segments()


class _BiomedicalEnglish(English):
    """pySBD's English with :data:`BIOMEDICAL_ABBREVIATIONS` added and list-item detection off
    (subclasses, not patches: other pySBD users in the process are unaffected)."""

    Processor = _RunningTextProcessor

    class Abbreviation(English.Abbreviation):
        ABBREVIATIONS = sorted(
            set(English.Abbreviation.ABBREVIATIONS)
            | set(BIOMEDICAL_ABBREVIATIONS)
            | set(BIOMEDICAL_PREPOSITIVE_ABBREVIATIONS)
        )
        PREPOSITIVE_ABBREVIATIONS = sorted(
            set(English.Abbreviation.PREPOSITIVE_ABBREVIATIONS)
            | set(BIOMEDICAL_PREPOSITIVE_ABBREVIATIONS)
        )


_ABBREVIATION_SET = frozenset(_BiomedicalEnglish.Abbreviation.ABBREVIATIONS)

_HIDDEN_PERIOD = "\ue000"  # Unicode private use: never in real text, untouched by pySBD
_UNIT_PERIOD = re.compile(r"(/[A-Za-z]{1,5})\.(?=\s[a-z0-9(])")

# A candidate safe cut: "<word of >= 4 lower-case letters><.!?><whitespace><Upper-case>".
_SAFE_BOUNDARY = re.compile(r"(?<![\w.])([a-z]{4,})[.!?]\s+(?=[A-Z])")


class BiomedicalSentenceSplitter:
    """Split biomedical text into sentences (pySBD + biomedical abbreviations + chunking).

    >>> BiomedicalSentenceSplitter().split("Mice received 2.5 mg/kg (see Fig. 2). All survived.")
    ['Mice received 2.5 mg/kg (see Fig. 2).', 'All survived.']
    """

    def __init__(self, chunk_chars: int = 2000):
        self.chunk_chars = chunk_chars
        self._segmenter = pysbd.Segmenter(language="en", clean=False)
        # pySBD looks its rules up on ``language_module``; point it at the extended language.
        self._segmenter.language_module = _BiomedicalEnglish

    def split(self, text: str) -> List[str]:
        """Sentences of ``text``, stripped, in order, none empty."""
        text = " ".join(text.split())
        if not text:
            return []
        # Unit periods pySBD's abbreviation rules cannot see (they need whitespace before the
        # abbreviation): "6 mg./kg. in mice" is one sentence. A period directly before "/", and
        # one closing "/unit" before a lower-case word or digit, are hidden behind a private-use
        # character for the duration.
        text = text.replace("./", _HIDDEN_PERIOD + "/")
        text = _UNIT_PERIOD.sub(r"\1" + _HIDDEN_PERIOD, text)
        sentences: List[str] = []
        for chunk in self._chunks(text):
            # ``processor().process()`` is pySBD's segmentation without its non-destructive
            # char-span reconstruction (another scan of the text per sentence); we strip
            # whitespace anyway.
            for sentence in self._segmenter.processor(chunk).process():
                sentence = sentence.strip().replace(_HIDDEN_PERIOD, ".")
                if sentence:
                    sentences.append(sentence)
        return sentences

    __call__ = split

    def _chunks(self, text: str) -> List[str]:
        if len(text) <= self.chunk_chars:
            return [text]
        chunks, start = [], 0
        for match in _SAFE_BOUNDARY.finditer(text):
            if match.group(1) in _ABBREVIATION_SET:
                continue
            cut = match.end()
            if cut - start >= self.chunk_chars:
                chunks.append(text[start:cut])
                start = cut
        chunks.append(text[start:])
        return chunks


@lru_cache(maxsize=1)
def _default_splitter() -> BiomedicalSentenceSplitter:
    return BiomedicalSentenceSplitter()


def split_sentences(text: str) -> List[str]:
    """Split ``text`` with a shared :class:`BiomedicalSentenceSplitter`."""
    return _default_splitter().split(text)


def sentence_spans(text: str) -> List[Tuple[int, int]]:
    """``(start, end)`` character offsets of each sentence of ``text`` in ``text`` itself.

    The splitter collapses whitespace; every other character of the text is in exactly one of its
    sentences, in order. So the k-th non-whitespace character of the text is the k-th one of the
    sentences, and a sentence spans from its first such character to its last.
    """
    visible = [i for i, ch in enumerate(text) if not ch.isspace()]
    spans, k = [], 0
    for sentence in split_sentences(text):
        n = sum(1 for ch in sentence if not ch.isspace())
        spans.append((visible[k], visible[k + n - 1] + 1))
        k += n
    if k != len(visible):  # the splitter dropped or added text: offsets would be wrong
        raise AssertionError(f"sentence splitting changed the text ({k} of {len(visible)} characters placed)")
    return spans
