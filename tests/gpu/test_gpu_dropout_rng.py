"""Attention dropout on CUDA draws from megatron-core's model-parallel RNG tracker.

Heads differ between tensor-parallel ranks, so their dropout masks must come from the
tracker's model-parallel stream (``tensor_parallel.get_cuda_rng_tracker().fork()``), seeded by
``model_parallel_cuda_manual_seed`` — not from the default CUDA generator. With hidden dropout
0, the only randomness left in a forward pass is attention dropout, so:

* same tracker seed, different default-generator seed → identical outputs;
* different tracker seed → different outputs;
* consecutive passes after one seeding → different masks (the stream advances);
* eval mode → no dropout at all.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

VOCAB = 300


@pytest.fixture
def encoder_factory(megatron_single):
    from biomegatron_nemo.encoder.config import EncoderConfig
    from biomegatron_nemo.encoder.model import build_encoder
    from biomegatron_nemo.parallel.state import seed_everything_model_parallel

    def build(spec):
        torch.manual_seed(0)
        cfg = EncoderConfig.from_preset("micro", vocab_size=VOCAB, hidden_dropout=0.0, attention_dropout=0.5,
                                        layer_spec=spec)
        return build_encoder(cfg).cuda().train()

    yield build
    seed_everything_model_parallel(1234)  # leave the streams as the session fixture set them


def _inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (2, 32), generator=g).cuda()
    mask = torch.ones(2, 32, dtype=torch.long, device="cuda")
    mask[1, 20:] = 0
    return ids, mask


@pytest.mark.parametrize("spec", ["portable", "local"])
def test_attention_dropout_follows_the_tracker_seed(encoder_factory, spec):
    from megatron.core import tensor_parallel

    encoder = encoder_factory(spec)
    ids, mask = _inputs()

    @torch.no_grad()
    def forward():
        return encoder(ids, mask)

    def seeded(tracker_seed, default_seed):
        tensor_parallel.model_parallel_cuda_manual_seed(tracker_seed)
        torch.cuda.manual_seed(default_seed)  # the default CUDA generator must not matter
        return forward()

    a = seeded(7, 1)
    b = seeded(7, 2)
    c = seeded(8, 1)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)  # same masks
    assert (a - c).abs().max() > 1e-3  # other tracker seed, other masks

    tensor_parallel.model_parallel_cuda_manual_seed(7)
    first, second = forward(), forward()
    torch.testing.assert_close(first, a, atol=1e-6, rtol=0)
    assert (first - second).abs().max() > 1e-3  # the stream advances between passes

    encoder.eval()
    with torch.no_grad():
        deterministic = encoder(ids, mask)
    assert (a - deterministic).abs().max() > 1e-3  # dropout was active in training mode
    torch.testing.assert_close(deterministic, encoder(ids, mask).detach(), atol=1e-6, rtol=0)


def test_tracker_fork_leaves_the_default_generator_alone(encoder_factory):
    """The fork swaps the CUDA RNG state in and back out: the default stream is where it was."""
    from megatron.core import tensor_parallel

    encoder = encoder_factory("portable")
    ids, mask = _inputs()
    tensor_parallel.model_parallel_cuda_manual_seed(11)
    torch.cuda.manual_seed(5)
    expected = torch.rand(4, device="cuda")
    torch.cuda.manual_seed(5)
    with torch.no_grad():
        encoder(ids, mask)
    torch.testing.assert_close(torch.rand(4, device="cuda"), expected, atol=0, rtol=0)
