"""The published results this library is measured against, as the papers print them.

Every figure comes from the BioMegatron paper (Shin et al., EMNLP 2020), checked against the
text of the proceedings version (ACL Anthology, 2020.emnlp-main.379). Table numbers are that
version's: Table 1 (NER and RE), Table 2 (BioASQ-7b factoid after SQuAD), Table 4 (BioASQ-7b
factoid without SQuAD first) and Table 7 (SQuAD dev F1). The BioBERT and PubMedBERT rows are the
ones the BioMegatron paper prints; figures from those models' own papers are not here.

Values are percentages exactly as printed (``92.9`` is an F1 of 0.929). This library's metric
functions return fractions for NER, RE and BioASQ (:func:`biomegatron_nemo.metrics.ner.ner_scores`,
:func:`biomegatron_nemo.metrics.classification.classification_scores`,
:func:`biomegatron_nemo.metrics.bioasq.bioasq_scores`) and percentages for SQuAD; ``metric`` uses
their key names; ``task`` is the benchmark's name as the paper prints it (:data:`TASKS`).

The paper does not say whether Tables 1, 2 and 4 are test or development scores (``split`` is
None there); Table 7 is the SQuAD dev set. For NER it labels sub-tokens separately, except on
NCBI-disease, where whole-entity labelling did better (§5.1); ``setting`` records this.

>>> from biomegatron_nemo.analysis.published import best, results
>>> len(results(task="BC5CDR-chem", model="BioMegatron", metric="f1"))
4
>>> row = best("BC5CDR-chem", "f1")
>>> row.value, row.parameters, row.vocabulary, row.source.table
(92.9, '345m', 'Bio-vocab-30k', 'Table 1')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

__all__ = ["Source", "PublishedResult", "TASKS", "METRICS", "PUBLISHED_RESULTS", "PUBLISHED", "results", "best"]


@dataclass(frozen=True)
class Source:
    """Where a figure is printed: the paper, its table and an address of the paper."""

    paper: str
    table: str
    url: str


@dataclass(frozen=True)
class PublishedResult:
    """One published figure.

    :param model: model family as printed (``BioMegatron``, ``BioBERT``, ``BioBERT-Large``, ...)
    :param parameters: model size as printed (``345m``, ``110m``, ...)
    :param vocabulary: vocabulary as printed (``Bio-vocab-30k``, ``BERT-uncased``, ...); None where
        the table does not print one
    :param task: a key of :data:`TASKS`
    :param metric: a key of :data:`METRICS`
    :param value: the percentage as printed
    :param source: the paper and table
    :param split: ``dev`` or ``test`` where the paper says; None where it does not
    :param setting: how the figure was obtained, where the paper says (labelling, training order,
        initialisation)
    """

    model: str
    parameters: str
    vocabulary: Optional[str]
    task: str
    metric: str
    value: float
    source: Source
    split: Optional[str] = None
    setting: str = ""


#: task key (the benchmark's name as the paper prints it) -> what it is and how it is scored
TASKS: Dict[str, str] = {
    "BC5CDR-chem": "BC5CDR chemical NER; entity-level F1 (conlleval)",
    "BC5CDR-disease": "BC5CDR disease NER; entity-level F1 (conlleval)",
    "NCBI-disease": "NCBI-disease NER; entity-level F1 (conlleval)",
    "ChemProt": "ChemProt relation extraction; micro-averaged over the five CPR classes",
    "BioASQ-7b-factoid": "BioASQ-7b factoid QA; the official BioASQ measures",
    "SQuAD-v1.1": "SQuAD v1.1 extractive QA; official F1",
    "SQuAD-v2.0": "SQuAD v2.0 extractive QA; official F1",
}

#: metric key (this library's name for it) -> meaning
METRICS: Dict[str, str] = {
    "precision": "precision (NER: entity-level; ChemProt: micro over the CPR classes)",
    "recall": "recall (NER: entity-level; ChemProt: micro over the CPR classes)",
    "f1": "F1 (NER: entity-level; ChemProt: micro over the CPR classes; SQuAD: token overlap)",
    "strict_accuracy": "BioASQ strict accuracy (SAcc): the top answer is correct",
    "lenient_accuracy": "BioASQ lenient accuracy (LAcc): a correct answer among the top five",
    "mrr": "BioASQ mean reciprocal rank over the top five answers",
}

_PAPER = "Shin et al., BioMegatron: Larger Biomedical Domain Language Model, EMNLP 2020"
_URL = "https://aclanthology.org/2020.emnlp-main.379.pdf"
_TABLE1 = Source(_PAPER, "Table 1", _URL)
_TABLE2 = Source(_PAPER, "Table 2", _URL)
_TABLE4 = Source(_PAPER, "Table 4", _URL)
_TABLE7 = Source(_PAPER, "Table 7", _URL)

_GENERAL_INIT = "pretrained starting from a general-domain checkpoint"
_SQUAD_FIRST = "fine-tuned on SQuAD first, then on BioASQ"
_BIOASQ_ONLY = "fine-tuned on BioASQ directly, without SQuAD first"

# Table 1 as printed, one row per model: model | parameters | vocabulary | then precision, recall
# and F1 on each task of _TABLE1_TASKS. The vocabulary column is the same on every task except
# where _TABLE1_VOCABULARY_AS_PRINTED says otherwise.
_TABLE1_TASKS = ("BC5CDR-chem", "BC5CDR-disease", "NCBI-disease", "ChemProt")
_TABLE1_TEXT = """
BioBERT     | 110m | BERT-cased               | 90.0 93.4 91.7 | 85.0 89.4 87.2 | 85.0 90.0 87.5 | 76.5 73.3 74.8
PubMedBERT  | 110m | PubMedBERT-uncased (30k) | 92.1 93.2 92.6 | 86.2 88.4 87.3 | 85.9 87.7 86.8 | 73.6 77.7 75.6
BioMegatron | 345m | Bio-vocab-30k            | 92.1 93.6 92.9 | 85.2 88.8 87.0 | 85.6 88.6 87.1 | 77.8 72.5 75.1
BioMegatron | 345m | Bio-vocab-50k            | 92.9 92.0 92.5 | 86.1 91.0 88.5 | 83.7 90.4 87.0 | 74.5 79.7 77.0
BioMegatron | 800m | BERT-cased               | 91.3 92.9 92.1 | 85.8 90.1 87.9 | 87.0 88.8 87.8 | 80.4 68.9 74.3
BioMegatron | 1.2b | BERT-uncased             | 92.0 90.5 91.3 | 83.8 89.2 86.4 | 83.5 90.1 86.7 | 82.0 65.6 72.9
"""
_TABLE1_VOCABULARY_AS_PRINTED = {("BC5CDR-chem", "PubMedBERT"): "PubMedBERT-vocab (30k)"}

_LABELLING = {
    "BC5CDR-chem": "sub-token labelling",
    "BC5CDR-disease": "sub-token labelling",
    "NCBI-disease": "whole-entity labelling",
    "ChemProt": "",
}

# (model, parameters, vocabulary, SAcc, LAcc, MRR, setting, source), in the printed order
_BIOASQ_ROWS = [
    ("BioBERT-Base", "110m", "BERT-cased", 30.8, 64.1, 41.1, _SQUAD_FIRST, _TABLE2),
    ("BioBERT-Large", "345m", "BERT-cased", 42.8, 62.8, 50.1, _SQUAD_FIRST, _TABLE2),
    ("BioMegatron", "345m", "BERT-uncased", 46.2, 62.6, 52.5, _SQUAD_FIRST, _TABLE2),
    ("BioMegatron", "800m", "BERT-uncased", 45.2, 58.6, 50.4, _SQUAD_FIRST, _TABLE2),
    ("BioMegatron", "1.2b", "BERT-uncased", 47.4, 60.9, 52.4, f"{_SQUAD_FIRST}; {_GENERAL_INIT}", _TABLE2),
    ("BioMegatron", "345m", None, 33.1, 50.4, 39.8, _BIOASQ_ONLY, _TABLE4),
    ("BioMegatron", "800m", None, 37.7, 56.3, 45.1, _BIOASQ_ONLY, _TABLE4),
    ("BioMegatron", "1.2b", None, 40.6, 53.7, 45.6, _BIOASQ_ONLY, _TABLE4),
]

# (parameters, setting, SQuAD-v1.1 F1, SQuAD-v2.0 F1): Table 7's BioMegatron rows, dev set
_SQUAD_ROWS = [
    ("345m", "", 90.4, 84.2),
    ("345m", f"'-ft': {_GENERAL_INIT}", 86.5, 77.9),
    ("800m", "", 91.6, 86.1),
    ("1.2b", f"'-ft': {_GENERAL_INIT}", 91.8, 86.4),
]


def _build() -> Tuple[PublishedResult, ...]:
    rows: List[PublishedResult] = []
    for line in _TABLE1_TEXT.strip().splitlines():
        model, params, vocab, *per_task = (cell.strip() for cell in line.split("|"))
        for task, values in zip(_TABLE1_TASKS, per_task):
            printed = _TABLE1_VOCABULARY_AS_PRINTED.get((task, model), vocab)
            setting = "; ".join(s for s in (_LABELLING[task], _GENERAL_INIT if params == "1.2b" else "") if s)
            for metric, value in zip(("precision", "recall", "f1"), values.split()):
                rows.append(PublishedResult(model, params, printed, task, metric, float(value), _TABLE1,
                                            setting=setting))
    for model, params, vocab, sacc, lacc, mrr, setting, source in _BIOASQ_ROWS:
        for metric, value in (("strict_accuracy", sacc), ("lenient_accuracy", lacc), ("mrr", mrr)):
            rows.append(PublishedResult(model, params, vocab, "BioASQ-7b-factoid", metric, value, source,
                                        setting=setting))
    for params, setting, v11, v20 in _SQUAD_ROWS:
        for task, value in (("SQuAD-v1.1", v11), ("SQuAD-v2.0", v20)):
            rows.append(PublishedResult("BioMegatron", params, None, task, "f1", value, _TABLE7, split="dev",
                                        setting=setting))
    return tuple(rows)


#: every published figure, in the papers' order
PUBLISHED_RESULTS: Tuple[PublishedResult, ...] = _build()
#: the same, shorter
PUBLISHED = PUBLISHED_RESULTS


def results(task: Optional[str] = None, model: Optional[str] = None, metric: Optional[str] = None,
            parameters: Optional[str] = None, table: Optional[str] = None) -> List[PublishedResult]:
    """The published figures that match every argument given (None matches anything).

    :raises ValueError: for a task or metric that is not a key of :data:`TASKS` / :data:`METRICS`
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    if metric is not None and metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(METRICS)}")
    return [r for r in PUBLISHED_RESULTS
            if (task is None or r.task == task) and (model is None or r.model == model)
            and (metric is None or r.metric == metric) and (parameters is None or r.parameters == parameters)
            and (table is None or r.source.table == table)]


def best(task: str, metric: str, model: str = "BioMegatron") -> PublishedResult:
    """The highest published ``metric`` of ``model`` on ``task`` (the first printed on a tie).

    :raises ValueError: when the paper prints no such figure
    """
    candidates = results(task=task, model=model, metric=metric)
    if not candidates:
        raise ValueError(f"no published {metric} of {model} on {task}")
    return max(candidates, key=lambda r: r.value)
