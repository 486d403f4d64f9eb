"""The shell commands of README.md and docs/ run as written.

A ```bash block right after a ``<!-- runnable ... -->`` comment is executed as one script (bash
``-euo pipefail``) in an empty folder with the installed ``biomegatron`` command on the PATH; it
must use the shipped samples (``$(biomegatron samples)``) and small step counts. Every other shell
block needs real data, a GPU or hours, and is checked for shell syntax only (``bash -n``).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.processes import clean_env

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"(?P<marker><!--\s*runnable[^>]*-->\s*\n)?```(?:bash|sh|shell)\n(?P<body>.*?)```", re.S)


def _blocks():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for number, match in enumerate(BLOCK.finditer(text), start=1):
            line = text.count("\n", 0, match.start("body")) + 1
            yield pytest.param(page, line, match["body"], bool(match["marker"]),
                               id=f"{page.relative_to(ROOT)}:{line}")


BLOCKS = list(_blocks())


def test_some_blocks_are_run():
    assert sum(1 for b in BLOCKS if b.values[3]) >= 1


@pytest.mark.parametrize("page, line, body, runnable", BLOCKS)
def test_shell_block(page, line, body, runnable, tmp_path):
    if not runnable:
        proc = subprocess.run(["bash", "-n"], input=body, capture_output=True, text=True)
        assert proc.returncode == 0, f"{page}:{line}: not valid shell: {proc.stderr}"
        return
    env = clean_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"{page}:{line}: the block failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
