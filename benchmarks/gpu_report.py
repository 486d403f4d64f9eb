"""Collect what benchmarks/gpu_check.sh left in ``$OUT`` into ``results.json`` and ``summary.md``.

    python benchmarks/gpu_report.py --out gpu_results            # after (or during) a run
    python benchmarks/gpu_report.py --out gpu_results --env      # record the machine and versions

Reads: ``stages.jsonl`` (one line per stage: rc, seconds, limit), ``install.json``
(benchmarks/gpu_install.py), ``env.json``, ``pytest_gpu.xml`` (JUnit), ``throughput.json``
(benchmarks/gpu_throughput.py) and the TensorBoard event files of the NER and pretraining runs
(``ner/``, ``pretrain/``). Judges the issue's targets and says which could not be judged.
Safe to run at any moment: what is missing is reported as missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

# Entity F1 of `python examples/token_classification.py` (shipped samples, default config, fp32)
# on this project's CPU machine: 0.9649 in each of three runs (docs/benchmarks/gpu.md). A
# bf16-mixed GPU run is "in the CPU range" when at most this margin below.
CPU_NER_TEST_F1 = (0.9649,)
NER_F1_MARGIN = 0.05
# The pretraining stage's command in fp32 on the same CPU (300 steps, tiny preset, batch 8 x 128):
# mean of the first / last three logged train_loss values, and the last val_loss. Shown beside
# the GPU run; the target is only that the loss falls.
CPU_PRETRAIN_REFERENCE = {"train_loss_first": 7.215, "train_loss_last": 6.382, "val_loss": 6.691}
TARGETS = {"gpu_tests_pass": "every GPU-marked test passes",
           "mfu_at_least_45pct": "MFU >= 45% (345m, seq 512, bf16)",
           "throughput_ratio_at_least_1": ">= 1.0x HF MegatronBert throughput (same batch, bf16)",
           "ner_loss_falls": "NER example bf16-mixed: loss falls",
           "ner_f1_in_cpu_range": "NER example bf16-mixed: test F1 in the CPU range",
           "pretrain_loss_falls": "masked-LM pretraining bf16-mixed: loss falls"}


# ---------------------------------------------------------------------------------------------
# TensorBoard event files, without TensorFlow: TFRecord frames of serialized `Event` protos.
def _event_proto():
    try:
        from tensorboard.compat.proto import event_pb2
    except ImportError:
        from tensorboardX.proto import event_pb2
    return event_pb2


def read_scalars(directory: Path) -> dict:
    """{tag: [(step, value), ...]} over every events file under ``directory``."""
    scalars: dict = {}
    paths = sorted(directory.rglob("events.out.tfevents.*"))
    event_pb2 = _event_proto() if paths else None
    for path in paths:
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            start = pos + 12
            record = data[start:start + length]
            pos = start + length + 4
            if len(record) < length:
                break  # a file cut short by a kill
            event = event_pb2.Event()
            event.ParseFromString(record)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = value.simple_value
                elif value.HasField("tensor") and value.tensor.float_val:
                    number = value.tensor.float_val[0]
                else:
                    continue
                scalars.setdefault(value.tag, []).append((int(event.step), float(number)))
    return {k: sorted(v) for k, v in scalars.items()}


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _first_last(series, window=3):
    """Mean of the first and of the last ``window`` values of a (step, value) series."""
    values = [v for _, v in series]
    if len(values) < 2:
        return None, None
    w = max(1, min(window, len(values) // 2))
    return statistics.mean(values[:w]), statistics.mean(values[-w:])


# ---------------------------------------------------------------------------------------------
def pytest_summary(path: Path):
    if not path.exists():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    totals = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    cases = []
    for case in root.iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time", 0))})
    totals["passed"] = totals["tests"] - totals["failures"] - totals["errors"] - totals["skipped"]
    return {**totals, "cases": cases}


def training_summary(directory: Path, loss_tag: str, extra_tags=()):
    if not directory.exists():
        return None
    scalars = read_scalars(directory)
    out = {"tags": sorted(scalars)}
    series = scalars.get(loss_tag, [])
    first, last = _first_last(series)
    out.update(loss_tag=loss_tag, loss_points=len(series), loss_first=first, loss_last=last,
               loss_falls=None if first is None else last < first)
    for tag in extra_tags:
        if scalars.get(tag):
            out[tag] = scalars[tag][-1][1]
            out[f"{tag}_best"] = max(v for _, v in scalars[tag]) if tag.endswith("f1") else min(
                v for _, v in scalars[tag])
    return out


def judge(results: dict) -> dict:
    verdicts = {}
    env = results.get("env") or {}
    if not env.get("cuda_available"):
        # A CPU run (GPU_CHECK_DRY_RUN=1) tests the plumbing; it judges none of the GPU targets.
        return {key: None for key in TARGETS}
    py = results.get("pytest_gpu")
    if py is None:
        verdicts["gpu_tests_pass"] = None
    else:  # on a GPU every one must run: a skip there (no CUDA seen?) is not a pass
        verdicts["gpu_tests_pass"] = py["tests"] > 0 and py["passed"] == py["tests"]
    tp = (results.get("throughput") or {}).get("targets")
    verdicts["mfu_at_least_45pct"] = None if not tp else tp["mfu_at_least_45pct"]
    verdicts["throughput_ratio_at_least_1"] = None if not tp else tp["throughput_ratio_at_least_1"]
    ner = results.get("ner") or {}
    f1 = ner.get("test_f1")
    verdicts["ner_loss_falls"] = ner.get("loss_falls") if ner else None
    verdicts["ner_f1_in_cpu_range"] = None if f1 is None else f1 >= min(CPU_NER_TEST_F1) - NER_F1_MARGIN
    pre = results.get("pretrain") or {}
    verdicts["pretrain_loss_falls"] = pre.get("loss_falls") if pre else None
    return verdicts


def collect(out: Path) -> dict:
    stages = []
    if (out / "stages.jsonl").exists():
        for line in (out / "stages.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                stages.append(json.loads(line))
    results = {"stages": stages, "env": _load_json(out / "env.json"), "install": _load_json(out / "install.json"),
               "pytest_gpu": pytest_summary(out / "pytest_gpu.xml"), "throughput": _load_json(out / "throughput.json"),
               "ner": training_summary(out / "ner", "train_loss", ("val_f1", "test_f1")),
               "pretrain": training_summary(out / "pretrain", "train_loss", ("val_loss",)),
               "pretrain_data": _load_json(out / "pretrain" / "preprocess.json")}
    if results["ner"] is not None:
        results["ner"]["cpu_reference_test_f1"] = list(CPU_NER_TEST_F1)
    results["verdicts"] = judge(results)
    return results


def _fmt(x, spec=".3f"):
    return "n/a" if x is None else format(x, spec)


def markdown(results: dict) -> str:
    env = results.get("env") or {}
    lines = ["# GPU check", ""]
    if env and not env.get("cuda_available"):
        lines += ["**CPU dry run (GPU_CHECK_DRY_RUN=1 or no CUDA seen): plumbing only, no GPU result, "
                  "targets not judged.**", ""]
    lines += [f"machine: {env.get('gpu', {}).get('name', 'n/a')}; torch {env.get('torch', 'n/a')} "
             f"(CUDA {env.get('cuda', 'n/a')}); Python {env.get('python', 'n/a')}; auto spec -> "
             f"{env.get('auto_spec', 'n/a')} (Transformer Engine: {env.get('transformer_engine', 'n/a')})", "",
             "## Targets", "", "| target | met |", "| --- | --- |"]
    unjudged = "not judged (no GPU)" if env and not env.get("cuda_available") else "not judged (missing)"
    for key, label in TARGETS.items():
        value = results["verdicts"].get(key)
        lines.append(f"| {label} | {unjudged if value is None else ('yes' if value else 'NO')} |")
    lines += ["", "## Stages", "", "| stage | rc | seconds | limit |", "| --- | ---: | ---: | ---: |"]
    for s in results["stages"]:
        rc = "skipped" if s.get("skipped") else ("timeout" if s.get("timed_out") else s.get("rc"))
        lines.append(f"| {s['stage']} | {rc} | {_fmt(s.get('seconds'), '.0f')} | {s.get('limit_s')} |")
    py = results.get("pytest_gpu")
    if py:
        lines += ["", f"## GPU tests: {py['passed']} passed, {py['failures']} failed, {py['errors']} errors, "
                      f"{py['skipped']} skipped", ""]
        lines += [f"- {c['outcome']}: {c['test']} ({c['seconds']:.1f} s)" for c in py["cases"]]
    if (out_md := results.get("_throughput_md")):
        lines += ["", "## Throughput", "", out_md]
    for key, title in (("ner", "NER example (bf16-mixed)"), ("pretrain", "Masked-LM pretraining (bf16-mixed)")):
        r = results.get(key)
        if r:
            lines += ["", f"## {title}", "", f"- {r['loss_tag']}: {_fmt(r['loss_first'])} -> {_fmt(r['loss_last'])} "
                                             f"({r['loss_points']} points)"]
            for tag in ("val_f1", "test_f1", "val_loss"):
                if tag in r:
                    lines.append(f"- {tag}: {_fmt(r[tag])} (best {_fmt(r.get(tag + '_best'))})")
            if key == "ner":
                lines.append(f"- CPU reference test F1: {', '.join(f'{x:.4f}' for x in CPU_NER_TEST_F1)}")
            else:
                ref = CPU_PRETRAIN_REFERENCE
                lines.append(f"- CPU fp32 reference: train_loss {ref['train_loss_first']} -> {ref['train_loss_last']}, "
                             f"val_loss {ref['val_loss']}")
    return "\n".join(lines) + "\n"


def write_report(out: Path) -> dict:
    results = collect(out)
    md_path = out / "throughput.md"
    if md_path.exists():
        results["_throughput_md"] = md_path.read_text(encoding="utf-8")
    text = markdown(results)
    results.pop("_throughput_md", None)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(text, encoding="utf-8")
    return results


# ---------------------------------------------------------------------------------------------
def environment(out: Path, site: str | None) -> dict:
    """Machine, versions, the spec ``auto`` resolves to, and whether the installed wheel imports."""
    import importlib.metadata as md
    import platform

    import torch

    env = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
           "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                      "total_memory_gib": round(props.total_memory / 2**30, 1), "count": torch.cuda.device_count()}
    versions = {}
    for name in ("megatron-core", "nemo_toolkit", "lightning", "transformers", "tokenizers", "sentencepiece",
                 "safetensors", "hydra-core", "omegaconf", "seqeval", "pysbd", "numpy", "pytest", "onnx", "pandas",
                 "tensorboardX", "tensorboard", "scikit-learn", "transformer_engine", "biomegatron_nemo"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    env["versions"] = versions
    try:
        from biomegatron_nemo.encoder.specs import resolve_backend, transformer_engine_available

        env["transformer_engine"] = transformer_engine_available()
        env["auto_spec"] = resolve_backend("auto")
        import biomegatron_nemo

        env["biomegatron_nemo_imported_from"] = biomegatron_nemo.__file__
    except Exception as exc:  # recorded; the stages that need it will fail with their own logs
        env["auto_spec"] = f"error: {type(exc).__name__}: {exc}"
    try:
        env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                            "--format=csv,noheader"], capture_output=True, text=True,
                                           timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        env["nvidia_smi"] = None
    if site:
        # The carried project wheel, alone (no working tree on the path): packaging is complete.
        code = ("import biomegatron_nemo, biomegatron_nemo.models.token_classification, "
                "biomegatron_nemo.models.pretraining, biomegatron_nemo.checkpoints.nemo_connector; "
                "print(biomegatron_nemo.__file__)")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              cwd="/", env={**os.environ, "PYTHONPATH": site})
        env["installed_wheel_imports"] = {"rc": proc.returncode, "file": proc.stdout.strip(),
                                          "stderr_tail": proc.stderr[-1500:]}
    (out / "env.json").write_text(json.dumps(env, indent=2) + "\n", encoding="utf-8")
    return env


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_results")))
    parser.add_argument("--env", action="store_true", help="record machine and versions into env.json")
    parser.add_argument("--site", help="with --env: the wheel target folder, to import the installed wheel alone")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.env:
        env = environment(args.out, args.site)
        print(json.dumps({k: env.get(k) for k in ("gpu", "torch", "cuda", "auto_spec", "transformer_engine")}))
        return 0
    results = write_report(args.out)
    print(json.dumps(results["verdicts"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
