"""Masked-LM training throughput and MFU: our megatron-core encoder against Hugging Face
``MegatronBertForMaskedLM`` of the same size, on the same device, in one run.

    python benchmarks/gpu_throughput.py --preset 345m --seq-len 512 --device cuda --precision bf16 \
        --output gpu_results/throughput.json
    python benchmarks/gpu_throughput.py --preset micro --device cpu --steps 2      # CPU smoke run

What one training step is, for both models: masked-LM forward on ``[batch, seq]`` random token ids
(15% of positions predicted), cross-entropy, backward, ``AdamW`` step; fp32 master weights with
``torch.autocast`` (bf16) on CUDA — Lightning's ``bf16-mixed`` —, dropout 0.1 as in training.
Ours is :func:`biomegatron_nemo.encoder.model.build_encoder` + :class:`MaskedLMHead` (output layer
tied to the word embeddings, megatron-core vocab-parallel cross-entropy) at TP = PP = 1 with the
``auto`` layer spec unless ``--spec`` says otherwise. The reference is transformers'
``MegatronBertForMaskedLM`` with the same geometry (hidden, layers, heads, FFN, padded vocabulary,
``layer_norm_eps=1e-5``, erf GELU).

Per phase (activation recompute off, then on — megatron-core ``recompute_granularity='full'``,
``'uniform'``, one layer per chunk for ours, ``gradient_checkpointing_enable()`` for HF):

1. the largest batch that fits, doubling from ``--min-batch`` up to ``--max-batch`` (a cap, said
   so in the output when reached);
2. interleaved timing at the batch both fit (A B A B …, ``--rounds`` rounds of ``--steps`` steps
   after warm-up), then each model once more at its own largest batch when that is larger;
3. per segment: tokens/s, model TFLOP/s, MFU against ``--peak-tflops`` (790 measured on the H200
   bf16) and against a bf16 matmul peak measured at the start of the run, and peak memory
   (``torch.cuda.max_memory_allocated`` less what the other resident model holds).

Model FLOPs per token (training = 3 × forward; recompute's extra forward is not counted, so the
figure is MFU, not hardware FLOPs utilisation)::

    forward = 2·L·(4h² + 2·h·f) + 4·L·s·h + 2·h·V

(with f = 4h, 6·(12·L·h² + 2·L·s·h) + 6·h·V: the count docs/benchmarks/pretraining.md uses; the MLM
head's h×h dense, 0.3% at 345m, is left out as there)

On CPU it runs the same code on a small preset (fp32 unless ``--precision bf16``), recompute
included (encoder/recompute.py reruns the layers there): a check of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

NOMINAL_PEAK_TFLOPS = 790.0  # H200 bf16 dense, as measured for this project
BERT_VOCAB = 30522


# ---------------------------------------------------------------------------------------------
# models
def model_flops_per_token(layers: int, hidden: int, ffn: int, vocab: int, seq_len: int) -> float:
    """Training FLOPs per token (3 × forward; matmuls only, recompute not counted)."""
    forward = 2 * layers * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * layers * seq_len * hidden
    forward += 2 * hidden * vocab  # the output layer, over every position
    return 3.0 * forward


class OurMaskedLM(torch.nn.Module):
    """Encoder + tied masked-LM head, the way the pretraining model wires them."""

    def __init__(self, encoder, head):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, input_ids, attention_mask, token_type_ids, labels):
        from biomegatron_nemo.encoder.heads import MaskedLMHead

        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        logits = self.head(hidden, self.encoder.word_embeddings_weight())
        return MaskedLMHead.loss(logits, labels)


class HFMaskedLM(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids, labels):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          labels=labels).loss


def build_ours(args, recompute: bool, device: torch.device):
    from biomegatron_nemo.encoder.config import EncoderConfig
    from biomegatron_nemo.encoder.heads import MaskedLMHead
    from biomegatron_nemo.encoder.model import build_encoder
    from biomegatron_nemo.encoder.specs import resolve_backend
    from biomegatron_nemo.parallel import initialize_megatron

    initialize_megatron(1, 1, seed=args.seed)
    cfg = EncoderConfig.from_preset(args.preset, vocab_size=args.vocab_size, layer_spec=args.spec,
                                    max_position_embeddings=max(512, args.seq_len),
                                    hidden_dropout=args.dropout, attention_dropout=args.dropout)
    overrides = {}
    if device.type == "cuda":
        overrides["use_cpu_initialization"] = False  # initialise on the GPU: seconds, not minutes
    if recompute:
        overrides.update(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = build_encoder(cfg, **overrides)
        head = MaskedLMHead(encoder.config, encoder.padded_vocab_size, cfg.vocab_size)
    model = OurMaskedLM(encoder, head).to(device)
    info = {"layer_spec": args.spec, "resolved_spec": resolve_backend(args.spec),
            "padded_vocab_size": encoder.padded_vocab_size, "num_layers": cfg.num_layers,
            "hidden_size": cfg.hidden_size, "num_attention_heads": cfg.num_attention_heads,
            "ffn_hidden_size": cfg.ffn_hidden_size}
    return model, info


def hf_config(geometry: dict, seq_len: int, dropout: float):
    """transformers' MegatronBertConfig with our encoder's geometry (``geometry`` from build_ours)."""
    from transformers import MegatronBertConfig

    return MegatronBertConfig(
        vocab_size=geometry["padded_vocab_size"], hidden_size=geometry["hidden_size"],
        num_hidden_layers=geometry["num_layers"], num_attention_heads=geometry["num_attention_heads"],
        intermediate_size=geometry["ffn_hidden_size"], max_position_embeddings=max(512, seq_len),
        type_vocab_size=2, layer_norm_eps=1e-5, hidden_act="gelu",
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)


def encoder_geometry(preset: str, vocab_size: int) -> dict:
    from biomegatron_nemo.encoder.config import EncoderConfig

    cfg = EncoderConfig.from_preset(preset, vocab_size=vocab_size)
    return {"padded_vocab_size": cfg.padded_vocab_size(), "num_layers": cfg.num_layers,
            "hidden_size": cfg.hidden_size, "num_attention_heads": cfg.num_attention_heads,
            "ffn_hidden_size": cfg.ffn_hidden_size}


def build_hf(args, recompute: bool, device: torch.device, geometry: dict):
    from transformers import MegatronBertForMaskedLM

    torch.manual_seed(args.seed)
    with torch.device(device):
        model = MegatronBertForMaskedLM(hf_config(geometry, args.seq_len, args.dropout))
    if recompute:
        model.gradient_checkpointing_enable()
    return HFMaskedLM(model).to(device)


def num_parameters(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


# ---------------------------------------------------------------------------------------------
# timing
class Runner:
    """One model, its optimizer and its training step."""

    def __init__(self, name: str, model, args, device):
        self.name, self.model, self.args, self.device = name, model, args, device
        self.model.train()
        kwargs = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.01, **kwargs)
        self.autocast = args.precision == "bf16"

    def step(self, batch) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss = self.model(**batch)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def release(self) -> None:
        """Drop gradients so that, idle, the model holds only weights and optimizer state."""
        self.optimizer.zero_grad(set_to_none=True)

    def static_bytes(self) -> int:
        tensors = {id(p): p for p in self.model.parameters()}
        for state in self.optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    tensors[id(value)] = value
        return sum(t.numel() * t.element_size() for t in tensors.values() if t.device.type == self.device.type)


def make_batch(batch_size: int, seq_len: int, vocab: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch_size, seq_len), generator=g)
    predict = torch.rand(batch_size, seq_len, generator=g) < 0.15
    predict[:, 1] = True
    labels = torch.where(predict, ids, torch.full_like(ids, -100))
    inputs = torch.where(predict, torch.full_like(ids, 4), ids)  # [MASK]
    batch = {"input_ids": inputs, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "labels": labels}
    return {k: v.to(device) for k, v in batch.items()}


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def cleanup(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def try_batch(runner: Runner, batch_size: int, args, device):
    """Seconds for one step at this batch, or None when it runs out of memory."""
    oom = False
    try:
        batch = make_batch(batch_size, args.seq_len, args.vocab_size, device)
        sync(device)
        start = time.perf_counter()
        loss = runner.step(batch)
        float(loss)
        sync(device)
        seconds = time.perf_counter() - start
    except torch.OutOfMemoryError:
        oom = True
    batch = loss = None
    runner.release()
    cleanup(device)
    return None if oom else seconds


def largest_batch(runner: Runner, args, device):
    """Double from min_batch while a step fits, up to max_batch."""
    if device.type != "cuda":
        return {"max_batch": args.batch, "capped": False, "oom_at": None, "step_seconds": None, "searched": False}
    best, seconds, b, oom_at = None, None, args.min_batch, None
    while b <= args.max_batch:
        t = try_batch(runner, b, args, device)
        if t is None:
            oom_at = b
            break
        best, seconds = b, t
        b *= 2
    if best is None:
        raise RuntimeError(f"{runner.name}: batch {args.min_batch} does not fit at sequence {args.seq_len}")
    return {"max_batch": best, "capped": oom_at is None and best * 2 > args.max_batch, "oom_at": oom_at,
            "step_seconds": seconds, "searched": True}


def steps_for(step_seconds, args) -> int:
    if args.steps is not None:
        return args.steps
    if not step_seconds:
        return 5
    return int(min(20, max(3, round(args.segment_seconds / step_seconds))))


def time_segment(runner: Runner, batch_size: int, steps: int, args, device, others_static: int, flops_per_token: float,
                 matmul_peak: float | None, round_index: int):
    batch = make_batch(batch_size, args.seq_len, args.vocab_size, device, seed=round_index)
    for _ in range(args.warmup):
        runner.step(batch)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        losses.append(runner.step(batch))
    sync(device)
    seconds = time.perf_counter() - start
    peak_total = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    losses = [float(x) for x in losses]
    tokens = batch_size * args.seq_len * steps
    tflops = tokens * flops_per_token / seconds / 1e12
    runner.release()
    batch = None
    cleanup(device)
    return {
        "model": runner.name, "batch": batch_size, "round": round_index, "steps": steps, "seconds": seconds,
        "step_seconds": seconds / steps, "tokens_per_s": tokens / seconds, "model_tflops": tflops,
        "mfu_nominal_peak": tflops / args.peak_tflops if device.type == "cuda" else None,
        "mfu_measured_matmul_peak": (tflops / matmul_peak) if matmul_peak else None,
        "peak_memory_gib": (peak_total - others_static) / 2**30 if peak_total is not None else None,
        "peak_memory_total_gib": peak_total / 2**30 if peak_total is not None else None,
        "loss_first": losses[0], "loss_last": losses[-1], "loss_finite": all(math.isfinite(x) for x in losses),
    }


def matmul_peak_tflops(device, dtype=torch.bfloat16, sizes=(4096, 8192), repeats=20):
    """Best bf16 matmul TFLOP/s over a few square sizes (what this GPU delivers here and now)."""
    if device.type != "cuda":
        return None
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e12)
        del a, b
    cleanup(device)
    return best


def run_phase(args, recompute: bool, device, flops_per_token, matmul_peak, deadline):
    phase = {"recompute": recompute, "segments": [], "notes": []}
    ours, geometry = build_ours(args, recompute, device)
    hf = build_hf(args, recompute, device, geometry)
    runners = {"ours": Runner("ours", ours, args, device), "hf": Runner("hf", hf, args, device)}
    phase["parameters"] = {"ours": num_parameters(ours), "hf": num_parameters(hf)}
    search = {}
    for name in ("ours", "hf"):
        search[name] = largest_batch(runners[name], args, device)
    phase["batch_search"] = search
    common = min(search["ours"]["max_batch"], search["hf"]["max_batch"])
    phase["common_batch"] = common
    step_guess = max((s["step_seconds"] or 0) * common / s["max_batch"] for s in search.values()) or None
    steps = steps_for(step_guess, args)

    def static_of_others(name):
        return sum(r.static_bytes() for n, r in runners.items() if n != name)

    for r in range(args.rounds):
        for name in ("ours", "hf"):
            if time.monotonic() > deadline:
                phase["notes"].append(f"time budget reached before round {r} of {name}")
                break
            phase["segments"].append(time_segment(runners[name], common, steps, args, device, static_of_others(name),
                                                  flops_per_token, matmul_peak, r))
    for name in ("ours", "hf"):
        b = search[name]["max_batch"]
        if b > common and time.monotonic() < deadline:
            s = steps_for((search[name]["step_seconds"] or 0) or None, args)
            phase["segments"].append(time_segment(runners[name], b, s, args, device, static_of_others(name),
                                                  flops_per_token, matmul_peak, args.rounds))
    phase["summary"] = summarise(phase, common)
    for runner in runners.values():
        runner.release()
    runners.clear()
    ours = hf = None
    cleanup(device)
    return phase, geometry


def summarise(phase, common):
    out = {"common_batch": common}
    for name in ("ours", "hf"):
        segs = [s for s in phase["segments"] if s["model"] == name and s["batch"] == common]
        if segs:
            out[name] = {
                "tokens_per_s": statistics.median(s["tokens_per_s"] for s in segs),
                "model_tflops": statistics.median(s["model_tflops"] for s in segs),
                "mfu_nominal_peak": _median([s["mfu_nominal_peak"] for s in segs]),
                "mfu_measured_matmul_peak": _median([s["mfu_measured_matmul_peak"] for s in segs]),
                "peak_memory_gib": _max([s["peak_memory_gib"] for s in segs]),
                "rounds": len(segs),
            }
        timed = [s for s in phase["segments"] if s["model"] == name]
        if timed:
            largest = max(s["batch"] for s in timed)
            segs = [s for s in timed if s["batch"] == largest]
            out[f"{name}_at_largest_batch"] = {
                "batch": largest, "tokens_per_s": statistics.median(s["tokens_per_s"] for s in segs),
                "model_tflops": statistics.median(s["model_tflops"] for s in segs),
                "mfu_nominal_peak": _median([s["mfu_nominal_peak"] for s in segs]),
                "mfu_measured_matmul_peak": _median([s["mfu_measured_matmul_peak"] for s in segs]),
                "peak_memory_gib": _max([s["peak_memory_gib"] for s in segs]),
            }
    if "ours" in out and "hf" in out:
        out["throughput_ratio_ours_over_hf"] = out["ours"]["tokens_per_s"] / out["hf"]["tokens_per_s"]
    return out


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _max(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def device_info(device):
    info = {"type": device.type, "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}",
                    total_memory_gib=props.total_memory / 2**30, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    else:
        info.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    for module in ("megatron.core", "transformers", "nemo", "lightning"):
        try:
            mod = __import__(module, fromlist=["__version__"])
            info[module] = getattr(mod, "__version__", None)
        except Exception as exc:  # report, do not fail the benchmark on a version lookup
            info[module] = f"unavailable: {type(exc).__name__}"
    return info


def markdown(result) -> str:
    lines = [f"Masked-LM training, preset {result['config']['preset']}, sequence {result['config']['seq_len']}, "
             f"{result['config']['precision']}, {result['device'].get('name')}",
             "", f"bf16 matmul peak measured: {_fmt(result.get('matmul_peak_tflops'), '.0f')} TFLOP/s; "
             f"nominal peak {result['config']['peak_tflops']} TFLOP/s", "",
             "| recompute | model | batch | tokens/s | model TFLOP/s | MFU (nominal) | MFU (measured peak) | peak GiB |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for phase in result["phases"]:
        if phase.get("skipped"):
            lines.append(f"| {'on' if phase['recompute'] else 'off'} | skipped: {phase['skipped']} | | | | | | |")
            continue
        for s in phase["segments"]:
            lines.append(f"| {'on' if phase['recompute'] else 'off'} | {s['model']} | {s['batch']} | "
                         f"{s['tokens_per_s']:,.0f} | {s['model_tflops']:.1f} | {_pct(s['mfu_nominal_peak'])} | "
                         f"{_pct(s['mfu_measured_matmul_peak'])} | {_fmt(s['peak_memory_gib'], '.1f')} |")
    lines.append("")
    for phase in result["phases"]:
        summary = phase.get("summary") or {}
        ratio = summary.get("throughput_ratio_ours_over_hf")
        if ratio is not None:
            lines.append(f"- recompute {'on' if phase['recompute'] else 'off'}: ours / HF throughput at batch "
                         f"{summary['common_batch']} = {ratio:.2f}x; largest batch ours "
                         f"{phase['batch_search']['ours']['max_batch']}, HF {phase['batch_search']['hf']['max_batch']}")
    return "\n".join(lines) + "\n"


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="345m")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--vocab-size", type=int, default=BERT_VOCAB, help="tokenizer vocabulary (padded like Megatron)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    parser.add_argument("--precision", default=None, choices=("bf16", "fp32"),
                        help="bf16 autocast (default on CUDA) or fp32 (default and only choice on CPU)")
    parser.add_argument("--spec", default="auto", choices=("auto", "local", "portable", "te"))
    parser.add_argument("--recompute", default=None, choices=("off", "on", "both"),
                        help="activation recompute phases (default: both on CUDA, off on CPU)")
    parser.add_argument("--batch", type=int, default=2, help="batch on CPU (no search there)")
    parser.add_argument("--min-batch", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=256, help="cap of the batch search (CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per segment (default: ~segment-seconds)")
    parser.add_argument("--segment-seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved A B rounds at the common batch")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--peak-tflops", type=float, default=NOMINAL_PEAK_TFLOPS)
    parser.add_argument("--time-budget", type=float, default=240.0, help="seconds; later segments are dropped")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--output", type=Path, help="JSON file (a .md summary is written beside it)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.precision is None:
        args.precision = "bf16" if device.type == "cuda" else "fp32"
    recompute = args.recompute or ("both" if device.type == "cuda" else "off")
    phases_wanted = {"off": [False], "on": [True], "both": [False, True]}[recompute]
    start = time.monotonic()
    deadline = start + args.time_budget
    if device.type == "cuda":
        torch.cuda.set_device(device)

    result = {"device": device_info(device), "argv": sys.argv[1:] if argv is None else list(argv),
              "config": {"preset": args.preset, "seq_len": args.seq_len, "precision": args.precision,
                         "vocab_size": args.vocab_size, "spec": args.spec, "dropout": args.dropout,
                         "peak_tflops": args.peak_tflops, "min_batch": args.min_batch, "max_batch": args.max_batch,
                         "optimizer": "AdamW" + (" (fused)" if device.type == "cuda" else "")},
              "phases": []}
    result["matmul_peak_tflops"] = matmul_peak_tflops(device)
    flops_per_token = None
    for recompute_on in phases_wanted:
        if flops_per_token is None:
            from biomegatron_nemo.encoder.config import EncoderConfig

            cfg = EncoderConfig.from_preset(args.preset, vocab_size=args.vocab_size)
            flops_per_token = model_flops_per_token(cfg.num_layers, cfg.hidden_size, cfg.ffn_hidden_size,
                                                    cfg.padded_vocab_size(), args.seq_len)
            result["config"]["model_flops_per_token"] = flops_per_token
        if time.monotonic() > deadline:
            result["phases"].append({"recompute": recompute_on, "skipped": "time budget reached", "segments": []})
            continue
        phase, geometry = run_phase(args, recompute_on, device, flops_per_token, result["matmul_peak_tflops"], deadline)
        if geometry:
            result["config"]["geometry"] = geometry
        result["phases"].append(phase)
    result["seconds"] = time.monotonic() - start
    no_recompute = next((p for p in result["phases"] if not p["recompute"] and p.get("summary")), None)
    if no_recompute and device.type == "cuda":
        s = no_recompute["summary"]
        best_mfu = max((p["summary"].get("ours_at_largest_batch", {}).get("mfu_nominal_peak") or 0)
                       for p in result["phases"] if p.get("summary"))
        result["targets"] = {
            "mfu_at_least_45pct": best_mfu >= 0.45, "best_mfu_nominal_peak": best_mfu,
            "throughput_ratio_at_least_1": (s.get("throughput_ratio_ours_over_hf") or 0) >= 1.0,
        }
    text = markdown(result)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        args.output.with_suffix(".md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
