"""Pretraining through the real config, Trainer and exp_manager on CPU: logs, checkpoints,
exact resume, data-parallel parity, loss that falls, continued pretraining from a .nemo."""

import json
import math
import re
from pathlib import Path

import pytest
import torch

from helpers.distributed import run_distributed
from helpers.training import pretrain, spawned_in_turn, spawned_pretrain, spawned_tp2_interrupted

NO_DROPOUT = ["model.encoder.hidden_dropout=0.0", "model.encoder.attention_dropout=0.0"]
# SGD for TP (see test_tensor_parallel_pretraining_matches_and_resumes)
TP_EXTRA = ["model.encoder.attention_dropout=0.0", "model.optim.name=sgd", "model.optim.lr=0.5",
            "model.optim.momentum=0.9"]
PP_EXTRA = ["parallel.pipeline_model_parallel_size=2", "model.pipeline.num_microbatches=2", "model.optim.lr=1e-2"]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, tiny_vocab, corpus):
    """This file's 2-process runs, one after the other in one launch of two ranks (a launch costs
    each rank seconds of imports): DP=2 for 5 steps (dp2.json); TP=2 for 3 steps then resumed to 6
    (tp2-a.json, tp2-b.json); PP=2 for 12 steps (pp2.json, its .nemo under pp/). Returns the folder."""
    tmp = tmp_path_factory.mktemp("two_ranks")
    run_distributed(spawned_in_turn, 2, [
        (spawned_pretrain, (tmp / "dp", tiny_vocab, corpus, 5, tmp / "dp2.json", 2, NO_DROPOUT, 2)),
        (spawned_tp2_interrupted, (tmp / "tp2", tiny_vocab, corpus, str(tmp / "tp2"), TP_EXTRA)),
        (spawned_pretrain, (tmp / "pp", tiny_vocab, corpus, 12, tmp / "pp2.json", 4, PP_EXTRA, 2)),
    ])
    return tmp


def _losses(path):
    record = json.loads(Path(path).read_text())
    return record["first_step"], {int(k): v for k, v in record["losses"].items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_vocab, corpus):
    tmp = tmp_path_factory.mktemp("full")
    pretrain(tmp / "exp", tiny_vocab, corpus, 30, tmp / "full.json")
    return _losses(tmp / "full.json")[1]


def test_run_writes_logs_checkpoints_and_resumes_exactly(tmp_path, tiny_vocab, corpus, uninterrupted):
    exp = tmp_path / "exp"
    pretrain(exp, tiny_vocab, corpus, 30, tmp_path / "first.json", stop_at=20)
    run_dir = exp / "biomegatron_pretrain" / "run"
    assert list(run_dir.glob("events.out.tfevents.*")), "no TensorBoard log"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert any(name.endswith("-last.ckpt") for name in checkpoints), checkpoints
    # the best checkpoints carry the validation loss of their own step (saved after that step's
    # validation); the -last one, which may follow unvalidated steps, its epoch and step
    val_losses = json.loads((tmp_path / "first.json").read_text())["val_losses"]
    last = next(name for name in checkpoints if name.endswith("-last.ckpt"))
    assert last == "biomegatron_pretrain--epoch=0-step=20-last.ckpt", checkpoints
    named = {name: re.search(r"val_loss=([0-9.]+)", name).group(1) for name in checkpoints if name != last}
    assert named and set(named.values()) <= {f"{v:.4f}" for v in val_losses.values()}, (named, val_losses)
    assert (run_dir / "checkpoints" / "biomegatron_pretrain.nemo").exists()

    pretrain(exp, tiny_vocab, corpus, 30, tmp_path / "resumed.json")  # same command, more steps
    first_step, resumed = _losses(tmp_path / "resumed.json")
    assert first_step == 21, "the second run did not resume at step 21"
    assert sorted(resumed) == list(range(21, 31))
    for step in range(21, 31):
        assert resumed[step] == pytest.approx(uninterrupted[step], abs=1e-5), f"step {step}"
    # logged at the uninterrupted run's step numbers: an uninterrupted run logs step N's values at
    # N - 1 (Lightning counts the batch after its end hooks); the restored mid-epoch checkpoint was
    # one behind that
    logged = json.loads((tmp_path / "resumed.json").read_text())["logged_steps"]
    assert [logged[str(s)] for s in range(21, 31)] == list(range(20, 30))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_vocab, corpus):
    """100 steps at a higher learning rate: enough for the loss to fall well below ln(V)."""
    tmp = tmp_path_factory.mktemp("trained")
    trainer, _ = pretrain(tmp / "exp", tiny_vocab, corpus, 100, tmp / "trained.json",
                          extra=["model.optim.lr=1e-2", "model.validation_ds.num_samples=32",
                                 "trainer.limit_val_batches=8"])
    nemo_file = tmp / "exp" / "biomegatron_pretrain" / "run" / "checkpoints" / "biomegatron_pretrain.nemo"
    val_losses = json.loads((tmp / "trained.json").read_text())["val_losses"]
    return _losses(tmp / "trained.json")[1], {int(k): v for k, v in val_losses.items()}, nemo_file


def _ln_vocab(vocab_file):
    return math.log(len(Path(vocab_file).read_text().split()))


def test_loss_falls_below_random_init(trained, tiny_vocab):
    losses, val_loss, _ = trained
    assert losses[1] == pytest.approx(_ln_vocab(tiny_vocab), abs=0.5)  # starts at ln(V)
    late = sum(losses[s] for s in range(91, 101)) / 10
    # would fail with frozen weights or labels that do not match the masked tokens
    assert late < _ln_vocab(tiny_vocab) - 1.0
    assert val_loss[100] < _ln_vocab(tiny_vocab) - 0.75  # held-out documents too


