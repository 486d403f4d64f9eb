"""Pretraining throughput on this machine: tokens/s and model-FLOPs utilisation (MFU).

    python benchmarks/pretrain_throughput.py --presets tiny base --output docs/benchmarks/pretraining.md

For each encoder preset it times full masked-LM training steps (forward, backward, AdamW) of
``BioMegatronPretrainingModel`` on fixed batches, after warm-up, and reports the median step.
MFU = model FLOPs per second / measured fp32 matmul peak, with model FLOPs counted as
Megatron does for BERT: 6·tokens·(12·L·h² + 2·L·s·h) for the transformer (the 2·L·s·h
term is attention scores and values) + 6·tokens·h·V for the tied output layer (over all
positions, as the head computes logits everywhere).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from systems import our_loss  # noqa: E402  (benchmarks/ is not a package)


def matmul_peak_gflops(n: int = 2048, repeats: int = 3) -> float:
    """Best of ``repeats`` fp32 n³ GEMMs, in GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def model_flops_per_step(cfg, batch: int, seq: int, vocab: int) -> float:
    L, h = cfg.num_layers, cfg.hidden_size
    tokens = batch * seq
    return 6 * tokens * (12 * L * h * h + 2 * L * seq * h) + 6 * tokens * h * vocab


def time_preset(preset: str, vocab_file: Path, batch: int, seq: int, steps: int, warmup: int):
    from omegaconf import OmegaConf

    from biomegatron_nemo.encoder.config import EncoderConfig
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel
    from helpers.models import synthetic_mlm_batch

    cfg = OmegaConf.create({
        "encoder": {"preset": preset, "layer_spec": "portable"},
        "tokenizer": {"library": "wordpiece", "vocab_file": str(vocab_file)},
        "optim": {"name": "adamw", "lr": 1e-4},
    })
    model = BioMegatronPretrainingModel(cfg)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    vocab = model.tokenizer.vocab_size
    batch_data = synthetic_mlm_batch(vocab, batch_size=batch, seq_len=seq)
    batch_data["attention_mask"][:] = 1  # full sequences: every position is real work
    times, peaks = [], []
    for step in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = our_loss(model, batch_data)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
            # The peak is measured between steps, so both see the same machine load.
            peaks.append(matmul_peak_gflops())
    step_time = statistics.median(times)
    enc = EncoderConfig.from_preset(preset, vocab_size=vocab)
    flops = model_flops_per_step(enc, batch, seq, enc.padded_vocab_size())
    params = sum(p.numel() for p in model.parameters())
    return {"preset": preset, "params": params, "step_s": step_time, "tokens_per_s": batch * seq / step_time,
            "model_gflops_per_s": flops / step_time / 1e9, "peak": statistics.median(peaks)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"])
    parser.add_argument("--vocab-file", type=Path, default=None,
                        help="BERT vocab.txt (default: ../shared/data/vocab/bert-base-uncased-vocab.txt)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="write a Markdown report here")
    args = parser.parse_args(argv)

    vocab_file = args.vocab_file or Path(__file__).resolve().parents[2] / "shared" / "data" / "vocab" / "bert-base-uncased-vocab.txt"
    if not vocab_file.exists():
        parser.error(f"--vocab-file {vocab_file} does not exist")
    from biomegatron_nemo.parallel import initialize_megatron

    initialize_megatron(1, 1)
    load_before = os.getloadavg()[0]
    rows = []
    for preset in args.presets:
        row = time_preset(preset, vocab_file, args.batch, args.seq, args.steps, args.warmup)
        row["mfu"] = row["model_gflops_per_s"] / row["peak"]
        rows.append(row)
        print(f"{preset}: {row['tokens_per_s']:.0f} tokens/s, step {row['step_s']:.3f} s, "
              f"{row['model_gflops_per_s']:.1f} GFLOP/s, MFU {row['mfu']:.1%}", flush=True)
    if args.output:
        lines = [
            "# Pretraining throughput (CPU)", "",
            f"Command: `python benchmarks/pretrain_throughput.py --presets {' '.join(args.presets)} "
            f"--batch {args.batch} --seq {args.seq} --steps {args.steps}`", "",
            f"Machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}. The fp32 matmul "
            f"peak (best of three 2048³ GEMMs) is measured between the timed steps, so peak and step "
            f"see the same machine load; MFU uses the median peak of the preset's run. Masked-LM training steps (forward, backward, "
            f"AdamW) of `BioMegatronPretrainingModel` with the portable (SDPA) layer spec, fp32, batch "
            f"{args.batch} × {args.seq} tokens, vocabulary {vocab_file.name}; median of {args.steps} steps "
            f"after {args.warmup} warm-up steps. Load average when the run started: {load_before:.2f} "
            f"(other work on the machine lowers both the peak and the step rate).", "",
            "| preset | parameters | step (s) | tokens/s | model GFLOP/s | matmul peak GFLOP/s | MFU |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            lines.append(f"| {r['preset']} | {r['params'] / 1e6:.1f} M | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | "
                         f"{r['model_gflops_per_s']:.1f} | {r['peak']:.1f} | {r['mfu']:.1%} |")
        lines += ["", "Model FLOPs per step: 6·tokens·(12·L·h² + 2·L·s·h) + 6·tokens·h·V (Megatron's count; "
                  "the output layer over every position).", ""]
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(lines), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
