"""Run an example script exactly as a user would, with one fault injected: the reliability tests'
launcher.

    python tests/helpers/faults.py --record steps.jsonl [FAULT] -- examples/pretrain.py OVERRIDES...

The script runs unchanged (``runpy``, as ``__main__``); a Lightning callback added to every
Trainer it builds records each step (loss of the global batch, the step a logger writes it at,
validation losses) as JSON lines, flushed at once so a killed run keeps what it did. Faults:

``--kill-at-step N``
    SIGKILL the whole job (every rank, the launcher) after step N — a preempted or crashed
    job: no exception handler, no checkpoint on exit.
``--kill-in-save N:MODE``
    SIGKILL during the first checkpoint save from step N on: ``write`` after half of the
    checkpoint's bytes are written; ``finished`` right after a new ``-last`` checkpoint is complete
    (NeMo's unfinished-marker removed) and before the previous ``-last`` is deleted, so two exist.
``--disk-full-at-step N``
    From step N on, no file may grow past 64 KiB (``RLIMIT_FSIZE``, as a full disk or quota would
    stop writes); the next checkpoint save fails.
``--raise-at-step N --on-rank R``
    Raise an exception on global rank R only, after step N.
``--signal-at-step N:SIGNAL [--on-rank R]``
    Send SIGNAL (e.g. SIGTERM, SIGUSR1) to the process of global rank R after step N, as a
    cluster warns a job it is about to kill. ``--signal-in-save SIGNAL`` sends it once more
    while the next checkpoint is being written.
"""

from __future__ import annotations

import argparse
import faulthandler
import functools
import io
import json
import os
import resource
import runpy
import signal
import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer

STATE = {"trainer": None}


def _children(pid: int):
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            yield int(stat.parent.name)


def _kill_everything() -> None:
    """SIGKILL the job: this process's group (a Lightning-launched job's ranks share it) and, under
    torchrun (which starts each worker in a session of its own), the agent and every worker."""
    sys.stdout.flush()
    sys.stderr.flush()
    if "TORCHELASTIC_RUN_ID" in os.environ:
        agent = os.getppid()
        for pid in [agent, *_children(agent)]:
            if pid != os.getpid():
                os.kill(pid, signal.SIGKILL)
    os.killpg(os.getpgid(0), signal.SIGKILL)


class Faults(Callback):
    def __init__(self, args):
        self.args = args
        self.record = open(args.record, "a", encoding="utf-8") if args.record else None

    def _write(self, trainer, **entry) -> None:
        if self.record is not None and trainer.is_global_zero:
            self.record.write(json.dumps(entry) + "\n")
            self.record.flush()
            os.fsync(self.record.fileno())

    def on_train_start(self, trainer, pl_module):
        STATE["trainer"] = trainer

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = (outputs["loss"] if isinstance(outputs, dict) else outputs).detach().clone().float()
        # under torchrun every rank runs this callback; Lightning's own launcher starts the other
        # ranks without it, so there the loss is rank 0's share
        if "TORCHELASTIC_RUN_ID" in os.environ and torch.distributed.get_world_size() > 1:
            torch.distributed.all_reduce(loss)  # rank losses are normalised to average to the batch's
            loss /= torch.distributed.get_world_size()
        step = trainer.global_step
        self._write(trainer, step=step, loss=float(loss), logged_step=trainer.fit_loop.epoch_loop._batches_that_stepped,
                    batch_idx=batch_idx)
        args = self.args
        if args.kill_at_step == step:
            if "TORCHELASTIC_RUN_ID" in os.environ and torch.distributed.get_world_size() > 1:
                # every rank kills the job; without this barrier another rank could do it before
                # rank 0 has recorded the step
                torch.distributed.barrier()
            _kill_everything()
        if args.disk_full_at_step == step:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of a signal
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        if args.signal_at_step and args.signal_at_step[0] == step and trainer.global_rank == args.on_rank:
            STATE["signalled"] = True
            os.kill(os.getpid(), args.signal_at_step[1])
        if args.raise_at_step == step and trainer.global_rank == args.on_rank:
            raise RuntimeError(f"injected failure on rank {trainer.global_rank} after step {step}")

    def on_validation_end(self, trainer, pl_module):
        if "val_loss" in trainer.callback_metrics and not trainer.sanity_checking:
            self._write(trainer, val_step=trainer.global_step, val_loss=float(trainer.callback_metrics["val_loss"]))


def _arm_save_kill(step: int, mode: str) -> None:
    """Patch the calls a checkpoint save goes through (torch.save into the partial file, the
    unlink of NeMo's unfinished-marker) to SIGKILL at the chosen moment."""
    armed = lambda: STATE["trainer"] is not None and STATE["trainer"].global_step >= step  # noqa: E731
    save, unlink = torch.save, os.unlink

    def killing_save(obj, f, *a, **k):
        if mode == "write" and armed() and str(getattr(f, "name", "")).endswith(".partial"):
            buffer = io.BytesIO()
            save(obj, buffer, *a, **k)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            _kill_everything()
        return save(obj, f, *a, **k)

    def killing_unlink(path, *a, **k):
        unlink(path, *a, **k)
        if mode == "finished" and armed() and str(path).endswith("-last-unfinished"):
            _kill_everything()

    torch.save, os.unlink = killing_save, killing_unlink


def _arm_save_signal(signum: int) -> None:
    """Send ``signum`` once more as the first checkpoint after ``--signal-at-step``'s is written."""
    save = torch.save

    def signalling_save(obj, f, *a, **k):
        if STATE.get("signalled") and not STATE.get("signalled_in_save") and \
                str(getattr(f, "name", "")).endswith(".partial"):
            STATE["signalled_in_save"] = True
            os.kill(os.getpid(), signum)
        return save(obj, f, *a, **k)

    torch.save = signalling_save


def _signal_at(value: str):
    step, name = value.split(":")
    return int(step), getattr(signal, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", help="JSON-lines file the steps are appended to (global rank 0)")
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--kill-in-save", help="STEP:write or STEP:finished")
    parser.add_argument("--disk-full-at-step", type=int)
    parser.add_argument("--raise-at-step", type=int)
    parser.add_argument("--on-rank", type=int, default=0)
    parser.add_argument("--signal-at-step", type=_signal_at, help="STEP:SIGNAL")
    parser.add_argument("--signal-in-save", type=lambda name: getattr(signal, name))
    parser.add_argument("script")
    parser.add_argument("overrides", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # kill -USR2 PID: where a hung run waits
    if args.signal_in_save:
        _arm_save_signal(args.signal_in_save)
    if args.kill_in_save:
        step, mode = args.kill_in_save.split(":")
        _arm_save_kill(int(step), mode)

    original_init = Trainer.__init__

    @functools.wraps(original_init)  # the Trainer builder checks keys against its signature
    def init_with_faults(self, *a, callbacks=None, **k):
        callbacks = list(callbacks or []) + [Faults(args)]
        original_init(self, *a, callbacks=callbacks, **k)

    Trainer.__init__ = init_with_faults
    sys.argv = [args.script, *args.overrides]
    sys.path.insert(0, str(Path(args.script).resolve().parent))
    runpy.run_path(args.script, run_name="__main__")


if __name__ == "__main__":
    main()
