"""What every example script does before it builds its model: :func:`start_run`.

1. The pretrained checkpoint the model config names fills in the encoder's architecture and the
   vocabulary (:func:`~biomegatron_nemo.models.from_pretrained.apply_pretrained`), or a key that
   disagrees with it is refused.
2. :func:`check_layout` refuses a parallel layout that cannot work — a world size not divisible
   by TP × PP, TP not dividing the attention heads or hidden sizes, more pipeline stages than
   layers — with an error naming the key, before any process group, Trainer or model exists
   (megatron-core would otherwise fail inside ``configure_model`` on every rank).
3. :func:`resume_checkpoint` picks the checkpoint a rerun resumes from when NeMo's
   ``exp_manager`` cannot: a run killed after writing its new ``-last`` checkpoint but before
   deleting the old one leaves two, and NeMo refuses to choose. The newest by optimizer step is
   taken (on every rank the same way), and global rank 0 tidies the leftovers
   (:func:`biomegatron_nemo.checkpoints.training.prepare_resume`).
4. The Trainer (:func:`~biomegatron_nemo.parallel.trainer.build_trainer`), with the preemption
   callback (:mod:`~biomegatron_nemo.runs.preemption`), and ``exp_manager``. Global rank 0 holds
   the checkpoints folder's lock (:mod:`~biomegatron_nemo.runs.run_lock`) from before step 3 on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

from omegaconf import DictConfig, OmegaConf, open_dict

from biomegatron_nemo.checkpoints.training import load_training_checkpoint, prepare_resume
from biomegatron_nemo.common.config import to_plain, validate_config
from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.encoder.config import EncoderConfig
from biomegatron_nemo.models.from_pretrained import apply_pretrained
from biomegatron_nemo.parallel.state import ParallelConfig
from biomegatron_nemo.runs.run_lock import ReleaseRunLock, lock_run_folder


def world_size(trainer_cfg: Mapping[str, Any]) -> Optional[int]:
    """Processes the run will have: the launcher's ``WORLD_SIZE`` (torchrun, SLURM), else
    ``trainer.devices × trainer.num_nodes``; None when Lightning decides (``devices: auto``)."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1)
    if isinstance(devices, (list, tuple)):
        devices = len(devices)
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    return devices * int(nodes) if isinstance(devices, int) and devices > 0 else None


def check_layout(cfg: DictConfig, check_encoder: bool = True) -> None:
    """A :class:`ConfigError` naming the key unless ``cfg`` (a run config) describes a layout
    megatron-core can build (see the module docstring)."""
    parallel = validate_config(cfg.get("parallel") or {}, ParallelConfig, where="parallel")
    tp, pp = parallel.tensor_model_parallel_size, parallel.pipeline_model_parallel_size
    world = world_size(to_plain(cfg.get("trainer")) or {})
    if world is not None and world % (tp * pp):
        raise ConfigError(f"{world} processes cannot be split into model replicas of tensor ({tp}) x pipeline "
                          f"({pp}) = {tp * pp} ranks; set trainer.devices x trainer.num_nodes to a multiple "
                          f"of {tp * pp}", key="parallel.tensor_model_parallel_size")
    if not check_encoder:
        return
    encoder = EncoderConfig.from_dict(to_plain(cfg.model.encoder))
    if pp > encoder.num_layers:
        raise ConfigError(f"{pp} pipeline stages for {encoder.num_layers} transformer layers: every stage needs "
                          "at least one", key="parallel.pipeline_model_parallel_size")
    try:
        encoder.validate(tp, pp)
    except ConfigError as err:
        raise ConfigError(err.reason, key=f"model.encoder.{err.key}") from None


def _checkpoint_dir(exp_manager_cfg: Mapping[str, Any]) -> Optional[Path]:
    """Where ``exp_manager`` keeps this run's checkpoints (None when it names a fresh folder per run)."""
    params = exp_manager_cfg.get("checkpoint_callback_params") or {}
    if params.get("dirpath"):
        return Path(params["dirpath"])
    if exp_manager_cfg.get("explicit_log_dir"):
        return Path(exp_manager_cfg["explicit_log_dir"]) / "checkpoints"
    if exp_manager_cfg.get("use_datetime_version", True) or not exp_manager_cfg.get("version"):
        return None
    exp_dir = exp_manager_cfg.get("exp_dir") or "nemo_experiments"
    return Path(exp_dir) / str(exp_manager_cfg.get("name") or "default") / str(exp_manager_cfg["version"]) / "checkpoints"


