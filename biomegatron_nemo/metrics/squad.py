"""SQuAD exact match and F1, v1.1 and v2.0, computed exactly as the official scripts do.

Re-implemented rather than imported: the official ``evaluate-v1.1.py`` and ``evaluate-v2.0.py``
(https://rajpurkar.github.io/SQuAD-explorer/) are standalone command-line scripts, not an
installable library. ``tests/fixtures/squad_official`` holds outputs of the unmodified
scripts that this module must reproduce key for key.

Shared by both versions: answer normalisation (lower case, drop ASCII ``string.punctuation`` —
not unicode quotes or dashes —, then the whole words a/an/the, then collapse whitespace) and the
max over gold answers. Where the versions differ (v1.1 | v2.0):

* token F1 without a common token: 0, even for two empty answers | empty vs empty 1, one empty 0
* a gold answer normalising to ``""``: kept (EM 1 against an empty prediction, F1 0) | dropped,
  ``[""]`` when none is left (the no-answer target)
* a question without gold answers: cannot be scored (ValueError) | a NoAns question
* a missing prediction: 0, counted in the total | scored as ``""`` (see :func:`squad_scores`)
* output keys: ``exact_match``, ``f1`` | ``exact``, ``f1``, ``total``, ``HasAns_*``,
  ``NoAns_*``, and ``best_*`` with no-answer probabilities

Both report ``total`` (the questions in the averages; an extra key for v1.1) and ``missing``
(gold questions without a prediction; extra for both). Prediction ids that are not gold
questions are ignored, as by both scripts.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """The official normalisation: lower, remove ASCII punctuation, then articles, then extra whitespace.

    Order matters: ``"the-drug"`` loses its hyphen first and becomes the one word ``"thedrug"``.
    Whitespace is whatever ``str.split()`` splits on (tabs, newlines, no-break space ...).
    """
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match_score(prediction: str, gold: str) -> float:
    """1.0 when the normalised answers are equal (the same in v1.1 and v2.0)."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str, version_2: bool = True) -> float:
    """Token-overlap F1 of the normalised answers (tokens counted with multiplicity).

    ``version_2=True`` (the default, kept for existing callers): if either answer normalises to
    nothing, 1 when both do and 0 otherwise (v2.0's no-answer rule). ``version_2=False``: v1.1,
    where no common token means 0 first, so two empty answers score 0 too.
    """
    pred_toks = normalize_answer(prediction).split()
    gold_toks = normalize_answer(gold).split()
    if version_2 and (not pred_toks or not gold_toks):
        return float(pred_toks == gold_toks)
    same = sum((Counter(pred_toks) & Counter(gold_toks)).values())
    if same == 0:
        return 0.0
    p, r = same / len(pred_toks), same / len(gold_toks)
    return 2 * p * r / (p + r)


def _gold_answers(qa: Mapping, version_2: bool) -> List[str]:
    texts = [a["text"] for a in qa.get("answers", [])]
    if not version_2:
        if not texts:
            raise ValueError(f"question {qa['id']!r} has no gold answers: SQuAD v1.1 cannot score it "
                             "(the official v1.1 script fails in max()); score the file as v2.0")
        return texts
    return [t for t in texts if normalize_answer(t)] or [""]


