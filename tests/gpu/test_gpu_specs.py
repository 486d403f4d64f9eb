"""The ``local`` and ``portable`` layer specs on CUDA against a CPU float64 reference.

One encoder + masked-LM head is built on CPU (portable spec) and its weights are loaded into each
candidate: the same weights on CUDA with the ``local`` spec (megatron-core's DotProductAttention)
or the ``portable`` spec (SDPA). Forward (hidden states, loss) and backward (every parameter's
gradient) must match the float64 CPU run: to float32 rounding in fp32, to bf16 rounding under
bf16 autocast (Lightning's ``bf16-mixed``). Dropout is 0 here; the dropout streams are
tested in test_gpu_dropout_rng.py. Without Transformer Engine, ``auto`` must resolve to
``portable`` on CUDA as well.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.gpu

VOCAB = 300
BATCH, SEQ = 3, 24


def _config(spec: str, packed: bool = False):
    from biomegatron_nemo.encoder.config import EncoderConfig

    return EncoderConfig.from_preset("micro", vocab_size=VOCAB, hidden_dropout=0.0, attention_dropout=0.0,
                                     layer_spec=spec, packed_sequences=packed)


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (BATCH, SEQ), generator=g)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[1, 15:] = 0  # padded rows: the key mask must hide them on every backend
    mask[2, 7:] = 0
    types = torch.zeros_like(ids)
    types[:, SEQ // 2:] = 1
    labels = torch.full_like(ids, -100)
    predict = (torch.rand(BATCH, SEQ, generator=g) < 0.3) & (mask == 1)
    predict[0, 1] = True
    labels[predict] = ids[predict]
    return ids, mask, types, labels


def _build(spec: str, state=None, packed: bool = False):
    from biomegatron_nemo.encoder.heads import MaskedLMHead
    from biomegatron_nemo.encoder.model import build_encoder

    torch.manual_seed(0)
    cfg = _config(spec, packed)
    encoder = build_encoder(cfg)  # CPU initialisation, then moved
    head = MaskedLMHead(encoder.config, encoder.padded_vocab_size, cfg.vocab_size)
    model = torch.nn.ModuleDict({"encoder": encoder, "head": head})
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model


def _run(model, device, dtype=None, autocast=False, reference_loss=False):
    """Hidden states, loss and gradients (all float64 on CPU) of one forward/backward."""
    from biomegatron_nemo.encoder.heads import MaskedLMHead

    model = model.to(device=device, dtype=dtype).train()
    ids, mask, types, labels = (t.to(device) for t in _batch())
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with ctx:
        hidden = model["encoder"](ids, mask, types)
        logits = model["head"](hidden, model["encoder"].word_embeddings_weight())
        if reference_loss:  # plain float64 cross-entropy, independent of megatron-core's
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        else:
            loss = MaskedLMHead.loss(logits, labels)
    loss.backward()
    grads = {n: p.grad.detach().double().cpu() for n, p in model.named_parameters() if p.grad is not None}
    return hidden.detach().double().cpu(), loss.detach().double().cpu(), grads


@pytest.fixture(scope="module")
def reference(megatron_single):
    model = _build("portable")
    state = {k: v.clone() if torch.is_tensor(v) else v for k, v in model.state_dict().items()}
    hidden, loss, grads = _run(model, "cpu", dtype=torch.float64, reference_loss=True)
    assert len(grads) == len(list(model.parameters()))
    return state, hidden, loss, grads


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


@pytest.mark.parametrize("spec", ["local", "portable"])
def test_fp32_on_cuda_matches_cpu_float64(reference, exact_fp32_matmuls, spec):
    state, ref_hidden, ref_loss, ref_grads = reference
    hidden, loss, grads = _run(_build(spec, state), "cuda")
    assert hidden.shape == ref_hidden.shape == (BATCH, SEQ, _config(spec).hidden_size)
    torch.testing.assert_close(hidden, ref_hidden, atol=1e-4, rtol=0)
    torch.testing.assert_close(loss, ref_loss, atol=0, rtol=1e-5)
    assert grads.keys() == ref_grads.keys()
    worst = {name: _relative_error(grads[name], ref_grads[name]) for name in ref_grads}
    assert max(worst.values()) < 1e-3, sorted(worst.items(), key=lambda kv: -kv[1])[:5]


@pytest.mark.parametrize("spec", ["local", "portable"])
def test_bf16_autocast_on_cuda_matches_cpu_float64_to_bf16_rounding(reference, spec):
    state, ref_hidden, ref_loss, ref_grads = reference
    hidden, loss, grads = _run(_build(spec, state), "cuda", autocast=True)
    assert torch.isfinite(hidden).all() and torch.isfinite(loss)
    assert _relative_error(hidden, ref_hidden) < 3e-2
    assert abs(float(loss) - float(ref_loss)) / float(ref_loss) < 1e-2
    flat = torch.cat([grads[n].flatten() for n in ref_grads])
    ref_flat = torch.cat([ref_grads[n].flatten() for n in ref_grads])
    assert float(F.cosine_similarity(flat, ref_flat, dim=0)) > 0.999


def test_local_and_portable_agree_on_cuda(reference, exact_fp32_matmuls):
    state = reference[0]
    local = _run(_build("local", state), "cuda")
    portable = _run(_build("portable", state), "cuda")
    torch.testing.assert_close(local[0], portable[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(local[1], portable[1], atol=0, rtol=1e-6)


def test_auto_spec_without_transformer_engine_is_portable_on_cuda():
    from biomegatron_nemo.encoder.attention import PortableDotProductAttention
    from biomegatron_nemo.encoder.specs import get_layer_spec, resolve_backend, transformer_engine_available

    assert torch.cuda.is_available()
    assert resolve_backend("local") == "local"  # allowed on CUDA, refused on CPU
    if transformer_engine_available():
        assert resolve_backend("auto") == "te"
        pytest.skip("Transformer Engine is installed here: auto resolves to te")
    assert resolve_backend("auto") == "portable"
    spec = get_layer_spec("auto")
    assert spec.submodules.self_attention.submodules.core_attention is PortableDotProductAttention
    with pytest.raises(ValueError, match="needs CUDA and transformer-engine"):
        resolve_backend("te")


def test_packed_sequences_on_cuda_match_cpu_float64_at_real_tokens(reference, exact_fp32_matmuls):
    """``encoder.packed_sequences`` on CUDA (megatron-core's thd layout, the portable attention)
    gives the padded float64 run's hidden states at real tokens, its loss and its gradients."""
    state, ref_hidden, ref_loss, ref_grads = reference
    hidden, loss, grads = _run(_build("portable", state, packed=True), "cuda")
    real = _batch()[1].bool()
    torch.testing.assert_close(hidden[real], ref_hidden[real], atol=1e-4, rtol=0)
    assert float(hidden[~real].abs().max()) == 0.0  # padding is never computed
    torch.testing.assert_close(loss, ref_loss, atol=0, rtol=1e-5)
    worst = {name: _relative_error(grads[name], ref_grads[name]) for name in ref_grads}
    assert max(worst.values()) < 1e-3, sorted(worst.items(), key=lambda kv: -kv[1])[:5]


def test_packed_sequences_through_transformer_engine_match_cpu_float64_to_bf16_rounding(reference):
    """``encoder.packed_sequences`` with the ``te`` spec: megatron-core hands our ``PackedSeqParams``
    (``thd``, ``cu_seqlens``) to Transformer Engine's attention, whose ``thd`` kernels take 16-bit
    inputs, so under bf16 autocast; the padded float64 run's values at real tokens, to bf16 rounding."""
    from biomegatron_nemo.encoder.specs import transformer_engine_available

    if not transformer_engine_available():
        pytest.skip("Transformer Engine is not installed here")
    state, ref_hidden, ref_loss, ref_grads = reference
    hidden, loss, grads = _run(_build("te", state, packed=True), "cuda", autocast=True)
    real = _batch()[1].bool()
    assert float(hidden[~real].abs().max()) == 0.0  # padding is never computed
    assert _relative_error(hidden[real], ref_hidden[real]) < 3e-2
    assert abs(float(loss) - float(ref_loss)) / float(ref_loss) < 1e-2
    flat = torch.cat([grads[n].flatten() for n in ref_grads])
    ref_flat = torch.cat([ref_grads[n].flatten() for n in ref_grads])
    assert float(F.cosine_similarity(flat, ref_flat, dim=0)) > 0.999
