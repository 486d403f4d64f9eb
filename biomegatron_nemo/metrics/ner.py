"""Entity-level NER scores equal to conlleval's, plus token accuracy.

Chunking and scoring come from ``seqeval`` in its default mode, which reproduces conlleval
(an ``I-`` after ``O`` opens an entity, a type change closes one, an entity running to the end
of a sentence is closed there). Nothing here re-implements chunking.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, List, Sequence

# seqeval is imported where it is used: it imports scikit-learn and pandas (most of a second),
# and this module is imported by every run (the NER model's config is part of the run schemas),
# pretraining and inference included


def get_entities(sentences):
    from seqeval.metrics.sequence_labeling import get_entities

    return get_entities(sentences)


def _check(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted sentences")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted tags")


def _entities(sentences: List[List[str]]) -> set:
    # seqeval joins sentences with an "O", so positions are unique across the corpus.
    return set(get_entities(sentences))


def ner_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Dict:
    """conlleval scores for per-sentence tag lists.

    Returns ``{"precision", "recall", "f1", "accuracy", "gold_entities", "pred_entities",
    "correct_entities", "per_type": {type: {"precision", "recall", "f1", "gold", "pred",
    "correct"}}}``; scores are fractions in [0, 1] and 0 where undefined (no predicted or no
    gold entities), as conlleval prints them.
    """
    from seqeval.metrics import accuracy_score
    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support

    _check(gold, pred)
    gold = [list(s) for s in gold]
    pred = [list(s) for s in pred]
    gold_ents, pred_ents = _entities(gold), _entities(pred)
    n_gold = Counter(t for t, _, _ in gold_ents)
    n_pred = Counter(t for t, _, _ in pred_ents)
    n_correct = Counter(t for t, _, _ in gold_ents & pred_ents)
    types = sorted(set(n_gold) | set(n_pred))
    per_type = {}
    if types:
        p, r, f, _ = precision_recall_fscore_support(gold, pred, average=None, zero_division=0)
        for t, pt, rt, ft in zip(types, p, r, f):
            per_type[t] = {"precision": float(pt), "recall": float(rt), "f1": float(ft),
                           "gold": n_gold[t], "pred": n_pred[t], "correct": n_correct[t]}
        p_all, r_all, f_all, _ = precision_recall_fscore_support(gold, pred, average="micro",
                                                                 zero_division=0)
    else:
        p_all = r_all = f_all = 0.0
    n_tokens = sum(len(s) for s in gold)
    return {
        "precision": float(p_all), "recall": float(r_all), "f1": float(f_all),
        "accuracy": float(accuracy_score(gold, pred)) if n_tokens else 0.0,
        "gold_entities": sum(n_gold.values()), "pred_entities": sum(n_pred.values()),
        "correct_entities": sum(n_correct.values()),
        "tokens": n_tokens,
        "per_type": per_type,
    }


def format_ner_table(scores: Dict) -> str:
    """A conlleval-like text table of :func:`ner_scores` output (percentages)."""
    lines = [
        f"processed {scores['tokens']} tokens with {scores['gold_entities']} phrases; "
        f"found: {scores['pred_entities']} phrases; correct: {scores['correct_entities']}.",
        f"accuracy: {100 * scores['accuracy']:6.2f}%; precision: {100 * scores['precision']:6.2f}%; "
        f"recall: {100 * scores['recall']:6.2f}%; FB1: {100 * scores['f1']:6.2f}",
    ]
    for t, s in scores["per_type"].items():
        lines.append(f"{t:>17}: precision: {100 * s['precision']:6.2f}%; recall: "
                     f"{100 * s['recall']:6.2f}%; FB1: {100 * s['f1']:6.2f}  {s['pred']}")
    return "\n".join(lines)


def entity_spans(tags: Sequence[str]) -> List[tuple]:
    """``(type, first_word, last_word)`` spans of one sentence (``last_word`` included), by
    conlleval's chunk rules (an ``I-`` after ``O`` or another type starts an entity); untyped
    tags (plain ``B`` / ``I``) have type ``"_"``. The package's one entity chunker."""
    return [(t, s, e) for t, s, e in get_entities(list(tags))]
