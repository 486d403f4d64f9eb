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


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, tiny_vocab, megatron_single):
    """The shipped PubMed sample preprocessed with the tiny vocabulary (an indexed-dataset prefix)."""
    from biomegatron_nemo.data.preprocess import preprocess_corpus

    prefix = tmp_path_factory.mktemp("corpus") / "sample"
    sample = Path(__file__).resolve().parents[1] / "biomegatron_nemo" / "samples" / "pubmed_sample.txt"
    preprocess_corpus([sample], prefix, {"library": "wordpiece", "vocab_file": str(tiny_vocab)}, progress=False)
    return prefix
