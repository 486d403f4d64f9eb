"""The tasks, defined once: ``pretrain`` and the fine-tuning tasks ``ner``, ``re``, ``qa``.

Each :class:`Task` ties a model class to its Hydra config in ``conf/`` and its run schema, and to
what its runs print and write (:mod:`~biomegatron_nemo.runs.task_io`). Everything that lists tasks
reads :data:`TASKS`: the ``biomegatron`` command (its ``pretrain`` / ``finetune`` / ``predict``),
the Hydra ConfigStore and the configuration docs (:mod:`~biomegatron_nemo.runs.schemas`,
:mod:`~biomegatron_nemo.runs.config_docs`), the example scripts and ``biomegatron benchmark``,
all through :func:`run_task`, so a run started any way is the same run.

Classes are named by dotted paths and imported when used: this module is read by every command,
including those that never build a model and must start at once.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from omegaconf import DictConfig

from biomegatron_nemo.runs import task_io


def load(path: str):
    """The object a dotted ``module.name`` path names."""
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Task:
    name: str
    summary: str
    config_name: str  #: the YAML file of conf/ (without .yaml)
    model_path: str  #: the model class, dotted
    run_schema_path: str  #: the schema of the whole run config, dotted
    docs_title: str  #: its section of docs/configuration.md
    training_texts: Optional[Callable[[str], List[str]]] = None  #: for a try-out vocabulary
    report_test: Optional[Callable[[object, str, Path], str]] = None  #: evaluate, write files, say what
    #: ``biomegatron predict``: (model, inputs, batch size, top k) → one row per input, and its line(s)
    predict: Optional[Callable] = None
    show: Optional[Callable[[Dict], str]] = None
    #: predict's inputs are {"question", "context"} items (else one text a line)
    question_inputs: bool = False

    @property
    def model_class(self):
        return load(self.model_path)

    @property
    def run_schema(self):
        return load(self.run_schema_path)

    @property
    def finetuning(self) -> bool:
        return self.report_test is not None


_MODELS = "biomegatron_nemo.models."
_SCHEMAS = "biomegatron_nemo.runs.schemas."
TASKS: Dict[str, Task] = {task.name: task for task in (
    Task("pretrain", "masked-LM pretraining (+ the optional sentence-order head)", "pretrain_bert",
         _MODELS + "pretraining.BioMegatronPretrainingModel", _SCHEMAS + "PretrainRunConfig",
         "Pretraining: `examples/pretrain.py`, `conf/pretrain_bert.yaml`"),
    Task("ner", "named entity recognition (BC5CDR, NCBI-disease): entity F1", "token_classification",
         _MODELS + "token_classification.TokenClassificationModel", _SCHEMAS + "TokenClassificationRunConfig",
         "NER: `examples/token_classification.py`, `conf/token_classification.yaml`",
         task_io.ner_texts, task_io.ner_report, task_io.ner_predict, task_io.show_entities),
    Task("re", "relation extraction (ChemProt): micro-F1 over the CPR classes", "sequence_classification",
         _MODELS + "sequence_classification.SequenceClassificationModel", _SCHEMAS + "SequenceClassificationRunConfig",
         "Relation extraction: `examples/sequence_classification.py`, `conf/sequence_classification.yaml`",
         task_io.re_texts, task_io.re_report, task_io.re_predict, task_io.show_relation),
    Task("qa", "extractive question answering (SQuAD, then BioASQ factoid)", "question_answering",
         _MODELS + "question_answering.QuestionAnsweringModel", _SCHEMAS + "QuestionAnsweringRunConfig",
         "Question answering: `examples/question_answering.py`, `conf/question_answering.yaml`",
         task_io.qa_texts, task_io.qa_report, task_io.qa_predict, task_io.show_answers, question_inputs=True),
)}
FINETUNING = {name: task for name, task in TASKS.items() if task.finetuning}


def task_of(model) -> Task:
    """The task whose model class ``model`` is (a ``.nemo`` restored whatever its class)."""
    for task in TASKS.values():
        if isinstance(model, task.model_class):
            return task
    raise ValueError(f"a {type(model).__name__} is the model of no task ({', '.join(TASKS)})")


def run_task(name: str, cfg: DictConfig) -> None:
    """Run task ``name`` (a key of :data:`TASKS`) with ``cfg``, its composed run config."""
    from biomegatron_nemo.runs.finetune import run_finetuning, run_pretraining

    task = TASKS[name]
    (run_finetuning if task.finetuning else run_pretraining)(cfg, task)
