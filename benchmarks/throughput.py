"""Side-by-side step throughput: our models against their Hugging Face peers of equal size, steps
interleaved in one process (A B A B …) so that both see the same machine state.

    python benchmarks/throughput.py --task ner --mode train --precision fp32 --output R.jsonl
    python benchmarks/throughput.py --task pretrain --mode infer --precision bf16 --preset base --output R.jsonl
    python benchmarks/throughput.py --task pretrain --preset base --recompute            # activation recompute
    python benchmarks/throughput.py --task ner --lengths bc5cdr-grouped --packed --profile  # + time by kind of op
    python benchmarks/throughput.py --table R.jsonl [--plot docs/benchmarks/throughput.png]

Peers: ``MegatronBertForMaskedLM`` for ``pretrain`` (the same pre-LayerNorm architecture),
``BertForTokenClassification`` / ``BertForSequenceClassification`` / ``BertForQuestionAnswering``
for ``ner`` / ``re`` / ``qa``. Both get the same synthetic batch (full attention mask), a
one-layer head, dropout off, and in ``train`` mode the same fused ``torch.optim.AdamW`` (forward,
backward, step); ``infer`` is the forward under ``no_grad``. ``bf16`` is autocast (fp32 master weights) on CPU
or GPU.

Reported per system: the median step time over ``--steps`` measured steps (after ``--warmup``),
tokens/s, model FLOPs utilisation (Megatron's count — 24·L·h² + 4·L·s·h per token forward, plus
2·h·V for a masked-LM head; ×3 for training — against the matmul peak measured in the same run and
dtype), and the paired ratio: the median over steps of peer time / our time (> 1: ours is faster).
``--memory`` adds each system's peak tensor memory in the same mode, counted by
``benchmarks/memory.py`` (which also breaks it down). The systems are ``benchmarks/systems.py``'s.
Timing belongs here, never in timed tests.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch

from op_profile import print_profile_table, time_by_kind
from side_by_side import record_result, result_rows
from systems import TASKS, batch_for, build_ours, build_peer, device, length_batches, make_step, \
    our_loss, peer_loss, real_lengths, vocab_file, vocab_of



def parse_args(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=tuple(TASKS), default="ner")
    p.add_argument("--mode", choices=("train", "infer"), default="train")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--preset", default="tiny", help="encoder size preset (tiny, small, base, 345m, ...)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--steps", type=int, default=20, help="measured steps per system")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--recompute", action="store_true",
                   help="activation recompute: ours full (one layer a chunk), HF gradient checkpointing")
    p.add_argument("--lengths", choices=("full", *(f"{data}-{order}" for data in ("bc5cdr", "chemprot", "squad")
                                                   for order in ("grouped", "random")), "pubmed-random"),
                   default="full",
                   help="full: every batch batch-size x seq-len real tokens; otherwise one batch after another of "
                        "a real set's lengths (BC5CDR-chem's or ChemProt's sentences, SQuAD's windows, the masked-LM "
                        "samples of seq-len that pretraining draws from PubMed; batch-size of them padded to "
                        "the longest), grouped by length (our loaders' default, HF's group_by_length) or in a "
                        "random order (HF Trainer's default; Megatron's pretraining samples)")
    p.add_argument("--packed", action="store_true",
                   help="also our model with encoder.packed_sequences (a third system, megatron-packed)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile both systems' transformer layers (ours: encoder.compile; the peer's "
                        "encoder module); compilation is timed apart, in the first (warm-up) step")
    p.add_argument("--profile", action="store_true",
                   help="also where each system's step time goes, by kind of op (benchmarks/op_profile.py), over "
                        "the measured batches once more, one system after another")
    p.add_argument("--memory", action="store_true",
                   help="also each system's peak tensor memory in this mode (benchmarks/memory.py's count)")
    p.add_argument("--output", help="append the result as one JSON line to this file")
    p.add_argument("--table", nargs="+", metavar="RESULTS", help="print result rows as markdown and exit")
    p.add_argument("--plot", help="with --table: a bar chart of the paired ratios (PNG)")
    return p.parse_args(argv)


def model_flops(args, enc, vocab: int) -> float:
    """Megatron's per-step model FLOPs (see the module docstring)."""
    tokens = args.batch_size * args.seq_len
    L, h, s = enc.num_layers, enc.hidden_size, args.seq_len
    forward = tokens * (24 * L * h * h + 4 * L * s * h + (2 * h * vocab if args.task == "pretrain" else 0))
    return forward * (3 if args.mode == "train" else 1)


