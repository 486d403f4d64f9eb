"""The tests and modules docs/ cites exist: a renamed test must not leave its docs pointing at
nothing (docs/reliability.md lists the test behind every failure mode)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
#: `tests/test_x.py::test_name` or `tests/test_x.py::test_name[param]`; `::other` continues the last file
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+)(?:\[[^\]]*\])?)?`|`::(\w+)`")


def _references():
    for doc in DOCS:
        current = None
        for match in REFERENCE.finditer(doc.read_text(encoding="utf-8")):
            path, name, continued = match.groups()
            if path:
                current = path
                yield doc.name, path, name
            elif current:
                yield doc.name, current, continued


@pytest.mark.parametrize("doc, path, name", list(_references()))
def test_cited_tests_exist(doc, path, name):
    source = ROOT / path
    assert source.is_file(), f"{doc} cites {path}, which does not exist"
    if name:
        assert re.search(rf"^def {name}\(", source.read_text(encoding="utf-8"), re.M), \
            f"{doc} cites {path}::{name}, which does not exist"
