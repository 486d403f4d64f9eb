"""The GPU check's helpers, on CPU: the offline installer's plan and the report's judgement.

benchmarks/gpu_check.sh gets one run on a lent GPU; what decides which wheels are installed and
how the run is judged must be right before that.
"""

import importlib.util
import json
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    # By path: pysbd installs a top-level `benchmarks` package that would shadow this folder.
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wheel(folder: Path, name: str, version: str, requires=()):
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta)
    return path


def test_install_plan_installs_what_is_missing_or_excluded(tmp_path, monkeypatch):
    gi = _load("gpu_install")
    _wheel(tmp_path, "nemo-toolkit", "3.0.0", ["lightning<=2.4.0,>2.2.1; extra == 'core'", "wandb; extra == 'core'",
                                             "numpy>=1.22"])
    _wheel(tmp_path, "lightning", "2.4.0", ["packaging<25.0,>=20.0"])
    _wheel(tmp_path, "pysbd", "0.3.4")
    _wheel(tmp_path, "numpy", "2.4.6")
    present = {"lightning": "2.6.6", "packaging": "26.4", "pysbd": "0.3.4", "numpy": "2.4.6"}
    monkeypatch.setattr(gi, "installed_versions", lambda: present)
    decisions, install, unmet = gi.plan(tmp_path)
    assert decisions["nemo-toolkit"]["action"] == "install"  # absent
    assert decisions["lightning"]["action"] == "install"  # 2.6.6 is excluded by nemo_toolkit's [core] pin
    assert "<=2.4.0" in decisions["lightning"]["why"]
    assert decisions["pysbd"]["action"] == decisions["numpy"]["action"] == "keep"  # the machine's satisfy
    assert sorted(install) == ["lightning-2.4.0-py3-none-any.whl", "nemo_toolkit-3.0.0-py3-none-any.whl"]
    assert any("wandb" in u and "absent" in u for u in unmet)  # reported, not carried
    assert any("packaging" in u and "have 26.4" in u for u in unmet)


def test_install_dry_run_writes_its_plan(tmp_path, monkeypatch):
    gi = _load("gpu_install")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "pysbd", "0.3.4")
    monkeypatch.setattr(gi, "installed_versions", lambda: {"pysbd": "0.3.4"})
    report = tmp_path / "install.json"
    assert gi.main(["--wheels", str(wheels), "--target", str(tmp_path / "site"), "--dry-run",
                    "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["decisions"]["pysbd"]["action"] == "keep" and data["dry_run"] is True
    assert not (tmp_path / "site").exists()
    assert gi.main(["--wheels", str(tmp_path / "empty"), "--target", str(tmp_path / "site")]) == 2


def _results(**overrides):
    results = {"env": {"cuda_available": True},
               "pytest_gpu": {"tests": 10, "passed": 10, "failures": 0, "errors": 0, "skipped": 0},
               "throughput": {"targets": {"mfu_at_least_45pct": True, "throughput_ratio_at_least_1": False}},
               "ner": {"loss_falls": True, "test_f1": 0.95}, "pretrain": {"loss_falls": True}}
    results.update(overrides)
    return results


def test_report_judges_the_targets():
    gr = _load("gpu_report")
    verdicts = gr.judge(_results())
    assert verdicts == {"gpu_tests_pass": True, "mfu_at_least_45pct": True, "throughput_ratio_at_least_1": False,
                        "ner_loss_falls": True, "ner_f1_in_cpu_range": True, "pretrain_loss_falls": True}
    skipped = {"tests": 10, "passed": 9, "failures": 0, "errors": 0, "skipped": 1}
    assert gr.judge(_results(pytest_gpu=skipped))["gpu_tests_pass"] is False  # a skip on a GPU is no pass
    assert gr.judge(_results(ner={"loss_falls": True, "test_f1": 0.5}))["ner_f1_in_cpu_range"] is False
    assert gr.judge(_results(throughput=None))["mfu_at_least_45pct"] is None  # missing, not failed
    assert set(gr.judge(_results(env={"cuda_available": False})).values()) == {None}  # CPU dry run


def test_report_reads_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    gr = _load("gpu_report")
    writer = SummaryWriter(str(tmp_path / "ner" / "run"))
    for step, loss in enumerate([2.0, 1.5, 1.0, 0.6, 0.3, 0.2]):
        writer.add_scalar("train_loss", loss, step)
    writer.add_scalar("test_f1", 0.97, 6)
    writer.close()
    summary = gr.training_summary(tmp_path / "ner", "train_loss", ("test_f1",))
    assert summary["loss_points"] == 6 and summary["loss_falls"] is True
    assert summary["loss_first"] == pytest.approx(1.5) and summary["loss_last"] == pytest.approx((0.6 + 0.3 + 0.2) / 3)
    assert summary["test_f1"] == pytest.approx(0.97)
    (tmp_path / "stages.jsonl").write_text('{"stage": "ner", "rc": 0, "seconds": 1.0, "limit_s": 120, '
                                           '"timed_out": false}\n')
    results = gr.write_report(tmp_path)
    assert results["stages"][0]["stage"] == "ner" and (tmp_path / "summary.md").exists()
