"""From start/end logits of windowed features back to answers: n-best spans, exact substrings
of the original context, and the no-answer decision of SQuAD v2.0.

The rules are those of BERT's ``run_squad.py`` (and the Hugging Face / NeMo 1.x QA pipelines
after it), with character offsets in place of its whitespace-token heuristics:

* per window, the ``n_best`` highest start and end logits form candidate pairs; a pair counts when
  both tokens lie in the context, ``start <= end``, the span has at most ``max_answer_length``
  sub-tokens, and the start token has its maximal context in this window (so a span seen in two
  overlapping windows is scored where it has the most context around it);
* candidates of all windows of an example are ranked by ``start_logit + end_logit``; spans with
  the same text are one candidate (its best occurrence); the ``n_best`` best are kept and get a
  softmax over their scores as probabilities;
* the text is ``context[offsets[start][0]:offsets[end][1]]``: always an exact substring of the
  original context (unicode, repeated spaces and answers at the very end included), with its
  character ``start`` and ``end``;
* SQuAD v2.0: the null score is ``start_logit[CLS] + end_logit[CLS]``, minimal over the windows;
  the null answer ``""`` joins the n-best, and the example is answered ``""`` when
  ``null score − best span score`` exceeds ``null_score_diff_threshold`` (that difference is the
  per-question "no-answer odds" the official v2.0 script's best-threshold search takes).
"""

from __future__ import annotations

import collections
import heapq
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from biomegatron_nemo.data.squad import QAExample, QAFeature


def _softmax(xs: List[float]) -> List[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [x / s for x in e]


def _top(values: Sequence[float], k: int) -> List[int]:
    return heapq.nlargest(k, range(len(values)), key=values.__getitem__)


def _window_candidates(f: QAFeature, sl: Sequence[float], el: Sequence[float], n_best: int,
                       max_answer_length: int) -> List[Tuple[float, float, float, int, int]]:
    """``(score, start_logit, end_logit, char_start, char_end)`` of one window's valid spans."""
    out = []
    ends = [e for e in _top(el, n_best) if f.offsets[e] is not None]
    for s in _top(sl, n_best):
        if f.offsets[s] is None or not f.max_context[s]:
            continue
        for e in ends:
            if s <= e < s + max_answer_length:
                out.append((sl[s] + el[e], sl[s], el[e], f.offsets[s][0], f.offsets[e][1]))
    return out


def decode_predictions(examples: Sequence[QAExample], features: Sequence[QAFeature],
                       start_logits: Mapping[int, Sequence[float]], end_logits: Mapping[int, Sequence[float]],
                       n_best: int = 20, max_answer_length: int = 30, version_2: bool = False,
                       null_score_diff_threshold: float = 0.0):
    """Feature logits → per example: best answer text, n-best list, and no-answer odds.

    ``start_logits[i]`` / ``end_logits[i]``: the logits of feature ``i`` (a mapping, or a list
    indexed by feature index), at least as long as its ``input_ids``; examples none of whose
    features have logits are left out.

    Returns ``(predictions, nbest, null_odds)``: id → text (``""`` = no answer, in v2.0 or when no
    span is valid); id → ``[{"text", "probability", "start_logit", "end_logit", "start", "end"}]``
    best first (``start``/``end``: character offsets in the context, None for ``""``; the input of
    :func:`biomegatron_nemo.metrics.bioasq.merge_nbest`); id → null score − best span score (v2.0).
    """
    if isinstance(start_logits, Mapping):
        has_logits = start_logits.__contains__
    else:
        def has_logits(i):
            return i < len(start_logits)
    by_example: Dict[int, List[int]] = collections.defaultdict(list)
    for fi, f in enumerate(features):
        if has_logits(fi):
            by_example[f.example_index].append(fi)
    predictions, nbest_out, null_odds = {}, {}, {}
    for ei in sorted(by_example):
        ex = examples[ei]
        cands: List[Tuple[float, float, float, int, int]] = []
        null_score: Optional[float] = None
        for fi in by_example[ei]:
            f = features[fi]
            n = len(f.input_ids)
            sl, el = list(start_logits[fi][:n]), list(end_logits[fi][:n])
            null_score = sl[0] + el[0] if null_score is None else min(null_score, sl[0] + el[0])
            cands.extend(_window_candidates(f, sl, el, n_best, max_answer_length))
        cands.sort(key=lambda c: -c[0])
        seen, entries = set(), []
        for score, s_log, e_log, cs, ce in cands:
            text = ex.context[cs:ce]
            if text in seen:
                continue
            seen.add(text)
            entries.append({"text": text, "score": score, "start_logit": s_log, "end_logit": e_log,
                            "start": cs, "end": ce})
            if len(entries) == n_best:
                break
        best_span = entries[0] if entries else None
        if version_2:
            entries.append({"text": "", "score": null_score, "start_logit": null_score, "end_logit": 0.0,
                            "start": None, "end": None})
            entries.sort(key=lambda x: -x["score"])
        if not entries:  # no valid span (e.g. an empty context): one empty answer
            entries = [{"text": "", "score": 0.0, "start_logit": 0.0, "end_logit": 0.0, "start": None, "end": None}]
        for x, p in zip(entries, _softmax([x["score"] for x in entries])):
            x["probability"] = p
        if version_2:
            diff = null_score - (best_span["score"] if best_span else -1e9)
            null_odds[ex.id] = diff
            answered = best_span is not None and diff <= null_score_diff_threshold
            predictions[ex.id] = best_span["text"] if answered else ""
        else:
            predictions[ex.id] = best_span["text"] if best_span else ""
        nbest_out[ex.id] = [{k: x[k] for k in ("text", "probability", "start_logit", "end_logit", "start", "end")}
                            for x in entries]
    return predictions, nbest_out, null_odds
