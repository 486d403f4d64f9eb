"""Extractive QA data: SQuAD v1.1/v2.0 and BioASQ (SQuAD-format) readers, BioASQ golden files,
the data config, and sliding-window features. Decoding logits back to answers is in
:mod:`biomegatron_nemo.data.qa_decoding`.

* SQuAD JSON: ``data[].paragraphs[].{context, qas[].{id, question, answers, is_impossible,
  plausible_answers}}``. BioASQ factoid sets converted by BioBERT use the same JSON with one
  snippet per paragraph and ids ``<question id>_<nnn>``; :func:`question_id` recovers the
  question so answers can be merged across snippets.
* BioASQ golden files: official Task B JSON ``questions[].{id, body, type, exact_answer}``;
  a factoid ``exact_answer`` is a list (of lists) of synonyms.
* Features: ``[CLS] question [SEP] context-window [SEP]`` with ``max_query_length``,
  ``max_seq_length`` and ``doc_stride`` as in BERT's ``run_squad.py``; answer character spans
  are mapped to tokens through the tokenizer's offsets. An answer whose text does not match the
  context at ``answer_start`` is searched for nearby; the numbers relocated and unmatched are
  kept in :class:`QAFeatureStats` and logged; unmatched examples get no training feature
  (:func:`check_unmatched_answers` turns them into an error naming the file and question ids).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from biomegatron_nemo.common.config import option
from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.common.files import load_json
from biomegatron_nemo.data.collate import Collator
from biomegatron_nemo.data.batching import FineTuningDataConfig
from biomegatron_nemo.tokenizers.base import BioTokenizer

logger = logging.getLogger(__name__)


#: what to do with a training answer whose text is not in its context
UNMATCHED_ANSWER_POLICIES = ("error", "warn")


@dataclass
class QADataConfig(FineTuningDataConfig):
    """A ``train_ds`` / ``validation_ds`` / ``test_ds`` section of the question-answering model."""

    file: Optional[str] = option(None, "SQuAD-format JSON: SQuAD v1.1/v2.0, or BioASQ in BioBERT's SQuAD "
                                       "format (ids <question>_<nnn>, one snippet per paragraph)")
    max_seq_length: int = option(384, "window length in sub-tokens: [CLS] question [SEP] context [SEP]")
    batch_size: int = option(16, "windows per batch and data-parallel rank")
    golden_file: Optional[str] = option(None, "BioASQ: the official golden file of these questions "
                                              "(SAcc/LAcc/MRR); null: the answers in file")


@dataclass
class QAExample:
    """One question over one context (one snippet for BioASQ)."""

    id: str
    question: str
    context: str
    answers: List[Dict] = field(default_factory=list)  # [{"text", "answer_start"}]
    is_impossible: bool = False
    plausible_answers: List[Dict] = field(default_factory=list)
    title: str = ""


def question_id(example_id: str) -> str:
    """BioASQ ``<question>_<nnn>`` → ``<question>``; other ids are returned unchanged."""
    head, sep, tail = example_id.rpartition("_")
    return head if sep and tail.isdigit() else example_id


def _need(obj, key: str, where: str, path: Path, kind=None):
    if not isinstance(obj, dict):
        raise DataFormatError(path, None, f"expected an object with key {key!r}, got {type(obj).__name__}",
                              field=where)
    if key not in obj:
        raise DataFormatError(path, None, f"missing key {key!r}", field=where)
    value = obj[key]
    if kind is not None and not isinstance(value, kind):
        raise DataFormatError(path, None, f"expected {kind.__name__}, got {type(value).__name__}",
                              field=f"{where}.{key}")
    return value


def _answers(raw, where: str, path: Path, context: str) -> List[Dict]:
    if not isinstance(raw, list):
        raise DataFormatError(path, None, f"expected a list of answers, got {type(raw).__name__}", field=where)
    out = []
    for k, a in enumerate(raw):
        w = f"{where}[{k}]"
        text = _need(a, "text", w, path, str)
        start = _need(a, "answer_start", w, path, int)
        if not 0 <= start <= len(context):
            raise DataFormatError(path, None, f"answer_start {start} outside the context "
                                  f"(length {len(context)})", field=f"{w}.answer_start")
        out.append({"text": text, "answer_start": start})
    return out


def read_squad(path: Union[str, Path], require_answers: bool = False) -> List[QAExample]:
    """Read SQuAD v1.1/v2.0 or BioASQ-in-SQuAD JSON into examples.

    Structural problems raise :class:`DataFormatError` naming the JSON path (e.g.
    ``data[3].paragraphs[0].qas[2].answers[0].answer_start``). ``require_answers``: an
    answerable question without answers is an error (training files); test files such as
    BioASQ's have none. A repeated question id is an error: predictions are keyed by id.
    """
    path = Path(path)
    doc = load_json(path)
    if isinstance(doc, dict) and "questions" in doc and "data" not in doc:
        raise DataFormatError(path, None, "a BioASQ golden file (questions[]), not SQuAD-format JSON (data[]); "
                              "give it as golden_file", field="<root>")
    data = _need(doc, "data", "<root>", path, list)
    out: List[QAExample] = []
    seen: Dict[str, str] = {}  # question id → where it was first
    for i, article in enumerate(data):
        title = article.get("title", "") if isinstance(article, dict) else ""
        for j, para in enumerate(_need(article, "paragraphs", f"data[{i}]", path, list)):
            pw = f"data[{i}].paragraphs[{j}]"
            context = _need(para, "context", pw, path, str)
            for k, qa in enumerate(_need(para, "qas", pw, path, list)):
                qw = f"{pw}.qas[{k}]"
                qid = str(_need(qa, "id", qw, path))
                if qid in seen:
                    raise DataFormatError(path, None, f"question id {qid!r} repeats {seen[qid]}", field=f"{qw}.id")
                seen[qid] = qw
                question = _need(qa, "question", qw, path, str)
                impossible = bool(qa.get("is_impossible", False))
                answers = _answers(qa.get("answers", []), f"{qw}.answers", path, context)
                if require_answers and not impossible and not answers:
                    raise DataFormatError(path, None, f"question {qid!r} has no answers and is "
                                          "not marked is_impossible", field=f"{qw}.answers")
                plausible = _answers(qa.get("plausible_answers", []), f"{qw}.plausible_answers",
                                     path, context)
                out.append(QAExample(qid, question, context, answers, impossible, plausible, title))
    if not out:
        raise DataFormatError(path, None, "no questions found")
    return out


@dataclass
class BioASQGold:
    """A factoid question's golden answer: every synonym, flattened."""

    id: str
    body: str
    synonyms: List[str]


