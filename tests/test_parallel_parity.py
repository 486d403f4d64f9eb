"""Parity between parallel layouts on CPU (gloo): TP=2 and PP=2 against TP=PP=1, and .nemo
files moving between layouts. Every layout starts from the same .nemo; tolerances 1e-5."""

import pytest
import torch

from helpers.distributed import run_distributed
from helpers.models import pretraining_config, synthetic_mlm_batch
from helpers.parity import spawned_restore_logits, spawned_train_flow, train_flow
from helpers.training import spawned_in_turn

ATOL = 1e-5


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_vocab, megatron_single):
    """A micro model saved at TP=1, and its TP=1 training record."""
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

    tmp = tmp_path_factory.mktemp("parity")
    model = BioMegatronPretrainingModel(pretraining_config(tiny_vocab))
    nemo_file = tmp / "tp1.nemo"
    model.save_to(str(nemo_file))
    train_flow(str(nemo_file), 1, 1, str(tmp / "tp1.pt"), save_to=str(tmp / "tp1_trained.nemo"))
    return tmp, nemo_file, torch.load(tmp / "tp1.pt", weights_only=True)


@pytest.fixture(scope="module")
def two_ranks(reference):
    """This file's 2-process runs, one after the other in one launch of two ranks (a launch costs
    each rank seconds of imports): TP=2 training from the TP=1 .nemo (tp2.pt, tp2_trained.nemo),
    PP=2 training (pp2.pt), the TP=1-trained .nemo restored at TP=2 (tp2_restored.pt)."""
    tmp, nemo_file, _ = reference
    run_distributed(spawned_in_turn, 2, [
        (spawned_train_flow, (str(nemo_file), 2, 1, str(tmp / "tp2.pt"), 1, str(tmp / "tp2_trained.nemo"))),
        (spawned_train_flow, (str(nemo_file), 1, 2, str(tmp / "pp2.pt"), 2)),
        (spawned_restore_logits, (str(tmp / "tp1_trained.nemo"), 2, str(tmp / "tp2_restored.pt"))),
    ])
    return tmp


def _assert_weights_close(a, b):
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=ATOL, rtol=0, msg=lambda m: f"{key}: {m}")


@pytest.mark.slow
def test_tensor_parallel_matches_single_rank(reference, two_ranks):
    _, _, ref = reference
    tp2 = torch.load(two_ranks / "tp2.pt", weights_only=True)
    torch.testing.assert_close(tp2["logits"], ref["logits"], atol=ATOL, rtol=0)
    assert tp2["losses"] == pytest.approx(ref["losses"], abs=ATOL)
    assert ref["losses"][-1] < ref["losses"][0]  # the steps really trained
    _assert_weights_close(tp2["weights"], ref["weights"])


@pytest.mark.slow
def test_nemo_moves_between_tp2_and_tp1(two_ranks):
    """TP=2 save → TP=1 restore, and TP=1 save → TP=2 restore, give identical outputs (at TP=2 also
    with packed sequences)."""
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel
    from helpers.parity import _gathered_logits

    tmp = two_ranks
    tp2_record = torch.load(tmp / "tp2.pt", weights_only=True)
    restored = BioMegatronPretrainingModel.restore_from(str(tmp / "tp2_trained.nemo"))
    _assert_weights_close(restored.layout_free_state_dict(), tp2_record["weights"])

    tp1_model = BioMegatronPretrainingModel.restore_from(str(tmp / "tp1_trained.nemo"))
    batch = synthetic_mlm_batch(tp1_model.tokenizer.vocab_size, seed=0)
    expected = _gathered_logits(tp1_model, batch)
    got = torch.load(tmp / "tp2_restored.pt", weights_only=True)
    torch.testing.assert_close(got["logits"], expected, atol=ATOL, rtol=0)
    real = batch["attention_mask"].bool()  # packed sequences under TP=2: the same logits at real tokens
    torch.testing.assert_close(got["packed_logits"][real], expected[real], atol=ATOL, rtol=0)


@pytest.mark.slow
def test_pipeline_parallel_matches_single_stage(reference, two_ranks):
    _, _, ref = reference
    pp2 = torch.load(two_ranks / "pp2.pt", weights_only=True)
    assert pp2["losses"] == pytest.approx(ref["losses"], abs=ATOL)
    _assert_weights_close(pp2["weights"], ref["weights"])
