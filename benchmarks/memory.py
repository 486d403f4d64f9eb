"""Training memory against the Hugging Face peer, counted tensor by tensor: the peak of live tensor
bytes over a training step, what that peak is made of, and what the forward keeps for the backward,
module by module.

    python benchmarks/memory.py --task pretrain --preset base --output R.jsonl
    python benchmarks/memory.py --task ner --preset base --precision bf16 --output R.jsonl
    python benchmarks/memory.py --task pretrain --preset base --recompute --output R.jsonl
    python benchmarks/memory.py --table R.jsonl [--plot docs/benchmarks/memory.png]

The systems, the batch and the optimiser are those of ``benchmarks/systems.py`` (our model and
its peer of equal size, one synthetic batch, dropout off, fused AdamW). Each system is measured on
its own, under torch's profiler with ``profile_memory``, from before its model is built through
``--steps`` training steps (forward, backward, AdamW step), so every tensor's allocation and free is
seen. Reported per system:

* **peak**: the most tensor bytes live on the device at once, and the breakdown at that moment by
  the profiler's categories (parameters, gradients, optimiser state, activations, autograd
  detail, temporaries, inputs; ``unknown`` for tensors it could not place);
* **kept for the backward**: the bytes of the tensors autograd saves in one forward pass
  (``torch.autograd.graph.saved_tensors_hooks``; parameters and storages already counted left
  out), by the module that saved them, with the layer number dropped (``layers.N``) so that
  the twelve layers add up to one line. Not measured with ``--recompute``: recompute saves through
  its own hooks.

Peak resident memory (RSS) cannot resolve these differences: it moved by a few hundred MiB between
runs of an unchanged model, while tensor counts are exact and repeat from run to run. What
is not counted: the allocator's cached but free blocks (GPU) and memory that is not a tensor.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch

import systems
from side_by_side import record_result, result_rows

MiB = 2 ** 20
#: the order of ``sizes[1:]`` in the profiler's memory timeline (torch.profiler._memory_profiler's
#: colour table, which ``export_memory_timeline`` follows)
TIMELINE_CATEGORIES = ("parameters", "optimizer state", "inputs", "temporaries", "activations", "gradients",
                       "autograd detail", "unknown")
SYSTEMS = {"megatron": "ours", "hf": "HF"}


def parse_args(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=tuple(systems.TASKS), default="pretrain")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--preset", default="base", help="encoder size preset (tiny, small, base, 345m, ...)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--steps", type=int, default=2, help="training steps profiled (the optimiser state appears in the first)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--recompute", action="store_true",
                   help="activation recompute: ours full (one layer a chunk), HF gradient checkpointing")
    p.add_argument("--vocab-multiple", type=int, default=128,
                   help="ours: vocabulary rows padded to a multiple of this (encoder.make_vocab_size_divisible_by; "
                        "1: the peer's rows exactly)")
    p.add_argument("--top", type=int, default=12, help="modules listed per system in the kept-for-backward breakdown")
    p.add_argument("--output", help="append the result as one JSON line to this file")
    p.add_argument("--table", nargs="+", metavar="RESULTS", help="print result rows as markdown and exit")
    p.add_argument("--plot", help="with --table: the peak breakdowns as stacked bars (PNG)")
    args = p.parse_args(argv)
    args.mode = "train"  # what the builders of systems.py read
    return args


def build(args, system: str, batch) -> Tuple[torch.nn.Module, Callable]:
    """One system's model and the loss of the batch (systems.py's builders)."""
    if system == "megatron":
        with tempfile.TemporaryDirectory() as tmp:
            model = systems.build_ours(args, systems.vocab_file(args.vocab_size, Path(tmp)))
        model = model.to(systems.device())
        return model, lambda: systems.our_loss(model, batch)
    from biomegatron_nemo.encoder.config import EncoderConfig

    enc = EncoderConfig.from_preset(args.preset, vocab_size=systems.vocab_of(args))
    peer = systems.build_peer(args, enc, systems.vocab_of(args)).to(systems.device())
    return peer, lambda: systems.peer_loss(args, peer, batch)


def peak_breakdown(args, system: str, batch) -> Dict:
    """Peak live tensor bytes over model build and ``--steps`` steps, with the breakdown there (MiB)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if systems.device() == "cuda" else [])
    with profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True) as prof:
        model, loss_of = build(args, system, batch)
        step = systems.make_step(args, model, loss_of)
        for _ in range(args.steps):
            step()
    device = "cuda:0" if systems.device() == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "timeline.json"
        prof.export_memory_timeline(str(path), device=device)
        _times, sizes = json.loads(path.read_text())
    if sizes and len(sizes[0]) != len(TIMELINE_CATEGORIES) + 1:
        raise RuntimeError(f"the profiler's memory timeline has {len(sizes[0]) - 1} categories, "
                           f"expected {len(TIMELINE_CATEGORIES)}: update TIMELINE_CATEGORIES")
    at_peak = max(sizes, key=lambda row: sum(row[1:]))
    del model, step
    return {"peak_mib": sum(at_peak[1:]) / MiB,
            "at_peak_mib": {name: b / MiB for name, b in zip(TIMELINE_CATEGORIES, at_peak[1:]) if b}}