def resume_checkpoint(exp_manager_cfg: Mapping[str, Any]) -> Optional[str]:
    """The newest complete ``-last`` checkpoint when there are several (else None: NeMo's own
    search finds the same one). Read-only, so every rank decides alike."""
    if not exp_manager_cfg.get("resume_if_exists") or exp_manager_cfg.get("resume_from_checkpoint"):
        return None
    folder = _checkpoint_dir(exp_manager_cfg)
    if folder is None or not folder.is_dir() or list(folder.glob("*end.ckpt")):
        return None  # a finished run: NeMo's rules (resume_past_end) apply
    from nemo.utils.callbacks.nemo_model_checkpoint import NeMoModelCheckpoint

    candidates = [path for path in folder.glob("*last.ckpt")
                  if not NeMoModelCheckpoint.is_checkpoint_unfinished(path)]  # NeMo's marker: never ended
    if len(candidates) < 2:
        return None  # the usual case: nothing is read
    steps = {}
    for path in candidates:
        try:
            steps[path] = int(load_training_checkpoint(path, mmap=True).get("global_step", -1))
        except FileNotFoundError:
            continue  # global rank 0 removed it meanwhile (see prepare_resume)
    if len(steps) < 2:
        return None
    return str(max(steps, key=lambda p: (steps[p], p.stat().st_mtime)))


def has_validation(cfg: DictConfig) -> bool:
    """Whether the run validates: a validation file (fine-tuning) or split (pretraining), and batches to run."""
    if (cfg.get("trainer") or {}).get("limit_val_batches") == 0:
        return False
    validation = (cfg.get("model") or {}).get("validation_ds")
    return validation is not None and ("file" not in validation or bool(validation.file))


def name_checkpoints_by_step(em_cfg: DictConfig, name: str) -> None:
    """Without validation a ``val_*`` metric is never computed, yet NeMo would write it into every
    checkpoint name (as 0.0000): keep the newest checkpoint instead, named by epoch and step."""
    params = em_cfg.get("checkpoint_callback_params") or {}
    if not str(params.get("monitor") or "").startswith("val"):
        return
    with open_dict(em_cfg):
        em_cfg.checkpoint_callback_params = {**to_plain(params), "monitor": "step", "mode": "max",
                                             "filename": params.get("filename") or f"{name}--{{epoch}}-{{step}}"}


def name_last_checkpoint(trainer, name: str) -> None:
    """The ``-last`` checkpoint is named by epoch and step: NeMo names it after the monitored metric,
    which Lightning writes as 0.0000 whenever the latest steps were not validated."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint):
            callback.CHECKPOINT_NAME_LAST = f"{name}--{{epoch}}-{{step}}-last"


def preemption_callbacks(cfg: DictConfig) -> list:
    """The run's :class:`~biomegatron_nemo.runs.preemption.PreemptionCheckpoint` (none when
    ``preemption_signals`` is empty); a name that is no signal is refused."""
    from biomegatron_nemo.runs.preemption import DEFAULT_SIGNALS, PreemptionCheckpoint

    names = cfg.get("preemption_signals", list(DEFAULT_SIGNALS))
    try:
        return [PreemptionCheckpoint(list(names))] if names else []
    except ValueError as err:
        raise ConfigError(str(err), key="preemption_signals") from None


def start_run(cfg: DictConfig, **trainer_arguments: Any) -> Tuple[Any, Path]:
    """Check the layout, build the Trainer (``trainer_arguments``, e.g. ``callbacks``, added to
    ``cfg.trainer``), resolve resuming, start ``exp_manager``; returns the Trainer and the run's
    log folder."""
    from nemo.utils.exp_manager import exp_manager

    from biomegatron_nemo.parallel.trainer import build_trainer

    if not cfg.get("restore_from"):  # the pretrained checkpoint decides the sizes the layout is checked against
        apply_pretrained(cfg.model, prefix="model.")
    check_layout(cfg, check_encoder=not cfg.get("restore_from"))
    trainer_arguments["callbacks"] = [*trainer_arguments.get("callbacks", []), *preemption_callbacks(cfg)]
    trainer = build_trainer(cfg.trainer, cfg.parallel, **trainer_arguments)
    em_cfg = OmegaConf.create(to_plain(cfg.get("exp_manager")) or {})
    with open_dict(em_cfg):
        em_cfg.create_preemption_callback = False  # NeMo's (CUDA only, exits with 0) would race ours
    if not has_validation(cfg):
        name_checkpoints_by_step(em_cfg, cfg.get("name") or "biomegatron")
    folder = _checkpoint_dir(em_cfg)
    if trainer.is_global_zero and folder is not None:
        lock_run_folder(folder)  # before anything in it is read, tidied or written
    chosen = resume_checkpoint(em_cfg)
    if trainer.is_global_zero and em_cfg.get("resume_if_exists") and folder is not None:
        prepare_resume(folder, keep=chosen)
    if chosen:
        with open_dict(em_cfg):  # NeMo's search would refuse the several -last files
            em_cfg.resume_if_exists = False
            em_cfg.resume_from_checkpoint = chosen
    log_dir = Path(exp_manager(trainer, em_cfg))
    if trainer.is_global_zero and folder is not None:
        trainer.callbacks.append(ReleaseRunLock(folder))  # last, after exp_manager's checkpoint callback
    name_last_checkpoint(trainer, em_cfg.get("name") or "biomegatron")
    return trainer, log_dir
