"""Question answering under a fixed CPU wall-clock budget or number of steps: SQuAD, then BioASQ
factoid (the paper's Table 2 recipe at try-out scale) — our QuestionAnsweringModel against a Hugging
Face ``BertForQuestionAnswering`` of the same size or from the same pretrained weights, on the same
features, decoding and scorers.

    python benchmarks/qa_bioasq.py --prepare /tmp/qa_split                     # the SQuAD split, once
    python benchmarks/qa_bioasq.py --system megatron --task squad --split /tmp/qa_split --output R.jsonl
    python benchmarks/qa_bioasq.py --system megatron --task bioasq --init squad --split /tmp/qa_split --output R.jsonl
    python benchmarks/qa_bioasq.py --system megatron --task bioasq --init none --split /tmp/qa_split --output R.jsonl
    python benchmarks/qa_bioasq.py --system hf ...                                # the same three for the peer
    python benchmarks/qa_bioasq.py --table R.jsonl                                # markdown rows

Data: SQuAD v1.1 has only its dev set here; its articles alternate between a training half and a
held-back half (no article in both), scored with the official v1.1 rules (EM/F1). BioASQ: trained
on the 7b factoid training set (4,231 snippet-question pairs, 530 questions) **without** the 114
questions of the 6b test batches it contains (7b's training set includes earlier years' test
questions; ``--prepare`` removes them by id and by question text), scored on the five 6b factoid
test batches (161 questions) against their official golden files: each question's n-best answers merged
over its snippets (summed probabilities, five kept), strict/lenient accuracy and MRR per batch,
then averaged over the batches (as BioBERT and the paper report them). ``--init squad`` starts
from the ``--task squad`` run's weights (encoder and span head, saved in ``--split``); ``none``
from random initialisation (the paper's Table 4 without SQuAD).

Equal between the systems: the vocabulary (BERT uncased WordPiece), the encoder size (tiny: 4
layers, hidden 256, 4 heads, FFN 1024, dropout 0.1; or the weights of ``--pretrained``), the span
head (one linear layer, HF's; ``--head library`` gives ours the library's default, two layers), the
features (:class:`~biomegatron_nemo.data.squad.QADataset`: max length 256, stride 128, questions
up to 64 sub-tokens), length-grouped batches of 16, AdamW with warm-up, weight decay (none on
biases and LayerNorm), gradient clipping, the budget, the thread count, decoding
(:func:`~biomegatron_nemo.data.qa_decoding.decode_predictions`, n-best 20, answers up to 30
sub-tokens) and the scorers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from side_by_side import SHARED, common_arguments, encoder_config, fit_within_budget, hf_model, optim_config, \
    result_rows, run_and_record, table_or_prepare, vocabulary

BIOASQ = SHARED / "bioasq"
BATCHES = range(1, 6)


def parse_args(argv=None):
    p = common_arguments(__doc__.split("\n\n")[0], batch_size=16, max_seq_length=256)
    p.add_argument("--prepare", metavar="DIR", help="write the SQuAD train/held-back split to DIR and exit")
    p.add_argument("--split", metavar="DIR",
                   help="the split written by --prepare (SQuAD runs save their weights there)")
    p.add_argument("--task", choices=("squad", "bioasq"), default="squad")
    p.add_argument("--init", choices=("none", "squad"), default="none", help="BioASQ: start from the SQuAD run")
    p.add_argument("--doc-stride", type=int, default=128)
    return p.parse_args(argv)


def prepare_split(out: Path) -> dict:
    """``squad_train.json`` / ``squad_heldout.json`` (SQuAD v1.1 dev articles, alternating) and
    ``bioasq_train.json``: the 7b factoid training set without the questions of the 6b test batches
    (by id or by question text) — 7b's training set contains most of them."""
    from biomegatron_nemo.data.squad import question_id, read_bioasq_golden

    doc = json.loads((SHARED / "squad" / "dev-v1.1.json").read_text(encoding="utf-8"))
    halves = {"squad_train.json": doc["data"][0::2], "squad_heldout.json": doc["data"][1::2]}
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, articles in halves.items():
        (out / name).write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")
        counts[name] = {"articles": len(articles),
                        "questions": sum(len(p["qas"]) for a in articles for p in a["paragraphs"])}
    tested = [g for b in BATCHES for g in read_bioasq_golden(BIOASQ / f"6B{b}_golden.json").values()]
    ids, bodies = {g.id for g in tested}, {g.body.strip().lower() for g in tested}
    bioasq = json.loads((BIOASQ / "BioASQ-train-factoid-7b.json").read_text(encoding="utf-8"))
    kept, removed = 0, set()
    for article in bioasq["data"]:
        for paragraph in article["paragraphs"]:
            keep = []
            for qa in paragraph["qas"]:
                if question_id(qa["id"]) in ids or qa["question"].strip().lower() in bodies:
                    removed.add(question_id(qa["id"]))
                else:
                    keep.append(qa)
            paragraph["qas"] = keep
            kept += len(keep)
        article["paragraphs"] = [p for p in article["paragraphs"] if p["qas"]]
    (out / "bioasq_train.json").write_text(json.dumps(bioasq), encoding="utf-8")
    counts["bioasq_train.json"] = {"snippet_questions": kept, "questions_removed": len(removed),
                                   "test_questions": len(ids)}
    return counts


