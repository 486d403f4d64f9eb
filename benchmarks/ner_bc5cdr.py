"""BC5CDR-chem NER under a fixed CPU wall-clock budget: our TokenClassificationModel against a
Hugging Face ``BertForTokenClassification`` of the same size, on the same data and metric.

One run per invocation (runs are heavy; start them one after another):

    python benchmarks/ner_bc5cdr.py --system megatron --mode first_subtoken --budget-minutes 8 --output R.json
    python benchmarks/ner_bc5cdr.py --system hf --mode all_subtokens --budget-minutes 8 --output R.json
    python benchmarks/ner_bc5cdr.py --system megatron --init-from pretrained.nemo ...   # pretrained encoder
    python benchmarks/ner_bc5cdr.py --table R.json ...                                 # markdown rows

What is equal between the two systems: the vocabulary (BERT uncased WordPiece), the encoder size
(tiny: 4 layers, hidden 256, 4 heads, FFN 1024, dropout 0.1), a one-layer linear head with
dropout 0.1, the windows and labels (:class:`TokenClassificationDataset`, both labelling
modes), batch size, AdamW with the same learning rate, warm-up, weight decay (none on biases
and LayerNorm) and gradient clipping, the training budget, the thread count, and the metric
(conlleval entity F1 on whole devel sentences, :func:`ner_scores`). What differs is the model
code: megatron-core pre-LayerNorm Megatron-BERT trained through Lightning, against HF's
post-LayerNorm BERT in a plain training loop. Evaluation time is outside the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = SHARED / "ner" / "BC5CDR-chem"
VOCAB = SHARED / "vocab" / "bert-base-uncased-vocab.txt"
SIZE = dict(num_layers=4, hidden_size=256, num_attention_heads=4, ffn_hidden_size=1024)  # the "tiny" preset


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--system", choices=("megatron", "hf"), default="megatron")
    p.add_argument("--mode", choices=("first_subtoken", "all_subtokens"), default="first_subtoken")
    p.add_argument("--budget-minutes", type=float, default=8.0, help="training wall-clock budget")
    p.add_argument("--train", default=str(DATA / "train.tsv"))
    p.add_argument("--eval", default=str(DATA / "devel.tsv"))
    p.add_argument("--vocab", default=str(VOCAB))
    p.add_argument("--init-from", default=None, help="(megatron) a pretrained encoder .nemo")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 keeps runs comparable on a shared machine)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--batching", choices=("grouped", "random"), default="grouped",
                   help="training batches of similar lengths (both systems; HF Trainer's group_by_length) or random")
    p.add_argument("--output", help="append the result as one JSON line to this file")
    p.add_argument("--table", nargs="+", metavar="RESULTS", help="print result rows as markdown and exit")
    return p.parse_args(argv)


def model_config(args):
    from omegaconf import OmegaConf

    return OmegaConf.create({
        "seed": args.seed,
        "tokenizer": {"library": "wordpiece", "vocab_file": args.vocab, "cased": False},
        "encoder": {**SIZE, "hidden_dropout": 0.1, "attention_dropout": 0.1},
        "language_model": {"nemo_file": args.init_from},
        "labelling_mode": args.mode,
        "head": {"num_layers": 1, "dropout": 0.1},
        "train_ds": {"file": args.train, "max_seq_length": args.max_seq_length, "batch_size": args.batch_size,
                     "group_by_length": args.batching == "grouped"},
        "optim": {"name": "adamw", "lr": args.lr, "weight_decay": 0.01, "betas": [0.9, 0.999],
                  "sched": {"name": "WarmupHoldPolicy", "warmup_steps": args.warmup_steps,
                            "hold_steps": 10**9}},
    })


def run_megatron(args):
    """Our library as a user runs it: config → model → Lightning trainer → evaluate()."""
    from biomegatron_nemo.models.token_classification import TokenClassificationModel
    from biomegatron_nemo.parallel.trainer import build_trainer

    minutes = args.budget_minutes
    trainer = build_trainer({"max_steps": 10**9, "max_time": {"minutes": minutes}, "limit_val_batches": 0,
                             "num_sanity_val_steps": 0, "gradient_clip_val": 1.0, "enable_progress_bar": False,
                             "enable_model_summary": False, "log_every_n_steps": 50})
    model = TokenClassificationModel(model_config(args), trainer=trainer)
    started = time.perf_counter()
    trainer.fit(model)
    train_seconds = time.perf_counter() - started
    steps = trainer.global_step
    started = time.perf_counter()
    scores = model.evaluate(args.eval, batch_size=64, max_seq_length=args.max_seq_length)
    return scores, steps, train_seconds, time.perf_counter() - started


def run_hf(args):
    """HF BertForTokenClassification of the same size on the same windows, in a plain loop."""
    import torch
    from hf_peer import hf_loader, train_within_budget
    from transformers import BertConfig, BertForTokenClassification

    from biomegatron_nemo.data.token_classification import LabelMap, TokenClassificationDataset
    from biomegatron_nemo.metrics.ner import ner_scores
    from biomegatron_nemo.data.conll import read_iob2
    from biomegatron_nemo.tokenizers import WordPieceTokenizer

    torch.manual_seed(args.seed)
    tokenizer = WordPieceTokenizer(args.vocab)
    train, dev = read_iob2(args.train), read_iob2(args.eval)
    labels = LabelMap.from_sentences(train)
    make = lambda sentences: TokenClassificationDataset(  # noqa: E731
        sentences, tokenizer, labels, args.max_seq_length, mode=args.mode, window_overlap=32)
    train_ds, dev_ds = make(train), make(dev)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=SIZE["hidden_size"],
                        num_hidden_layers=SIZE["num_layers"], num_attention_heads=SIZE["num_attention_heads"],
                        intermediate_size=SIZE["ffn_hidden_size"], hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1, classifier_dropout=0.1, num_labels=len(labels),
                        max_position_embeddings=512, pad_token_id=tokenizer.pad_id)
    model = BertForTokenClassification(config)
    loader = hf_loader(train_ds, args)
    steps, train_seconds = train_within_budget(
        model, loader, lambda m, b: m(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                     token_type_ids=b["token_type_ids"], labels=b["labels"]).loss,
        args.lr, args.warmup_steps, args.budget_minutes)
    started = time.perf_counter()
    model.eval()
    indices, rows = [], []
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(dev_ds, batch_size=64, collate_fn=dev_ds.collate_fn):
            pred = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         token_type_ids=batch["token_type_ids"]).logits.argmax(-1)
            for wi, row, n in zip(batch["window_index"].tolist(), pred, batch["attention_mask"].sum(-1).tolist()):
                indices.append(wi)
                rows.append(row[:n].tolist())
    scores = ner_scores([s.tags for s in dev], dev_ds.predictions_to_tags(rows, indices))
    return scores, steps, train_seconds, time.perf_counter() - started


def print_table(paths):
    print("| system | labelling | init | batching | budget (min) | steps | devel P | devel R | devel F1 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for path in paths:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            print(f"| {r['system']} | {r['mode']} | {r['init']} | {r.get('batching', 'random')} | "
                  f"{r['budget_minutes']:g} | {r['steps']} | {100 * r['precision']:.2f} | {100 * r['recall']:.2f} | "
                  f"**{100 * r['f1']:.2f}** |")


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        print_table(args.table)
        return
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before Lightning picks its own count
    import torch

    torch.set_num_threads(args.threads)
    scores, steps, train_s, eval_s = (run_megatron if args.system == "megatron" else run_hf)(args)
    result = {"system": args.system, "mode": args.mode,
              "init": Path(args.init_from).name if args.init_from else "random",
              "budget_minutes": args.budget_minutes, "batching": args.batching, "steps": steps,
              "train_seconds": round(train_s, 1),
              "eval_seconds": round(eval_s, 1), "threads": args.threads, "lr": args.lr,
              "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
              "precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"],
              "gold_entities": scores["gold_entities"], "pred_entities": scores["pred_entities"],
              "correct_entities": scores["correct_entities"]}
    print(json.dumps(result))
    if args.output:
        with open(args.output, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
