"""GPU memory per rank for masked-LM pretraining of the paper's encoders at a tensor (TP) and
pipeline (PP) parallel layout: the model states (weights, gradients, AdamW moments) from the real
parameter counts of :class:`~biomegatron_nemo.encoder.config.EncoderConfig`, and the activations
from Megatron's per-layer estimate (Korthikanti et al. 2022, arXiv:2205.05198). Prints
Markdown tables (docs/scale.md shows them).

    python benchmarks/memory_estimate.py                       # 345m, 800m, 1.2b; vocabularies 30k and 50k
    python benchmarks/memory_estimate.py --presets 345m --vocab-sizes 30522 --seq-length 128 --micro-batch-size 32

Model states, per parameter a rank holds:

* ``fp32`` (``trainer.precision=32``): fp32 weight 4 B + fp32 gradient 4 B + AdamW ``exp_avg`` and
  ``exp_avg_sq`` 8 B = 16 B.
* ``bf16-mixed``: Lightning's autocast keeps the fp32 weights as master weights, so the same 16 B,
  plus the bf16 copy of every weight that autocast makes in the forward pass and autograd keeps
  for the backward: 18 B.
* With data parallelism and PP=1, PyTorch DDP's gradient buckets hold one more fp32 copy of the
  gradients (4 B; DDP's default ``gradient_as_bucket_view=False``). Printed as its own column.

The rank counted is the busiest one. Layers are split evenly over the pipeline stages; the first
stage also holds the embeddings, the last the final LayerNorm, the masked-LM head and (PP > 1) its
own copy of the tied word embeddings, as megatron-core arranges it. Tensor parallelism splits the
QKV, attention-output and MLP weights, the word embeddings and the output bias; LayerNorms,
position and token-type embeddings, the biases of row-parallel linears and the LM head's dense
layer are replicated. The vocabulary is padded to a multiple of 128 x TP (Megatron's rule).

Activations are not in the first table: they come on top and depend on the micro-batch size and
the sequence length. The second table applies Korthikanti et al.'s per-layer bytes for 16-bit
activations with tensor parallelism and no sequence parallelism,
``s*b*h*(10 + 24/t + 5*a*s/(h*t))``, to the layers of the busiest stage. The ``5*a*s/(h*t)`` term is
the attention scores and their dropout; fused attention kernels (Transformer Engine, PyTorch's
flash / memory-efficient SDPA) do not keep it, so both sums are printed. The library's pipeline
schedule is GPipe, which keeps every micro-batch's activations until its backward, so a stage
holds the activations of the whole per-rank batch ``b = model.train_ds.micro_batch_size``
whatever ``model.pipeline.num_microbatches`` is. The masked-LM logits add about ``6*s*b*v/t``
bytes on the last stage (the 16-bit logits the model returns and the fp32 softmax the
vocab-parallel cross-entropy keeps for the backward), an upper bound: the head runs on the masked
positions only (15% by default), which take about 0.15 of it. fp32 training (``precision=32``) stores about
twice the 16-bit figures. Not counted: the CUDA context and allocator reserve, communication
buffers, temporary buffers inside a kernel.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biomegatron_nemo.common.errors import ConfigError  # noqa: E402
from biomegatron_nemo.encoder.config import PRESETS, EncoderConfig  # noqa: E402

GiB = 1024 ** 3
#: bytes per parameter of the model states (see the module docstring)
BYTES_PER_PARAMETER = {"fp32": 16, "bf16-mixed": 18}
DDP_BUCKET_BYTES = 4
PAPER_PRESETS = ("345m", "800m", "1.2b")


@dataclass(frozen=True)
class StageParameters:
    """Parameters one rank of a pipeline stage holds."""

    stage: int
    layers: int
    parameters: int


def layer_parameters(cfg: EncoderConfig, tp: int) -> int:
    """One transformer layer's parameters on one tensor-parallel rank."""
    h, f = cfg.hidden_size, cfg.ffn_hidden_size
    split = (3 * h * h + 3 * h) + (h * h) + (h * f + f) + (f * h)   # QKV, proj weight, fc1, fc2 weight
    replicated = 2 * h + h + 2 * h + h                               # LN1, proj bias, LN2, fc2 bias
    return split // tp + replicated


def stage_parameters(cfg: EncoderConfig, tp: int, pp: int, mlm_head: bool = True) -> List[StageParameters]:
    """Parameters per rank of each pipeline stage (encoder + masked-LM head), megatron-core's split."""
    h = cfg.hidden_size
    vocab = cfg.padded_vocab_size(tp)
    per_stage = cfg.num_layers // pp
    stages = []
    for stage in range(pp):
        n = per_stage * layer_parameters(cfg, tp)
        if stage == 0:
            n += vocab * h // tp + cfg.max_position_embeddings * h + cfg.num_tokentypes * h
        if stage == pp - 1:
            n += 2 * h                                               # final LayerNorm
            if mlm_head:
                n += (h * h + h) + 2 * h + vocab // tp               # dense, LayerNorm, output bias
                if pp > 1:
                    n += vocab * h // tp                             # the last stage's tied copy
        stages.append(StageParameters(stage, per_stage, n))
    return stages


def activation_bytes_per_layer(cfg: EncoderConfig, tp: int, seq_length: int, batch: int,
                               attention_scores: bool = True) -> float:
    """Korthikanti et al. (2022), 16-bit activations, tensor parallel without sequence parallel."""
    s, b, h, a = seq_length, batch, cfg.hidden_size, cfg.num_attention_heads
    per_token = 10 + 24 / tp + (5 * a * s / (h * tp) if attention_scores else 0.0)
    return s * b * h * per_token