def train_file(args) -> str:
    return str(Path(args.split) / ("squad_train.json" if args.task == "squad" else "bioasq_train.json"))


def squad_weights(args) -> Path:
    """Where the SQuAD run of this system, head and start keeps its model, for the BioASQ stage."""
    start = Path(args.pretrained).name if args.pretrained else "random"
    if args.system == "hf":
        return Path(args.split) / f"squad_hf_{start}"
    return Path(args.split) / f"squad_megatron_{args.head}_{start}.nemo"


def model_config(args):
    from omegaconf import OmegaConf

    cfg = {
        "seed": args.seed,
        "dataset": args.task,
        **encoder_config(args),
        **({"head": {"num_layers": 1, "dropout": 0.0}} if args.head == "peer" else {}),
        "doc_stride": args.doc_stride,
        "train_ds": {"file": train_file(args), "max_seq_length": args.max_seq_length, "batch_size": args.batch_size},
        "optim": optim_config(args),
    }
    if args.task == "bioasq" and args.init == "squad":
        cfg.pop("tokenizer", None), cfg.pop("encoder", None)
        cfg.update(language_model={"pretrained": str(squad_weights(args))}, init_heads=True)
    return OmegaConf.create(cfg)


def score(task, decode, golden=None):
    """SQuAD EM/F1 on the held-back half, or BioASQ SAcc/LAcc/MRR averaged over the 6b batches;
    ``decode(file)`` returns (examples, nbest, predictions) of a SQuAD-format file."""
    from biomegatron_nemo.data.squad import bioasq_gold_from_examples, read_bioasq_golden
    from biomegatron_nemo.metrics.bioasq import bioasq_scores
    from biomegatron_nemo.metrics.squad import squad_scores
    from biomegatron_nemo.models.question_answering import ranked_answers

    if task == "squad":
        examples, _, predictions = decode(golden)
        gold = [{"id": e.id, "answers": e.answers} for e in examples]
        return squad_scores(gold, predictions, version_2=False)
    per_batch = []
    for b in BATCHES:
        examples, nbest, _ = decode(str(BIOASQ / f"BioASQ-test-factoid-6b-{b}.json"))
        gold = read_bioasq_golden(BIOASQ / f"6B{b}_golden.json")
        assert not bioasq_gold_from_examples(examples)  # test snippets carry no answers
        per_batch.append(bioasq_scores({q: g.synonyms for q, g in gold.items()}, ranked_answers(examples, nbest)))
    keys = ("strict_accuracy", "lenient_accuracy", "mrr")
    result = {k: sum(s[k] for s in per_batch) / len(per_batch) for k in keys}
    result["per_batch"] = [{k: s[k] for k in keys + ("questions",)} for s in per_batch]
    return result


def run_megatron(args):
    """Our library as a user runs it: config → model → Lightning trainer → evaluate()."""
    from biomegatron_nemo.data.squad import read_squad
    from biomegatron_nemo.models.question_answering import QuestionAnsweringModel

    model, trainer, train_seconds = fit_within_budget(QuestionAnsweringModel, model_config(args), args)
    if args.task == "squad":
        model.save_to(str(squad_weights(args)))
    started = time.perf_counter()

    def decode(file):
        dataset = model.make_dataset(read_squad(file), args.max_seq_length)
        predictions, nbest, _ = model.decode(dataset, *model.feature_logits(dataset, batch_size=64))
        return dataset.examples, nbest, predictions

    scores = score(args.task, decode, str(Path(args.split) / "squad_heldout.json"))
    return scores, trainer.global_step, train_seconds, time.perf_counter() - started


