"""What the side-by-side task benchmarks (NER, relation extraction, QA) share besides the Hugging
Face peer's training loop (:mod:`hf_peer`): the common command-line options, the Lightning trainer
our models run under (bounded by a wall-clock budget or a number of steps), where both systems
start (the tiny encoder size with random weights, or one pretrained Hugging Face checkpoint both
load), and running one system and recording its result as a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Callable, Dict

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VOCAB = SHARED / "vocab" / "bert-base-uncased-vocab.txt"
SIZE = dict(num_layers=4, hidden_size=256, num_attention_heads=4, ffn_hidden_size=1024)  # the "tiny" preset


def common_arguments(description: str, batch_size: int, max_seq_length: int) -> argparse.ArgumentParser:
    """A parser with the options every side-by-side benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--system", choices=("megatron", "hf"), default="megatron")
    p.add_argument("--budget-minutes", type=float, default=8.0, help="training wall-clock budget")
    p.add_argument("--vocab", default=str(VOCAB))
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--max-seq-length", type=int, default=max_seq_length)
    p.add_argument("--threads", type=int, default=1, help="torch threads (one per system for a fair comparison)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--steps", type=int, help="train exactly this many optimizer steps (instead of the budget)")
    p.add_argument("--pretrained", help="a pretrained Hugging Face BERT folder both systems start from (ours names "
                                        "it as model.language_model.pretrained, the peer loads it with "
                                        "from_pretrained); its vocabulary replaces --vocab")
    p.add_argument("--head", choices=("peer", "library"), default="peer",
                   help="(megatron) peer: the head of the HF peer's class (the two systems equal but for the "
                        "encoder code); library: the library's default head for the task")
    p.add_argument("--packed", action="store_true",
                   help="(megatron) encoder.packed_sequences: only the real tokens of each batch are computed")
    p.add_argument("--output", help="append the result as one JSON line to this file")
    p.add_argument("--table", nargs="+", metavar="RESULTS", help="print result rows as markdown and exit")
    return p


def optim_config(args) -> Dict:
    """The ``optim`` section of our models: the peer's AdamW and warm-up (:func:`hf_peer.adamw_with_warmup`)."""
    return {"name": "adamw", "lr": args.lr, "weight_decay": 0.01, "betas": [0.9, 0.999],
            "sched": {"name": "WarmupHoldPolicy", "warmup_steps": args.warmup_steps, "hold_steps": 10**9}}


def budget_trainer(args):
    """A Lightning trainer that trains for ``--steps`` steps or until ``--budget-minutes`` pass,
    without validation."""
    from biomegatron_nemo.parallel.trainer import build_trainer

    budget = None if args.steps else {"minutes": args.budget_minutes}
    return build_trainer({"max_steps": args.steps or 10**9, "max_time": budget, "limit_val_batches": 0,
                          "num_sanity_val_steps": 0, "gradient_clip_val": 1.0, "enable_progress_bar": False,
                          "enable_model_summary": False, "log_every_n_steps": 50})


def run_and_record(args, run_megatron: Callable, run_hf: Callable, describe: Callable[[Dict], Dict]) -> Dict:
    """Run ``--system`` with ``--threads`` torch threads; ``run_*`` return ``(scores, steps,
    train_seconds, eval_seconds)`` and ``describe(scores)`` the benchmark's own result fields.
    The result is printed and appended to ``--output``."""
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before Lightning picks its own count
    import torch

    torch.set_num_threads(args.threads)
    scores, steps, train_s, eval_s = (run_megatron if args.system == "megatron" else run_hf)(args)
    result = {"system": args.system, **start_fields(args), "budget_minutes": args.budget_minutes, "steps": steps,
              "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1), "threads": args.threads,
              "lr": args.lr, "batch_size": args.batch_size, "max_seq_length": args.max_seq_length, **describe(scores)}
    return record_result(result, args.output)


