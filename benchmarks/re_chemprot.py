"""ChemProt relation extraction under a fixed CPU wall-clock budget or number of steps: our
SequenceClassificationModel against a Hugging Face ``BertForSequenceClassification`` of the same size
or from the same pretrained weights, on the same data and metric.

    python benchmarks/re_chemprot.py --prepare /tmp/chemprot_split          # the split, once
    python benchmarks/re_chemprot.py --system megatron --split /tmp/chemprot_split --budget-minutes 8 --output R.jsonl
    python benchmarks/re_chemprot.py --system hf --split /tmp/chemprot_split --budget-minutes 8 --output R.jsonl
    python benchmarks/re_chemprot.py --system hf --split /tmp/chemprot_split --pretrained all-MiniLM-L6-v2/ --steps 830
    python benchmarks/re_chemprot.py --table R.jsonl                           # markdown rows

The split: ``../shared/data/chemprot`` has the complete dev set but only the positives of train. Dev
documents (PubMed ids) are sorted and alternate between two halves: training is every train
positive plus the ``false`` rows of the first half's documents; evaluation is every row of the
second half's documents — so nothing scored was trained on, and no document is in both.

Equal between the systems: the vocabulary (BERT uncased WordPiece plus the three entity markers
as special tokens), the encoder size (tiny: 4 layers, hidden 256, 4 heads, FFN 1024, dropout 0.1;
or the weights of ``--pretrained``, the markers' new embedding rows each system's own way), the head
(tanh pooler over [CLS] — from ``--pretrained``'s pooler when it has one —, dropout 0.1, one linear
layer: HF's; ``--head library`` gives ours the library's default, two layers over [CLS]), the features
(:class:`SequenceClassificationDataset`, max length 128 cut around the markers), batch size,
AdamW, warm-up, weight decay (none on biases and LayerNorm), gradient clipping, the budget, the
thread count, and the metric (micro-F1 over the five CPR classes, ``false`` excluded).
"""

from __future__ import annotations

import time
from pathlib import Path

from side_by_side import SHARED, common_arguments, encoder_config, fit_within_budget, hf_model, optim_config, \
    result_rows, run_and_record, table_or_prepare, vocabulary

MARKERS = ("@CHEMICAL$", "@GENE$", "@CHEM-GENE$")


def parse_args(argv=None):
    p = common_arguments(__doc__.split("\n\n")[0], batch_size=32, max_seq_length=128)
    p.add_argument("--prepare", metavar="DIR", help="write the train/eval split to DIR and exit")
    p.add_argument("--split", metavar="DIR", help="the split written by --prepare")
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

    head = {"pooling": "pooler", "head": {"num_layers": 1, "dropout": 0.1}} if args.head == "peer" else {}
    return OmegaConf.create({
        "seed": args.seed,
        **encoder_config(args),
        **head,
        "train_ds": {"file": str(Path(args.split) / "train.tsv"), "max_seq_length": args.max_seq_length,
                     "batch_size": args.batch_size},
        "optim": optim_config(args),
    })


def run_megatron(args):
    """Our library as a user runs it: config → model → Lightning trainer → evaluate()."""
    from biomegatron_nemo.models.sequence_classification import SequenceClassificationModel

    model, trainer, train_seconds = fit_within_budget(SequenceClassificationModel, model_config(args), args)
    started = time.perf_counter()
    scores = model.evaluate(str(Path(args.split) / "eval.tsv"), batch_size=64)
    return scores, trainer.global_step, train_seconds, time.perf_counter() - started


def run_hf(args):
    """HF BertForSequenceClassification of the same size on the same features, in a plain loop."""
    import torch
    from hf_peer import train_within_budget
    from transformers import BertForSequenceClassification

    from biomegatron_nemo.data.chemprot import SequenceClassificationDataset, read_classification_tsv
    from biomegatron_nemo.metrics.classification import classification_scores
    from biomegatron_nemo.tokenizers import WordPieceTokenizer

    torch.manual_seed(args.seed)
    vocab, cased = vocabulary(args)
    tokenizer = WordPieceTokenizer(vocab, cased=cased, special_tokens=MARKERS)
    train = read_classification_tsv(Path(args.split) / "train.tsv")
    held_out = read_classification_tsv(Path(args.split) / "eval.tsv")
    labels = sorted({ex.label for ex in train})  # the order the model's label map uses
    train_ds = SequenceClassificationDataset(train, tokenizer, labels, args.max_seq_length, markers=MARKERS)
    eval_ds = SequenceClassificationDataset(held_out, tokenizer, labels, args.max_seq_length, markers=MARKERS)
    model = hf_model(BertForSequenceClassification, tokenizer, args=args, classifier_dropout=0.1,
                     num_labels=len(labels))
    loader = torch.utils.data.DataLoader(train_ds, batch_size=args.batch_size, shuffle=True,
                                         collate_fn=train_ds.collate_fn)
    steps, train_seconds = train_within_budget(
        model, loader, lambda m, b: m(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                     token_type_ids=b["token_type_ids"], labels=b["labels"]).loss,
        args.lr, args.warmup_steps, args.budget_minutes, args.steps)
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
    print("| system | head | init | budget | steps | train s | micro P | micro R | micro F1 | accuracy |")
    print("|" + " --- |" * 10)
    for r in result_rows(paths):
        budget = "steps" if r.get("fixed_steps") else f"{r['budget_minutes']:g} min"
        print(f"| {r['system']} | {r.get('head', 'peer')} | {r.get('pretrained', 'random')} | {budget} | "
              f"{r['steps']} | {r['train_seconds']:.0f} | {100 * r['precision']:.2f} | "
              f"{100 * r['recall']:.2f} | **{100 * r['f1']:.2f}** | {100 * r['accuracy']:.2f} |")


def main(argv=None):
    args = parse_args(argv)
    if table_or_prepare(args, print_table, prepare_split):
        return
    run_and_record(args, run_megatron, run_hf, lambda scores: {
        "precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"],
        "accuracy": scores["accuracy"], "per_class_f1": {c: s["f1"] for c, s in scores["per_class"].items()}})


if __name__ == "__main__":
    main()
