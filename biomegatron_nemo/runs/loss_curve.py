"""``LossCurve``: the training run's loss curve as a picture and a table next to its logs.

A Lightning callback that every pretraining run adds to its Trainer (examples, the ``biomegatron``
command: :func:`~biomegatron_nemo.runs.finetune.run_pretraining`); a script with its own Trainer
passes ``LossCurve()`` in its ``callbacks``.

* Recorded: every logged loss (``train_loss`` and its parts, e.g. ``train_mlm_loss``) at each
  step Lightning logs (``trainer.log_every_n_steps``), and every validation loss (``val_loss``,
  ``val_mlm_loss``, ...) after each validation. They are the values TensorBoard shows: global
  rank 0's, as the model logs them (the last micro-batch's under gradient accumulation).
* Written by global rank 0 after each validation, at the end of training and when training
  stops on an error, atomically (so a killed run keeps the complete picture of its last
  validation): ``loss_curve.tsv`` (one row a step: ``step``, then one column per loss, empty
  where not recorded) and ``loss_curve.png``.
* Where: the run's log folder — the one NeMo's ``exp_manager`` made for this trainer, else the
  first logger's folder. A trainer that logs nowhere gets no files (nothing is written to the
  working directory behind the user's back).
* Resume: the interrupted run's rows up to the resumed step are read back from its table (in the
  log folder, or in the ``run_<n>/`` folder ``exp_manager`` moves it to on resuming), so the
  curve continues it (checkpoints are saved after validations, when the table is written too).
  The checkpoints do not store the curve: without that table (another log folder, a deleted
  file) a resumed run's curve starts at the resumed step.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Dict, List, Optional

from lightning.pytorch import Callback

from biomegatron_nemo.common.atomic import atomic_write
from biomegatron_nemo.common.plots import new_figure, save_figure

log = logging.getLogger(__name__)

TABLE_NAME = "loss_curve.tsv"
PICTURE_NAME = "loss_curve.png"


def run_log_folder(trainer) -> Optional[Path]:
    """The folder this trainer's logs go to, or None when it logs nowhere (see the module doc)."""
    from nemo.utils.app_state import AppState

    exp_manager_dir = AppState().log_dir
    # exp_manager points the trainer's root folder at its log folder; an AppState left by another
    # trainer of the same process does not match this one's root
    if exp_manager_dir and Path(trainer.default_root_dir).resolve() == Path(exp_manager_dir).resolve():
        return Path(exp_manager_dir)
    for logger in trainer.loggers:
        folder = getattr(logger, "log_dir", None)  # TensorBoard and CSV loggers: no collective here
        if folder:
            return Path(folder)
    return None


