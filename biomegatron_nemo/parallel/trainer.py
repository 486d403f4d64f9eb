"""Trainer construction shared by the example scripts: Lightning ``Trainer`` + our strategy.

Examples are Hydra-configured; this turns their ``trainer:`` and ``parallel:`` sections into a
``lightning.pytorch.Trainer`` whose strategy sets up megatron-core's tensor / pipeline / data
parallel groups. Logging and checkpointing are left to NeMo's ``exp_manager`` (which requires
``logger=False`` and ``enable_checkpointing=False`` on the Trainer).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from lightning.pytorch import Trainer
from omegaconf import DictConfig, OmegaConf

from .strategy import MegatronDDPStrategy


def _plain(cfg: Any) -> dict:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def build_trainer(trainer_cfg: Optional[Mapping[str, Any]], parallel_cfg: Optional[Mapping[str, Any]] = None,
                  **overrides: Any) -> Trainer:
    """``Trainer(**trainer_cfg)`` with :class:`MegatronDDPStrategy` for ``parallel_cfg``.

    ``parallel_cfg``: ``tensor_model_parallel_size``, ``pipeline_model_parallel_size``, ``seed``.
    ``devices`` must be a multiple of TP × PP; the rest is data parallel.
    """
    values = _plain(trainer_cfg)
    values.update(overrides)
    parallel = _plain(parallel_cfg)
    tp = int(parallel.get("tensor_model_parallel_size", 1))
    pp = int(parallel.get("pipeline_model_parallel_size", 1))
    devices = values.get("devices", 1)
    if isinstance(devices, int) and devices % (tp * pp):
        raise ValueError(f"trainer.devices={devices} is not a multiple of tensor ({tp}) x pipeline ({pp}) parallel sizes")
    values.setdefault("accelerator", "gpu" if torch.cuda.is_available() else "cpu")
    values.setdefault("logger", False)
    values.setdefault("enable_checkpointing", False)
    strategy = MegatronDDPStrategy(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                                   seed=int(parallel.get("seed", 1234)))
    return Trainer(strategy=strategy, **values)
