"""Trainer construction shared by the example scripts: Lightning ``Trainer`` + our strategy.

Examples are Hydra-configured; this turns their ``trainer:`` and ``parallel:`` sections into a
``lightning.pytorch.Trainer`` whose strategy sets up megatron-core's tensor / pipeline / data
parallel groups. Logging and checkpointing are left to NeMo's ``exp_manager`` (which requires
``logger=False`` and ``enable_checkpointing=False`` on the Trainer).
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import sys
from typing import Any, Mapping, Optional

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from biomegatron_nemo.common.config import to_plain, validate_config
from biomegatron_nemo.common.errors import ConfigError

from .state import ParallelConfig
from .strategy import MegatronDDPStrategy

#: Trainer arguments set here, not by the config
_OWN_ARGUMENTS = ("strategy",)


def _check_trainer_keys(values: Mapping[str, Any]) -> None:
    """Lightning would raise a bare TypeError deep in Trainer.__init__; name the key instead."""
    known = [p for p in inspect.signature(Trainer.__init__).parameters if p not in ("self", *_OWN_ARGUMENTS)]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean trainer.{close[0]}? " if close else ""
            raise ConfigError(f"not an argument of lightning's Trainer; {hint}", key=f"trainer.{key}")


class StderrProgressBar(TQDMProgressBar):
    """Lightning's progress bar, drawn on stderr: stdout keeps only what a command prints as its result.
    (Lightning's bars write to ``sys.stdout`` as it is when each bar is created.)"""


def _bar_on_stderr(name: str):
    def init_tqdm(self):
        with contextlib.redirect_stdout(sys.stderr):
            return getattr(TQDMProgressBar, name)(self)

    return init_tqdm


for _name in ("init_sanity_tqdm", "init_train_tqdm", "init_predict_tqdm", "init_validation_tqdm", "init_test_tqdm"):
    setattr(StderrProgressBar, _name, _bar_on_stderr(_name))


def build_trainer(trainer_cfg: Optional[Mapping[str, Any]], parallel_cfg: Optional[Mapping[str, Any]] = None,
                  **overrides: Any) -> Trainer:
    """``Trainer(**trainer_cfg)`` with :class:`MegatronDDPStrategy` for ``parallel_cfg``.

    ``parallel_cfg``: a :class:`~biomegatron_nemo.parallel.state.ParallelConfig` section. A key
    ``Trainer`` does not take is a :class:`ConfigError` naming it.
    ``devices`` must be a multiple of TP × PP; the rest is data parallel.
    """
    values = to_plain(trainer_cfg) or {}
    _check_trainer_keys(values)
    values.update(overrides)
    parallel: ParallelConfig = validate_config(parallel_cfg or {}, ParallelConfig, where="parallel")
    tp, pp = parallel.tensor_model_parallel_size, parallel.pipeline_model_parallel_size
    devices = values.get("devices", 1)
    if isinstance(devices, int) and devices % (tp * pp):
        raise ValueError(f"trainer.devices={devices} is not a multiple of tensor ({tp}) x pipeline ({pp}) parallel sizes")
    values.setdefault("accelerator", "gpu" if torch.cuda.is_available() else "cpu")
    values.setdefault("logger", False)
    values.setdefault("enable_checkpointing", False)
    callbacks = list(values.get("callbacks") or [])
    if values.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks):
        values["callbacks"] = callbacks + [StderrProgressBar()]
    strategy = MegatronDDPStrategy(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                                   seed=parallel.seed)
    return Trainer(strategy=strategy, **values)