def _flatten(x) -> List[str]:
    if isinstance(x, str):
        return [x]
    if isinstance(x, list):
        return [s for item in x for s in _flatten(item)]
    raise TypeError(type(x).__name__)


def read_bioasq_golden(path: Union[str, Path]) -> Dict[str, BioASQGold]:
    """Question id → golden factoid answer.

    Reads the official Task B JSON (``questions[]`` with ``type == "factoid"``; other types are
    skipped) or, for development splits, SQuAD-format BioASQ (every answer of every snippet of a
    question becomes a synonym).
    """
    path = Path(path)
    doc = load_json(path)
    gold: Dict[str, BioASQGold] = {}
    if isinstance(doc, dict) and "questions" in doc:
        for i, q in enumerate(_need(doc, "questions", "<root>", path, list)):
            w = f"questions[{i}]"
            if _need(q, "type", w, path, str) != "factoid":
                continue
            qid = _need(q, "id", w, path, str)
            try:
                syn = _flatten(_need(q, "exact_answer", w, path))
            except TypeError as e:
                raise DataFormatError(path, None, f"exact_answer must be (lists of) strings, found {e}",
                                      field=f"{w}.exact_answer") from None
            gold[qid] = BioASQGold(qid, q.get("body", ""), list(dict.fromkeys(syn)))
    else:
        gold = bioasq_gold_from_examples(read_squad(path))
    if not gold:
        raise DataFormatError(path, None, "no factoid questions found")
    return gold