def kept_for_backward(args, system: str, batch) -> Dict:
    """Bytes autograd saves in one forward, by saving module (MiB); see the module docstring."""
    model, loss_of = build(args, system, batch)
    model.train()
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    counted: Dict[int, int] = {}
    by_module: Dict[str, int] = defaultdict(int)
    path = ["(model)"]  # the modules whose forward is running, innermost last

    def leave(_module, _inputs, _outputs):  # returns None: the module's output stays as it is
        path.pop()

    hooks = []
    for name, module in model.named_modules():
        hooks.append(module.register_forward_pre_hook(lambda _m, _i, name=name: path.append(name or "(model)")))
        hooks.append(module.register_forward_hook(leave))

    def pack(tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in parameters and key not in counted:
            counted[key] = storage.nbytes()
            by_module[re.sub(r"\.\d+(\.|$)", r".N\1", path[-1])] += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast(systems.device(), dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = loss_of()
    for hook in hooks:
        hook.remove()
    del loss, model
    ranked = sorted(by_module.items(), key=lambda kv: -kv[1])
    top = dict((name, b / MiB) for name, b in ranked[:args.top])
    rest = sum(b for _, b in ranked[args.top:])
    if rest:
        top["(the rest)"] = rest / MiB
    return {"kept_mib": sum(counted.values()) / MiB, "kept_by_module_mib": top}


def measure(args) -> Dict:
    from biomegatron_nemo.parallel import initialize_megatron

    torch.set_num_threads(args.threads)
    initialize_megatron(1, 1)
    batch = systems.batch_for(args, systems.vocab_of(args))
    result = {"task": args.task, "precision": args.precision, "preset": args.preset, "recompute": args.recompute,
              "vocab_multiple": args.vocab_multiple,
              "batch_size": args.batch_size, "seq_len": args.seq_len, "device": systems.device(),
              "steps": args.steps, "systems": {}}
    for system in SYSTEMS:
        row = peak_breakdown(args, system, batch)
        if not args.recompute:
            row.update(kept_for_backward(args, system, batch))
        result["systems"][system] = row
    ours, peer = (result["systems"][s]["peak_mib"] for s in SYSTEMS)
    result["peak_ratio"] = ours / peer
    return result


def print_table(paths, plot=None):
    rows = list(result_rows(paths))
    print("| task | precision | preset | batch × seq | ours peak MiB | HF peak MiB | ours / HF "
          "| ours kept for backward MiB | HF kept for backward MiB |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        s = r["systems"]
        kept = [f"{s[k]['kept_mib']:.0f}" if "kept_mib" in s[k] else "–" for k in SYSTEMS]
        recompute = " + recompute" if r["recompute"] else ""
        recompute += "" if r.get("vocab_multiple", 128) == 128 else ", vocabulary unpadded"
        print(f"| {r['task']}{recompute} | {r['precision']} | {r['preset']} | {r['batch_size']} × {r['seq_len']} "
              f"| {s['megatron']['peak_mib']:.0f} | {s['hf']['peak_mib']:.0f} | **{r['peak_ratio']:.2f}×** "
              f"| {kept[0]} | {kept[1]} |")
    if plot:
        _plot(rows, plot)


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, stacks = [], []
    for r in rows:
        for system, short in SYSTEMS.items():
            variant = (" +rc" if r["recompute"] else "") + ("" if r.get("vocab_multiple", 128) == 128 else " unpad")
            labels.append(f"{short}\n{r['task']}{variant}\n{r['precision']} {r['preset']}")
            stacks.append(r["systems"][system]["at_peak_mib"])
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(labels)), 3.8))
    bottom = [0.0] * len(labels)
    for category in TIMELINE_CATEGORIES:
        heights = [stack.get(category, 0.0) for stack in stacks]
        if any(abs(h) > 0.5 for h in heights):
            ax.bar(labels, heights, bottom=bottom, label=category)
            bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_ylim(0, 1.08 * max(bottom))
    ax.set_ylabel("MiB live at the peak")
    ax.set_title("peak training memory by category, ours against the HF peer")
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def print_breakdown(result) -> None:
    for system, short in SYSTEMS.items():
        row = result["systems"][system]
        parts = ", ".join(f"{k} {v:.0f}" for k, v in row["at_peak_mib"].items())
        print(f"{short}: peak {row['peak_mib']:.0f} MiB ({parts})")
        for name, mib in row.get("kept_by_module_mib", {}).items():
            print(f"    kept for backward {mib:8.1f} MiB  {name}")


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        print_table(args.table, args.plot)
        return
    result = measure(args)
    print_breakdown(result)
    record_result(result, args.output)


if __name__ == "__main__":
    main()
