"""benchmarks/gpu_throughput.py on CPU: the GPU benchmark's own code path, at a micro size.

The GPU run (benchmarks/gpu_check.sh) gets one try on a lent machine; this runs the same script
here (fp32, no batch search, recompute off then on) so a broken import,
argument or report field shows up before that. Also: the Hugging Face reference has exactly our
parameter count at the paper's 345m size (same model, so the throughput ratio compares like with like).
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_throughput.py"


def _load_script():
    # By path: pysbd installs a top-level `benchmarks` package that would shadow this folder.
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cpu_smoke_run_writes_a_complete_report(tmp_path):
    out = tmp_path / "throughput.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--preset", "micro", "--device", "cpu", "--steps", "2", "--warmup", "1",
         "--seq-len", "32", "--vocab-size", "500", "--recompute", "both", "--output", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["config"]["precision"] == "fp32" and result["device"]["type"] == "cpu"
    off, on = result["phases"]
    assert off["recompute"] is False and on["recompute"] is True
    assert [s["model"] for s in on["segments"]] == ["ours", "hf", "ours", "hf"]
    assert all(seg["loss_finite"] for seg in on["segments"])  # recompute runs on CPU too
    assert off["parameters"]["ours"] == off["parameters"]["hf"]
    assert [(s["model"], s["round"]) for s in off["segments"]] == [("ours", 0), ("hf", 0), ("ours", 1), ("hf", 1)]
    for seg in off["segments"]:
        assert seg["batch"] == 2 and seg["steps"] == 2 and seg["tokens_per_s"] > 0 and seg["loss_finite"]
    assert off["summary"]["throughput_ratio_ours_over_hf"] > 0
    assert result["config"]["geometry"]["resolved_spec"] == "portable"
    assert "| off | ours | 2 |" in out.with_suffix(".md").read_text()


def test_reference_model_matches_our_345m_parameter_count():
    torch = pytest.importorskip("torch")
    from transformers import MegatronBertForMaskedLM

    from biomegatron_nemo.encoder.config import EncoderConfig

    gt = _load_script()
    geometry = gt.encoder_geometry("345m", gt.BERT_VOCAB)
    assert (geometry["num_layers"], geometry["hidden_size"], geometry["num_attention_heads"],
            geometry["ffn_hidden_size"], geometry["padded_vocab_size"]) == (24, 1024, 16, 4096, 30592)
    with torch.device("meta"):
        hf = MegatronBertForMaskedLM(gt.hf_config(geometry, 512, 0.1))
    assert gt.num_parameters(hf) == EncoderConfig.from_preset("345m", vocab_size=gt.BERT_VOCAB).num_parameters()
    assert hf.config.layer_norm_eps == 1e-5 and hf.config.hidden_act == "gelu"


def test_model_flops_formula():
    gt = _load_script()
    L, h, f, V, s = 24, 1024, 4096, 30592, 512
    # Megatron's count, as docs/benchmarks/pretraining.md: 6·(12·L·h² + 2·L·s·h) + 6·h·V per token
    assert gt.model_flops_per_token(L, h, f, V, s) == 6 * (12 * L * h * h + 2 * L * s * h) + 6 * h * V
    # 345m at sequence 512: about 2.16 GFLOP per trained token (≈ 6 × 0.33 G parameters + attention)
    assert 2.1e9 < gt.model_flops_per_token(L, h, f, V, s) < 2.2e9