def record_result(result: Dict, output=None) -> Dict:
    """Print ``result`` as one JSON line and append it to ``output`` (a path, or None)."""
    print(json.dumps(result))
    if output:
        with open(output, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return result


def result_rows(paths):
    """Every result (one JSON object a line) of the given files."""
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                yield json.loads(line)


def vocabulary(args):
    """(vocab file, cased) both systems tokenize with: the pretrained checkpoint's, or ``--vocab``."""
    if not args.pretrained:
        return args.vocab, False
    from biomegatron_nemo.checkpoints.pretrained import resolve_pretrained

    tokenizer = resolve_pretrained(args.pretrained).tokenizer
    return tokenizer["vocab_file"], bool(tokenizer["cased"])


def encoder_config(args) -> Dict:
    """Where our model starts: the pretrained checkpoint (it decides encoder and vocabulary), or the
    tiny size with random weights and ``--vocab``."""
    packing = {"packed_sequences": True} if args.packed else {}
    if args.pretrained:
        return {"language_model": {"pretrained": args.pretrained}, **({"encoder": packing} if packing else {})}
    return {"tokenizer": {"library": "wordpiece", "vocab_file": args.vocab, "cased": False},
            "encoder": {**SIZE, "hidden_dropout": 0.1, "attention_dropout": 0.1, **packing}}


def hf_model(model_class, tokenizer, **extra):
    """The peer: ``model_class`` from the pretrained folder (rows added for tokens the tokenizer has
    beyond it, such as entity markers), or of the tiny size with random weights."""
    args = extra.pop("args")
    if not args.pretrained:
        return model_class(hf_bert_config(tokenizer, **extra))
    model = model_class.from_pretrained(args.pretrained, **extra)
    if tokenizer.vocab_size > model.config.vocab_size:
        model.resize_token_embeddings(tokenizer.vocab_size)
    return model


def start_fields(args) -> Dict:
    """The result fields saying where the run started and which head it trained."""
    return {"pretrained": Path(args.pretrained).name if args.pretrained else "random",
            "head": args.head if args.system == "megatron" else "peer", "fixed_steps": bool(args.steps),
            "packed": bool(args.packed and args.system == "megatron")}


def hf_bert_config(tokenizer, **extra):
    """The peer's ``BertConfig``: the tiny size, dropout 0.1, our tokenizer's vocabulary."""
    from transformers import BertConfig

    return BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=SIZE["hidden_size"],
                      num_hidden_layers=SIZE["num_layers"], num_attention_heads=SIZE["num_attention_heads"],
                      intermediate_size=SIZE["ffn_hidden_size"], hidden_dropout_prob=0.1,
                      attention_probs_dropout_prob=0.1, max_position_embeddings=512, pad_token_id=tokenizer.pad_id,
                      **extra)


def fit_within_budget(model_class, cfg, args):
    """Our model as a user runs it: config → model → Lightning trainer for ``--budget-minutes``.
    Returns ``(model, trainer, train_seconds)``."""
    import time

    trainer = budget_trainer(args)
    model = model_class(cfg, trainer=trainer)
    started = time.perf_counter()
    trainer.fit(model)
    return model, trainer, time.perf_counter() - started


def examples_trained(loader, steps: int) -> int:
    """Examples in the first ``steps`` batches of ``loader``, epoch after epoch: its sampler
    replayed (an :class:`~biomegatron_nemo.data.batching.EpochSampler`, whose order depends only
    on the seed and the epoch). Under ``max_tokens`` a sampler item is a whole batch."""
    sampler, seen, epoch = loader.sampler, 0, 0
    while steps > 0:
        sampler.set_epoch(epoch)
        items = list(sampler)
        if loader.batch_size is None:
            sizes = [len(batch) for batch in items]
        else:
            sizes = [len(items[i:i + loader.batch_size]) for i in range(0, len(items), loader.batch_size)]
        seen += sum(sizes[:steps])
        steps -= len(sizes[:steps])
        epoch += 1
    return seen


def table_or_prepare(args, print_table: Callable, prepare_split: Callable = None) -> bool:
    """``--table`` (print the rows) or ``--prepare`` (write the split): done without a run."""
    if args.table:
        print_table(args.table)
        return True
    if prepare_split is not None and args.prepare:
        print(json.dumps(prepare_split(Path(args.prepare))))
        return True
    if prepare_split is not None and not args.split:
        raise SystemExit("give --split DIR (written by --prepare DIR)")
    return False