@pytest.mark.slow
def test_data_parallel_matches_single_rank(tmp_path, tiny_vocab, corpus, uninterrupted, two_ranks):
    """DP=2 with micro-batch 2 ≡ DP=1 with micro-batch 4 (global batch held at 4)."""
    pretrain(tmp_path / "exp1", tiny_vocab, corpus, 5, tmp_path / "dp1.json", extra=NO_DROPOUT)
    _, dp2 = _losses(two_ranks / "dp2.json")
    _, dp1 = _losses(tmp_path / "dp1.json")
    assert sorted(dp2) == sorted(dp1) == [1, 2, 3, 4, 5]
    for step in dp1:
        assert dp2[step] == pytest.approx(dp1[step], abs=1e-5), f"step {step}"


def test_continued_pretraining_starts_from_the_checkpoint_loss(tmp_path, tiny_vocab, corpus, trained):
    losses, _, nemo_file = trained
    pretrain(tmp_path / "exp", tiny_vocab, corpus, 3, tmp_path / "cont.json", extra=[f"model.init_from={nemo_file}"])
    _, continued = _losses(tmp_path / "cont.json")
    late = sum(losses[s] for s in range(91, 101)) / 10
    # Step 1 sees the same batch as the original run's step 1: the continued model scores it
    # near the checkpoint's late loss, far below what the randomly initialised model scored.
    assert continued[1] == pytest.approx(late, abs=0.5)
    assert continued[1] < losses[1] - 0.8


def test_continued_pretraining_rejects_a_mismatching_checkpoint(tmp_path, corpus, trained):
    from helpers.models import write_tiny_vocab

    _, _, nemo_file = trained
    other_vocab = tmp_path / "vocab.txt"
    write_tiny_vocab(other_vocab)
    other_vocab.write_text(other_vocab.read_text() + "extra\nwords\n")
    # the checkpoint decides the vocabulary: another one is refused before anything is built
    with pytest.raises(ValueError, match=r"model\.tokenizer\.vocab_file: .*vocab\.txt is not the vocabulary of the "
                                         r"pretrained checkpoint .*biomegatron_pretrain\.nemo"):
        pretrain(tmp_path / "exp", other_vocab, corpus, 1, tmp_path / "x.json", extra=[f"model.init_from={nemo_file}"])


@pytest.mark.slow
def test_tensor_parallel_pretraining_matches_and_resumes(tmp_path, tiny_vocab, corpus, two_ranks):
    """Lightning TP=2 run, interrupted after 3 steps and resumed (each rank cuts its optimizer
    shard from the layout-free state), gives the TP=1 losses. Attention dropout is off: its masks are drawn per
    head, and TP splits heads across ranks. SGD with momentum, not Adam: the key bias has a
    zero gradient in exact arithmetic, and Adam's m/sqrt(v) turns its rounding noise into ±lr."""
    pretrain(tmp_path / "tp1", tiny_vocab, corpus, 6, tmp_path / "tp1.json", extra=TP_EXTRA)
    _, tp1 = _losses(tmp_path / "tp1.json")
    _, first = _losses(two_ranks / "tp2-a.json")
    resumed_from, second = _losses(two_ranks / "tp2-b.json")
    assert resumed_from == 4
    tp2 = {**first, **second}
    assert sorted(tp2) == list(range(1, 7))
    for step in tp1:
        assert tp2[step] == pytest.approx(tp1[step], abs=1e-5), f"step {step}"


@pytest.mark.slow
def test_pipeline_parallel_pretraining_through_lightning(two_ranks):
    """PP=2 (2 GPipe microbatches) trains through the strategy and exp_manager, and its .nemo —
    gathered from both stages — restores in a single process with every weight in place."""
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel
    from helpers.models import batch_loss, synthetic_mlm_batch

    _, losses = _losses(two_ranks / "pp2.json")
    assert sorted(losses) == list(range(1, 13))
    assert sum(losses[s] for s in range(10, 13)) / 3 < losses[1] - 0.3
    nemo_file = two_ranks / "pp" / "biomegatron_pretrain" / "run" / "checkpoints" / "biomegatron_pretrain.nemo"
    model = BioMegatronPretrainingModel.restore_from(str(nemo_file))  # strict: all 2 layers + heads
    loss = batch_loss(model, synthetic_mlm_batch(model.tokenizer.vocab_size))
    assert torch.isfinite(loss)


def test_sentence_order_head_trains_and_logs(tmp_path, tiny_vocab, corpus):
    trainer, model = pretrain(tmp_path / "exp", tiny_vocab, corpus, 10, tmp_path / "sop.json",
                              extra=["model.binary_head=true"])
    metrics = trainer.callback_metrics
    assert model.binary_head is not None
    for key in ("train_mlm_loss", "train_sentence_order_loss", "val_sentence_order_accuracy", "val_perplexity"):
        assert key in metrics, sorted(metrics)
    # the reported loss is the sum of the two heads' losses
    _, losses = _losses(tmp_path / "sop.json")
    assert float(metrics["train_loss"]) == pytest.approx(
        float(metrics["train_mlm_loss"]) + float(metrics["train_sentence_order_loss"]), abs=1e-4)
    assert 0.0 <= float(metrics["val_sentence_order_accuracy"]) <= 1.0 and len(losses) == 10