def matmul_peak(precision: str, n: int = 1024, repeats: int = 10) -> float:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device(), dtype=dtype)
    b = torch.randn(n, n, device=device(), dtype=dtype)
    times = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        a @ b
        if device() == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times[2:])


def measure(args):
    """``(encoder config, {system: step times})``."""
    import argparse
    import tempfile

    from biomegatron_nemo.encoder.config import EncoderConfig
    from biomegatron_nemo.parallel import initialize_megatron

    torch.set_num_threads(args.threads)
    initialize_megatron(1, 1)
    vocab = vocab_of(args)
    enc = EncoderConfig.from_preset(args.preset, vocab_size=vocab)
    if args.lengths == "full":
        batches = [batch_for(args, vocab)]
    else:
        data, order = args.lengths.split("-")
        cut = length_batches(real_lengths(data, args.seq_len), args.batch_size, order == "grouped")
        batches = [batch_for(args, vocab, lengths) for lengths in cut[:args.warmup + args.steps]]
        # share of padding in the whole epoch's batches, each padded to its longest
        args.padding = 1 - sum(map(sum, cut)) / sum(len(lengths) * max(lengths) for lengths in cut)
    current = {}
    systems = {}
    with tempfile.TemporaryDirectory() as tmp:
        ours = build_ours(argparse.Namespace(**{**vars(args), "packed": False}),
                          vocab_file(args.vocab_size, Path(tmp))).to(device())
        packed = build_ours(args, vocab_file(args.vocab_size, Path(tmp))).to(device()) if args.packed else None
    if ours.tokenizer.vocab_size != vocab:
        raise ValueError(f"vocabulary of {ours.tokenizer.vocab_size} entries, expected {vocab}")
    systems["megatron"] = make_step(args, ours, lambda: our_loss(ours, current["batch"]))
    if packed is not None:
        packed.load_state_dict(ours.state_dict())
        systems["megatron-packed"] = make_step(args, packed, lambda: our_loss(packed, current["batch"]))
    peer = build_peer(args, enc, vocab).to(device())
    if args.compile:  # the layers, in place; dynamic shapes where batch lengths vary
        for model in filter(None, (ours, packed)):
            model.encoder.encoder.compile(dynamic=args.lengths != "full")
        peer.base_model.encoder.compile(dynamic=args.lengths != "full")
    systems["hf"] = make_step(args, peer, lambda: peer_loss(args, peer, current["batch"]))
    times = {name: [] for name in systems}
    first_step = {}
    real_tokens = []
    for i in range(args.warmup + args.steps):
        current["batch"] = batches[i % len(batches)]
        if i >= args.warmup:
            real_tokens.append(int(current["batch"]["attention_mask"].sum()))
        for name, step in systems.items():  # interleaved: A B A B ...
            start = time.perf_counter()
            step()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
            elif i == 0:
                first_step[name] = time.perf_counter() - start
    args.real_tokens, args.first_step = real_tokens, first_step
    if args.profile:  # the measured batches once more, under the profiler, one system after another
        measured = [batches[i % len(batches)] for i in range(args.warmup, args.warmup + args.steps)]

        def run_measured(step):
            for batch in measured:
                current["batch"] = batch
                step()

        args.profile_ms = {name: time_by_kind(lambda: run_measured(step), len(measured))
                           for name, step in systems.items()}
    return enc, times


def peak_tensor_memory(args) -> dict:
    """Each system's peak tensor memory (MiB) in this mode, two steps profiled (benchmarks/memory.py)."""
    import argparse

    import memory

    profiled = argparse.Namespace(**{**vars(args), "steps": 2})
    batch = batch_for(args, vocab_of(args))
    return {system: memory.peak_breakdown(profiled, system, batch)["peak_mib"] for system in memory.SYSTEMS}


