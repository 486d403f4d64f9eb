"""The shell commands of README.md and docs/ run as written.

A ```bash block right after a ``<!-- runnable: tests/test_X.py runs this block -->`` comment is
executed as one script (bash ``-euo pipefail``) in an empty folder with the installed
``biomegatron`` command on the PATH; it must use the shipped samples (``$(biomegatron samples)``)
or the test extra's packages, and small step counts. Blocks that name this file run here; a block
naming another test file is run there, where what it prints is checked too. Every other shell
block needs real data, a GPU or hours, and is checked for shell syntax only (``bash -n``).
"""

import subprocess

import pytest

from helpers.docs import ROOT, blocks_run_by, run_block, shell_blocks

THIS = "tests/test_docs_commands.py"
BLOCKS = [pytest.param(block, id=block.name) for block in shell_blocks()]


def test_some_blocks_are_run_here_and_every_runnable_block_by_a_test():
    assert blocks_run_by(THIS)
    for block in shell_blocks():
        if block.marker:
            assert block.runner, f"{block.name}: say which test runs it: <!-- runnable: tests/test_X.py runs this block -->"
            runner = ROOT / block.runner
            assert block.runner == THIS or f'blocks_run_by("{block.runner}")' in runner.read_text(encoding="utf-8"), \
                f"{block.name}: {block.runner} does not run it"


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS)
def test_shell_block(block, tmp_path):
    syntax = subprocess.run(["bash", "-n"], input=block.body, capture_output=True, text=True)
    assert syntax.returncode == 0, f"{block.name}: not valid shell: {syntax.stderr}"
    if block.runner != THIS:
        return
    proc = run_block(block, tmp_path)
    assert proc.returncode == 0, f"{block.name}: the block failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
