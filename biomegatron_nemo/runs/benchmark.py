"""``biomegatron benchmark MODEL``: the paper's benchmark suite for one encoder, in one command.

The encoder (a ``.nemo`` of this library, a Megatron-LM checkpoint folder or a Hugging Face
folder) is fine-tuned on BC5CDR-chem, BC5CDR-disease, NCBI-disease (entity F1), ChemProt
(micro-F1 over the five CPR classes) and BioASQ factoid (strict / lenient accuracy, MRR; with
``--squad-train`` after a SQuAD stage, as the paper does), each scored with its official measure on its
test file when one is given, else on its development file. One table prints the scores beside the
published BioBERT / PubMedBERT / BioMegatron numbers (:mod:`biomegatron_nemo.analysis.published`),
and is written as ``benchmark.md`` and ``benchmark.json``.

Data: ``--data DIR`` in the layout of docs/data_sources.md (``ner/BC5CDR-chem/train.tsv`` ...), or
``--samples`` for the small files the package ships (a try-out: every NER set uses the NER
sample). ``--budget STEPS`` caps each fine-tuning run (CPU try-outs); ``--recipe`` picks the
epochs and learning rates (``paper``: docs/recipes.md; ``small``: a few epochs).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Benchmark:
    name: str  #: as the paper names it
    task: str  #: ner | re | qa (runs/registry.py)
    metrics: tuple  #: the keys of the model's evaluate() scores, the first is the headline
    train: str  #: paths relative to --data
    dev: str
    test: Optional[str] = None
    golden: Optional[str] = None  #: BioASQ: the official golden file of the test file


SUITE = [
    Benchmark("BC5CDR-chem", "ner", ("f1",), "ner/BC5CDR-chem/train.tsv", "ner/BC5CDR-chem/devel.tsv",
              "ner/BC5CDR-chem/test.tsv"),
    Benchmark("BC5CDR-disease", "ner", ("f1",), "ner/BC5CDR-disease/train.tsv", "ner/BC5CDR-disease/devel.tsv",
              "ner/BC5CDR-disease/test.tsv"),
    Benchmark("NCBI-disease", "ner", ("f1",), "ner/NCBI-disease/train.tsv", "ner/NCBI-disease/devel.tsv",
              "ner/NCBI-disease/test.tsv"),
    Benchmark("ChemProt", "re", ("f1",), "chemprot/train.tsv", "chemprot/dev.tsv", "chemprot/test.tsv"),
    Benchmark("BioASQ-7b-factoid", "qa", ("strict_accuracy", "lenient_accuracy", "mrr"),
              "bioasq/BioASQ-train-factoid-7b.json", "bioasq/BioASQ-dev-factoid-7b.json",
              "bioasq/BioASQ-test-factoid-6b-1.json", "bioasq/6B1_golden.json"),
]
#: the shipped samples standing in for every file (--samples)
SAMPLE_FILES = {"ner": ("ner/train.tsv", "ner/dev.tsv"), "re": ("chemprot/train.tsv", "chemprot/dev.tsv"),
                "qa": ("qa/train.json", "qa/dev.json")}
_PAPER_CLASSIFIER = ["model.head.num_layers=2", "model.head.hidden_size=1024", "model.head.dropout=0.5",
                     "model.loss.name=cross_entropy", "model.optim.name=adam", "model.optim.lr=5e-5",
                     "trainer.max_epochs=30"]
_PAPER_QA = ["model.head.num_layers=2", "model.head.hidden_size=2048", "model.head.dropout=0.1",
             "model.optim.name=adam", "model.optim.lr=3e-5"]
#: recipe -> benchmark name (or task) -> Hydra overrides; "paper" is docs/recipes.md's (the paper's
#: values, the library's defaults where it gives none); "small" a few fast epochs for try-outs
RECIPES: Dict[str, Dict[str, List[str]]] = {
    "paper": {"BC5CDR-chem": _PAPER_CLASSIFIER + ["model.labelling_mode=all_subtokens"],
              "BC5CDR-disease": _PAPER_CLASSIFIER + ["model.labelling_mode=all_subtokens"],
              "NCBI-disease": _PAPER_CLASSIFIER + ["model.labelling_mode=first_subtoken"],
              "ChemProt": _PAPER_CLASSIFIER,
              "SQuAD-v1.1": _PAPER_QA + ["trainer.max_epochs=10"],
              "BioASQ-7b-factoid": _PAPER_QA + ["trainer.max_epochs=30"]},
    "small": {task: ["trainer.max_epochs=3", "model.optim.lr=1e-3"] for task in ("ner", "re", "qa")},
}


def recipe_overrides(recipe: str, bench: "Benchmark") -> List[str]:
    table = RECIPES[recipe]
    return list(table.get(bench.name, table.get(bench.task, [])))


@dataclass
class Score:
    benchmark: str
    metric: str
    value: float
    split: str
    files: Dict[str, str] = field(default_factory=dict)


def _files(bench: Benchmark, data: Optional[Path], samples: Optional[Path]) -> Dict[str, Optional[str]]:
    if samples is not None:
        train, dev = SAMPLE_FILES[bench.task]
        return {"train": str(samples / train), "dev": str(samples / dev), "test": None, "golden": None}
    files = {"train": data / bench.train, "dev": data / bench.dev,
             "test": data / bench.test if bench.test else None, "golden": data / bench.golden if bench.golden else None}
    if not files["train"].is_file():
        raise FileNotFoundError(f"{files['train']}: the {bench.name} train file is missing (layout: docs/data_sources.md)")
    present = {k: str(v) if v is not None and v.is_file() else None for k, v in files.items()}
    if present["dev"] is None and present["test"] is None:
        raise FileNotFoundError(f"{files['dev']}: {bench.name} needs a development or a test file")
    return present


def _squad_files(train: str, dev: Optional[str]) -> Dict[str, Optional[str]]:
    for name, path in (("--squad-train", train), ("--squad-dev", dev)):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"{path}: the SQuAD file of {name} does not exist")
    return {"train": train, "dev": dev, "test": None, "golden": None}


def run_one(bench: Benchmark, pretrained: str, files: Dict, out: Path, recipe: str, budget: Optional[int],
            extra: Sequence[str] = ()) -> Tuple[List[Score], str]:
    """Fine-tune from the checkpoint ``pretrained`` (any kind) on one benchmark and score it on its
    test file, else its development file (neither: no score); ``extra``: more Hydra overrides.
    Returns the scores and the saved model."""
    from biomegatron_nemo.runs.launch import start_run
    from biomegatron_nemo.runs.schemas import compose_run_config
    from biomegatron_nemo.runs.registry import TASKS

    task = TASKS[bench.task]
    overrides = [f"model.train_ds.file={files['train']}", f"model.validation_ds.file={files['dev'] or 'null'}",
                 *recipe_overrides(recipe, bench), f"exp_manager.exp_dir={out}",
                 f"name={bench.name.replace(' ', '_')}", "exp_manager.resume_if_exists=false",
                 "trainer.enable_progress_bar=true", f"model.language_model.pretrained={pretrained}", *extra]
    if budget:
        overrides.append(f"trainer.max_steps={budget}")
    cfg = compose_run_config(task.config_name, overrides)
    trainer, log_dir = start_run(cfg)
    model = task.model_class(cfg.model, trainer=trainer)
    trainer.fit(model)
    saved = str(log_dir / "model.nemo")
    model.save_to(saved)
    split = "test" if files["test"] else "dev" if files["dev"] else None
    if split is None:
        return [], saved
    kwargs = {"golden_file": files["golden"]} if bench.task == "qa" and files["golden"] else {}
    where = {"output_dir": str(log_dir / f"{split}_predictions")} if bench.task == "qa" else \
        {"output_file": str(log_dir / f"{split}_predictions.txt")}
    scores = model.evaluate(files[split], **where, **kwargs)
    return [Score(bench.name, metric, round(100 * float(scores[metric]), 2), split, {**files, "model": saved})
            for metric in bench.metrics], saved


#: the published model families shown beside ours, one column each
FAMILIES = ("BioBERT", "PubMedBERT", "BioMegatron")


def _published_cell(published: Sequence, score: Score, family: str, squad_first: bool) -> str:
    """The family's best published figure for this benchmark and metric, with its size (BioASQ:
    only figures obtained the way this run trained — after SQuAD or directly)."""
    found = [p for p in published if p.task == score.benchmark and p.metric == score.metric
             and p.model.split("-")[0] == family]
    if score.benchmark == "BioASQ-7b-factoid":
        found = [p for p in found if p.setting.startswith("fine-tuned on SQuAD first") == squad_first]
    if not found:
        return ""
    top = max(found, key=lambda p: p.value)
    return f"{top.value:.2f} ({top.parameters})"


def table(scores: Sequence[Score], published: Sequence, squad_first: bool = False) -> str:
    """Our scores beside the best published ones of each family, one Markdown table."""
    lines = ["| benchmark | metric | split | this encoder | " + " | ".join(FAMILIES) + " |",
             "|" + " --- |" * (4 + len(FAMILIES))]
    for s in scores:
        cells = [_published_cell(published, s, family, squad_first) for family in FAMILIES]
        lines.append(f"| {s.benchmark} | {s.metric} | {s.split} | {s.value:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None, prog=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog or "python -m biomegatron_nemo.runs.benchmark", description=__doc__.split("\n\n")[0],
                                epilog="examples:\n  biomegatron benchmark lm.nemo --data ../shared/data --output bench/\n"
                                       "  biomegatron benchmark lm.nemo --samples --budget 20 --recipe small   # a CPU try-out",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the encoder: a .nemo, a Megatron-LM checkpoint folder or a Hugging Face folder")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--data", type=Path, help="folder with the benchmark files (docs/data_sources.md)")
    where.add_argument("--samples", action="store_true", help="the shipped sample files (a try-out)")
    p.add_argument("--output", type=Path, default=Path("benchmark"), help="folder for runs and the tables")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="paper", help="epochs and learning rates")
    p.add_argument("--budget", type=int, help="at most this many optimizer steps per task (CPU try-outs)")
    p.add_argument("--tasks", nargs="+", choices=[b.name for b in SUITE], help="a subset (default: all five)")
    p.add_argument("--vocab-file", help="the vocabulary of a Megatron-LM checkpoint (it holds none)")
    p.add_argument("--squad-train", help="SQuAD v1.1 training JSON: fine-tune on it first, then BioASQ from "
                                         "that model, as the paper does")
    p.add_argument("--squad-dev", help="SQuAD v1.1 development JSON, scored (EM/F1) after the SQuAD stage")
    return p.parse_args(argv)


def main(argv=None, prog=None) -> int:
    args = parse_args(argv, prog)
    from biomegatron_nemo.analysis.published import PUBLISHED
    from biomegatron_nemo.checkpoints.pretrained import resolve_pretrained
    from biomegatron_nemo.runs.schemas import SAMPLES

    chosen = [b for b in SUITE if not args.tasks or b.name in args.tasks]
    # everything a run will read is checked before the first one starts (each takes minutes to hours)
    files = {b.name: _files(b, args.data, SAMPLES if args.samples else None) for b in chosen}
    squad = _squad_files(args.squad_train, args.squad_dev) if args.squad_train else None
    if args.vocab_file and not Path(args.vocab_file).is_file():
        raise FileNotFoundError(f"{args.vocab_file}: the vocabulary file of --vocab-file does not exist")
    checkpoint = resolve_pretrained(args.model, vocab_file=args.vocab_file)  # converted here, once
    for line in checkpoint.summary:
        print(f"  {line}")
    pretrained = args.model
    args.output.mkdir(parents=True, exist_ok=True)
    vocab = [f"model.tokenizer.vocab_file={args.vocab_file}"] if args.vocab_file else []
    scores: List[Score] = []
    squad_model = None
    if squad and any(b.task == "qa" for b in chosen):
        print("\n=== SQuAD v1.1 (the first stage of BioASQ)", flush=True)
        stage = Benchmark("SQuAD-v1.1", "qa", ("exact_match", "f1"), args.squad_train, args.squad_dev or "")
        monitor = ["exp_manager.checkpoint_callback_params.monitor=val_f1"] if args.squad_dev else []
        found, squad_model = run_one(stage, pretrained, squad, args.output / "runs", args.recipe, args.budget,
                                     ["model.dataset=squad", *monitor, *vocab])
        scores += found
    for bench in chosen:
        print(f"\n=== {bench.name}", flush=True)
        start, extra = pretrained, ["model.dataset=bioasq"] if bench.task == "qa" else []
        if bench.task == "qa" and squad_model:
            start, extra = squad_model, extra + ["model.init_heads=true"]
        scores += run_one(bench, start, files[bench.name], args.output / "runs", args.recipe, args.budget,
                          extra + (vocab if start == pretrained else []))[0]
    shown = table(scores, PUBLISHED, squad_first=bool(args.squad_train))
    note = "sample files (a try-out, not the benchmark)" if args.samples else f"data from {args.data}"
    sources = sorted({f"{p.source.paper}, {p.source.table}: {p.source.url}" for p in PUBLISHED})
    (args.output / "benchmark.md").write_text(f"# Benchmark of {args.model}\n\n{note}; recipe {args.recipe}"
                                             f"{f', at most {args.budget} steps a task' if args.budget else ''}.\n\n"
                                             f"{shown}\n\nPublished figures (the best of each family, its size in "
                                             "brackets), test sets as the papers report them:\n"
                                             + "".join(f"- {line}\n" for line in sources), encoding="utf-8")
    (args.output / "benchmark.json").write_text(json.dumps({"model": str(args.model), "recipe": args.recipe,
                                                            "budget": args.budget, "samples": args.samples,
                                                            "squad_first": bool(args.squad_train),
                                                            "scores": [asdict(s) for s in scores],
                                                            "published": [asdict(p) for p in PUBLISHED]}, indent=1))
    print(f"\n{shown}\n\ntables: {args.output / 'benchmark.md'}, {args.output / 'benchmark.json'}")
    return 0
