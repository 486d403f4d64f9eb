"""One run per experiment folder: a second start is refused in one line naming the folder and the
process holding it; a lock left by a killed run is taken over with a warning."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import types

import pytest

from biomegatron_nemo.cli import main as cli_main
from biomegatron_nemo.runs.run_lock import LOCK_NAME, ReleaseRunLock, RunFolderInUse, lock_run_folder
from helpers.processes import clean_env
from test_kill_resume import _pretrain_overrides


def _wait_for(predicate, what, timeout=120):
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.2)


def _hold_and_kill(folder, while_held=lambda holder: None):
    """A process takes ``folder``'s lock, ``while_held(it)`` runs, then it is SIGKILLed. The process
    is a fork of this one: a fresh interpreter would spend seconds importing Lightning (which
    run_lock's callback needs) before it took the lock."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the holder: takes the lock, says so, waits to be killed; never returns into pytest
        try:
            os.close(read)
            lock_run_folder(folder)
            os.write(write, b"held\n")
            time.sleep(600)
        finally:
            os._exit(1)
    os.close(write)
    holder = types.SimpleNamespace(pid=pid)
    try:
        with os.fdopen(read) as said:
            assert said.readline().strip() == "held"
        while_held(holder)
    finally:
        os.kill(pid, signal.SIGKILL)  # dies without releasing anything but the kernel's lock
        os.waitpid(pid, 0)
    return holder


@pytest.mark.slow
def test_a_held_folder_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, caplog):
    def refused_while_held(holder):
        with pytest.raises(RunFolderInUse) as refused:
            lock_run_folder(tmp_path)
        assert str(refused.value).startswith(f"{tmp_path}: another run is training in this folder "
                                             f"(host {socket.gethostname()}, pid {holder.pid}, started ")
        assert "\n" not in str(refused.value)

    holder = _hold_and_kill(tmp_path, refused_while_held)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid  # the file outlives it
    with caplog.at_level(logging.WARNING, logger="biomegatron_nemo.runs.run_lock"):
        assert lock_run_folder(tmp_path) == tmp_path / LOCK_NAME
    assert f"taking over {LOCK_NAME}, left by a run that did not end cleanly (host {socket.gethostname()}, " \
           f"pid {holder.pid}" in caplog.text
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()

    ReleaseRunLock(tmp_path).teardown(None, None, "validate")
    assert (tmp_path / LOCK_NAME).exists()  # only the end of fit gives it back
    ReleaseRunLock(tmp_path).teardown(None, None, "fit")
    assert not (tmp_path / LOCK_NAME).exists()  # a notebook's next run, or other processes, may take it
    _hold_and_kill(tmp_path)


@pytest.mark.slow
def test_the_same_command_started_twice_is_refused_while_the_first_runs(tmp_path, tiny_vocab, corpus, capsys,
                                                                        monkeypatch):
    """``biomegatron pretrain`` twice with the same experiment folder; the second ends at once."""
    command = [sys.executable, "-m", "biomegatron_nemo", "pretrain",
               *_pretrain_overrides(tmp_path / "exp", tiny_vocab, corpus), "trainer.max_steps=100000"]
    lock = tmp_path / "exp" / "biomegatron_pretrain" / "run" / "checkpoints" / LOCK_NAME
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(),
                             cwd=tmp_path, start_new_session=True)
    try:
        _wait_for(lambda: lock.exists() and lock.read_text().strip(), "the first run's lock")
        # the second start: the same command's own code in this process, another process than the
        # first's (a fresh one would cost seconds of imports, while the first run trains on)
        monkeypatch.chdir(tmp_path)
        capsys.readouterr()
        code = cli_main(command[3:])
        second = capsys.readouterr()
        assert first.poll() is None, "the first run ended"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert code == 2
    error = [line for line in second.err.splitlines() if "error:" in line]
    assert error == [f"biomegatron pretrain: error: {lock.parent.resolve()}: another run is training in this folder "
                     f"(host {socket.gethostname()}, pid {first.pid}, started "
                     f"{json.loads(lock.read_text())['started']}); wait for it to end, stop it, or give this run "
                     "another exp_manager.exp_dir or name"], second.err[-3000:]


def test_a_file_system_without_locks_is_said_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    """Fault injection: ``lockf`` fails as on a file system mounted without lock support."""
    import errno
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    with caplog.at_level(logging.WARNING, logger="biomegatron_nemo.runs.run_lock"):
        assert lock_run_folder(tmp_path) is None
    assert f"{tmp_path}: the file system refuses locks (No locks available); a second run started in this " \
           "folder would not be refused" in caplog.text
