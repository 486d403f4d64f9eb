"""Proof that a change to the code leaves training and saved models as they were: the losses of the
first optimizer steps of NER, relation extraction, QA and masked-LM pretraining, and the outputs of
the ``.nemo`` files those runs save.

    python benchmarks/first_steps.py --record before/              # losses, .nemo files, their outputs
    python benchmarks/first_steps.py --record after/               # ... then on the changed code
    cmp before/losses.json after/losses.json                        # bit-identical losses
    python benchmarks/first_steps.py --check before/               # the old .nemo files restore on the
                                                                    # changed code, to the same outputs

Each run trains a micro encoder (2 layers, hidden 64, dropout on) from seed 1234 on the samples the
package ships, with the BERT uncased vocabulary, one thread, through Lightning, for ``--steps``
steps. The configs are written here as plain dictionaries (not through the run layer) so that the
same script runs on both sides of a change that moves code. Outputs are the public ``predict``
results (entities with scores, relation probabilities, ranked answers) and, for pretraining, the
masked-LM logits of a sentence (summed over the vocabulary, per position).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VOCAB = SHARED / "vocab" / "bert-base-uncased-vocab.txt"
ENCODER = {"preset": "micro", "hidden_dropout": 0.1, "attention_dropout": 0.1, "layer_spec": "portable"}
OPTIM = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01,
         "sched": {"name": "WarmupHoldPolicy", "warmup_steps": 5, "hold_steps": 10**9}}
TEXTS = {"ner": ["Cisplatin induced nephrotoxicity in rats.", "Warfarin caused hemorrhage after aspirin."],
         "re": ["@CHEMICAL$ inhibits @GENE$ in liver cells.", "@GENE$ was not affected by @CHEMICAL$ ."],
         "qa": [{"question": "What does aspirin inhibit?", "context": "Aspirin inhibits COX-1 in platelets."}]}


def samples() -> Path:
    import biomegatron_nemo

    return Path(biomegatron_nemo.__file__).resolve().parent / "samples"


def config(task: str, work: Path) -> dict:
    common = {"seed": 1234, "tokenizer": {"library": "wordpiece", "vocab_file": str(VOCAB), "cased": False},
              "encoder": dict(ENCODER), "optim": dict(OPTIM)}
    if task == "ner":
        return {**common, "train_ds": {"file": str(samples() / "ner" / "train.tsv"), "batch_size": 16,
                                       "max_seq_length": 64}}
    if task == "re":
        return {**common, "train_ds": {"file": str(samples() / "chemprot" / "train.tsv"), "batch_size": 8,
                                       "max_seq_length": 64}}
    if task == "qa":
        return {**common, "dataset": "bioasq", "train_ds": {"file": str(samples() / "qa" / "train.json"),
                                                            "batch_size": 8, "max_seq_length": 128}}
    return {**common, "data": {"data_prefix": [str(corpus(work))], "seq_length": 64, "split": "90,10,0"},
            "train_ds": {"micro_batch_size": 8}, "validation_ds": {"micro_batch_size": 8, "num_samples": 16}}


def corpus(work: Path) -> Path:
    """The shipped PubMed sample, preprocessed once into ``work`` with the BERT vocabulary."""
    from biomegatron_nemo.data.preprocess import preprocess_corpus

    prefix = work / "corpus" / "pubmed_sample"
    if not prefix.with_suffix(".idx").is_file():
        prefix.parent.mkdir(parents=True, exist_ok=True)
        preprocess_corpus([samples() / "pubmed_sample.txt"], prefix,
                          {"library": "wordpiece", "vocab_file": str(VOCAB)}, progress=False)
    return prefix


def model_class(task: str):
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel
    from biomegatron_nemo.models.question_answering import QuestionAnsweringModel
    from biomegatron_nemo.models.sequence_classification import SequenceClassificationModel
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    return {"ner": TokenClassificationModel, "re": SequenceClassificationModel, "qa": QuestionAnsweringModel,
            "pretrain": BioMegatronPretrainingModel}[task]


def outputs(task: str, model):
    """What a user reads from the model: predictions with their scores, or masked-LM logits."""
    import torch

    model.eval()
    if task == "qa":
        return model.predict(TEXTS["qa"], top_k=3)
    if task in TEXTS:
        return model.predict(TEXTS[task])
    tok = model.tokenizer
    ids = [tok.cls_id] + tok.encode("Cisplatin induced nephrotoxicity in rats.").ids + [tok.sep_id]
    batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
             "token_type_ids": torch.zeros(1, len(ids), dtype=torch.long)}
    with torch.no_grad():
        hidden = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return model.mlm_logits(hidden)[0, :, : tok.vocab_size].sum(-1).tolist()


def train(task: str, steps: int, work: Path):
    from lightning.pytorch import Callback
    from omegaconf import OmegaConf

    from biomegatron_nemo.parallel.trainer import build_trainer

    losses = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, out, batch, batch_idx):
            losses.append(float(out["loss"] if isinstance(out, dict) else out))

    trainer = build_trainer({"max_steps": steps, "limit_val_batches": 0, "num_sanity_val_steps": 0,
                             "gradient_clip_val": 1.0, "enable_progress_bar": False, "enable_model_summary": False},
                            callbacks=[Record()])
    model = model_class(task)(OmegaConf.create(config(task, work)), trainer=trainer)
    trainer.fit(model)
    return model, losses


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--tasks", nargs="+", default=["ner", "re", "qa", "pretrain"])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--record", type=Path, help="folder for losses.json, TASK.nemo and outputs.json")
    where.add_argument("--check", type=Path, help="a --record folder: restore its .nemo files, compare outputs")
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from biomegatron_nemo.parallel import initialize_megatron

    initialize_megatron(1, 1)
    if args.check:
        recorded = json.loads((args.check / "outputs.json").read_text())
        differ = []
        for task in args.tasks:
            model = model_class(task).restore_from(str(args.check / f"{task}.nemo"))
            if outputs(task, model) != recorded[task]:
                differ.append(task)
        print(json.dumps({"restored": args.tasks, "outputs_differ": differ}))
        return 1 if differ else 0
    args.record.mkdir(parents=True, exist_ok=True)
    losses, results = {}, {}
    for task in args.tasks:
        model, losses[task] = train(task, args.steps, args.record)
        model.save_to(str(args.record / f"{task}.nemo"))
        results[task] = outputs(task, model)
    (args.record / "losses.json").write_text(json.dumps(losses, indent=1))
    (args.record / "outputs.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({task: [round(v, 6) for v in values[:3]] + ["..."] for task, values in losses.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
