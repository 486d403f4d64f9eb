"""The published-results table (analysis/published.py) is well-formed: every task has the paper's
BioMegatron figures, values are percentages, every row names its source, and a few figures are
pinned to the paper's text so a typo cannot slip in unnoticed."""

import doctest

import pytest

from biomegatron_nemo.analysis import published
from biomegatron_nemo.analysis.published import METRICS, PUBLISHED, PUBLISHED_RESULTS, TASKS, best, results

#: the metrics each task's rows must carry
TASK_METRICS = {
    "BC5CDR-chem": {"precision", "recall", "f1"},
    "BC5CDR-disease": {"precision", "recall", "f1"},
    "NCBI-disease": {"precision", "recall", "f1"},
    "ChemProt": {"precision", "recall", "f1"},
    "BioASQ-7b-factoid": {"strict_accuracy", "lenient_accuracy", "mrr"},
    "SQuAD-v1.1": {"f1"},
    "SQuAD-v2.0": {"f1"},
}


def test_every_row_is_well_formed():
    assert PUBLISHED_RESULTS and PUBLISHED is PUBLISHED_RESULTS
    for row in PUBLISHED_RESULTS:
        assert row.task in TASKS and row.metric in METRICS, row
        assert isinstance(row.value, float) and 0.0 <= row.value <= 100.0, row
        assert row.model and row.parameters, row
        assert row.source.paper and row.source.table.startswith("Table "), row
        assert row.source.url.startswith("https://"), row
        assert row.split in (None, "dev", "test"), row


def test_every_task_has_the_papers_biomegatron_rows_for_each_of_its_metrics():
    assert set(TASK_METRICS) == set(TASKS)
    for task, metrics in TASK_METRICS.items():
        rows = results(task=task)
        assert {r.metric for r in rows} == metrics, task
        for metric in metrics:
            sizes = {r.parameters for r in results(task=task, model="BioMegatron", metric=metric)}
            assert {"345m", "800m", "1.2b"} <= sizes, (task, metric, sizes)


def test_no_figure_is_entered_twice():
    keys = [(r.model, r.parameters, r.vocabulary, r.task, r.metric, r.setting, r.source.table)
            for r in PUBLISHED_RESULTS]
    assert len(keys) == len(set(keys))


def test_baselines_are_the_ones_the_paper_prints():
    for task in ("BC5CDR-chem", "BC5CDR-disease", "NCBI-disease", "ChemProt"):
        assert {r.model for r in results(task=task)} == {"BioBERT", "PubMedBERT", "BioMegatron"}
    assert {r.model for r in results(task="BioASQ-7b-factoid")} == {"BioBERT-Base", "BioBERT-Large", "BioMegatron"}


@pytest.mark.parametrize("task, metric, model, parameters, vocabulary, table, value", [
    ("BC5CDR-chem", "f1", "BioMegatron", "345m", "Bio-vocab-30k", "Table 1", 92.9),
    ("BC5CDR-disease", "f1", "BioMegatron", "345m", "Bio-vocab-50k", "Table 1", 88.5),
    ("NCBI-disease", "f1", "BioMegatron", "800m", "BERT-cased", "Table 1", 87.8),
    ("ChemProt", "f1", "BioMegatron", "345m", "Bio-vocab-50k", "Table 1", 77.0),
    ("ChemProt", "recall", "BioMegatron", "1.2b", "BERT-uncased", "Table 1", 65.6),
    ("BioASQ-7b-factoid", "strict_accuracy", "BioMegatron", "345m", "BERT-uncased", "Table 2", 46.2),
    ("BioASQ-7b-factoid", "mrr", "BioBERT-Large", "345m", "BERT-cased", "Table 2", 50.1),
    ("BioASQ-7b-factoid", "lenient_accuracy", "BioMegatron", "800m", None, "Table 4", 56.3),
    ("SQuAD-v2.0", "f1", "BioMegatron", "800m", None, "Table 7", 86.1),
])
def test_figures_as_the_paper_prints_them(task, metric, model, parameters, vocabulary, table, value):
    [row] = [r for r in results(task=task, model=model, metric=metric, parameters=parameters, table=table)
             if r.vocabulary == vocabulary]
    assert row.value == value


def test_best_and_the_lookup_errors():
    assert best("BC5CDR-chem", "f1").vocabulary == "Bio-vocab-30k"
    assert best("BioASQ-7b-factoid", "mrr").value == 52.5
    with pytest.raises(ValueError, match="unknown task"):
        results(task="BC5CDR")
    with pytest.raises(ValueError, match="unknown metric"):
        results(metric="micro_f1")
    with pytest.raises(ValueError, match="no published"):
        best("SQuAD-v1.1", "f1", model="BioBERT")


def test_the_module_example_runs():
    failures, _ = doctest.testmod(published)
    assert failures == 0
