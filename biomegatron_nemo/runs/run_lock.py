"""One run per experiment folder: ``run.lock``, held by the process that trains into the folder.

The same command started twice by mistake would write into the same checkpoints, and each run
would delete the other's. Before anything is written into the run's folder, global rank 0 takes
an exclusive POSIX lock (``fcntl.lockf``) on ``run.lock`` in its checkpoints folder (NeMo moves
the files of the run folder itself into ``run_N/`` when a run resumes) and writes who holds it
(host, pid, start time); the other ranks of the same job take none, so a data-parallel job is one
run.
The lock is given back when ``Trainer.fit`` ends (:class:`ReleaseRunLock`; a notebook or a test
may train into the same folder again, or hand it to other processes) and otherwise when the
process ends. The kernel releases it when the process ends however it ends (``SIGKILL`` included),
so a lock can never outlive its run: a ``run.lock`` found unlocked was left by a run that did not
end cleanly, and is taken over with a warning naming it. A clean end removes the file.

POSIX locks work across hosts on NFS and on Lustre mounted with ``flock`` (a requeued job often
lands on another node); where a file system refuses locks, the run goes on with a warning that a
second start would not be refused.
"""

from __future__ import annotations

import atexit
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from typing import Optional

from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
_HELD: dict = {}  # folder -> open descriptor: the lock lives as long as it is open


class RunFolderInUse(OSError):
    """Another process holds the run folder's lock."""


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"host {info['host']}, pid {info['pid']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet said which"


def release_run_folder(folder) -> None:
    """Give back ``folder``'s lock if this process holds it, removing ``run.lock``."""
    folder = str(Path(folder).resolve())
    descriptor = _HELD.pop(folder, None)
    if descriptor is None:
        return
    try:
        os.unlink(Path(folder) / LOCK_NAME)  # while still locked: no other run can have taken it
    except OSError:
        pass
    os.close(descriptor)


class ReleaseRunLock(Callback):
    """Gives the run folder's lock back when ``fit`` has ended, after the last checkpoint is
    written. A run that stops on an error keeps it until its process ends."""

    def __init__(self, folder) -> None:
        self.folder = folder

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            release_run_folder(self.folder)


def lock_run_folder(folder) -> Optional[Path]:
    """Hold ``folder/run.lock`` for the rest of this process; its path, or None where the file
    system has no locks. :class:`RunFolderInUse` when another process holds it."""
    folder = Path(folder).resolve()
    if str(folder) in _HELD:
        return folder / LOCK_NAME  # this process already holds it (a second Trainer, a test)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        previous = os.pread(descriptor, 4096, 0).decode("utf-8", "replace")
        os.close(descriptor)
        if err.errno in (errno.EACCES, errno.EAGAIN):
            raise RunFolderInUse(f"{folder}: another run is training in this folder ({_holder(previous)}); "
                                 "wait for it to end, stop it, or give this run another exp_manager.exp_dir "
                                 "or name") from None
        log.warning("%s: the file system refuses locks (%s); a second run started in this folder would not be "
                    "refused", folder, err.strerror)
        return None
    previous = os.pread(descriptor, 4096, 0).decode("utf-8", "replace")
    if previous.strip():
        log.warning("%s: taking over %s, left by a run that did not end cleanly (%s; it no longer holds it)",
                    folder, LOCK_NAME, _holder(previous))
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": started}).encode(), 0)
    os.fsync(descriptor)
    _HELD[str(folder)] = descriptor
    atexit.register(release_run_folder, str(folder))
    return path
