"""Preemption: the signal a cluster sends before it kills a job saves a checkpoint at the current
step and ends the run with :data:`PREEMPTED_EXIT_STATUS`.

SLURM sends ``SIGTERM`` (or the signal of ``--signal``) before a job's time limit or preemption;
Kubernetes and cloud spot instances send ``SIGTERM``. Lightning alone ends the run after the
step with status 0 and saves nothing, so a job script takes it for a finished run; NeMo's
``PreemptionCallback`` needs CUDA and exits with 0 too. :class:`PreemptionCheckpoint` instead:

* on the first of its signals (``SIGTERM`` and ``SIGUSR1`` unless the run's
  ``preemption_signals`` say otherwise) notes it, and passes it on to the ranks Lightning's own
  launcher started; later signals are logged and ignored, so one that arrives during the save
  cannot interrupt it (the save is atomic as every checkpoint save is);
* at the end of each training step the ranks agree, with one all-reduce of the signal number,
  so every rank stops after the same step whichever of them was signalled;
* the step ends as usual (a validation due at that step included), Lightning's own stop path
  leaves the fit loop, and the ``-last`` checkpoint is saved at that step through the run's
  checkpoint callback. One line says so and the process exits with status 75 (``EX_TEMPFAIL``
  of ``sysexits.h``: try again). Rerunning the command resumes from that checkpoint.
"""

from __future__ import annotations

import logging
import signal
from typing import Optional, Sequence

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

#: the exit status of a run stopped by a preemption signal after saving its checkpoint
PREEMPTED_EXIT_STATUS = 75
DEFAULT_SIGNALS = ("SIGTERM", "SIGUSR1")


def signal_numbers(names: Sequence[str]) -> list:
    """``["SIGTERM", "USR1", ...]`` as signal numbers; a name that is no signal is a ValueError."""
    numbers = []
    for name in names:
        full = str(name).upper() if str(name).upper().startswith("SIG") else f"SIG{str(name).upper()}"
        if not isinstance(getattr(signal, full, None), signal.Signals) or full in ("SIGKILL", "SIGSTOP"):
            raise ValueError(f"{name!r} is not a signal a process can catch (e.g. SIGTERM, SIGUSR1)")
        numbers.append(getattr(signal, full))
    return numbers


class PreemptionCheckpoint(Callback):
    """Save at the current step and stop on a preemption signal (see the module docstring)."""

    def __init__(self, signals: Sequence[str] = DEFAULT_SIGNALS):
        self.signals = signal_numbers(signals)
        self.received: Optional[int] = None
        self.stopping: Optional[int] = None
        self._previous: dict = {}
        self._trainer = None

    # ------------------------------------------------------------------ signals
    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            log.warning("received %s again: the run is already stopping; ignored", name)
            return
        self.received = signum
        log.warning("received %s: the run stops after this step and saves a checkpoint", name)
        launcher = getattr(self._trainer.strategy, "launcher", None) if self._trainer is not None else None
        if launcher is not None and hasattr(launcher, "kill"):
            launcher.kill(signum)  # the ranks Lightning started (torchrun and SLURM signal every rank)

    def on_train_start(self, trainer, pl_module) -> None:
        self._trainer = trainer
        for number in self.signals:  # replaces Lightning's SIGTERM handler for the fit
            self._previous[number] = signal.signal(number, self._handle)

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    # ------------------------------------------------------------------ the stop
    def _agreed_signal(self, trainer) -> int:
        received = self.received or 0
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([received], dtype=torch.int64, device=trainer.strategy.root_device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            received = int(flag.item())
        return received

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.stopping is not None:
            return
        agreed = self._agreed_signal(trainer)
        if agreed:
            self.stopping = agreed
            # Lightning's own stop: after this step completes, SIGTERMException leaves the fit loop
            trainer._signal_connector.received_sigterm = True

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.stopping is None or not isinstance(exception, SIGTERMException):
            return
        name = signal.Signals(self.stopping).name
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or not getattr(checkpoint, "save_last", False):
            saved = "no checkpoint was saved (the run has no checkpoint callback saving a -last checkpoint)"
        else:
            if getattr(checkpoint, "_last_global_step_saved", None) != trainer.global_step:
                checkpoint._save_last_checkpoint(trainer, checkpoint._monitor_candidates(trainer))
            saved = f"saved {checkpoint.last_model_path}; rerun the same command to resume from it"
            trainer.strategy.barrier("preemption checkpoint")  # no rank exits (and makes srun or
            # torchrun end the others) before global rank 0 has finished writing
        if trainer.is_global_zero:
            log.warning("stopped by %s after step %d: %s (exit status %d)", name, trainer.global_step, saved,
                        PREEMPTED_EXIT_STATUS)
        exception.code = PREEMPTED_EXIT_STATUS  # Lightning re-raises this SystemExit