def bioasq_gold_from_examples(examples: Sequence[QAExample]) -> Dict[str, BioASQGold]:
    """Golden answers of SQuAD-format BioASQ examples: every answer of every snippet of a
    question is a synonym (questions without any answer are left out)."""
    gold: Dict[str, BioASQGold] = {}
    for ex in examples:
        qid = question_id(ex.id)
        g = gold.setdefault(qid, BioASQGold(qid, ex.question, []))
        g.synonyms.extend(a["text"] for a in ex.answers if a["text"] not in g.synonyms)
    return {qid: g for qid, g in gold.items() if g.synonyms}


# --- features -------------------------------------------------------------------------------

@dataclass
class QAFeatureStats:
    """What happened to answers while building features (reported, never silently dropped)."""

    examples: int = 0
    features: int = 0
    relocated: int = 0  # answer text found near, not at, answer_start
    unmatched: List[str] = field(default_factory=list)  # ids whose answer text is not in the context
    outside_window: int = 0  # training windows not containing the answer (labelled [CLS])

    def summary(self) -> str:
        return (f"{self.examples} examples → {self.features} features; answers relocated: "
                f"{self.relocated}, not found in context: {len(self.unmatched)}"
                + (f" (e.g. {self.unmatched[:3]})" if self.unmatched else ""))


@dataclass
class QAFeature:
    example_index: int
    input_ids: List[int]
    token_type_ids: List[int]
    offsets: List[Optional[Tuple[int, int]]]  # context char span per position, None outside it
    max_context: List[bool]  # position's token has its widest context in this window
    start_position: int = 0
    end_position: int = 0


def locate_answer(context: str, text: str, start: int) -> Optional[int]:
    """``start`` if the text is there, else the occurrence of ``text`` nearest to it, else None."""
    if context[start:start + len(text)] == text:
        return start
    hits, k = [], context.find(text)
    while k != -1 and text:
        hits.append(k)
        k = context.find(text, k + 1)
    return min(hits, key=lambda h: abs(h - start)) if hits else None


def char_to_token_span(offsets: Sequence[Tuple[int, int]], start: int, end: int) -> Optional[Tuple[int, int]]:
    """First and last token overlapping characters ``[start, end)``; None if none does."""
    toks = [i for i, (s, e) in enumerate(offsets) if s < end and e > start]
    return (toks[0], toks[-1]) if toks else None


def doc_windows(n_tokens: int, max_len: int, stride: int) -> List[Tuple[int, int]]:
    """BERT's sliding windows: ``(start, length)`` every ``stride`` tokens until the end is covered."""
    spans, start = [], 0
    while True:
        length = min(max_len, n_tokens - start)
        spans.append((start, length))
        if start + length >= n_tokens:
            return spans
        start += min(length, stride)


