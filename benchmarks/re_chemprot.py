"""ChemProt relation extraction under a fixed CPU wall-clock budget: our SequenceClassificationModel
against a Hugging Face ``BertForSequenceClassification`` of the same size, on the same data and metric.

    python benchmarks/re_chemprot.py --prepare /tmp/chemprot_split          # the split, once
    python benchmarks/re_chemprot.py --system megatron --split /tmp/chemprot_split --budget-minutes 8 --output R.jsonl
    python benchmarks/re_chemprot.py --system hf --split /tmp/chemprot_split --budget-minutes 8 --output R.jsonl
    python benchmarks/re_chemprot.py --table R.jsonl                           # markdown rows

The split: ``../shared/data/chemprot`` has the complete dev set but only the positives of train. Dev
documents (PubMed ids) are sorted and alternate between two halves: training is every train
positive plus the ``false`` rows of the first half's documents; evaluation is every row of the
second half's documents — so nothing scored was trained on, and no document is in both.

Equal between the systems: the vocabulary (BERT uncased WordPiece plus the three entity markers
as special tokens), the encoder size (tiny: 4 layers, hidden 256, 4 heads, FFN 1024, dropout 0.1),
the head (tanh pooler over [CLS], dropout 0.1, one linear layer — HF's), the features
(:class:`SequenceClassificationDataset`, max length 128 cut around the markers), batch size,
AdamW, warm-up, weight decay (none on biases and LayerNorm), gradient clipping, the budget, the
thread count, and the metric (micro-F1 over the five CPR classes, ``false`` excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VOCAB = SHARED / "vocab" / "bert-base-uncased-vocab.txt"
SIZE = dict(num_layers=4, hidden_size=256, num_attention_heads=4, ffn_hidden_size=1024)  # the "tiny" preset
MARKERS = ("@CHEMICAL$", "@GENE$", "@CHEM-GENE$")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prepare", metavar="DIR", help="write the train/eval split to DIR and exit")
    p.add_argument("--split", metavar="DIR", help="the split written by --prepare")
    p.add_argument("--system", choices=("megatron", "hf"), default="megatron")
    p.add_argument("--budget-minutes", type=float, default=8.0, help="training wall-clock budget")
    p.add_argument("--vocab", default=str(VOCAB))
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--output", help="append the result as one JSON line to this file")
    p.add_argument("--table", nargs="+", metavar="RESULTS", help="print result rows as markdown and exit")
    return p.parse_args(argv)


def prepare_split(out: Path) -> dict:
    """Write ``train.tsv`` and ``eval.tsv`` (see the module docstring); returns their counts."""
    dev = (SHARED / "chemprot" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    positives = (SHARED / "chemprot" / "train_positives.tsv").read_text(encoding="utf-8").splitlines()
    documents = sorted({row.split(".", 1)[0] for row in dev}, key=int)
    first_half = set(documents[0::2])
    train = positives + [r for r in dev if r.split(".", 1)[0] in first_half and r.endswith("\tfalse")]
    held_out = [r for r in dev if r.split(".", 1)[0] not in first_half]
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.tsv").write_text("\n".join(train) + "\n", encoding="utf-8")
    (out / "eval.tsv").write_text("\n".join(held_out) + "\n", encoding="utf-8")
    count = lambda rows: {"rows": len(rows), "false": sum(r.endswith("\tfalse") for r in rows)}  # noqa: E731
    return {"train": count(train), "eval": count(held_out), "eval_documents": len(documents) - len(first_half)}


def model_config(args):
    from omegaconf import OmegaConf

    return OmegaConf.create({
        "seed": args.seed,
        "tokenizer": {"library": "wordpiece", "vocab_file": args.vocab, "cased": False},
        "encoder": {**SIZE, "hidden_dropout": 0.1, "attention_dropout": 0.1},
        "pooling": "pooler",
        "head": {"num_layers": 1, "dropout": 0.1},
        "train_ds": {"file": str(Path(args.split) / "train.tsv"), "max_seq_length": args.max_seq_length,
                     "batch_size": args.batch_size},
        "optim": {"name": "adamw", "lr": args.lr, "weight_decay": 0.01, "betas": [0.9, 0.999],
                  "sched": {"name": "WarmupHoldPolicy", "warmup_steps": args.warmup_steps, "hold_steps": 10**9}},
    })


def run_megatron(args):
    """Our library as a user runs it: config → model → Lightning trainer → evaluate()."""
    from biomegatron_nemo.models.sequence_classification import SequenceClassificationModel
    from biomegatron_nemo.parallel.trainer import build_trainer

    trainer = build_trainer({"max_steps": 10**9, "max_time": {"minutes": args.budget_minutes}, "limit_val_batches": 0,
                             "num_sanity_val_steps": 0, "gradient_clip_val": 1.0, "enable_progress_bar": False,
                             "enable_model_summary": False, "log_every_n_steps": 50})
    model = SequenceClassificationModel(model_config(args), trainer=trainer)
    started = time.perf_counter()
    trainer.fit(model)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    scores = model.evaluate(str(Path(args.split) / "eval.tsv"), batch_size=64)
    return scores, trainer.global_step, train_seconds, time.perf_counter() - started


def run_hf(args):
    """HF BertForSequenceClassification of the same size on the same features, in a plain loop."""
    import torch
    from hf_peer import train_within_budget
    from transformers import BertConfig, BertForSequenceClassification

    from biomegatron_nemo.data.chemprot import SequenceClassificationDataset, read_classification_tsv
    from biomegatron_nemo.metrics.classification import classification_scores
    from biomegatron_nemo.tokenizers import WordPieceTokenizer

    torch.manual_seed(args.seed)
    tokenizer = WordPieceTokenizer(args.vocab, special_tokens=MARKERS)
    train = read_classification_tsv(Path(args.split) / "train.tsv")
    held_out = read_classification_tsv(Path(args.split) / "eval.tsv")
    labels = sorted({ex.label for ex in train})  # the order the model's label map uses
    train_ds = SequenceClassificationDataset(train, tokenizer, labels, args.max_seq_length, markers=MARKERS)
    eval_ds = SequenceClassificationDataset(held_out, tokenizer, labels, args.max_seq_length, markers=MARKERS)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=SIZE["hidden_size"],
                        num_hidden_layers=SIZE["num_layers"], num_attention_heads=SIZE["num_attention_heads"],
                        intermediate_size=SIZE["ffn_hidden_size"], hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1, classifier_dropout=0.1, num_labels=len(labels),
                        max_position_embeddings=512, pad_token_id=tokenizer.pad_id)
    model = BertForSequenceClassification(config)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=args.batch_size, shuffle=True,
                                         collate_fn=train_ds.collate_fn)
    steps, train_seconds = train_within_budget(
        model, loader, lambda m, b: m(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                     token_type_ids=b["token_type_ids"], labels=b["labels"]).loss,
        args.lr, args.warmup_steps, args.budget_minutes)
    started = time.perf_counter()
    model.eval()
    pred = []
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(eval_ds, batch_size=64, collate_fn=eval_ds.collate_fn):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           token_type_ids=batch["token_type_ids"]).logits
            pred += [labels[i] for i in logits.argmax(-1).tolist()]
    scores = classification_scores([ex.label for ex in held_out], pred, labels=labels)
    return scores, steps, train_seconds, time.perf_counter() - started


def print_table(paths):
    print("| system | budget (min) | steps | micro P | micro R | micro F1 | accuracy |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for path in paths:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            print(f"| {r['system']} | {r['budget_minutes']:g} | {r['steps']} | {100 * r['precision']:.2f} | "
                  f"{100 * r['recall']:.2f} | **{100 * r['f1']:.2f}** | {100 * r['accuracy']:.2f} |")


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        print_table(args.table)
        return
    if args.prepare:
        print(json.dumps(prepare_split(Path(args.prepare))))
        return
    if not args.split:
        raise SystemExit("give --split DIR (written by --prepare DIR)")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before Lightning picks its own count
    import torch

    torch.set_num_threads(args.threads)
    scores, steps, train_s, eval_s = (run_megatron if args.system == "megatron" else run_hf)(args)
    result = {"system": args.system, "budget_minutes": args.budget_minutes, "steps": steps,
              "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1), "threads": args.threads,
              "lr": args.lr, "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
              "precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"],
              "accuracy": scores["accuracy"], "per_class_f1": {c: s["f1"] for c, s in scores["per_class"].items()}}
    print(json.dumps(result))
    if args.output:
        with open(args.output, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
