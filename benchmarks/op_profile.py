"""Where a step's time goes, by kind of operator: torch.profiler's self CPU time of each aten op,
summed into a few kinds (matrix products, attention, LayerNorm, GELU, optimizer, embedding, data
movement, other element-wise work). ``throughput.py --profile`` adds these to its result line, so
the share of a step that both systems spend in the same matrix products is measured, not guessed.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Dict

import torch

#: kind → substrings of aten op names; the first kind that matches takes the op
KINDS = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
    ("attention", ("scaled_dot_product", "aten::_softmax", "aten::softmax")),  # not the loss's log_softmax
    ("layernorm", ("layer_norm",)),
    ("gelu", ("gelu",)),
    ("optimizer", ("adam",)),
    ("embedding", ("embedding",)),
    ("data movement", ("copy_", "cat", "index", "clone", "fill_", "zero_", "scatter", "gather", "nonzero",
                       "stack", "empty", "arange")),
)
OTHER = "other element-wise"


def kind_of(op: str) -> str:
    for kind, names in KINDS:
        if any(name in op for name in names):
            return kind
    return OTHER


def time_by_kind(run: Callable[[], None], steps: int) -> Dict[str, float]:
    """``run()`` (``steps`` steps) under the profiler → ms per step of each kind, and ``total``."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        run()
    spent = Counter()
    for event in profile.key_averages():
        if event.key.startswith("aten::"):  # leaves carry self time; modules and autograd nodes add little
            spent[kind_of(event.key)] += event.self_cpu_time_total
        else:
            spent[OTHER] += event.self_cpu_time_total
    ms = {kind: spent[kind] / 1000 / steps for kind, _ in KINDS}
    ms[OTHER] = spent[OTHER] / 1000 / steps
    ms["total"] = sum(ms.values())
    return ms


def print_profile_table(rows) -> None:
    """Markdown: ms per step of each kind, for each system of each result line with a profile."""
    for r in rows:
        profile = r.get("profile_ms")
        if not profile:
            continue
        systems = list(profile)
        print(f"\n{r['task']} {r['mode']} {r['precision']} {r['preset']}, {r.get('lengths', 'full')}, "
              f"batch {r['batch_size']}: ms per step (share of the step)\n")
        print("| kind | " + " | ".join(systems) + " |")
        print("| --- " * (len(systems) + 1) + "|")
        for kind in [k for k, _ in KINDS] + [OTHER, "total"]:
            cells = (f"{profile[s][kind]:.1f} ({100 * profile[s][kind] / profile[s]['total']:.0f}%)" for s in systems)
            print(f"| {kind} | " + " | ".join(cells) + " |")
