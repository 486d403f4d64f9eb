"""The package's structure as DESIGN.md draws it: imports run one way, modules stay small.

Data flows text → tokenizer → data → encoder → head → metric; a module may import its own
package and the packages before it, never one after it. ``common`` (errors, file loaders, config
schemas) is usable by every stage; ``metrics`` are pure functions over plain data (only their
command-line scorer reads files through ``data``). Read from the source with ``ast``, so a
lazy import inside a function counts too.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "biomegatron_nemo"

#: package → the packages of this library it may import (besides itself)
ALLOWED = {
    "common": set(),
    "tokenizers": {"common"},
    "data": {"common", "tokenizers"},
    "encoder": {"common", "data"},
    "metrics": {"common"},
    "checkpoints": {"common", "tokenizers", "encoder"},  # a checkpoint carries its vocabulary
    "parallel": {"common", "encoder", "checkpoints"},
    "models": {"common", "tokenizers", "data", "encoder", "metrics", "checkpoints", "parallel"},
    # whole models converted and exported: the conversion command, Hugging Face writing, ONNX
    "export": {"common", "tokenizers", "data", "encoder", "metrics", "checkpoints", "parallel", "models"},
    "analysis": {"common", "tokenizers", "data", "metrics"},
    # trained NER models over corpora: documents in, annotated documents out
    "annotation": {"common", "tokenizers", "data", "encoder", "metrics", "checkpoints", "parallel", "models", "export"},
    # what starts and reports runs: the task registry, run configs, launching, reports, loss curves
    "runs": {"common", "tokenizers", "data", "encoder", "metrics", "checkpoints", "parallel", "models", "export",
             "analysis"},
    "samples": set(),
}
MAX_LINES = 400


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _imported_packages(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom) and node.level:
            continue  # relative imports stay inside the package
        for name in names:
            parts = name.split(".")
            if parts[0] == "biomegatron_nemo" and len(parts) > 1:
                yield node.lineno, parts[1]


def test_every_package_has_an_init_file():
    # find_packages (and so every wheel) leaves out a folder without one
    folders = {p.parent for p in _modules()}
    missing = [str(f.relative_to(PACKAGE)) for f in folders if not (f / "__init__.py").exists()
               and f.name != "samples"]
    assert not missing


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path):
    relative = path.relative_to(PACKAGE)
    if len(relative.parts) == 1:
        return  # the package's own __init__ and the command line (cli) may use everything
    package = relative.parts[0]
    allowed = ALLOWED[package] | {package}
    wrong = [f"line {line}: imports biomegatron_nemo.{target}" for line, target in _imported_packages(path)
             if target not in allowed]
    assert not wrong, f"{relative} may import only {sorted(allowed)}: {wrong}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines (at most {MAX_LINES})"