def run_hf(args):
    """HF BertForQuestionAnswering of the same size on the same features, in a plain loop."""
    import torch
    from hf_peer import hf_loader, train_within_budget
    from transformers import BertForQuestionAnswering

    from biomegatron_nemo.data.batching import FixedOrderSampler, length_sorted_order
    from biomegatron_nemo.data.qa_decoding import decode_predictions
    from biomegatron_nemo.data.squad import QADataset, read_squad
    from biomegatron_nemo.tokenizers import WordPieceTokenizer

    torch.manual_seed(args.seed)
    vocab, cased = vocabulary(args)
    tokenizer = WordPieceTokenizer(vocab, cased=cased)
    features = dict(max_seq_length=args.max_seq_length, doc_stride=args.doc_stride, max_query_length=64)
    train_ds = QADataset(read_squad(train_file(args), require_answers=True), tokenizer, training=True, **features)
    if args.task == "bioasq" and args.init == "squad":
        model = BertForQuestionAnswering.from_pretrained(str(squad_weights(args)))
    else:
        model = hf_model(BertForQuestionAnswering, tokenizer, args=args)
    args.batching = "grouped"  # the peer's best setting, as HF Trainer's group_by_length
    steps, train_seconds = train_within_budget(
        model, hf_loader(train_ds, args),
        lambda m, b: m(input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"],
                       start_positions=b["start_positions"], end_positions=b["end_positions"]).loss,
        args.lr, args.warmup_steps, args.budget_minutes, args.steps)
    if args.task == "squad":
        model.save_pretrained(str(squad_weights(args)))
    started = time.perf_counter()
    model.eval()

    def decode(file):
        ds = QADataset(read_squad(file), tokenizer, **features)
        starts, ends = {}, {}
        loader = torch.utils.data.DataLoader(ds, batch_size=64, collate_fn=ds.collate_fn,
                                             sampler=FixedOrderSampler(length_sorted_order(ds.lengths())))
        with torch.no_grad():
            for batch in loader:
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            token_type_ids=batch["token_type_ids"])
                for fi, n, s, e in zip(batch["feature_index"].tolist(), batch["attention_mask"].sum(-1).tolist(),
                                       out.start_logits, out.end_logits):
                    starts[fi], ends[fi] = s[:n].tolist(), e[:n].tolist()
        predictions, nbest, _ = decode_predictions(ds.examples, ds.features, starts, ends)
        return ds.examples, nbest, predictions

    scores = score(args.task, decode, str(Path(args.split) / "squad_heldout.json"))
    return scores, steps, train_seconds, time.perf_counter() - started


def print_table(paths):
    print("| system | head | start | task | init | budget | steps | train s | EM | F1 | SAcc | LAcc | MRR |")
    print("|" + " --- |" * 13)
    for r in result_rows(paths):
        percent = lambda k: f"{100 * r[k]:.2f}" if k in r else "–"  # noqa: E731  (BioASQ: fractions)
        squad = lambda k: f"{r[k]:.2f}" if k in r else "–"  # noqa: E731  (SQuAD: already percent)
        budget = "steps" if r.get("fixed_steps") else f"{r['budget_minutes']:g} min"
        print(f"| {r['system']} | {r.get('head', 'peer')} | {r.get('pretrained', 'random')} | {r['task']} | "
              f"{r['init']} | {budget} | {r['steps']} | {r['train_seconds']:.0f} | "
              f"{squad('exact_match')} | {squad('f1')} | {percent('strict_accuracy')} | "
              f"{percent('lenient_accuracy')} | {percent('mrr')} |")


def main(argv=None):
    args = parse_args(argv)
    if table_or_prepare(args, print_table, prepare_split):
        return
    if args.task == "bioasq" and args.init == "squad" and not squad_weights(args).exists():
        raise SystemExit(f"{squad_weights(args)} not found: run --task squad --system {args.system} first")
    run_and_record(args, run_megatron, run_hf, lambda scores: {
        "task": args.task, "init": args.init if args.task == "bioasq" else "-",
        **{k: v for k, v in scores.items() if k != "missing"}})


if __name__ == "__main__":
    main()
