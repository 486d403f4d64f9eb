"""Schemas of whole runs: what an example script's Hydra config holds around its ``model:``.

A run is a model config plus the parallel layout, the Lightning ``trainer`` arguments, NeMo's
``exp_manager`` settings and the script's own switches. :func:`register_run_configs` stores the
schemas in Hydra's ConfigStore; each YAML file in ``conf/`` names its schema first in its
``defaults`` list and overrides only what the example does differently, so ``--cfg job`` shows
the schema's defaults merged with the file, and Hydra rejects unknown keys and wrong types.

``trainer`` and ``exp_manager`` stay open mappings here: Lightning's ``Trainer`` has dozens of
arguments and NeMo checks ``exp_manager`` against its own ``ExpManagerConfig``;
:func:`biomegatron_nemo.parallel.trainer.build_trainer` refuses a key the ``Trainer`` does not take.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from biomegatron_nemo.common.config import Schema, option, section
from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.common.files import SAMPLES
from biomegatron_nemo.models.pretraining import PretrainingModelConfig
from biomegatron_nemo.models.question_answering import QuestionAnsweringModelConfig
from biomegatron_nemo.models.sequence_classification import SequenceClassificationModelConfig
from biomegatron_nemo.models.token_classification import TokenClassificationModelConfig
from biomegatron_nemo.parallel.state import ParallelConfig
from biomegatron_nemo.runs.preemption import DEFAULT_SIGNALS


def _trainer_defaults() -> Dict[str, Any]:
    return {"devices": 1, "num_nodes": 1, "max_epochs": -1, "max_steps": -1, "max_time": None,
            "val_check_interval": 1.0, "log_every_n_steps": 10, "gradient_clip_val": 1.0,
            "precision": 32, "num_sanity_val_steps": 0, "enable_progress_bar": True}


def _exp_manager_defaults() -> Dict[str, Any]:
    return {"exp_dir": "nemo_experiments", "name": "${name}", "version": "run", "use_datetime_version": False,
            "resume_if_exists": False, "resume_ignore_no_checkpoint": True, "create_tensorboard_logger": True,
            "create_checkpoint_callback": True, "seconds_to_sleep": 0,
            "create_preemption_callback": False,  # ours (runs/preemption.py) replaces NeMo's
            "checkpoint_callback_params": {"monitor": "val_loss", "mode": "min", "save_top_k": 1, "save_last": True,
                                           "save_nemo_on_train_end": True, "always_save_nemo": False}}


@dataclass
class RunConfig(Schema):
    """The keys every run has."""

    name: str = option("biomegatron", "experiment name: the folder under exp_manager.exp_dir, the .nemo's name")
    parallel: ParallelConfig = section(ParallelConfig, "model-parallel layout")
    trainer: Dict[str, Any] = option(doc="Lightning Trainer arguments (logger and checkpointing are "
                                         "exp_manager's)", factory=_trainer_defaults)
    exp_manager: Dict[str, Any] = option(doc="NeMo exp_manager: logs, checkpoints, resume",
                                         factory=_exp_manager_defaults)
    preemption_signals: List[str] = option(doc="signals that save a checkpoint at the current step and stop "
                                               "the run with exit status 75 (a cluster's warning before it "
                                               "kills the job); [] keeps Lightning's handling",
                                           factory=lambda: list(DEFAULT_SIGNALS))


@dataclass
class FineTuningRunConfig(RunConfig):
    """The switches of the fine-tuning examples (runs/finetune.py runs them)."""

    do_training: bool = option(True, "fine-tune on model.train_ds")
    do_testing: bool = option(True, "score model.test_ds and write its predictions into the log folder")
    restore_from: Optional[str] = option(None, "a fine-tuned .nemo to test (with do_training=false) or train further")
    learn_vocab_size: int = option(2000, "with model.tokenizer.vocab_file=null: size of the WordPiece "
                                         "vocabulary learned from model.train_ds.file (try-outs only)")

    def check(self) -> None:
        if self.learn_vocab_size < 10:
            raise ConfigError(f"must be >= 10, got {self.learn_vocab_size}", key="learn_vocab_size")


@dataclass
class TokenClassificationRunConfig(FineTuningRunConfig):
    """``examples/token_classification.py``: NER fine-tuning and testing (test_predictions.conll)."""

    name: str = option("biomegatron_ner", "experiment name")
    model: TokenClassificationModelConfig = section(TokenClassificationModelConfig, "the NER model")


@dataclass
class SequenceClassificationRunConfig(FineTuningRunConfig):
    """``examples/sequence_classification.py``: relation extraction (ChemProt) fine-tuning and testing
    (test_predictions.tsv and a confusion-matrix report)."""

    name: str = option("biomegatron_re", "experiment name")
    model: SequenceClassificationModelConfig = section(SequenceClassificationModelConfig, "the RE model")


@dataclass
class QuestionAnsweringRunConfig(FineTuningRunConfig):
    """``examples/question_answering.py``: span QA fine-tuning (SQuAD, BioASQ) and testing
    (predictions.json, nbest_predictions.json, the BioASQ submission)."""

    name: str = option("biomegatron_qa", "experiment name")
    model: QuestionAnsweringModelConfig = section(QuestionAnsweringModelConfig, "the QA model")


@dataclass
class PretrainRunConfig(RunConfig):
    """``examples/pretrain.py``: masked-LM pretraining."""

    name: str = option("biomegatron_pretrain", "experiment name")
    model: PretrainingModelConfig = section(PretrainingModelConfig, "the pretraining model")




def conf_dir() -> Path:
    """The runs' Hydra YAML: ``biomegatron_nemo/conf`` in an installed wheel (setup.py maps the
    repository's ``conf/`` there), the repository's ``conf/`` in a source checkout."""
    for candidate in (Path(__file__).resolve().parents[1] / "conf", Path(__file__).resolve().parents[2] / "conf"):
        if (candidate / "pretrain_bert.yaml").is_file():
            return candidate
    raise FileNotFoundError("the conf/ folder of biomegatron_nemo is missing from this installation")


def compose_run_config(config_name: str, overrides: Sequence[str] = ()):
    """A run config from ``conf/<config_name>.yaml`` with Hydra command-line ``overrides``
    (``key=value``), checked against its schema — what ``@hydra.main`` gives an example script."""
    from hydra import compose, initialize_config_dir

    register_run_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def register_run_configs() -> None:
    """Store the run schemas in Hydra's ConfigStore and register the ``samples`` resolver
    (idempotent); call before ``hydra.main`` / ``hydra.compose`` reads a YAML file of ``conf/``."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from biomegatron_nemo.runs.registry import TASKS

    OmegaConf.register_new_resolver("samples", lambda path: str(SAMPLES / path), replace=True)
    store = ConfigStore.instance()
    for task in TASKS.values():  # each YAML file of conf/ names its schema first: <config name>_schema
        store.store(name=f"{task.config_name}_schema", node=task.run_schema)
