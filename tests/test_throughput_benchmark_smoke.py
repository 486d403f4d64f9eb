"""benchmarks/throughput.py runs end to end at a micro size (its figures are never asserted: speed
is measured in benchmarks, not in timed tests) and its table and plot read what it writes."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def throughput(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when run as a script: its folder first
    import importlib

    return importlib.import_module("throughput")


@pytest.mark.slow
@pytest.mark.parametrize("task, mode, precision, memory", [("ner", "train", "bf16", False),
                                                           ("pretrain", "infer", "fp32", True)])
def test_one_interleaved_step_per_system(throughput, tmp_path, capsys, task, mode, precision, memory):
    out = tmp_path / "r.jsonl"
    throughput.main(["--task", task, "--mode", mode, "--precision", precision, "--preset", "micro",
                     "--vocab-size", "300", "--steps", "2", "--warmup", "0", "--output", str(out)]
                    + (["--memory"] if memory else []))
    row = json.loads(out.read_text())
    assert set(row["ms"]) == {"megatron", "hf"} and row["ratio"] > 0 and 0 < row["mfu"]["megatron"]
    assert ("peak_tensor_mib" in row) == memory
    if memory:  # the weights and more; our masked-LM head computes the masked positions' logits only
        peaks = row["peak_tensor_mib"]
        assert 0.5 < peaks["megatron"] < peaks["hf"] < 50
    capsys.readouterr()
    throughput.main(["--table", str(out), "--plot", str(tmp_path / "p.png")])
    table = capsys.readouterr().out
    assert f"| {task} | {mode} | {precision} | micro |" in table and (tmp_path / "p.png").stat().st_size > 1000
    assert ("ours peak MiB" in table) == memory
    sys.modules.pop("throughput", None)
    sys.modules.pop("memory", None)


def test_ops_are_sorted_into_kinds(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from op_profile import OTHER, kind_of

    assert [kind_of(op) for op in ("aten::addmm", "aten::mm", "aten::bmm",
                                   "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
                                   "aten::_softmax_backward_data", "aten::_log_softmax", "aten::native_layer_norm",
                                   "aten::gelu_backward", "aten::_fused_adamw_", "aten::embedding_dense_backward",
                                   "aten::index_select", "aten::fill_", "aten::mul")] == [
        "matmul", "matmul", "matmul", "attention", "attention", OTHER, "layernorm", "gelu", "optimizer",
        "embedding", "data movement", "data movement", OTHER]


@pytest.mark.slow
def test_profile_splits_each_systems_step_by_kind_of_op(throughput, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    throughput.main(["--task", "ner", "--preset", "micro", "--vocab-size", "300", "--steps", "2", "--warmup", "0",
                     "--packed", "--profile", "--output", str(out)])
    row = json.loads(out.read_text())
    profile = row["profile_ms"]
    assert set(profile) == {"megatron", "megatron-packed", "hf"}
    for system, kinds in profile.items():
        assert kinds["matmul"] > 0 and kinds["attention"] > 0 and kinds["optimizer"] > 0
        # per step, as the timed step: the profiled ops account for the step's time (one thread;
        # the profiler's own cost and the timer's noise at this size allow a wide margin)
        assert 0.2 < kinds["total"] / row["ms"][system] < 5, (system, kinds["total"], row["ms"][system])
    capsys.readouterr()
    throughput.main(["--table", str(out)])
    table = capsys.readouterr().out
    assert "| kind | megatron | megatron-packed | hf |" in table and "| matmul | " in table
    sys.modules.pop("throughput", None)


@pytest.mark.slow
def test_packing_breakeven_times_packed_against_padded_by_padding(monkeypatch, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import importlib

    from biomegatron_nemo.encoder import packing

    breakeven = importlib.import_module("packing_breakeven")
    monkeypatch.setattr(packing, "MIN_PADDING_TO_PACK", packing.MIN_PADDING_TO_PACK)  # the sweep sets it to 0
    out = tmp_path / "r.jsonl"
    breakeven.main(["--preset", "micro", "--batch-size", "4", "--seq-len", "16", "--padding", "0", "0.25",
                    "--steps", "1", "--warmup", "0", "--output", str(out)])
    rows = json.loads(out.read_text())["batches"]
    assert rows[0]["padding"] == 0.0 and 0.05 < rows[1]["padding"] < 0.5  # one full example, three shorter
    assert all(row["ratio"] > 0 and set(row["ms"]) == {"padded", "packed"} for row in rows)
    capsys.readouterr()
    breakeven.main(["--table", str(out)])
    assert "| 0.0% |" in capsys.readouterr().out
    sys.modules.pop("packing_breakeven", None)
