"""The flow of a run, shared by the example scripts and the ``biomegatron`` command
(:func:`biomegatron_nemo.runs.registry.run_task` calls one of these).

:func:`run_finetuning` (NER, relation extraction, QA): trainer and ``exp_manager`` from the run
config, the model new or restored (``restore_from``), ``do_training`` through ``trainer.fit``,
``do_testing`` through ``trainer.test`` and the task's report (the model's ``evaluate``, files and
pictures) for the printed table. A run with neither a pretrained checkpoint nor a vocabulary
learns a WordPiece vocabulary from the training texts first (try-outs on the shipped samples).

:func:`run_pretraining`: the same for masked-LM pretraining, which also draws its loss curve
(:class:`~biomegatron_nemo.runs.loss_curve.LossCurve`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


def learn_vocabulary(cfg: DictConfig, log_dir: Path, texts: List[str]) -> str:
    """A WordPiece vocabulary of ``cfg.learn_vocab_size`` from ``texts``, set as the model's."""
    from biomegatron_nemo.tokenizers.train import train_wordpiece

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # every rank would train and write the same files into the same folder at once
        raise ValueError("with several processes set model.tokenizer.vocab_file (learn one with "
                         "python -m biomegatron_nemo.tokenizers.train)")
    text = log_dir / "train_text.txt"
    text.write_text("\n".join(texts) + "\n", encoding="utf-8")
    vocab = train_wordpiece([str(text)], str(log_dir), vocab_size=cfg.learn_vocab_size,
                            cased=bool(cfg.model.tokenizer.cased), soft_limit=True, progress=False)[0]
    with open_dict(cfg):
        cfg.model.tokenizer.vocab_file = vocab
    log.warning(f"no pretrained checkpoint and no vocabulary named: learned a {cfg.learn_vocab_size}-entry WordPiece "
                f"vocabulary from {cfg.model.train_ds.file} ({vocab}); fine for a try-out, real runs name "
                "model.language_model.pretrained")
    return vocab


def run_finetuning(cfg: DictConfig, task) -> None:
    """Train and/or test the model of ``task`` (a :class:`~biomegatron_nemo.runs.registry.Task`) as
    ``cfg`` (its run config) says."""
    from biomegatron_nemo.runs.launch import start_run

    OmegaConf.resolve(cfg)  # the saved .nemo config must not need this script's resolvers
    trainer, log_dir = start_run(cfg)
    if cfg.restore_from:
        model = task.model_class.restore_from(cfg.restore_from)  # built at once; fit/test attach the trainer
    else:
        if cfg.model.tokenizer.library in (None, "wordpiece") and not cfg.model.tokenizer.vocab_file:
            learn_vocabulary(cfg, log_dir, task.training_texts(cfg.model.train_ds.file))
        model = task.model_class(cfg.model, trainer=trainer)
    if trainer.is_global_zero:
        log.info("model config:\n%s", OmegaConf.to_yaml(model.cfg))
    if cfg.do_training:
        trainer.fit(model)
    if cfg.do_testing and cfg.model.test_ds is not None and cfg.model.test_ds.file:
        model.setup_test_data(cfg.model.test_ds)
        trainer.test(model, verbose=False)  # the report below is the table
        if trainer.is_global_zero:
            print(f"test set {cfg.model.test_ds.file}:\n{task.report_test(model, cfg.model.test_ds.file, log_dir)}")
    if trainer.is_global_zero:
        print(f"logs and checkpoints: {log_dir}")


def run_pretraining(cfg: DictConfig, task) -> None:
    """``examples/pretrain.py`` / ``biomegatron pretrain``: build, fit with the loss curve, say where
    the files are."""
    from biomegatron_nemo.runs.launch import start_run
    from biomegatron_nemo.runs.loss_curve import LossCurve

    trainer, log_dir = start_run(cfg, callbacks=[LossCurve()])
    model = task.model_class(cfg.model, trainer=trainer)
    if trainer.is_global_zero:
        log.info("model config:\n%s", OmegaConf.to_yaml(cfg.model))
    trainer.fit(model)
    if trainer.is_global_zero:
        print(f"logs and checkpoints: {log_dir}\nloss curve: {log_dir / 'loss_curve.png'}")
