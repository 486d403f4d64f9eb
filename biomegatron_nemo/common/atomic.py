""":func:`atomic_write`, which every checkpoint writer uses so that no kill, full disk or crash
leaves a half-written file under a final name."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union

#: suffix of the temporary file :func:`atomic_write` fills before renaming it to its final name
PARTIAL_SUFFIX = ".partial"

#: errors of a full disk or a file-size limit (``ulimit -f``, quotas)
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class _WriteErrors:
    """A file whose ``write`` remembers the first ``OSError`` it raised: ``torch.save`` turns a
    failed write into a ``RuntimeError`` about zip positions, or none at all until the end."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.error: Optional[OSError] = None

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str):
        return getattr(self._file, name)


def atomic_write(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> None:
    """Create ``path`` with ``write(file)`` so that it is either complete or absent.

    The bytes go to ``path + PARTIAL_SUFFIX`` in the same folder, are flushed to the disk
    (``fsync``), and only then renamed to ``path`` (``os.replace`` is atomic within a file
    system); the folder is synced so the rename survives a power cut. A process killed at any
    point leaves at most the ``.partial`` file, never a truncated file under the final name, and
    an existing ``path`` is untouched until the new one is complete. Lightning's own
    ``_atomic_save`` writes to the system temp folder and moves the file, which is a copy — not
    atomic — when the checkpoint folder is on another file system (a cluster's shared storage).

    A full disk (or quota, or file-size limit) is an ``OSError`` saying so and naming ``path``;
    the partial file is removed.
    """
    path = Path(path)
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    file = None
    try:
        with open(partial, "wb") as f:
            file = _WriteErrors(f)
            write(file)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException as raised:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        err = file.error if file is not None and file.error is not None else raised
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            raise OSError(err.errno, f"{path}: could not be written, the disk is full or a size limit "
                                     f"was reached ({os.strerror(err.errno)}); nothing was written under "
                                     "this name and existing files were left as they were") from err
        if err is raised:
            raise
        raise err from raised
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