def print_table(paths, plot=None):
    rows = list(result_rows(paths))
    with_memory = any("peak_tensor_mib" in r for r in rows)  # RSS rows of before ("peak_mib") are not shown
    print("| task | mode | precision | preset | batches | batch × seq | ours ms/step | HF ms/step | paired ratio "
          "(HF / ours) | ours packed: ms/step, ratio | ours MFU | HF MFU |"
          + (" ours peak MiB | HF peak MiB |" if with_memory else ""))
    print("| --- " * (14 if with_memory else 12) + "|")
    for r in rows:
        recompute = (" + recompute" if r.get("recompute") else "") + (" + compile" if r.get("compile") else "")
        memory = r.get("peak_tensor_mib", {})
        peaks = "".join(f" {memory[k]:.0f} |" if k in memory else " – |" for k in ("megatron", "hf"))
        packed = (f"{r['ms']['megatron-packed']:.1f}, **{r['ratios']['megatron-packed']:.2f}×**"
                  if "megatron-packed" in r["ms"] else "–")
        mfu = "".join(f" {100 * r['mfu'][k]:.1f}% |" if "mfu" in r else " – |" for k in ("megatron", "hf"))
        seq = r["seq_len"] if r.get("lengths", "full") == "full" else f"≤ {r['seq_len']}"
        batches = r.get("lengths", "full") + (f" ({100 * r['padding']:.1f}% padding)" if "padding" in r else "")
        print(f"| {r['task']} | {r['mode']}{recompute} | {r['precision']} | {r['preset']} | {batches} | "
              f"{r['batch_size']} × {seq} | "
              f"{r['ms']['megatron']:.1f} | {r['ms']['hf']:.1f} | **{r['ratio']:.2f}×** | {packed} |"
              + mfu + (peaks if with_memory else ""))
    print_profile_table(rows)
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        labels = [f"{r['task']} {r['mode']}\n{r['precision']} {r['preset']}" for r in rows]
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows)), 3.2))
        ax.bar(labels, [r["ratio"] for r in rows], color="#4c72b0")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel("HF time / our time")
        ax.set_title("step throughput against the Hugging Face peer (> 1: ours faster)")
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        print(f"plot: {plot}")


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        print_table(args.table, args.plot)
        return
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    enc, times = measure(args)
    flops, peak = model_flops(args, enc, vocab_of(args)), matmul_peak(args.precision)
    median = {name: statistics.median(t) for name, t in times.items()}
    ours = [name for name in times if name != "hf"]
    result = {"task": args.task, "mode": args.mode, "precision": args.precision, "preset": args.preset,
              "recompute": args.recompute, "lengths": args.lengths,
              "batch_size": args.batch_size, "seq_len": args.seq_len, "threads": args.threads, "device": device(),
              "steps": args.steps, "ms": {k: 1000 * v for k, v in median.items()},
              # real (unpadded) tokens over the whole measured time
              "tokens_per_s": {k: sum(args.real_tokens) / sum(t) for k, t in times.items()},
              "ratio": statistics.median(h / m for h, m in zip(times["hf"], times["megatron"])),
              "ratios": {k: statistics.median(h / m for h, m in zip(times["hf"], times[k])) for k in ours},
              "matmul_peak_gflops": peak / 1e9, "compile": args.compile}
    if args.compile:  # the first step's time beyond a measured one
        result["compile_s"] = {k: args.first_step[k] - median[k] for k in times}
    if args.lengths != "full":
        result["padding"] = args.padding
    if args.lengths == "full":  # Megatron's count assumes batch x seq real tokens
        result["mfu"] = {k: flops / v / peak for k, v in median.items()}
    if args.memory:
        result["peak_tensor_mib"] = peak_tensor_memory(args)
    if args.profile:
        result["profile_ms"] = args.profile_ms
    record_result(result, args.output)


if __name__ == "__main__":
    main()
