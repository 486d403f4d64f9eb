"""A training checkpoint written at one tensor / pipeline layout resumes at another, optimizer state
included (users change their number of GPUs between a job and its restart)."""

import json
from pathlib import Path

import pytest
import torch

from helpers.distributed import run_distributed
from helpers.training import pretrain, spawned_in_turn, spawned_pretrain_layout

# SGD with momentum: its momentum buffers are optimizer state that the resumed steps depend on
# (without them step 5 differs by 0.05), and, unlike Adam's m/sqrt(v), it does not turn the
# rounding noise of zero gradients (the key bias) into full-size updates at TP=2.
# No dropout: pipeline stages draw their own masks (seeded by stage), and TP splits the heads' ones.
EXTRA = ["model.encoder.attention_dropout=0.0", "model.encoder.hidden_dropout=0.0", "model.optim.name=sgd",
         "model.optim.lr=0.5", "model.optim.momentum=0.9"]
LAYOUTS = {"tp1": [], "tp2": ["parallel.tensor_model_parallel_size=2"],
           "pp2": ["parallel.pipeline_model_parallel_size=2", "model.pipeline.num_microbatches=2"]}


def _losses(path):
    record = json.loads(Path(path).read_text())
    return record["first_step"], {int(k): v for k, v in record["losses"].items()}


def _run(layout, exp, vocab, corpus, record, stop_at=None):
    if layout == "tp1":
        pretrain(exp, vocab, corpus, 6, record, extra=EXTRA, stop_at=stop_at)
    else:
        run_distributed(spawned_pretrain_layout, 2, exp, vocab, corpus, 6, record, EXTRA + LAYOUTS[layout], stop_at)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, tiny_vocab, corpus):
    """The 2-process runs that start a test (TP=2 and PP=2, stopped after step 3) and the PP=2
    reference, one after the other in one launch of two ranks (a launch costs each rank seconds of
    imports). Returns ``{layout: folder}``: the run in ``folder / "exp"``, its record
    ``folder / "a.json"``; the reference's record ``two_ranks["pp2-reference"] / "losses.json"``."""
    folders = {key: tmp_path_factory.mktemp(key) for key in ("tp2", "pp2", "pp2-reference")}
    runs = [(folders["tp2"] / "exp", tiny_vocab, corpus, 6, folders["tp2"] / "a.json", EXTRA + LAYOUTS["tp2"], 3),
            (folders["pp2-reference"] / "exp", tiny_vocab, corpus, 6, folders["pp2-reference"] / "losses.json",
             EXTRA + LAYOUTS["pp2"], None),
            (folders["pp2"] / "exp", tiny_vocab, corpus, 6, folders["pp2"] / "a.json", EXTRA + LAYOUTS["pp2"], 3)]
    run_distributed(spawned_in_turn, 2, [(spawned_pretrain_layout, run) for run in runs])
    return folders


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_vocab, corpus, two_ranks):
    """Uninterrupted losses by layout: TP=2 initialises and trains as TP=1 (one reference for
    both); pipeline stages initialise their layers from per-stage seeds, as Megatron-LM does."""
    runs = {}

    def losses(layout):
        key = "pp2" if layout == "pp2" else "tp1"
        if key not in runs:
            if key == "tp1":
                tmp = tmp_path_factory.mktemp(f"reference-{key}")
                _run(key, tmp / "exp", tiny_vocab, corpus, tmp / "losses.json")
            else:
                tmp = two_ranks["pp2-reference"]
            runs[key] = _losses(tmp / "losses.json")[1]
        return runs[key]

    return losses


@pytest.mark.slow
@pytest.mark.parametrize("first, second", [("tp2", "tp1"), ("tp1", "tp2"), ("pp2", "tp1")],
                         ids=["tp2-then-tp1", "tp1-then-tp2", "pp2-then-pp1"])
def test_resume_at_another_layout(tmp_path, tiny_vocab, corpus, reference, two_ranks, first, second):
    if first == "tp1":
        exp = tmp_path / "exp"
        _run(first, exp, tiny_vocab, corpus, tmp_path / "a.json", stop_at=3)
    else:  # run in two_ranks' launch
        exp = two_ranks[first] / "exp"
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
        assert resumed[step] == pytest.approx(reference(first)[step], abs=1e-5), f"step {step}"
