"""Install the carried wheels (``make gpu-wheels``) on the lent GPU machine, offline.

    python3 benchmarks/gpu_install.py --wheels gpu_wheels --target /tmp/site [--dry-run] [--report FILE]

The machine's interpreter (``/opt/torch/.venv/bin/python3``) already has torch, lightning,
transformers, tokenizers, sentencepiece, safetensors, numpy and pytest. A venv made from it with
``--system-site-packages`` would not see those (``venv`` links to the *base* interpreter, not to
the venv it is run from), so the wheels go into a ``--target`` folder that is put in front of
``PYTHONPATH``. Only what the machine lacks goes there, so nothing it has is shadowed without
need. The plan, per carried wheel:

* the machine has no distribution of that name → install it;
* the machine has it, but a version some carried wheel's requirements exclude (e.g. lightning
  2.6 where nemo_toolkit 3.0 asks for ``lightning<=2.4.0``) → install the carried version;
* otherwise keep the machine's.

Everything is installed with ``--no-deps``: nemo_toolkit's full requirement list (wandb,
datasets/pyarrow, scikit-learn/scipy, tensorboard, …) is far larger than what can travel, and
most of it is never imported by this package. Requirements that remain unmet are listed in the
report (informational; what is imported was checked, see docs/benchmarks/gpu.md).

seqeval imports one name from scikit-learn (``sklearn.exceptions.UndefinedMetricWarning``, a
``UserWarning`` subclass) and nothing else of it; scikit-learn needs scipy (≈ 45 MB of wheels
together, more than fits). Where ``sklearn`` is not importable, a two-line stand-in providing
just that class is written into the target and said so in the report.

Runs on the machine's Python (no third-party imports beyond pip's own vendored ``packaging``).
"""

from __future__ import annotations

import argparse
import email.parser
import importlib.metadata as md
import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # pragma: no cover - pip always vendors it
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

# Extras whose requirements apply (what setup.py asks for).
EXTRAS = {"nemo-toolkit": {"core", "common-only"}}

SKLEARN_SHIM = {
    "sklearn/__init__.py": '"""Stand-in written by benchmarks/gpu_install.py: scikit-learn is not installed on this\n'
                           'machine; seqeval imports only sklearn.exceptions.UndefinedMetricWarning."""\n',
    "sklearn/exceptions.py": "class UndefinedMetricWarning(UserWarning):\n"
                             "    \"\"\"scikit-learn's warning for ill-defined precision/recall (seqeval warns with it).\"\"\"\n",
}


def wheel_metadata(path: Path):
    """(canonical name, version, [Requirement]) from a wheel's METADATA."""
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if re.match(r"[^/]+\.dist-info/METADATA$", n))
        msg = email.parser.Parser().parsestr(z.read(name).decode("utf-8"))
    reqs = [Requirement(r) for r in msg.get_all("Requires-Dist") or []]
    return canonicalize_name(msg["Name"]), msg["Version"], reqs


def applicable(req: Requirement, extras) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in (extras or {""}))


def installed_versions():
    versions = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(canonicalize_name(name), dist.version)
    return versions


def plan(wheels_dir: Path):
    carried = {}
    for path in sorted(wheels_dir.glob("*.whl")):
        name, version, reqs = wheel_metadata(path)
        carried[name] = {"file": path.name, "version": version, "requires": reqs}
    present = installed_versions()
    # Requirements of every carried distribution on every other name.
    wanted = {}
    for name, info in carried.items():
        for req in info["requires"]:
            if applicable(req, EXTRAS.get(name)):
                wanted.setdefault(canonicalize_name(req.name), []).append((name, req))
    decisions, install = {}, []
    for name, info in carried.items():
        have = present.get(name)
        excluded_by = [f"{who}: {req}" for who, req in wanted.get(name, [])
                       if have is not None and not req.specifier.contains(Version(have), prereleases=True)]
        if have is None:
            action, why = "install", "not on this machine"
        elif excluded_by:
            action, why = "install", f"machine has {have}; excluded by " + "; ".join(excluded_by)
        else:
            action, why = "keep", f"machine has {have}"
        decisions[name] = {"action": action, "carried": info["version"], "present": have, "why": why}
        if action == "install":
            install.append(info["file"])
    # What stays unmet once the plan is carried out (reported, not fatal).
    after = dict(present)
    after.update({n: carried[n]["version"] for n, d in decisions.items() if d["action"] == "install"})
    unmet = []
    for name, reqs in sorted(wanted.items()):
        for who, req in reqs:
            version = after.get(name)
            if version is None:
                unmet.append(f"{who} requires {req} (absent)")
            elif not req.specifier.contains(Version(version), prereleases=True):
                unmet.append(f"{who} requires {req} (have {version})")
    return decisions, install, unmet


def pip_command():
    """This interpreter's pip, else the carried pip wheel run as a zip (``python pip.whl/pip``)."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheels", default="gpu_wheels", type=Path)
    parser.add_argument("--target", required=True, type=Path)
    parser.add_argument("--dry-run", action="store_true", help="print the plan, install nothing")
    parser.add_argument("--report", type=Path, help="write the plan and outcome as JSON")
    args = parser.parse_args(argv)

    if not any(args.wheels.glob("*.whl")):
        print(f"no wheels in {args.wheels}: run `make gpu-wheels` (and carry the folder)", file=sys.stderr)
        return 2
    decisions, install, unmet = plan(args.wheels)
    sklearn_missing = importlib.util.find_spec("sklearn") is None
    needs_shim = sklearn_missing and "seqeval" in decisions
    for name, d in sorted(decisions.items()):
        print(f"{d['action']:8s} {name} {d['carried']}  ({d['why']})")
    print(f"{len(install)} to install into {args.target}; {len(unmet)} requirements stay unmet (not carried)")
    for line in unmet:
        print("  unmet:", line)
    report = {"python": sys.version, "executable": sys.executable, "target": str(args.target),
              "decisions": decisions, "unmet": unmet, "sklearn_stand_in": needs_shim,
              "dry_run": args.dry_run, "returncode": None}
    rc = 0
    if install:
        pip = pip_command()
        carried_pip = sorted(args.wheels.glob("pip-*.whl"))
        if pip is None and carried_pip:
            pip = [sys.executable, str(carried_pip[-1] / "pip")]
        if pip is None:
            print("no pip on this interpreter and none carried", file=sys.stderr)
            rc = 3
        else:
            cmd = pip + ["install", "--no-index", "--no-deps", "--disable-pip-version-check",
                         "--no-warn-script-location", "--upgrade", "--target", str(args.target)]
            if args.dry_run:
                cmd.insert(cmd.index("install") + 1, "--dry-run")
            cmd += [str(args.wheels / f) for f in install]
            print("+", " ".join(cmd), flush=True)
            rc = subprocess.call(cmd, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    if rc == 0 and needs_shim and not args.dry_run:
        for rel, text in SKLEARN_SHIM.items():
            path = args.target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        print(f"wrote the sklearn.exceptions stand-in into {args.target} (scikit-learn is not installed)")
    report["returncode"] = rc
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return rc


if __name__ == "__main__":
    sys.exit(main())
