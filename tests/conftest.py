"""Shared fixtures. Tests run on CPU; megatron-core state lives in the pytest process at TP=PP=1,
multi-process layouts run in spawned processes (tests/helpers/distributed.py)."""

import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
warnings.filterwarnings("ignore", message=".*Apex is not installed.*")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_vocab(tmp_path_factory):
    from helpers.models import write_tiny_vocab

    return write_tiny_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt")


@pytest.fixture(scope="session")
def megatron_single():
    """megatron-core parallel state for one process (TP=PP=1), shared by in-process tests."""
    from biomegatron_nemo.parallel import initialize_megatron

    return initialize_megatron(1, 1)
