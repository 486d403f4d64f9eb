"""``docs/configuration.md`` from the schemas: every key of every run, its type, default and meaning.

    python -m biomegatron_nemo.runs.config_docs --output docs/configuration.md   # rewrite
    python -m biomegatron_nemo.runs.config_docs --check docs/configuration.md    # exit 1 if stale

The page is generated, never edited by hand, so the documented defaults are the schema's; a
test runs ``--check`` so a schema change without a regenerated page fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from biomegatron_nemo.common.config import schema_table
from biomegatron_nemo.runs.registry import TASKS

HEADER = """# Configuration reference

Generated from the schemas by `python -m biomegatron_nemo.runs.config_docs --output
docs/configuration.md`; do not edit by hand. Each table lists every key of one example's Hydra
config (`conf/*.yaml` override some of them; `python examples/SCRIPT.py --cfg job` prints the
merged result). The `model:` section is also what the model class takes in Python
(`TokenClassificationModel(cfg)`, `SequenceClassificationModel(cfg)`,
`QuestionAnsweringModel(cfg)`, `BioMegatronPretrainingModel(cfg)`): an unknown or misspelt key,
a wrong type or a value out of range is an error naming the key before anything is built.
`trainer` holds Lightning `Trainer` arguments and `exp_manager` NeMo's `exp_manager` settings:
the rows show the ones set by default; any other argument of theirs may be added (a key the
`Trainer` does not take is refused by name; NeMo checks `exp_manager` against its own schema).
"""

def render() -> str:
    lines: List[str] = [HEADER]
    for task in (*[t for t in TASKS.values() if t.finetuning], *[t for t in TASKS.values() if not t.finetuning]):
        title, schema = task.docs_title, task.run_schema
        lines += ["", f"## {title}", "", f"Schema: `{schema.__module__}.{schema.__name__}`.", "",
                  "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        lines += schema_table(schema)
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m biomegatron_nemo.runs.config_docs",
                                     description="Write or check docs/configuration.md from the config schemas.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--output", metavar="FILE", help="write the page here")
    group.add_argument("--check", metavar="FILE", help="exit 1 when FILE differs from the schemas")
    args = parser.parse_args(argv)
    page = render()
    if args.output:
        Path(args.output).write_text(page, encoding="utf-8")
        return 0
    current = Path(args.check).read_text(encoding="utf-8") if Path(args.check).exists() else ""
    if current != page:
        print(f"{args.check} is stale: regenerate it with python -m biomegatron_nemo.runs.config_docs "
              f"--output {args.check}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
