"""The shell blocks of README.md and docs/, and how to run one as a user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

from helpers.processes import clean_env

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"(?:<!--\s*(?P<marker>runnable[^>]*?)\s*-->\s*\n)?```(?:bash|sh|shell)\n(?P<body>.*?)```", re.S)
RUNNER = re.compile(r"runnable: (?P<test>tests/test_\w+\.py) runs this block")


class ShellBlock(NamedTuple):
    page: Path
    line: int  # of the block's first command
    body: str
    marker: Optional[str]  # the <!-- runnable ... --> comment before it, if any

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runner(self) -> Optional[str]:
        """The test file that runs this block (``runnable: tests/test_X.py runs this block``)."""
        found = RUNNER.match(self.marker or "")
        return found["test"] if found else None


def shell_blocks() -> Iterator[ShellBlock]:
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            yield ShellBlock(page, text.count("\n", 0, match.start("body")) + 1, match["body"], match["marker"])


def blocks_run_by(test_file: str) -> list:
    return [block for block in shell_blocks() if block.runner == test_file]


def run_block(block: ShellBlock, folder, timeout: int = 900) -> subprocess.CompletedProcess:
    """The block as one ``bash -euo pipefail`` script in ``folder``, with this environment's
    ``biomegatron`` and ``python`` first on the PATH."""
    env = clean_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block.body], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=timeout)
