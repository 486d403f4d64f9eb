"""A training checkpoint written at one tensor-parallel size resumes at another, optimizer state
included (users change their number of GPUs between a job and its restart)."""

import json
from pathlib import Path

import pytest
import torch

from helpers.distributed import run_distributed
from helpers.training import pretrain, spawned_pretrain_tp2

# SGD with momentum: its momentum buffers are optimizer state that the resumed steps depend on
# (without them step 5 differs by 0.05), and, unlike Adam's m/sqrt(v), it does not turn the
# rounding noise of zero gradients (the key bias) into full-size updates at TP=2.
EXTRA = ["model.encoder.attention_dropout=0.0", "model.optim.name=sgd", "model.optim.lr=0.5",
         "model.optim.momentum=0.9"]


def _losses(path):
    record = json.loads(Path(path).read_text())
    return record["first_step"], {int(k): v for k, v in record["losses"].items()}


def _run(tp, exp, vocab, corpus, record, stop_at=None):
    if tp == 1:
        pretrain(exp, vocab, corpus, 6, record, extra=EXTRA, stop_at=stop_at)
    else:
        run_distributed(spawned_pretrain_tp2, 2, exp, vocab, corpus, 6, record, EXTRA, stop_at)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_vocab, corpus):
    tmp = tmp_path_factory.mktemp("reference")
    _run(1, tmp / "exp", tiny_vocab, corpus, tmp / "tp1.json")
    return _losses(tmp / "tp1.json")[1]


@pytest.mark.parametrize("first, second", [(2, 1), (1, 2)], ids=["tp2-then-tp1", "tp1-then-tp2"])
def test_resume_at_another_tensor_parallel_size(tmp_path, tiny_vocab, corpus, reference, first, second):
    exp = tmp_path / "exp"
    _run(first, exp, tiny_vocab, corpus, tmp_path / "a.json", stop_at=3)
    checkpoints = exp / "biomegatron_pretrain" / "run" / "checkpoints"
    last = next(checkpoints.glob("*-last.ckpt"))
    saved = torch.load(last, map_location="cpu", weights_only=True)["optimizer_states"][0]
    # one layout-free state, named by parameter (no per-rank shard files)
    assert saved["format"] == "biomegatron-layout-free-optimizer-1"
    qkv = "encoder.encoder.layers.0.self_attention.linear_qkv.weight"
    assert saved["state"][qkv]["momentum_buffer"].shape == (3 * 64, 64)
    assert not [p for p in checkpoints.iterdir() if ".optim-" in p.name]

    _run(second, exp, tiny_vocab, corpus, tmp_path / "b.json")
    resumed_from, resumed = _losses(tmp_path / "b.json")
    assert resumed_from == 4 and sorted(resumed) == [4, 5, 6]
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(reference[step], abs=1e-5), f"step {step}"
