"""Encoder presets, parameter counts, layer specs, the portable attention and padding."""

import math

import pytest
import torch

from biomegatron_nemo.encoder import EncoderConfig, padded_vocab_size


def test_padded_vocab_follows_megatron_rule():
    assert padded_vocab_size(30522) == 30592
    assert padded_vocab_size(30522, tensor_parallel_size=2) == 30720
    assert padded_vocab_size(128) == 128
    assert EncoderConfig.from_preset("345m", vocab_size=50000).padded_vocab_size(4) == 50176


@pytest.mark.parametrize("name,layers,hidden,heads", [("345m", 24, 1024, 16), ("800m", 36, 1280, 20), ("1.2b", 24, 2048, 16)])
def test_paper_presets(name, layers, hidden, heads):
    cfg = EncoderConfig.from_preset(name)
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads) == (layers, hidden, heads)
    assert cfg.ffn_hidden_size == 4 * hidden and cfg.max_position_embeddings == 512
    assert cfg.num_tokentypes == 2 and cfg.layernorm_epsilon == 1e-5


@pytest.mark.parametrize("name,paper_millions", [("345m", 345), ("800m", 800), ("1.2b", 1200)])
def test_built_parameter_count_matches_table1(megatron_single, name, paper_millions):
    from biomegatron_nemo.encoder.heads import MaskedLMHead
    from biomegatron_nemo.encoder.model import build_encoder

    cfg = EncoderConfig.from_preset(name, vocab_size=30522)
    with torch.device("meta"):
        encoder = build_encoder(cfg, perform_initialization=False)
        head = MaskedLMHead(encoder.config, encoder.padded_vocab_size, cfg.vocab_size)
    built = sum(p.numel() for p in list(encoder.parameters()) + list(head.parameters()))
    # Table 1's sizes, counted the textbook way: 12·L·h² for attention + MLP weights,
    # 13·L·h for their biases and LayerNorms, (V + P + 2)·h embeddings, MLM head h² + 4h + V.
    L, h, V, P = cfg.num_layers, cfg.hidden_size, 30592, 512
    table1 = 12 * L * h * h + 13 * L * h + (V + P + 2) * h + 2 * h + (h * h + 3 * h + V)
    assert abs(built - table1) / table1 < 0.01
    assert built == cfg.num_parameters()
    # and the preset is the size its name says (the paper rounds)
    assert abs(built / 1e6 - paper_millions) / paper_millions < 0.08


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown encoder preset 'huge'"):
        EncoderConfig.from_preset("huge")
    with pytest.raises(ValueError, match="not divisible by num_attention_heads"):
        EncoderConfig(hidden_size=100, num_attention_heads=3)
    with pytest.raises(ValueError, match="tensor_model_parallel_size 3"):
        EncoderConfig.from_preset("345m").validate(tensor_parallel_size=3)
    with pytest.raises(ValueError, match="unknown encoder config keys \\['hiden_size'\\]"):
        EncoderConfig.from_dict({"preset": "tiny", "hiden_size": 4})


def test_auto_spec_is_portable_without_cuda():
    from biomegatron_nemo.encoder.attention import PortableDotProductAttention
    from biomegatron_nemo.encoder.specs import get_layer_spec, resolve_backend

    assert resolve_backend("auto") == ("te" if torch.cuda.is_available() else "portable")
    if not torch.cuda.is_available():
        spec = get_layer_spec("auto")
        assert spec.submodules.self_attention.submodules.core_attention is PortableDotProductAttention
        with pytest.raises(ValueError, match="needs CUDA"):
            resolve_backend("te")


def _reference_attention(q, k, v, key_padding):
    """float64 softmax(QKᵀ/√d)V with padded keys excluded; q,k,v [s, b, n, d]."""
    q, k, v = (t.double().permute(1, 2, 0, 3) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    s, b = out.shape[2], out.shape[0]
    return out.permute(2, 0, 1, 3).reshape(s, b, -1)


def test_portable_attention_matches_float64_reference(megatron_single):
    from megatron.core.transformer.enums import AttnMaskType

    from biomegatron_nemo.encoder.attention import PortableDotProductAttention
    from biomegatron_nemo.encoder.model import padding_mask_to_attention_mask

    cfg = EncoderConfig.from_preset("micro", vocab_size=100, attention_dropout=0.0).transformer_config()
    attention = PortableDotProductAttention(cfg, 1, AttnMaskType.padding, "self").eval()
    torch.manual_seed(0)
    s, b, n, d = 7, 3, cfg.num_attention_heads, cfg.kv_channels
    q, k, v = (torch.randn(s, b, n, d) for _ in range(3))
    real = torch.ones(b, s)
    real[1, 4:] = 0
    real[2, 2:] = 0
    out = attention(q, k, v, padding_mask_to_attention_mask(real))
    expected = _reference_attention(q, k, v, real == 0)
    assert out.shape == (s, b, n * d)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)


def test_padding_mask_hides_padded_tokens(megatron_single):
    from biomegatron_nemo.encoder.model import build_encoder

    torch.manual_seed(0)
    cfg = EncoderConfig.from_preset("micro", vocab_size=200, hidden_dropout=0.0, attention_dropout=0.0,
                                    layer_spec="portable")
    encoder = build_encoder(cfg).eval()
    ids = torch.randint(5, 200, (2, 10))
    mask = torch.ones(2, 10)
    mask[0, 6:] = 0
    changed = ids.clone()
    changed[0, 6:] = torch.randint(5, 200, (4,))
    with torch.no_grad():
        a, b = encoder(ids, mask), encoder(changed, mask)
        unmasked = encoder(changed, torch.ones(2, 10))
    assert a.shape == (2, 10, cfg.hidden_size)
    torch.testing.assert_close(a[0, :6], b[0, :6], atol=1e-6, rtol=0)  # padded ids do not leak
    torch.testing.assert_close(a[1], b[1])
    assert (unmasked[0, :6] - a[0, :6]).abs().max() > 1e-3  # without the mask they would
