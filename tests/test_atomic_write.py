"""A checkpoint write that hits a full disk or a size limit is one clear ``OSError``, whatever
``torch.save`` made of the failed write, and leaves no file and the old one untouched."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers.processes import clean_env

WRITE = """
import resource, signal, sys, torch
from biomegatron_nemo.common.atomic import atomic_write
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
try:
    atomic_write(sys.argv[1], lambda f: torch.save({"weights": torch.zeros(int(sys.argv[2]))}, f))
except OSError as err:
    print(type(err).__name__, err.errno, err)
"""


# 1,000 floats fit; 16,000 and 300,000 do not, and torch.save (PyTorch 2.13) reports their failed
# write as "RuntimeError: unexpected pos ..." at the end of the file, not as the OSError it was
@pytest.mark.parametrize("floats", [1_000, 16_000, 300_000])
def test_a_size_limit_is_named_whatever_torch_save_raises(tmp_path, floats):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"the previous checkpoint")
    done = subprocess.run([sys.executable, "-c", WRITE, str(path), str(floats)], capture_output=True, text=True,
                          env=clean_env(), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    if floats == 1_000:
        assert done.stdout == "", "a file under the limit is written"
        return
    assert done.stdout.strip() == (f"OSError 27 [Errno 27] {path}: could not be written, the disk is full or a "
                                   "size limit was reached (File too large); nothing was written under this "
                                   "name and existing files were left as they were")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]
    assert path.read_bytes() == b"the previous checkpoint"
