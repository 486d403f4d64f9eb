"""Relation-extraction / sequence-classification scores as BLUE computes them for ChemProt.

Micro precision, recall and F1 over the *positive* classes only: a prediction counts when it is
not the negative label, a gold item counts when it is not the negative label, and a true
positive is a positive prediction equal to its gold label. Plus a per-class table and a
confusion matrix. Own code rather than scikit-learn (not a dependency, and BLUE's definition is
three counts).
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, Optional, Sequence

#: The negative class of BLUE's relation data sets (ChemProt, DDI).
NEGATIVE_LABEL = "false"


def _prf(tp: int, n_pred: int, n_gold: int) -> Dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def classification_scores(gold: Sequence[str], pred: Sequence[str], negative_label: str = NEGATIVE_LABEL,
                          labels: Optional[Iterable[str]] = None) -> Dict:
    """Micro P/R/F1 over positive classes, per-class table, confusion matrix and accuracy.

    ``labels`` (optional) is the closed label set; a gold or predicted label outside it raises
    ``ValueError`` naming the row (0-based). ``per_class`` covers every label except the
    negative one; ``confusion[gold][pred]`` counts rows.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    if labels is not None:
        allowed = set(labels)
        for i, (g, p) in enumerate(zip(gold, pred)):
            for which, lab in (("gold", g), ("predicted", p)):
                if lab not in allowed:
                    raise ValueError(f"row {i}: {which} label {lab!r} is not one of {sorted(allowed)}")
        label_list = list(labels)
    else:
        label_list = sorted(set(gold) | set(pred))
    tp = Counter(g for g, p in zip(gold, pred) if g == p and g != negative_label)
    n_gold = Counter(g for g in gold if g != negative_label)
    n_pred = Counter(p for p in pred if p != negative_label)
    per_class = {lab: {**_prf(tp[lab], n_pred[lab], n_gold[lab]), "support": n_gold[lab],
                       "pred": n_pred[lab], "correct": tp[lab]}
                 for lab in label_list if lab != negative_label}
    confusion = {g: {p: 0 for p in label_list} for g in label_list}
    for g, p in zip(gold, pred):
        confusion[g][p] += 1
    micro = _prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values()))
    return {
        **micro,
        "accuracy": sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else 0.0,
        "n": len(gold), "negative_label": negative_label, "labels": label_list,
        "per_class": per_class, "confusion": confusion,
    }


def format_classification_table(scores: Dict) -> str:
    """Per-class table, micro scores and the confusion matrix as text."""
    labels = scores["labels"]
    w = max([len(x) for x in labels] + [10])
    lines = [f"{'class':>{w}}  precision  recall      f1  support  pred",]
    for lab, s in scores["per_class"].items():
        lines.append(f"{lab:>{w}}  {s['precision']:9.4f}  {s['recall']:6.4f}  {s['f1']:6.4f}"
                     f"  {s['support']:7d}  {s['pred']:4d}")
    lines.append(f"{'micro':>{w}}  {scores['precision']:9.4f}  {scores['recall']:6.4f}  "
                 f"{scores['f1']:6.4f}   (positive classes; '{scores['negative_label']}' excluded)")
    lines.append(f"accuracy (all classes): {scores['accuracy']:.4f} over {scores['n']} rows")
    lines.append("confusion matrix (rows gold, columns predicted):")
    lines.append(" " * w + "".join(f"{lab:>{w + 1}}" for lab in labels))
    for g in labels:
        lines.append(f"{g:>{w}}" + "".join(f"{scores['confusion'][g][p]:>{w + 1}d}" for p in labels))
    return "\n".join(lines)
