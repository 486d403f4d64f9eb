"""The runs users start by name: ``pretrain`` and the fine-tuning tasks ``ner``, ``re``, ``qa``.

Each :class:`Task` ties a model class to its Hydra config in ``conf/`` and to what its run prints
and writes after testing. The example scripts (``examples/*.py``) and the ``biomegatron`` command
both call :func:`run_task`, so a run started either way is the same run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    name: str
    config_name: str  #: the YAML file of conf/ (without .yaml)
    model_class: str  #: dotted path, imported when the task runs
    summary: str
    training_texts: Optional[Callable[[str], List[str]]] = None  #: for a try-out vocabulary
    report_test: Optional[Callable[[object, str, Path], str]] = None  #: evaluate, write files, say what

    def load_model_class(self):
        module, name = self.model_class.rsplit(".", 1)
        return getattr(__import__(module, fromlist=[name]), name)


def _ner_texts(path: str) -> List[str]:
    from biomegatron_nemo.data.conll import read_conll

    return [" ".join(s.words) for s in read_conll(path)]


def _ner_report(model, test_file: str, log_dir: Path) -> str:
    from biomegatron_nemo.metrics.ner import format_ner_table

    output, report = log_dir / "test_predictions.conll", log_dir / "test_report"
    scores = model.evaluate(test_file, output_file=str(output), report_dir=str(report),
                            batch_size=int(model.cfg.test_ds.batch_size))
    return f"{format_ner_table(scores)}\npredictions: {output}\nreport: {report}"


def _re_texts(path: str) -> List[str]:
    from biomegatron_nemo.data.chemprot import read_classification_tsv

    return [ex.text for ex in read_classification_tsv(path)]


def _re_report(model, test_file: str, log_dir: Path) -> str:
    from biomegatron_nemo.metrics.classification import format_classification_table

    output, report = log_dir / "test_predictions.tsv", log_dir / "test_report"
    scores = model.evaluate(test_file, output_file=str(output), report_dir=str(report),
                            batch_size=int(model.cfg.test_ds.batch_size))
    data = scores["data"]
    return (f"{format_classification_table(scores)}\n{data['truncated']} sentences cut around their markers "
            f"({data['markers_cut']} with markers too far apart to keep both), {data['missing_markers']} "
            f"without two markers\npredictions: {output}\nreport: {report}")


def _qa_texts(path: str) -> List[str]:
    from biomegatron_nemo.data.squad import read_squad

    examples = read_squad(path)
    return list(dict.fromkeys(ex.context for ex in examples)) + [ex.question for ex in examples]


def _qa_report(model, test_file: str, log_dir: Path) -> str:
    output = log_dir / "test_predictions"
    scores = model.evaluate(test_file, output_dir=str(output), golden_file=model.cfg.test_ds.get("golden_file"),
                            batch_size=int(model.cfg.test_ds.batch_size))
    shown = {k: v for k, v in scores.items() if k not in ("rank_of_first_correct", "data")}
    data = scores["data"]
    return (f"{json.dumps(shown, indent=1)}\n{data['examples']} questions in {data['features']} windows"
            f"\npredictions: {output}")


TASKS: Dict[str, Task] = {
    "pretrain": Task("pretrain", "pretrain_bert", "biomegatron_nemo.models.pretraining.BioMegatronPretrainingModel",
                     "masked-LM pretraining (+ the optional sentence-order head)"),
    "ner": Task("ner", "token_classification", "biomegatron_nemo.models.token_classification.TokenClassificationModel",
                "named entity recognition (BC5CDR, NCBI-disease): entity F1", _ner_texts, _ner_report),
    "re": Task("re", "sequence_classification",
               "biomegatron_nemo.models.sequence_classification.SequenceClassificationModel",
               "relation extraction (ChemProt): micro-F1 over the CPR classes", _re_texts, _re_report),
    "qa": Task("qa", "question_answering", "biomegatron_nemo.models.question_answering.QuestionAnsweringModel",
               "extractive question answering (SQuAD, then BioASQ factoid)", _qa_texts, _qa_report),
}


def run_pretraining(cfg: DictConfig) -> None:
    """``examples/pretrain.py`` / ``biomegatron pretrain``: build, fit, say where the files are."""
    from biomegatron_nemo.models.launch import start_run

    trainer, log_dir = start_run(cfg)
    model = TASKS["pretrain"].load_model_class()(cfg.model, trainer=trainer)
    if trainer.is_global_zero:
        log.info("model config:\n%s", OmegaConf.to_yaml(cfg.model))
    trainer.fit(model)
    if trainer.is_global_zero:
        print(f"logs and checkpoints: {log_dir}\nloss curve: {log_dir / 'loss_curve.png'}")


def run_task(name: str, cfg: DictConfig) -> None:
    """Run task ``name`` (a key of :data:`TASKS`) with ``cfg``, its composed run config."""
    if name == "pretrain":
        return run_pretraining(cfg)
    from biomegatron_nemo.models.finetuning import run_finetuning

    task = TASKS[name]
    run_finetuning(cfg, task.load_model_class(), task.training_texts, task.report_test)
