"""BC5CDR-chem NER (or BC5CDR-disease, NCBI-disease: ``--train``/``--eval``) under a fixed CPU
wall-clock budget or number of steps: our TokenClassificationModel against a Hugging Face
``BertForTokenClassification`` of the same size or from the same pretrained weights, on the same
data and metric.

One run per invocation (runs are heavy; start them one after another):

    python benchmarks/ner_bc5cdr.py --system megatron --mode first_subtoken --budget-minutes 8 --output R.json
    python benchmarks/ner_bc5cdr.py --system hf --mode all_subtokens --budget-minutes 8 --output R.json
    python benchmarks/ner_bc5cdr.py --system megatron --init-from pretrained.nemo ...   # pretrained encoder
    python benchmarks/ner_bc5cdr.py --system hf --pretrained all-MiniLM-L6-v2/ --steps 430 ...  # both from a HF folder
    python benchmarks/ner_bc5cdr.py --system megatron --pretrained all-MiniLM-L6-v2/ --steps 430 --head library ...
    python benchmarks/ner_bc5cdr.py --table R.json ...                                 # markdown rows

What is equal between the two systems: the vocabulary (BERT uncased WordPiece), the encoder size
(tiny: 4 layers, hidden 256, 4 heads, FFN 1024, dropout 0.1; or the weights of ``--pretrained``),
a one-layer linear head with dropout 0.1 (``--head library``: ours gets the library's default, two
layers), the windows and labels (:class:`TokenClassificationDataset`, both labelling
modes), batch size, AdamW with the same learning rate, warm-up, weight decay (none on biases
and LayerNorm) and gradient clipping, the training budget, the thread count, and the metric
(conlleval entity F1 on whole devel sentences, :func:`ner_scores`). What differs is the model
code: megatron-core pre-LayerNorm Megatron-BERT trained through Lightning, against HF's
post-LayerNorm BERT in a plain training loop. Evaluation time is outside the budget.
"""

from __future__ import annotations

import time
from pathlib import Path

from side_by_side import SHARED, common_arguments, encoder_config, examples_trained, fit_within_budget, hf_model, \
    optim_config, result_rows, run_and_record, table_or_prepare, vocabulary

DATA = SHARED / "ner" / "BC5CDR-chem"


def parse_args(argv=None):
    p = common_arguments(__doc__.split("\n\n")[0], batch_size=32, max_seq_length=128)
    p.add_argument("--mode", choices=("first_subtoken", "all_subtokens"), default="first_subtoken")
    p.add_argument("--train", default=str(DATA / "train.tsv"))
    p.add_argument("--eval", default=str(DATA / "devel.tsv"))
    p.add_argument("--init-from", default=None, help="(megatron) a pretrained encoder .nemo of the tiny size")
    p.add_argument("--batching", choices=("grouped", "random"), default="grouped",
                   help="training batches of similar lengths (both systems; HF Trainer's group_by_length) or random")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="(megatron) token-budget training batches: train_ds.max_tokens, with --batch-size "
                        "the most windows a batch")
    return p.parse_args(argv)


def model_config(args):
    from omegaconf import OmegaConf

    start = encoder_config(args)
    if args.init_from:
        start["language_model"] = {"pretrained": args.init_from}
    head = {"head": {"num_layers": 1, "dropout": 0.1}} if args.head == "peer" else {}
    return OmegaConf.create({
        "seed": args.seed,
        **start,
        "labelling_mode": args.mode,
        **head,
        "train_ds": {"file": args.train, "max_seq_length": args.max_seq_length, "batch_size": args.batch_size,
                     "group_by_length": args.batching == "grouped", "max_tokens": args.max_tokens},
        "optim": optim_config(args),
    })


def run_megatron(args):
    """Our library as a user runs it: config → model → Lightning trainer → evaluate()."""
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    model, trainer, train_seconds = fit_within_budget(TokenClassificationModel, model_config(args), args)
    steps = trainer.global_step
    started = time.perf_counter()
    scores = model.evaluate(args.eval, batch_size=64, max_seq_length=args.max_seq_length)
    eval_seconds = time.perf_counter() - started
    return {**scores, "train_windows": examples_trained(model._train_dl, steps)}, steps, train_seconds, eval_seconds


def run_hf(args):
    """HF BertForTokenClassification of the same size on the same windows, in a plain loop."""
    import torch
    from hf_peer import hf_loader, train_within_budget
    from transformers import BertForTokenClassification

    from biomegatron_nemo.data.token_classification import LabelMap, TokenClassificationDataset
    from biomegatron_nemo.metrics.ner import ner_scores
    from biomegatron_nemo.data.conll import read_iob2
    from biomegatron_nemo.tokenizers import WordPieceTokenizer

    torch.manual_seed(args.seed)
    vocab, cased = vocabulary(args)
    tokenizer = WordPieceTokenizer(vocab, cased=cased)
    train, dev = read_iob2(args.train), read_iob2(args.eval)
    labels = LabelMap.from_sentences(train)
    make = lambda sentences: TokenClassificationDataset(  # noqa: E731
        sentences, tokenizer, labels, args.max_seq_length, mode=args.mode, window_overlap=32)
    train_ds, dev_ds = make(train), make(dev)
    model = hf_model(BertForTokenClassification, tokenizer, args=args, classifier_dropout=0.1, num_labels=len(labels))
    loader = hf_loader(train_ds, args)
    steps, train_seconds = train_within_budget(
        model, loader, lambda m, b: m(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                     token_type_ids=b["token_type_ids"], labels=b["labels"]).loss,
        args.lr, args.warmup_steps, args.budget_minutes, args.steps)
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
    eval_seconds = time.perf_counter() - started
    return {**scores, "train_windows": examples_trained(loader, steps)}, steps, train_seconds, eval_seconds


def print_table(paths):
    print("| data | system | head | labelling | init | batching | budget | steps | train s | windows/s | devel P | "
          "devel R | devel F1 |")
    print("|" + " --- |" * 13)
    for r in result_rows(paths):
        rate = f"{r['train_windows'] / r['train_seconds']:.1f}" if "train_windows" in r else "–"
        budget = "steps" if r.get("fixed_steps") else f"{r['budget_minutes']:g} min"
        print(f"| {r.get('data', 'BC5CDR-chem')} | {r['system']} | {r.get('head', 'peer')} | {r['mode']} | "
              f"{r.get('pretrained', 'random') if r['init'] == 'random' else r['init']} | {r.get('batching', 'random')}{' + packed' if r.get('packed') else ''} | "
              f"{budget} | {r['steps']} | {r['train_seconds']:.0f} | {rate} | {100 * r['precision']:.2f} | "
              f"{100 * r['recall']:.2f} | **{100 * r['f1']:.2f}** |")


def main(argv=None):
    args = parse_args(argv)
    if table_or_prepare(args, print_table):
        return
    run_and_record(args, run_megatron, run_hf, lambda scores: {
        "data": Path(args.train).parent.name, "mode": args.mode,
        "init": Path(args.init_from).name if args.init_from else "random",
        "batching": f"max_tokens {args.max_tokens}" if args.max_tokens else args.batching,
        "train_windows": scores["train_windows"], "precision": scores["precision"], "recall": scores["recall"],
        "f1": scores["f1"], "gold_entities": scores["gold_entities"], "pred_entities": scores["pred_entities"],
        "correct_entities": scores["correct_entities"]})


if __name__ == "__main__":
    main()
