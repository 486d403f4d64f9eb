"""Activation recompute (encoder/recompute.py): with dropout on, full recompute gives the same loss
and gradients as none, for each of megatron-core's methods; it keeps far fewer activations for
the backward; settings it cannot honour fail at once."""

import pytest
import torch
from omegaconf import OmegaConf

from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.encoder.recompute import recompute_chunks
from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

from helpers.models import batch_loss, pretraining_config, synthetic_mlm_batch, write_tiny_vocab


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    return write_tiny_vocab(tmp_path_factory.mktemp("recompute") / "vocab.txt")


def _model(vocab, **recompute):
    cfg = pretraining_config(vocab, preset="micro")  # 2 layers, hidden 64
    cfg.encoder = OmegaConf.merge(cfg.encoder, {"num_layers": 4, "hidden_dropout": 0.1, "attention_dropout": 0.1,
                                                **recompute})
    model = BioMegatronPretrainingModel(cfg)
    model.train()
    return model


def _step(model, batch, seed=7):
    """Loss, gradients and the bytes autograd kept outside checkpointed chunks, for one step."""
    model.zero_grad(set_to_none=True)
    kept = []

    def pack(tensor):
        kept.append(tensor.numel() * tensor.element_size())
        return tensor

    torch.manual_seed(seed)  # the same dropout masks in every run
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = batch_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss), grads, sum(kept)


@pytest.mark.parametrize("recompute", [
    {"recompute_method": "uniform", "recompute_num_layers": 1},
    {"recompute_method": "uniform", "recompute_num_layers": 3},   # chunks of 3 and 1 layers
    {"recompute_method": "block", "recompute_num_layers": 2},     # layers 0 and 1 rerun, 2 and 3 not
])
def test_full_recompute_gives_the_gradients_of_no_recompute(vocab, recompute):
    plain = _model(vocab)
    batch = synthetic_mlm_batch(plain.tokenizer.vocab_size, batch_size=4, seq_len=16)
    loss, grads, kept_plain = _step(plain, batch)
    again = _step(plain, batch)[0]
    assert again == loss  # dropout is on, and seeded alike
    rerun = _model(vocab, recompute_granularity="full", **recompute)
    rerun.load_state_dict(plain.state_dict())
    loss_r, grads_r, kept_rerun = _step(rerun, batch)
    assert loss_r == pytest.approx(loss, abs=1e-6)
    assert grads_r.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_r[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    assert kept_rerun < kept_plain  # what the backward keeps is smaller
    if recompute["recompute_method"] == "uniform" and recompute["recompute_num_layers"] == 1:
        assert kept_rerun < 0.5 * kept_plain, (kept_rerun, kept_plain)


def test_chunks_follow_megatron_cores_methods():
    assert recompute_chunks(4, "uniform", 1) == [(0, 1, True), (1, 2, True), (2, 3, True), (3, 4, True)]
    assert recompute_chunks(5, "uniform", 2) == [(0, 2, True), (2, 4, True), (4, 5, True)]
    assert recompute_chunks(3, "block", 1) == [(0, 1, True), (1, 2, False), (2, 3, False)]


@pytest.mark.parametrize("recompute, message", [
    ({"recompute_granularity": "full", "recompute_num_layers": 5}, "encoder.recompute_num_layers: must be in [1, 4]"),
    ({"recompute_granularity": "everything"}, "encoder.recompute_granularity:"),
    ({"recompute_granularity": "full", "recompute_method": "blocks"}, "encoder.recompute_method:"),
])
def test_impossible_recompute_settings_fail_naming_the_key(vocab, recompute, message):
    with pytest.raises(ConfigError) as err:
        _model(vocab, **recompute)
    assert message in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="selective recompute runs on CUDA")
def test_selective_recompute_without_cuda_says_to_use_full(vocab):
    with pytest.raises(ConfigError, match="use recompute_granularity=full"):
        _model(vocab, recompute_granularity="selective")
