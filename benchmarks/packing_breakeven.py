"""Where packing starts to pay: our model's training step packed against padded, on batches of
growing padding, steps interleaved in one process. Every batch runs packed here (the encoder's
``MIN_PADDING_TO_PACK`` is set to 0 for the packed model); the break-even this finds is where that
threshold comes from (docs/training_speed.md).

    python benchmarks/packing_breakeven.py --task ner --preset tiny --batch-size 32 --seq-len 64 --output R.jsonl
    python benchmarks/packing_breakeven.py --table R.jsonl

A batch of ``padding`` share p holds one example of ``seq-len`` tokens and the others of lengths
drawn uniformly from [seq-len·(1 − 2p), seq-len]. Both systems get the same weights, dropout off,
fused AdamW; the ratio is the median over steps of padded time / packed time (> 1: packing pays).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from side_by_side import record_result, result_rows
from systems import TASKS, batch_for, build_ours, make_step, our_loss, vocab_file, vocab_of


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=tuple(TASKS), default="ner")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--padding", type=float, nargs="+", default=[0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.15],
                   help="target padding shares, one batch each")
    p.add_argument("--steps", type=int, default=15, help="measured steps per system and batch")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--output", help="append the result as one JSON line to this file")
    p.add_argument("--table", nargs="+", metavar="RESULTS", help="print result rows as markdown and exit")
    args = p.parse_args(argv)
    # what systems.py reads: fp32 training, the full vocabulary, no recompute
    args.mode, args.precision, args.recompute, args.vocab_size = "train", "fp32", False, 30522
    return args


def lengths_with_padding(args, share: float, generator: torch.Generator):
    low = args.seq_len * (1 - 2 * share)
    draws = torch.rand(args.batch_size - 1, generator=generator)
    return [args.seq_len] + [int(low + (args.seq_len - low) * float(x)) for x in draws]


def measure(args):
    from biomegatron_nemo.encoder import packing
    from biomegatron_nemo.parallel import initialize_megatron

    torch.set_num_threads(1)
    initialize_megatron(1, 1)
    packing.MIN_PADDING_TO_PACK = 0.0  # pack every batch: the point is to see where it stops paying
    vocab = vocab_of(args)
    with tempfile.TemporaryDirectory() as tmp:
        padded = build_ours(argparse.Namespace(**vars(args), packed=False), vocab_file(args.vocab_size, Path(tmp)))
        packed = build_ours(argparse.Namespace(**vars(args), packed=True), vocab_file(args.vocab_size, Path(tmp)))
    packed.load_state_dict(padded.state_dict())
    current = {}
    systems = {"padded": make_step(args, padded, lambda: our_loss(padded, current["batch"])),
               "packed": make_step(args, packed, lambda: our_loss(packed, current["batch"]))}
    generator = torch.Generator().manual_seed(0)
    rows = []
    for share in args.padding:
        lengths = lengths_with_padding(args, share, generator)
        current["batch"] = batch_for(args, vocab, lengths)
        times = {name: [] for name in systems}
        for i in range(args.warmup + args.steps):
            for name, step in systems.items():  # interleaved
                start = time.perf_counter()
                step()
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - start)
        rows.append({"padding": 1 - sum(lengths) / (len(lengths) * max(lengths)),
                     "ms": {k: 1000 * statistics.median(v) for k, v in times.items()},
                     "ratio": statistics.median(a / b for a, b in zip(times["padded"], times["packed"]))})
    return rows


def print_table(paths):
    for r in result_rows(paths):
        print(f"\n{r['task']} {r['preset']}, batch {r['batch_size']} × ≤ {r['seq_len']}\n")
        print("| padding | padded ms/step | packed ms/step | padded / packed |")
        print("| --- | --- | --- | --- |")
        for row in r["batches"]:
            print(f"| {100 * row['padding']:.1f}% | {row['ms']['padded']:.1f} | {row['ms']['packed']:.1f} | "
                  f"**{row['ratio']:.2f}×** |")


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        print_table(args.table)
        return
    record_result({"task": args.task, "preset": args.preset, "batch_size": args.batch_size, "seq_len": args.seq_len,
                   "threads": 1, "steps": args.steps, "batches": measure(args)}, args.output)


if __name__ == "__main__":
    main()