def build_qa_features(examples: Sequence[QAExample], tokenizer: BioTokenizer, max_seq_length: int = 384,
                      doc_stride: int = 128, max_query_length: int = 64,
                      training: bool = False) -> Tuple[List[QAFeature], QAFeatureStats]:
    """Examples → windowed features (+ stats).

    Start/end positions are set wherever an answer is found in a window (else ``[CLS]``, 0);
    ``training``: examples whose answer is not in the context get no feature. Evaluation keeps
    every example, so no question is lost from the scores.
    """
    stats = QAFeatureStats(examples=len(examples))
    features: List[QAFeature] = []
    # SQuAD asks ~5 questions per paragraph: tokenize each distinct context once, in batches.
    contexts = list(dict.fromkeys(ex.context for ex in examples))
    context_enc = dict(zip(contexts, tokenizer.encode_batch(contexts)))
    question_enc = tokenizer.encode_batch([ex.question for ex in examples])
    for ei, ex in enumerate(examples):
        q_ids = question_enc[ei].ids[:max_query_length]
        enc = context_enc[ex.context]
        max_doc = max_seq_length - len(q_ids) - 3
        if max_doc < 1:
            raise ValueError(f"max_seq_length {max_seq_length} leaves no room for the context "
                             f"after a {len(q_ids)}-token question")
        span = None
        if not ex.is_impossible and ex.answers:
            ans = ex.answers[0]
            found = locate_answer(ex.context, ans["text"], ans["answer_start"])
            if found is not None:
                stats.relocated += found != ans["answer_start"]
                span = char_to_token_span(enc.offsets, found, found + len(ans["text"]))
            if span is None:
                stats.unmatched.append(ex.id)
                if training:
                    continue
        windows = doc_windows(len(enc.ids), max_doc, doc_stride)
        for ws, wl in windows:
            prefix = [tokenizer.cls_id] + q_ids + [tokenizer.sep_id]
            ids = prefix + enc.ids[ws:ws + wl] + [tokenizer.sep_id]
            types = [0] * len(prefix) + [1] * (wl + 1)
            offsets = [None] * len(prefix) + list(enc.offsets[ws:ws + wl]) + [None]
            max_ctx = [False] * len(prefix) + [_is_max_context(windows, (ws, wl), t)
                                               for t in range(ws, ws + wl)] + [False]
            f = QAFeature(ei, ids, types, offsets, max_ctx)
            if span is not None:
                if ws <= span[0] and span[1] < ws + wl:
                    f.start_position = span[0] - ws + len(prefix)
                    f.end_position = span[1] - ws + len(prefix)
                else:
                    stats.outside_window += 1
            features.append(f)
    stats.features = len(features)
    if stats.unmatched or stats.relocated:
        logger.warning("QA features: %s", stats.summary())
    return features, stats


def check_unmatched_answers(stats: QAFeatureStats, source: str, policy: str = "error") -> None:
    """``policy="error"``: a :class:`DataFormatError` naming ``source`` and the question ids whose
    answer text is not in their context; ``"warn"``: they stay counted in ``stats`` (and logged)."""
    if policy not in UNMATCHED_ANSWER_POLICIES:
        raise ValueError(f"unmatched-answer policy must be one of {UNMATCHED_ANSWER_POLICIES}, got {policy!r}")
    if stats.unmatched and policy == "error":
        ids = ", ".join(repr(i) for i in stats.unmatched[:5]) + (" …" if len(stats.unmatched) > 5 else "")
        raise DataFormatError(source, None, f"{len(stats.unmatched)} answer(s) not found in their context "
                              f"(questions {ids}); fix the file or set unmatched_answers=warn to skip them")


def _is_max_context(windows, current, token: int) -> bool:
    # BERT run_squad.py: a token's best window maximises min(left, right) context + 0.01·length.
    best, best_span = None, None
    for ws, wl in windows:
        if ws <= token < ws + wl:
            score = min(token - ws, ws + wl - 1 - token) + 0.01 * wl
            if best is None or score > best:
                best, best_span = score, (ws, wl)
    return best_span == current


class QADataset(torch.utils.data.Dataset):
    """Features as ``input_ids, attention_mask, token_type_ids, start_positions, end_positions``
    plus ``feature_index`` for :func:`~biomegatron_nemo.data.qa_decoding.decode_predictions`."""

    def __init__(self, examples: Sequence[QAExample], tokenizer: BioTokenizer, max_seq_length: int = 384,
                 doc_stride: int = 128, max_query_length: int = 64, training: bool = False,
                 golden_file: Optional[str] = None):
        self.examples = list(examples)
        self.tokenizer = tokenizer
        #: BioASQ: the official golden file of these questions (scores), or None
        self.golden_file = golden_file
        self.features, self.stats = build_qa_features(self.examples, tokenizer, max_seq_length,
                                                      doc_stride, max_query_length, training)

    def __len__(self) -> int:
        return len(self.features)

    def lengths(self) -> List[int]:
        """Sub-tokens per feature (length-grouped and length-sorted batches)."""
        return [len(f.input_ids) for f in self.features]

    def __getitem__(self, i: int) -> Dict:
        f = self.features[i]
        return {"input_ids": f.input_ids, "attention_mask": [1] * len(f.input_ids),
                "token_type_ids": f.token_type_ids, "start_positions": f.start_position,
                "end_positions": f.end_position, "feature_index": i}

    def collate_fn(self, features):
        return Collator(self.tokenizer.pad_id)(features)
