"""SQuAD exact match and F1, v1.1 and v2.0, as the official evaluation scripts compute them.

Answer normalisation (lower case, drop punctuation, drop the articles a/an/the, collapse
whitespace), max over gold answers, and for v2.0 the no-answer handling: an unanswerable
question's only gold answer is ``""``, scores split into HasAns/NoAns, and the best no-answer
probability threshold. Re-written from the official scripts (v1.1 ``evaluate-v1.1.py``, v2.0
``evaluate-v2.0.py``) because they are standalone scripts, not an installable library.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Dict, List, Mapping, Optional, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower-case, remove punctuation, articles and extra whitespace (official normalisation)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match_score(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token-overlap F1 after normalisation; two empty answers score 1 (v2.0 no-answer)."""
    pred_toks = normalize_answer(prediction).split()
    gold_toks = normalize_answer(gold).split()
    if not pred_toks or not gold_toks:
        return float(pred_toks == gold_toks)
    common = Counter(pred_toks) & Counter(gold_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    p, r = same / len(pred_toks), same / len(gold_toks)
    return 2 * p * r / (p + r)


def _max_over(fn, prediction: str, golds: Sequence[str]) -> float:
    return max(fn(prediction, g) for g in golds)


def _gold_answers(qa: Mapping) -> List[str]:
    # v2.0 script: unanswerable questions (or ones whose answers normalise to nothing) have "".
    golds = [a["text"] for a in qa.get("answers", []) if normalize_answer(a["text"])]
    return golds or [""]


def squad_scores(gold_questions: Sequence[Mapping], predictions: Mapping[str, str],
                 na_probs: Optional[Mapping[str, float]] = None, na_prob_thresh: float = 1.0,
                 version_2: Optional[bool] = None) -> Dict:
    """Exact match and F1 (percent, as the official scripts print them).

    ``gold_questions``: dicts with ``id``, ``answers`` (list of ``{"text"}``) and for v2.0
    ``is_impossible`` — e.g. :func:`biomegatron_nemo.data.squad.read_squad` examples.
    ``predictions``: id → answer text (``""`` means no answer). ``version_2`` defaults to True
    when any question is impossible. A question without a prediction scores 0 in v1.1 (as the
    v1.1 script does); in v2.0 it is scored as "no answer" (the v2.0 script cannot score a file
    with missing predictions). ``missing`` counts them.
    """
    if version_2 is None:
        version_2 = any(q.get("is_impossible", False) for q in gold_questions)
    em, f1, has_ans = {}, {}, {}
    missing = 0
    for q in gold_questions:
        qid = q["id"]
        if qid not in predictions:
            missing += 1
            if not version_2:
                continue
        pred = predictions.get(qid, "")
        golds = _gold_answers(q) if version_2 else [a["text"] for a in q["answers"]]
        em[qid] = _max_over(exact_match_score, pred, golds)
        f1[qid] = _max_over(f1_score, pred, golds)
        has_ans[qid] = bool(q.get("answers"))  # as the v2.0 script: listed answers, not normalised ones
    total = len(gold_questions)  # v1.1 counts unanswered questions as 0, not as absent
    if not version_2:
        return {"exact_match": 100.0 * sum(em.values()) / total if total else 0.0,
                "f1": 100.0 * sum(f1.values()) / total if total else 0.0,
                "total": total, "missing": missing}

    def apply_threshold(scores):
        if na_probs is None:
            return scores
        out = {}
        for qid, s in scores.items():
            out[qid] = float(not has_ans[qid]) if na_probs.get(qid, 0.0) > na_prob_thresh else s
        return out

    em_t, f1_t = apply_threshold(em), apply_threshold(f1)
    result = _aggregate(em_t, f1_t, list(em))
    for name, cond in (("HasAns", True), ("NoAns", False)):
        ids = [qid for qid in em if has_ans[qid] == cond]
        if ids:
            sub = _aggregate(em_t, f1_t, ids)
            result.update({f"{name}_exact": sub["exact"], f"{name}_f1": sub["f1"],
                           f"{name}_total": sub["total"]})
    if na_probs is not None:
        for key, raw in (("exact", em), ("f1", f1)):
            best, thresh = best_threshold(predictions, raw, na_probs, has_ans)
            result[f"best_{key}"], result[f"best_{key}_thresh"] = best, thresh
    result["missing"] = missing
    return result


def _aggregate(em: Mapping[str, float], f1: Mapping[str, float], ids: Sequence[str]) -> Dict:
    n = len(ids)
    return {"exact": 100.0 * sum(em[i] for i in ids) / n if n else 0.0,
            "f1": 100.0 * sum(f1[i] for i in ids) / n if n else 0.0, "total": n}


def best_threshold(predictions: Mapping[str, str], scores: Mapping[str, float],
                   na_probs: Mapping[str, float], has_ans: Mapping[str, bool]):
    """Best score (percent) and no-answer threshold, sweeping questions by no-answer probability.

    Start by answering "no answer" everywhere (score = number of NoAns questions); lowering the
    threshold past a question's probability switches it to its predicted answer.
    """
    cur = best = sum(1 for q in scores if not has_ans[q])
    best_thresh = 0.0
    for qid in sorted(scores, key=lambda q: na_probs.get(q, 0.0)):
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