def read_loss_table(path: Path) -> Dict[int, Dict[str, float]]:
    """``{step: {loss name: value}}`` of a ``loss_curve.tsv``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return {}
    names = lines[0].split("\t")[1:]
    rows: Dict[int, Dict[str, float]] = {}
    for line in lines[1:]:
        cells = line.split("\t")
        rows[int(cells[0])] = {n: float(v) for n, v in zip(names, cells[1:]) if v != ""}
    return rows


def previous_table(folder: Path) -> Optional[Path]:
    """The table an interrupted run left: in ``folder``, or where ``exp_manager`` moved it when
    the run resumed (it moves a log folder's files into ``run_<n>``, ``n`` counting up)."""
    if (folder / TABLE_NAME).is_file():
        return folder / TABLE_NAME
    moved = [p for p in folder.glob(f"run_*/{TABLE_NAME}") if p.parent.name[4:].isdigit()]
    return max(moved, key=lambda p: int(p.parent.name[4:]), default=None)


class LossCurve(Callback):
    """Records the losses of a ``fit`` and draws them (see the module docstring)."""

    def __init__(self, train_prefix: str = "train_", val_prefix: str = "val_"):
        self.train_prefix, self.val_prefix = train_prefix, val_prefix
        self.rows: Dict[int, Dict[str, float]] = {}
        self.folder: Optional[Path] = None
        self._last_step = 0

    # ------------------------------------------------------------------ recording
    def _losses(self, trainer, prefix: str) -> Dict[str, float]:
        return {k: float(v) for k, v in trainer.callback_metrics.items()
                if k.startswith(prefix) and k.endswith("loss") and getattr(v, "numel", lambda: 1)() == 1}

    def _record(self, step: int, losses: Dict[str, float]) -> None:
        if losses and self.folder is not None:
            self.rows.setdefault(step, {}).update(losses)

    def on_train_start(self, trainer, pl_module) -> None:
        self.rows = {}
        self._last_step = trainer.global_step
        self.folder = run_log_folder(trainer) if trainer.is_global_zero else None
        earlier = previous_table(self.folder) if self.folder is not None and trainer.global_step > 0 else None
        if earlier is not None:
            # a resumed run: keep the interrupted run's curve up to the checkpoint's step (rows
            # after it were trained again from the checkpoint and are recorded anew)
            try:
                rows = read_loss_table(earlier)
            except (ValueError, OSError, IndexError):
                rows = {}  # an unreadable table only costs the earlier part of the picture
            self.rows = {s: r for s, r in rows.items() if s <= trainer.global_step}

    # Every rank reads the metrics (reading may reduce a sync_dist value over the ranks: one rank
    # alone would wait forever); only global rank 0, which has a folder, keeps them.
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # optimizer steps done, this one included
        if step == self._last_step:
            return  # a micro-batch before the optimizer step of gradient accumulation
        self._last_step = step
        if step % max(int(trainer.log_every_n_steps), 1) == 0:
            self._record(step, self._losses(trainer, self.train_prefix))

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._record(trainer.global_step, self._losses(trainer, self.val_prefix))
        self.write()

    def on_train_end(self, trainer, pl_module) -> None:
        self.write()

    def on_exception(self, trainer, pl_module, exception) -> None:
        try:
            self.write()  # a run stopped by an error (a NaN loss) still shows where it went wrong
        except Exception as err:  # noqa: BLE001 - the run's own error is the one to report
            log.warning(f"loss curve not written after the run's error: {err}")

    # ------------------------------------------------------------------ writing
    def columns(self) -> List[str]:
        names = {n for row in self.rows.values() for n in row}
        totals = (f"{self.train_prefix}loss", f"{self.val_prefix}loss")
        # training before validation, each split's total before its parts
        return sorted(names, key=lambda n: (not n.startswith(self.train_prefix), n not in totals, n))

    def write(self) -> Optional[Path]:
        """Write the table and the picture into the log folder; the picture's path."""
        if self.folder is None or not self.rows:
            return None
        names = self.columns()
        lines = ["\t".join(["step", *names])]
        for step in sorted(self.rows):
            row = self.rows[step]
            lines.append("\t".join([str(step), *(repr(row[n]) if n in row else "" for n in names)]))
        text = ("\n".join(lines) + "\n").encode("utf-8")
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / TABLE_NAME, lambda f: f.write(text))
        return self.plot(names)

    def plot(self, names: List[str]) -> Path:
        fig, ax = new_figure(6.4, 3.8)
        kinds: List[str] = []  # "loss", "mlm_loss", ...: one colour each, for training and validation
        for name in names:
            train = name.startswith(self.train_prefix)
            points = [(s, r[name]) for s, r in sorted(self.rows.items()) if name in r and math.isfinite(r[name])]
            if not points or self._redundant_part(name, names):
                continue
            kind = name[len(self.train_prefix if train else self.val_prefix):]
            kinds += [kind] if kind not in kinds else []
            steps, values = zip(*points)
            ax.plot(steps, values, label=name, color=f"C{kinds.index(kind)}", linewidth=1.6 if kind == "loss" else 0.9,
                    linestyle="-" if train else "--", marker=None if train else "o", markersize=4)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.set_title(f"losses up to step {max(self.rows)}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return save_figure(fig, self.folder / PICTURE_NAME)

    def _redundant_part(self, name: str, names: List[str]) -> bool:
        """A split's only part (``train_mlm_loss`` without the binary head) repeats its total:
        kept in the table, left out of the picture."""
        for prefix in (self.train_prefix, self.val_prefix):
            if name.startswith(prefix) and name != f"{prefix}loss":
                parts = [n for n in names if n.startswith(prefix) and n != f"{prefix}loss"]
                return len(parts) < 2 and f"{prefix}loss" in names
        return False
