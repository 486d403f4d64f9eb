"""Reports people would rather look at than read, written by the task models' ``evaluate``
(``report_dir``): per-label score tables and bar charts (NER per entity type, RE per class) and
the RE confusion matrix.

Both tasks share one table writer and one chart (:func:`write_score_report`); the scores come
from :mod:`biomegatron_nemo.metrics` unchanged. matplotlib draws (:mod:`biomegatron_nemo.common.plots`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional

from biomegatron_nemo.common.plots import bar_chart, new_figure, save_figure

SCORE_COLUMNS = ("precision", "recall", "f1", "support", "predicted")


def write_score_report(rows: Mapping[str, Mapping], total_name: str, total: Mapping, folder: Path, stem: str,
                       label_column: str, title: str) -> Dict[str, Path]:
    """``{stem}.tsv`` (``label_column``, precision, recall, f1, support, predicted; one row per
    label, then ``total_name``) and ``{stem}_f1.png`` (P/R/F1 bars per label and the total).

    ``rows`` and ``total`` map to ``{"precision", "recall", "f1", "support", "pred"}``; a
    missing support or pred (the RE micro row has none) leaves its cell empty.
    """
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / f"{stem}.tsv"
    lines = ["\t".join((label_column,) + SCORE_COLUMNS)]
    for name, s in [*rows.items(), (total_name, total)]:
        counts = ["" if s.get(k) is None else str(s[k]) for k in ("support", "pred")]
        lines.append("\t".join([name, f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['f1']:.4f}", *counts]))
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    names = [*rows, total_name]
    scores = [*rows.values(), total]
    picture = bar_chart(folder / f"{stem}_f1.png", names,
                        {k: [float(s[k]) for s in scores] for k in ("precision", "recall", "f1")},
                        ylabel="score", title=title, ylim=(0.0, 1.1))
    return {"table": table, "picture": picture}


def write_ner_report(scores: Dict, folder: Path) -> Dict[str, Path]:
    """``per_type.tsv`` and ``per_type_f1.png`` of :func:`~biomegatron_nemo.metrics.ner.ner_scores`
    output: entity-level scores per type and the micro average over all entities."""
    rows = {t: {**s, "support": s["gold"]} for t, s in scores["per_type"].items()}
    total = {**scores, "support": scores["gold_entities"], "pred": scores["pred_entities"]}
    written = write_score_report(rows, "micro", total, Path(folder), "per_type", "type",
                                 f"entity-level scores per type (micro F1 {scores['f1']:.3f})")
    return {"per_type": written["table"], "per_type_picture": written["picture"]}


def write_classification_report(scores: Dict, folder: Path) -> Dict[str, Path]:
    """``per_class.tsv``, ``per_class_f1.png``, ``confusion_matrix.tsv`` and
    ``confusion_matrix.png`` of :func:`~biomegatron_nemo.metrics.classification.classification_scores`
    output."""
    folder = Path(folder)
    negative = scores["negative_label"]
    total: Dict[str, Optional[float]] = {k: scores[k] for k in ("precision", "recall", "f1")}
    written = write_score_report(scores["per_class"], f"micro ({negative} excluded)", total, folder, "per_class",
                                 "class", f"scores per class (micro F1 {scores['f1']:.3f}, {negative} excluded)")
    labels = scores["labels"]
    table = folder / "confusion_matrix.tsv"
    lines = ["gold \\ predicted\t" + "\t".join(labels)]
    lines += [g + "\t" + "\t".join(str(scores["confusion"][g][p]) for p in labels) for g in labels]
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    picture = folder / "confusion_matrix.png"
    _plot_confusion(scores, picture)
    return {"per_class": written["table"], "per_class_picture": written["picture"],
            "confusion_table": table, "confusion_picture": picture}


def _plot_confusion(scores: Dict, path: Path) -> None:
    labels = scores["labels"]
    counts = [[scores["confusion"][g][p] for p in labels] for g in labels]
    fig, ax = new_figure(0.8 * len(labels) + 2.2, 0.7 * len(labels) + 1.6)
    image = ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    peak = max(max(row) for row in counts) or 1
    for i, row in enumerate(counts):
        for j, n in enumerate(row):
            # dark cells get white numbers so every count stays readable
            ax.text(j, i, str(n), ha="center", va="center", color="white" if n > peak / 2 else "black")
    ax.set_title(f"micro-F1 {scores['f1']:.3f} ({scores['negative_label']} excluded)")
    fig.colorbar(image, ax=ax)
    save_figure(fig, path)