def layout_problem(cfg: EncoderConfig, tp: int, pp: int) -> Optional[str]:
    """Why the library refuses this layout (models/launch.check_layout), or None."""
    if pp > cfg.num_layers:
        return f"{pp} stages for {cfg.num_layers} layers"
    try:
        cfg.validate(tp, pp)
    except ConfigError as err:
        return err.reason
    return None


def _layouts(cfg: EncoderConfig, tps: Sequence[int], pps: Sequence[int]) -> Iterator[tuple]:
    for tp in tps:
        for pp in pps:
            yield tp, pp, layout_problem(cfg, tp, pp)


def states_table(presets: Sequence[str], vocab_sizes: Sequence[int], tps: Sequence[int],
                 pps: Sequence[int]) -> str:
    rows = ["| preset | vocabulary | params (total) | TP | PP | GPUs per replica | params on the busiest GPU "
            "| fp32 (16 B/param) | bf16-mixed (18 B/param) | + DDP buckets (DP > 1, PP = 1) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for preset in presets:
        for vocab in vocab_sizes:
            cfg = EncoderConfig.from_preset(preset, vocab_size=vocab)
            total = cfg.num_parameters()
            for tp, pp, problem in _layouts(cfg, tps, pps):
                if problem:
                    continue
                busiest = max(s.parameters for s in stage_parameters(cfg, tp, pp))
                ddp = f"{busiest * DDP_BUCKET_BYTES / GiB:.2f} GiB" if pp == 1 else "-"
                rows.append(f"| {preset} | {vocab:,} | {total / 1e6:,.1f}M | {tp} | {pp} | {tp * pp} "
                            f"| {busiest / 1e6:,.1f}M | {busiest * BYTES_PER_PARAMETER['fp32'] / GiB:.2f} GiB "
                            f"| {busiest * BYTES_PER_PARAMETER['bf16-mixed'] / GiB:.2f} GiB | {ddp} |")
    return "\n".join(rows)


def refused_layouts(presets: Sequence[str], tps: Sequence[int], pps: Sequence[int]) -> str:
    lines = []
    for preset in presets:
        cfg = EncoderConfig.from_preset(preset)
        for tp, pp, problem in _layouts(cfg, tps, pps):
            if problem:
                lines.append(f"- {preset}, TP={tp}, PP={pp}: {problem}")
    return "\n".join(lines) or "- none"


def activations_table(presets: Sequence[str], vocab: int, tps: Sequence[int], pps: Sequence[int],
                      seq_length: int, batch: int) -> str:
    rows = [f"| preset | TP | PP | layers per stage | per layer, scores kept | stage, scores kept "
            f"| stage, fused attention | MLM logits (last stage, vocabulary {vocab:,}) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for preset in presets:
        cfg = EncoderConfig.from_preset(preset, vocab_size=vocab)
        for tp, pp, problem in _layouts(cfg, tps, pps):
            if problem:
                continue
            layers = cfg.num_layers // pp
            full = activation_bytes_per_layer(cfg, tp, seq_length, batch)
            fused = activation_bytes_per_layer(cfg, tp, seq_length, batch, attention_scores=False)
            logits = 6 * seq_length * batch * cfg.padded_vocab_size(tp) / tp
            rows.append(f"| {preset} | {tp} | {pp} | {layers} | {full / GiB:.3f} GiB | {layers * full / GiB:.2f} GiB "
                        f"| {layers * fused / GiB:.2f} GiB | {logits / GiB:.2f} GiB |")
    return "\n".join(rows)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="GPU memory per rank of masked-LM pretraining at each tensor (TP) x "
                                            "pipeline (PP) layout: model states from the encoder presets' real "
                                            "parameter counts, and Megatron's activation estimate. Prints "
                                            "Markdown tables.",
                                epilog="Bytes per parameter and the activation formula: this file's "
                                       "docstring and docs/scale.md.")
    p.add_argument("--presets", nargs="+", default=list(PAPER_PRESETS), choices=list(PRESETS),
                   metavar="PRESET", help=f"encoder presets, of {', '.join(PRESETS)} (default: %(default)s)")
    p.add_argument("--vocab-sizes", nargs="+", type=int, default=[30_000, 50_000],
                   help="tokenizer vocabulary sizes (default: %(default)s, the pubmed-30k/50k presets)")
    p.add_argument("--tp", nargs="+", type=int, default=[1, 2, 4, 8], help="tensor-parallel sizes")
    p.add_argument("--pp", nargs="+", type=int, default=[1, 2, 4], help="pipeline-parallel sizes")
    p.add_argument("--seq-length", type=int, default=512, help="activations: tokens per sample")
    p.add_argument("--micro-batch-size", type=int, default=8,
                   help="activations: samples per data-parallel rank (model.train_ds.micro_batch_size)")
    args = p.parse_args(argv)
    for name in ("tp", "pp", "vocab_sizes"):
        if any(v < 1 for v in getattr(args, name)):
            p.error(f"--{name.replace('_', '-')} values must be >= 1")
    if args.seq_length < 1 or args.micro_batch_size < 1:
        p.error("--seq-length and --micro-batch-size must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    print("Model states per GPU (weights, gradients, AdamW moments); activations come on top.\n")
    print(states_table(args.presets, args.vocab_sizes, args.tp, args.pp))
    print("\nLayouts the library refuses:\n")
    print(refused_layouts(args.presets, args.tp, args.pp))
    print(f"\nActivations per GPU, 16-bit, sequence {args.seq_length}, "
          f"{args.micro_batch_size} samples per data-parallel rank:\n")
    print(activations_table(args.presets, max(args.vocab_sizes), args.tp, args.pp,
                            args.seq_length, args.micro_batch_size))


if __name__ == "__main__":
    main()
