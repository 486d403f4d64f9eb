"""Fresh processes as a user would start them: the example scripts, and code that restores a
``.nemo`` and prints a result — never part of the test process's (torch.distributed) group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in DIST_ENV}


def fresh_process_result(code: str, *args: str, cwd=None, timeout: int = 300):
    """Run ``python -c code *args``; ``code`` prints ``RESULT=<json>``; returns the parsed JSON."""
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=clean_env(), cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT="))
    return json.loads(line[len("RESULT="):])


def run_example(name: str, overrides: Sequence[str], cwd, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python examples/<name>.py overrides...``; asserts it succeeds."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *overrides], capture_output=True, text=True,
                          env=clean_env(), cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
