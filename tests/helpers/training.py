"""Real training runs through conf/pretrain_bert.yaml, the Trainer builder and exp_manager."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from lightning.pytorch import Callback

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def compose_pretrain_config(overrides):
    from hydra import compose, initialize_config_dir

    from biomegatron_nemo.runs.schemas import register_run_configs

    register_run_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="pretrain_bert", overrides=list(overrides))


class RecordLosses(Callback):
    """Writes {global_step: loss of the global batch} and the first step of the run to JSON."""

    def __init__(self, path):
        self.path = path
        self.losses = {}
        self.batches = {}  # a fingerprint of each step's batch
        self.logged_steps = {}  # the step a logger writes this step's values at
        self.val_losses = {}
        self.first_step = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"].detach().clone() if isinstance(outputs, dict) else outputs.detach().clone()
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            # per-rank losses are normalised to average to the global-batch loss
            torch.distributed.all_reduce(loss)
            loss /= torch.distributed.get_world_size()
        step = trainer.global_step
        if self.first_step is None:
            self.first_step = step
        self.losses[step] = float(loss)
        self.batches[step] = int(batch["input_ids"].sum())
        self.logged_steps[step] = trainer.fit_loop.epoch_loop._batches_that_stepped

    def on_validation_end(self, trainer, pl_module):
        if "val_loss" in trainer.callback_metrics:
            self.val_losses[trainer.global_step] = float(trainer.callback_metrics["val_loss"])

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            Path(self.path).write_text(json.dumps({"first_step": self.first_step, "losses": self.losses,
                                                   "batches": self.batches, "logged_steps": self.logged_steps,
                                                   "val_losses": self.val_losses}))


class StopAtStep(Callback):
    """Interrupts a run after ``step`` optimizer steps, as a crash or a time limit would."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def pretrain(exp_dir, vocab_file, data_prefix, max_steps, record, devices=1, micro_batch_size=4,
             extra=(), stop_at=None, callbacks=()):
    """One run of examples/pretrain.py's logic in this process (or in each spawned rank)."""
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel
    from biomegatron_nemo.runs.launch import start_run
    from biomegatron_nemo.runs.loss_curve import LossCurve

    cfg = compose_pretrain_config([
        f"model.tokenizer.vocab_file={vocab_file}", f"model.data.data_prefix=[{data_prefix}]",
        "model.encoder.preset=micro", "model.encoder.hidden_dropout=0.1", "model.data.seq_length=32",
        "model.data.max_ngram=1",  # BERT's single-word masking: the thresholds below were set with it
        "model.data.split='80,20,0'", f"model.train_ds.micro_batch_size={micro_batch_size}",
        f"model.validation_ds.micro_batch_size={micro_batch_size}", "model.validation_ds.num_samples=16",
        f"trainer.max_steps={max_steps}", "trainer.val_check_interval=10", "trainer.limit_val_batches=2",
        f"trainer.devices={devices}", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
        f"exp_manager.exp_dir={exp_dir}", "model.optim.lr=1e-3", "model.optim.sched.warmup_ratio=0.1",
        *extra,
    ])
    # the loss curve, as every pretraining run of the library draws it
    callbacks = [RecordLosses(record), LossCurve(), *callbacks] + ([StopAtStep(stop_at)] if stop_at else [])
    trainer, _ = start_run(cfg, callbacks=callbacks)
    model = BioMegatronPretrainingModel(cfg.model, trainer=trainer)
    trainer.fit(model)
    return trainer, model


def spawned_pretrain(rank, world_size, exp_dir, vocab_file, data_prefix, max_steps, record, micro_batch_size,
                     extra, devices):
    """A rank of a torchrun-like launch: Lightning finds RANK/LOCAL_RANK/WORLD_SIZE set."""
    os.environ.setdefault("NODE_RANK", "0")
    pretrain(exp_dir, vocab_file, data_prefix, max_steps, record, devices=devices,
             micro_batch_size=micro_batch_size, extra=extra)


def spawned_tp2_interrupted(rank, world_size, exp_dir, vocab_file, data_prefix, record_prefix, extra):
    """TP=2: run 3 of 6 steps, then resume to 6 — in the same ranks, as a restarted job would."""
    import os as _os

    _os.environ.setdefault("NODE_RANK", "0")
    extra = list(extra) + ["parallel.tensor_model_parallel_size=2"]
    pretrain(exp_dir, vocab_file, data_prefix, 6, f"{record_prefix}-a.json", devices=2, extra=extra, stop_at=3)
    from biomegatron_nemo.parallel import destroy_megatron

    destroy_megatron()
    pretrain(exp_dir, vocab_file, data_prefix, 6, f"{record_prefix}-b.json", devices=2, extra=extra)


def spawned_pretrain_layout(rank, world_size, exp_dir, vocab_file, data_prefix, max_steps, record, extra, stop_at):
    """A rank of a 2-process run (its layout in ``extra``) that may stop early (``stop_at``) or
    resume what ``exp_dir`` holds."""
    os.environ.setdefault("NODE_RANK", "0")
    pretrain(exp_dir, vocab_file, data_prefix, max_steps, record, devices=2, extra=extra, stop_at=stop_at)


def spawned_in_turn(rank, world_size, runs):
    """Several spawned runs one after the other in the same ranks, megatron-core state rebuilt
    between them (as :func:`spawned_tp2_interrupted` does): a launch costs every rank seconds of
    imports. ``runs``: ``(function, arguments after world_size)`` pairs, e.g.
    ``(spawned_pretrain_layout, (exp_dir, vocab_file, ...))``."""
    from biomegatron_nemo.parallel import destroy_megatron

    for number, (function, arguments) in enumerate(runs):
        if number:
            destroy_megatron()
        function(rank, world_size, *arguments)
