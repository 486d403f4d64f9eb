"""Kill anywhere, resume exactly: example scripts run as users run them (tests/helpers/faults.py
injects the fault), are killed with SIGKILL between checkpoints and inside a checkpoint save, meet
a full disk, and are restarted with the same command; every step of every run — killed or not —
must equal the uninterrupted run's loss and logged step number.

The kill points are drawn from a seeded generator: "anywhere", and the same in every CI run.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from biomegatron_nemo.runs.preemption import PREEMPTED_EXIT_STATUS
from helpers.processes import EXAMPLES, clean_env

FAULTS = Path(__file__).resolve().parent / "helpers" / "faults.py"
KILL_POINTS = random.Random(20261201)


def _launch(script, overrides, record, faults=(), cwd=None, nproc=1, timeout=300):
    """One run of ``script`` through the fault launcher, in its own session (a kill takes the
    whole process group: launcher and every rank, and nothing of the test)."""
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                     "--standalone", f"--nproc_per_node={nproc}"]
    command = [*launcher, str(FAULTS), "--record", str(record), *faults, "--", str(EXAMPLES / f"{script}.py"),
               *overrides]
    return subprocess.run(command, capture_output=True, text=True, env=clean_env(), cwd=cwd, timeout=timeout,
                          start_new_session=True)


def _reference(task, overrides, record, monkeypatch, cwd=None):
    """The uninterrupted run, recorded as the fault launcher records it, in this process: the run
    ``examples/<task's script>.py OVERRIDES`` starts (the same config, composed as ``biomegatron``
    composes it, and :func:`~biomegatron_nemo.runs.registry.run_task`), without the seconds of
    imports a fresh process costs. The runs it is compared with are fresh processes."""
    import argparse
    import functools

    from lightning.pytorch import Trainer

    from biomegatron_nemo.runs.registry import TASKS, run_task
    from biomegatron_nemo.runs.schemas import compose_run_config
    from helpers.faults import Faults

    no_faults = argparse.Namespace(record=str(record), kill_at_step=None, disk_full_at_step=None, raise_at_step=None,
                                   on_rank=0, signal_at_step=None)
    recorder = Faults(no_faults)
    original_init = Trainer.__init__

    @functools.wraps(original_init)
    def init_with_record(self, *a, callbacks=None, **k):
        original_init(self, *a, callbacks=[*(callbacks or []), recorder], **k)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "__init__", init_with_record)
        if cwd is not None:
            patch.chdir(cwd)
        try:
            run_task(task, compose_run_config(TASKS[task].config_name, overrides))
        finally:
            recorder.record.close()


def _steps(record):
    """step -> [(loss, logged step), ...] over every run that recorded it; val step -> [val_loss]."""
    steps, vals = {}, {}
    for line in Path(record).read_text().splitlines():
        entry = json.loads(line)
        if "step" in entry:
            steps.setdefault(entry["step"], []).append((entry["loss"], entry["logged_step"]))
        else:
            vals.setdefault(entry["val_step"], []).append(entry["val_loss"])
    return steps, vals


def _assert_equal_to(reference, record, steps):
    ref, _ = _steps(reference)
    got, _ = _steps(record)
    assert sorted(got) == list(steps), sorted(got)
    for step, runs in got.items():
        for loss, logged in runs:
            assert loss == pytest.approx(ref[step][0][0], abs=1e-6), f"step {step}: {loss} vs {ref[step][0][0]}"
            assert logged == ref[step][0][1], f"step {step}: logged at {logged}, uninterrupted at {ref[step][0][1]}"


def _complete(folder):
    """Every checkpoint under a final name loads (none is half-written)."""
    for path in folder.glob("*.ckpt"):
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return sorted(p.name for p in folder.iterdir())


PRETRAIN_STEPS = 40
# one pass over short_corpus's training split: 21 global batches of 4, so the runs below cross the
# end of an epoch after they resume (where a resumed run once started its next epoch at the wrong
# sample, and Lightning ended the resumed epoch early)
EPOCH = "model.train_ds.num_samples=84"


def _pretrain_overrides(exp, vocab, corpus):
    return [f"model.tokenizer.vocab_file={vocab}", f"model.data.data_prefix=[{corpus}]", "model.encoder.preset=micro",
            "model.data.seq_length=32", "model.data.split='80,20,0'", "model.train_ds.micro_batch_size=4",
            "model.validation_ds.micro_batch_size=4", "model.validation_ds.num_samples=16",
            f"trainer.max_steps={PRETRAIN_STEPS}", "trainer.val_check_interval=10", "trainer.limit_val_batches=2",
            "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", f"exp_manager.exp_dir={exp}"]


@pytest.mark.slow
def test_pretraining_killed_anywhere_resumes_exactly(tmp_path, tiny_vocab, short_corpus, monkeypatch):
    """Checkpoints at steps 10, 20, 30, 40; an epoch ends at step 21. One directory goes through: a
    kill between checkpoints, a kill half-way through writing a checkpoint, a kill after a new -last
    checkpoint is complete but before the old one is deleted, a full disk at a save, a SIGTERM
    after step 34-37 (the run resumed at step 20 and crossed the end of the epoch and the
    validation at step 30), and a final run from where the SIGTERM stopped to the end."""
    def overrides(exp):
        return [*_pretrain_overrides(exp, tiny_vocab, short_corpus), EPOCH]

    _reference("pretrain", overrides(tmp_path / "ref"), tmp_path / "ref.jsonl", monkeypatch)
    record = tmp_path / "runs.jsonl"
    folder = tmp_path / "exp" / "biomegatron_pretrain" / "run" / "checkpoints"

    overrides = overrides(tmp_path / "exp")
    kill_at = KILL_POINTS.randint(11, 19)
    run = _launch("pretrain", overrides, record, ["--kill-at-step", str(kill_at)])
    assert run.returncode == -9, run.stderr[-3000:]
    assert max(_steps(record)[0]) == kill_at

    run = _launch("pretrain", overrides, record, ["--kill-in-save", "20:write"])  # resumes from step 10
    assert run.returncode == -9, run.stderr[-3000:]
    assert "taking over run.lock, left by a run that did not end cleanly" in run.stdout + run.stderr
    names = _complete(folder)
    assert [n for n in names if n.endswith(".partial")], f"the kill did not interrupt a write: {names}"

    run = _launch("pretrain", overrides, record, ["--kill-in-save", "20:finished"])  # resumes from step 10
    assert run.returncode == -9, run.stderr[-3000:]
    lasts = [n for n in _complete(folder) if n.endswith("last.ckpt")]
    assert len(lasts) == 2, f"expected the new and the old -last checkpoint: {lasts}"  # NeMo alone refuses this

    run = _launch("pretrain", overrides, record, ["--disk-full-at-step", "25"])  # resumes from step 20
    assert run.returncode != 0
    assert "could not be written, the disk is full or a size limit was reached" in run.stderr, run.stderr[-3000:]
    names = _complete(folder)
    assert not [n for n in names if n.endswith(".partial")], names
    # the superseded step-10 -last was removed; the step-20 one survived the failed save
    assert [n for n in names if n.endswith("last.ckpt")] == [n for n in lasts if "-step=20-" in n], names

    signal_at = KILL_POINTS.randint(34, 37)  # a cluster's warning; once more while the checkpoint is written
    run = _launch("pretrain", overrides, record,  # resumes from step 20 again
                  ["--signal-at-step", f"{signal_at}:SIGTERM", "--signal-in-save", "SIGTERM"])
    assert run.returncode == PREEMPTED_EXIT_STATUS, run.stderr[-3000:]
    stopped = max(_steps(record)[0])  # the step in progress when the signal came is completed
    assert stopped in (signal_at, signal_at + 1), (stopped, signal_at)
    said = run.stdout + run.stderr  # Hydra's console log is on stdout
    assert "received SIGTERM again: the run is already stopping; ignored" in said, said[-3000:]
    assert f"stopped by SIGTERM after step {stopped}: saved " in said, said[-3000:]
    assert [n for n in _complete(folder) if n.endswith("last.ckpt")] == \
        [f"biomegatron_pretrain--epoch=1-step={stopped}-last.ckpt"]

    run = _launch("pretrain", overrides, record)  # resumes from the step it stopped at, runs to the end
    assert run.returncode == 0, run.stderr[-3000:]
    assert "taking over run.lock" not in run.stdout + run.stderr  # the stopped run let go of it
    assert "Resuming training from checkpoint" in run.stdout + run.stderr
    assert "dataloader is not resumable" not in run.stdout + run.stderr  # Lightning's false alarm

    _assert_equal_to(tmp_path / "ref.jsonl", record, range(1, PRETRAIN_STEPS + 1))
    # steps 11-20 ran in the first three runs, 21-30 in the fourth and fifth, 31 to the signal in
    # the fifth, the rest in the last
    runs_per_step = {s: len(r) for s, r in _steps(record)[0].items()}
    assert runs_per_step[11] == 3 and runs_per_step[21] == 2, runs_per_step
    assert runs_per_step[5] == runs_per_step[31] == runs_per_step[stopped + 1] == 1, runs_per_step
    # names show only validation losses that were computed
    computed = {f"{v[0]:.4f}" for v in _steps(tmp_path / "ref.jsonl")[1].values()}
    named = {re.search(r"val_loss=([0-9.]+)", n).group(1) for n in _complete(folder) if "val_loss=" in n}
    assert named and named <= computed, (named, computed)
    assert not [n for n in _complete(folder) if n.endswith((".partial", "-unfinished"))]


def _ner_overrides(exp):
    # 220 sample sentences in batches of 16: 14 steps an epoch; checkpoints every 5 steps
    return [f"exp_manager.exp_dir={exp}", "exp_manager.resume_if_exists=true", "model.encoder.preset=micro",
            "learn_vocab_size=600", "trainer.max_steps=20", "trainer.val_check_interval=5",
            "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "do_testing=false"]


@pytest.mark.slow
def test_ner_fine_tuning_killed_mid_epoch_resumes_exactly(tmp_path, monkeypatch):
    """Killed inside the first epoch and again inside the second, each time after a mid-epoch
    checkpoint: the resumed runs continue with exactly the next batch of the epoch."""
    _reference("ner", _ner_overrides(tmp_path / "ref"), tmp_path / "ref.jsonl", monkeypatch, cwd=tmp_path)
    overrides, record = _ner_overrides(tmp_path / "exp"), tmp_path / "runs.jsonl"
    for kill_at in (KILL_POINTS.randint(6, 9), KILL_POINTS.randint(16, 19)):
        run = _launch("token_classification", overrides, record, ["--kill-at-step", str(kill_at)], cwd=tmp_path)
        assert run.returncode == -9, run.stderr[-3000:]
    run = _launch("token_classification", overrides, record, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    _assert_equal_to(tmp_path / "ref.jsonl", record, range(1, 21))
    assert len(_steps(record)[0][6]) == 2  # step 6 ran before the first kill and after its resume


@pytest.mark.slow
def test_data_parallel_pretraining_killed_resumes_exactly(tmp_path, tiny_vocab, short_corpus):
    """torchrun with two data-parallel ranks, the whole job killed between checkpoints; the resumed
    run crosses the validation at step 20 and the end of the epoch at step 21, and stops at a
    SIGUSR1 after step 22-25; the last run continues from there to the end."""
    def overrides(exp):
        return [*_pretrain_overrides(exp, tiny_vocab, short_corpus), EPOCH, "trainer.devices=2",
                "trainer.max_steps=30", "model.train_ds.micro_batch_size=2"]

    reference = _launch("pretrain", overrides(tmp_path / "ref"), tmp_path / "ref.jsonl", nproc=2)
    assert reference.returncode == 0, reference.stderr[-3000:]
    record = tmp_path / "runs.jsonl"
    kill_at = KILL_POINTS.randint(11, 19)
    run = _launch("pretrain", overrides(tmp_path / "exp"), record, ["--kill-at-step", str(kill_at)], nproc=2)
    assert run.returncode == -9, run.stderr[-3000:]  # torchrun itself was killed
    assert max(_steps(record)[0]) == kill_at
    # SIGUSR1 (SLURM's --signal) reaches rank 1 only: both ranks stop after the same step
    signal_at = KILL_POINTS.randint(22, 25)
    run = _launch("pretrain", overrides(tmp_path / "exp"), record,
                  ["--signal-at-step", f"{signal_at}:SIGUSR1", "--on-rank", "1"], nproc=2)
    assert run.returncode != 0 and f"exitcode  : {PREEMPTED_EXIT_STATUS}" in run.stderr, run.stderr[-3000:]
    stopped = max(_steps(record)[0])
    assert stopped in (signal_at, signal_at + 1), (stopped, signal_at)
    assert f"stopped by SIGUSR1 after step {stopped}: saved " in run.stdout + run.stderr, run.stdout[-3000:]
    # the killed job's lock is taken over, once: the ranks of a job are one run
    assert (run.stdout + run.stderr).count("taking over run.lock") == 1, run.stdout[-3000:]
    run = _launch("pretrain", overrides(tmp_path / "exp"), record, nproc=2)
    assert run.returncode == 0, run.stderr[-3000:]
    _assert_equal_to(tmp_path / "ref.jsonl", record, range(1, 31))
    runs_per_step = {s: len(r) for s, r in _steps(record)[0].items()}
    # 11 to the kill ran twice; the last run started after the step the signal stopped at
    assert runs_per_step[11] == 2 and runs_per_step[stopped] == runs_per_step[stopped + 1] == 1, runs_per_step


@pytest.mark.slow
@pytest.mark.parametrize("nproc, rank", [(2, 1), (1, 0)], ids=["torchrun", "lightning-launcher"])
def test_a_failing_rank_ends_every_rank_with_its_error(tmp_path, tiny_vocab, corpus, nproc, rank):
    """A rank raises after step 3; the job ends at once (no rank waits in a collective until a
    timeout) and the original error is shown. Under torchrun any rank can fail; with Lightning's
    own launcher (``python examples/pretrain.py trainer.devices=2``) the injected fault reaches
    rank 0 only, the process that started the others."""
    started = time.monotonic()
    run = _launch("pretrain", [*_pretrain_overrides(tmp_path / "exp", tiny_vocab, corpus), "trainer.devices=2"],
                  tmp_path / "runs.jsonl", ["--raise-at-step", "3", "--on-rank", str(rank)], nproc=nproc, timeout=240)
    elapsed = time.monotonic() - started
    assert run.returncode != 0
    assert f"RuntimeError: injected failure on rank {rank} after step 3" in run.stderr, run.stderr[-3000:]
    assert elapsed < 120, f"the job took {elapsed:.0f} s to end"
    assert max(_steps(tmp_path / "runs.jsonl")[0]) <= 4