def squad_scores(gold_questions: Sequence[Mapping], predictions: Mapping[str, str],
                 na_probs: Optional[Mapping[str, float]] = None, na_prob_thresh: float = 1.0,
                 version_2: Optional[bool] = None) -> Dict:
    """Exact match and F1 in percent, with the keys and totals of the official script's JSON.

    ``gold_questions``: dicts with ``id``, ``answers`` (list of ``{"text"}``) and for v2.0
    ``is_impossible`` — e.g. ``dataclasses.asdict`` of :func:`biomegatron_nemo.data.squad.read_squad`
    examples. ``predictions``: id → answer text (``""`` = no answer). ``version_2`` defaults to
    True when any question is impossible.

    v1.1: a question without a prediction scores 0 and counts in the total, as in the v1.1
    script; a question without gold answers raises ValueError naming it.

    v2.0: a question is HasAns when it lists answers (``bool(qa["answers"])``, even if they all
    normalise to nothing). ``na_probs`` (id → no-answer probability; an id it lacks counts as
    0.0, as every id does without a file): a question whose probability is > ``na_prob_thresh``
    is answered "no answer", and ``best_*`` come from :func:`best_threshold` over the raw scores.
    Without ``na_probs`` there are no ``best_*`` keys. A missing prediction is scored as no
    answer (``""``) and counted in ``missing`` — the official v2.0 script stops with a KeyError
    instead, so on files it can score the two agree.
    """
    if version_2 is None:
        version_2 = any(q.get("is_impossible", False) for q in gold_questions)
    em, f1, has_ans = {}, {}, {}
    missing = 0
    for q in gold_questions:
        qid = q["id"]
        golds = _gold_answers(q, version_2)
        if qid not in predictions:
            missing += 1
            if not version_2:
                continue  # 0 for this question, still in the total
        pred = predictions.get(qid, "")
        em[qid] = max(exact_match_score(pred, g) for g in golds)
        f1[qid] = max(f1_score(pred, g, version_2=version_2) for g in golds)
        has_ans[qid] = bool(q.get("answers"))
    if not version_2:
        total = len(gold_questions)
        return {"exact_match": 100.0 * sum(em.values()) / total if total else 0.0,
                "f1": 100.0 * sum(f1.values()) / total if total else 0.0,
                "total": total, "missing": missing}

    probs = na_probs or {}
    em_t, f1_t = ({qid: float(not has_ans[qid]) if probs.get(qid, 0.0) > na_prob_thresh else s
                   for qid, s in raw.items()} for raw in (em, f1))
    result = _aggregate(em_t, f1_t, list(em))
    for name, cond in (("HasAns", True), ("NoAns", False)):
        ids = [qid for qid in em if has_ans[qid] == cond]
        if ids:  # as the official script: the block is left out when it has no questions
            result.update({f"{name}_{k}": v for k, v in _aggregate(em_t, f1_t, ids).items()})
    if na_probs is not None:
        for key, raw in (("exact", em), ("f1", f1)):
            result[f"best_{key}"], result[f"best_{key}_thresh"] = best_threshold(
                predictions, raw, na_probs, has_ans)
    result["missing"] = missing
    return result


def _aggregate(em: Mapping[str, float], f1: Mapping[str, float], ids: Sequence[str]) -> Dict:
    n = len(ids)
    return {"exact": 100.0 * sum(em[i] for i in ids) / n if n else 0.0,
            "f1": 100.0 * sum(f1[i] for i in ids) / n if n else 0.0, "total": n}


def best_threshold(predictions: Mapping[str, str], scores: Mapping[str, float],
                   na_probs: Mapping[str, float], has_ans: Mapping[str, bool]) -> Tuple[float, float]:
    """v2.0's best score (percent) and no-answer threshold, as ``find_best_thresh`` sweeps them.

    Start from "no answer" everywhere: the score is the number of NoAns questions in ``has_ans``
    (every gold question). Then, in order of increasing ``na_probs``, switch each scored question
    to its prediction: + its raw score if HasAns, −1 if NoAns with a non-empty raw prediction
    (even one normalising to nothing, e.g. ``"the"``), else 0; a new maximum records that
    question's probability as the threshold. Ties keep the order of ``na_probs`` (the no-answer
    file's order, a stable sort), which can change the result; ids of ``na_probs`` not in
    ``scores`` are skipped, and scored ids it lacks come last with probability 0.0. The
    divisor is ``len(scores)``.
    """
    order = [q for q in na_probs if q in scores] + [q for q in scores if q not in na_probs]
    cur = best = sum(1 for q in has_ans if not has_ans[q])
    best_thresh = 0.0
    for qid in sorted(order, key=lambda q: na_probs.get(q, 0.0)):
        if has_ans[qid]:
            diff = scores[qid]
        elif predictions.get(qid, ""):
            diff = -1
        else:
            diff = 0
        cur += diff
        if cur > best:
            best, best_thresh = cur, na_probs.get(qid, 0.0)
    return 100.0 * best / len(scores) if scores else 0.0, best_thresh
