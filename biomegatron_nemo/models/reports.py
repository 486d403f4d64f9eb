"""Reports people would rather look at than read: per-class tables and confusion-matrix pictures.

Written by the models' ``evaluate`` (``report_dir``); matplotlib draws, nothing is drawn by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict


def write_classification_report(scores: Dict, folder: Path) -> Dict[str, Path]:
    """``per_class.tsv``, ``confusion_matrix.tsv`` and ``confusion_matrix.png`` of
    :func:`~biomegatron_nemo.metrics.classification.classification_scores` output."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = scores["labels"]
    per_class = folder / "per_class.tsv"
    rows = ["class\tprecision\trecall\tf1\tsupport\tpredicted"]
    rows += [f"{c}\t{s['precision']:.4f}\t{s['recall']:.4f}\t{s['f1']:.4f}\t{s['support']}\t{s['pred']}"
             for c, s in scores["per_class"].items()]
    rows.append(f"micro ({scores['negative_label']} excluded)\t{scores['precision']:.4f}\t{scores['recall']:.4f}"
                f"\t{scores['f1']:.4f}\t\t")
    per_class.write_text("\n".join(rows) + "\n", encoding="utf-8")
    table = folder / "confusion_matrix.tsv"
    lines = ["gold \\ predicted\t" + "\t".join(labels)]
    lines += [g + "\t" + "\t".join(str(scores["confusion"][g][p]) for p in labels) for g in labels]
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    picture = folder / "confusion_matrix.png"
    _plot_confusion(scores, picture)
    return {"per_class": per_class, "confusion_table": table, "confusion_picture": picture}


def _plot_confusion(scores: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    labels = scores["labels"]
    counts = [[scores["confusion"][g][p] for p in labels] for g in labels]
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2, 1.0 * len(labels) + 1.5))
    image = ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    peak = max(max(row) for row in counts) or 1
    for i, row in enumerate(counts):
        for j, n in enumerate(row):
            ax.text(j, i, str(n), ha="center", va="center", color="white" if n > peak / 2 else "black")
    ax.set_title(f"micro-F1 {scores['f1']:.3f} ({scores['negative_label']} excluded)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
