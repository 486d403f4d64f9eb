"""What each task reads and prints around a run, for :mod:`~biomegatron_nemo.runs.registry`: the
texts a try-out vocabulary is learned from, the test report a run prints and writes (tables,
predictions, pictures), and the inputs and output lines of ``biomegatron predict``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List


# ---------------------------------------------------------------------------- NER
def ner_texts(path: str) -> List[str]:
    from biomegatron_nemo.data.conll import read_conll

    return [" ".join(s.words) for s in read_conll(path)]


def ner_report(model, test_file: str, log_dir: Path) -> str:
    from biomegatron_nemo.metrics.ner import format_ner_table
    from biomegatron_nemo.runs.reports import write_ner_report

    output, report = log_dir / "test_predictions.conll", log_dir / "test_report"
    scores = model.evaluate(test_file, output_file=str(output), batch_size=model.config.test_ds.batch_size)
    write_ner_report(scores, report)
    return f"{format_ner_table(scores)}\npredictions: {output}\nreport: {report}"


def ner_predict(model, texts: List[str], batch_size: int, top_k: int) -> List[Dict]:
    return [{"text": t, "entities": e} for t, e in zip(texts, model.predict(texts, batch_size=batch_size))]


def show_entities(row: Dict) -> str:
    lines = [row["text"]] + [f"  {e['type']:<12} {e['text']!r:<30} [{e['start']}:{e['end']}]  {e['score']:.3f}"
                             for e in row["entities"]]
    return "\n".join(lines if row["entities"] else lines + ["  (no entities)"])


# ---------------------------------------------------------------------------- relation extraction
def re_texts(path: str) -> List[str]:
    from biomegatron_nemo.data.chemprot import read_classification_tsv

    return [ex.text for ex in read_classification_tsv(path)]


def re_report(model, test_file: str, log_dir: Path) -> str:
    from biomegatron_nemo.metrics.classification import format_classification_table
    from biomegatron_nemo.runs.reports import write_classification_report

    output, report = log_dir / "test_predictions.tsv", log_dir / "test_report"
    scores = model.evaluate(test_file, output_file=str(output), batch_size=model.config.test_ds.batch_size)
    write_classification_report(scores, report)
    data = scores["data"]
    return (f"{format_classification_table(scores)}\n{data['truncated']} sentences cut around their markers "
            f"({data['markers_cut']} with markers too far apart to keep both), {data['missing_markers']} "
            f"without two markers\npredictions: {output}\nreport: {report}")


def re_predict(model, texts: List[str], batch_size: int, top_k: int) -> List[Dict]:
    return [{"text": t, **r} for t, r in zip(texts, model.predict(texts, batch_size=batch_size))]


def show_relation(row: Dict) -> str:
    ranked = sorted(row["probabilities"].items(), key=lambda kv: -kv[1])
    return f"{row['text']}\n  {row['label']}  {row['probability']:.3f}   (" + \
        ", ".join(f"{k} {v:.3f}" for k, v in ranked[1:4]) + ")"


# ---------------------------------------------------------------------------- question answering
def qa_texts(path: str) -> List[str]:
    from biomegatron_nemo.data.squad import read_squad

    examples = read_squad(path)
    return list(dict.fromkeys(ex.context for ex in examples)) + [ex.question for ex in examples]


def qa_report(model, test_file: str, log_dir: Path) -> str:
    output = log_dir / "test_predictions"
    test = model.config.test_ds
    scores = model.evaluate(test_file, output_dir=str(output), golden_file=test.golden_file, batch_size=test.batch_size)
    shown = {k: v for k, v in scores.items() if k not in ("rank_of_first_correct", "data")}
    data = scores["data"]
    return (f"{json.dumps(shown, indent=1)}\n{data['examples']} questions in {data['features']} windows"
            f"\npredictions: {output}")


def qa_predict(model, items: List[Dict[str, str]], batch_size: int, top_k: int) -> List[Dict]:
    results = model.predict(items, top_k=top_k, batch_size=batch_size)
    return [{"question": i["question"], "answers": r} for i, r in zip(items, results)]


def show_answers(row: Dict) -> str:
    lines = [row["question"]] + [f"  {rank}. {a['text']!r}  [{a['start']}:{a['end']}]  {a['probability']:.3f}"
                                 for rank, a in enumerate(row["answers"], start=1)]
    return "\n".join(lines)
