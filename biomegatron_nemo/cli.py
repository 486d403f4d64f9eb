"""The ``biomegatron`` command: one entry point for everything the library does.

Each subcommand is a thin door into a module that can also be used on its own:

* ``vocab``, ``preprocess``, ``evaluate``, ``convert``, ``export-onnx``, ``analyze break-rate`` and
  ``analyze label-bias`` hand their arguments to that module's command line (same options; the
  module form, ``python -m biomegatron_nemo...``, keeps working);
* ``pretrain`` and ``finetune {ner,re,qa}`` compose the run's Hydra config from ``conf/`` with the
  ``key=value`` overrides given and start the same run as ``examples/*.py``
  (:func:`biomegatron_nemo.runs.registry.run_task`); under ``torchrun`` use
  ``torchrun --nproc_per_node=N -m biomegatron_nemo pretrain trainer.devices=N ...``;
* ``predict`` and ``export-hf`` restore a ``.nemo`` of any task and use it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

#: subcommand -> (module with main(argv, prog), one-line summary)
DELEGATED: Dict[str, Tuple[str, str]] = {
    "vocab": ("biomegatron_nemo.tokenizers.train", "learn a WordPiece or SentencePiece vocabulary (the paper's presets)"),
    "preprocess": ("biomegatron_nemo.data.preprocess", "split, tokenize and index a pretraining corpus"),
    "evaluate": ("biomegatron_nemo.analysis.evaluate", "score prediction files with the official measures"),
    "convert": ("biomegatron_nemo.export.convert", "import Megatron-LM / NeMo 1.x / HF checkpoints, export HF"),
    "export-onnx": ("biomegatron_nemo.export.onnx", "a task model as ONNX, for serving without PyTorch"),
    "benchmark": ("biomegatron_nemo.runs.benchmark", "the paper's five benchmarks for one encoder, beside the published numbers"),
    "annotate": ("biomegatron_nemo.annotation.job", "tag a corpus with NER models: PubTator, BioC, JSON lines, HTML; resumable"),
}
ANALYSES: Dict[str, Tuple[str, str]] = {
    "break-rate": ("biomegatron_nemo.analysis.break_rate", "how often entities break into sub-tokens (Table 4)"),
    "label-bias": ("biomegatron_nemo.analysis.label_bias", "label bias of a dataset (Table 9)"),
}
#: one example per delegated command, shown under its --help
EXAMPLES = {
    "biomegatron vocab": "biomegatron vocab --input pubmed.txt --preset pubmed-30k --output vocab/",
    "biomegatron preprocess": "biomegatron preprocess --input pubmed.txt.gz --vocab-file vocab.txt --output-prefix corpus/pubmed",
    "biomegatron evaluate": "biomegatron evaluate ner --gold dev.tsv --pred dev_predictions.conll",
    "biomegatron convert": "biomegatron convert --from megatron-lm --to nemo BioMegatron345mUncased/ lm.nemo --vocab-file vocab.txt",
    "biomegatron export-onnx": "biomegatron export-onnx ner.nemo ner.onnx --check",
    "biomegatron benchmark": "biomegatron benchmark lm.nemo --samples --budget 20 --recipe small",
    "biomegatron analyze break-rate": ("biomegatron analyze break-rate --ner train.tsv --tokenizer bert=wordpiece:vocab.txt "
                                       "--tokenizer pubmed=sentencepiece:pubmed.model"),
    "biomegatron analyze label-bias": "biomegatron analyze label-bias ner train.tsv",
}


def _delegate(module: str, argv: Sequence[str], prog: str) -> int:
    try:
        result = importlib.import_module(module).main(list(argv), prog=prog)
    except SystemExit as done:  # argparse's --help (or a usage error) ends here
        if done.code == 0 and ("-h" in argv or "--help" in argv) and prog in EXAMPLES:
            print(f"\nexample:\n  {EXAMPLES[prog]}")
        raise
    return result if isinstance(result, int) else 0


# ---------------------------------------------------------------------------- Hydra runs
def _run_help(command: str, task) -> str:
    from omegaconf import OmegaConf

    from biomegatron_nemo.common.config import flatten
    from biomegatron_nemo.runs.schemas import compose_run_config

    cfg = OmegaConf.to_container(compose_run_config(task.config_name), resolve=False)
    options = "\n".join(f"  {key}={json.dumps(value, default=str)}" for key, value in flatten(cfg))
    example = ("biomegatron pretrain model.tokenizer.vocab_file=vocab.txt model.data.data_prefix=[corpus/pubmed] "
               "trainer.max_steps=1000" if task.name == "pretrain" else
               f"biomegatron finetune {task.name} trainer.max_epochs=3 model.language_model.pretrained=/models/biobert")
    return (f"usage: biomegatron {command} [--show-config] [KEY=VALUE ...]\n\n{task.summary}.\n"
            f"Hydra overrides (KEY=VALUE, +KEY=VALUE to add, ~KEY to drop) change conf/{task.config_name}.yaml; "
            "every key is documented in docs/configuration.md. Rerunning a command with "
            "exp_manager.resume_if_exists=true resumes it (docs/reliability.md).\n\n"
            f"options:\n  -h, --help       this text\n  --show-config    print the composed config (with what the pretrained "
            "checkpoint decides) and stop\n\n"
            f"config keys and their defaults:\n{options}\n\nexample:\n  {example}\n")


def _run(command: str, task_name: str, argv: Sequence[str]) -> int:
    from omegaconf import OmegaConf

    from biomegatron_nemo.runs.schemas import compose_run_config
    from biomegatron_nemo.runs.registry import TASKS, run_task

    task = TASKS[task_name]
    if "-h" in argv or "--help" in argv:
        print(_run_help(command, task))
        return 0
    show = "--show-config" in argv
    overrides = [a for a in argv if a != "--show-config"]
    flags = [a for a in overrides if a.startswith("-")]
    if flags:
        raise SystemExit(f"biomegatron {command}: unknown option {flags[0]} (config changes are KEY=VALUE; see --help)")
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose_run_config(task.config_name, overrides)
    except (HydraException, OmegaConfBaseException) as err:  # a misspelt key, a wrong type: say which
        raise SystemExit(f"biomegatron {command}: {str(err).strip()}") from None
    if show:
        from biomegatron_nemo.models.from_pretrained import apply_pretrained

        apply_pretrained(cfg.model, prefix="model.")  # what a pretrained checkpoint decides, filled in
        print(OmegaConf.to_yaml(cfg))
        return 0
    run_task(task_name, cfg)
    return 0


# ---------------------------------------------------------------------------- .nemo commands
def _read_inputs(args) -> List[str]:
    """The texts of --text, or the non-empty lines of FILE / stdin."""
    if args.text:
        return list(args.text)
    try:
        with contextlib.nullcontext(sys.stdin) if args.file == "-" else open(args.file, encoding="utf-8") as f:
            return [line.rstrip("\r\n") for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise SystemExit(f"biomegatron predict: {args.file}: cannot read it as UTF-8 text ({err})") from None


def _qa_items(args, lines: List[str]) -> List[Dict[str, str]]:
    if args.question is not None:
        if args.context is None:
            raise SystemExit("biomegatron predict: --question needs --context")
        return [{"question": args.question, "context": args.context}]
    items = []
    for number, line in enumerate(lines, start=1):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise SystemExit(f"{args.file or '-'}:{number}: expected a JSON object with question and context ({err.msg})")
        if not isinstance(item, dict) or not {"question", "context"} <= set(item):
            raise SystemExit(f"{args.file or '-'}:{number}: expected a JSON object with question and context")
        items.append({"question": item["question"], "context": item["context"]})
    return items


def _predict(argv: Sequence[str], prog: str) -> int:
    p = argparse.ArgumentParser(
        prog=prog, description="Run a fine-tuned .nemo on text: entities (NER), the relation and its probabilities "
        "(RE; entities masked as @CHEMICAL$ / @GENE$), or ranked answers (QA).",
        epilog="examples:\n  biomegatron predict ner.nemo --text \"Aspirin induced asthma.\"\n"
               "  cat sentences.txt | biomegatron predict re.nemo - --json\n"
               "  biomegatron predict qa.nemo --question \"What does aspirin inhibit?\" --context \"Aspirin inhibits COX-1.\"\n"
               "  biomegatron predict qa.nemo --file questions.jsonl   # {\"question\": ..., \"context\": ...} per line",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a .nemo written by fine-tuning (NER, RE or QA)")
    p.add_argument("file", nargs="?", help="input file, one text per line (QA: JSON lines); - for stdin")
    p.add_argument("--text", action="append", help="a text to run on (repeatable)")
    p.add_argument("--file", dest="file_option", help="same as the positional FILE")
    p.add_argument("--question", help="QA: the question (with --context)")
    p.add_argument("--context", help="QA: the passage to answer from")
    p.add_argument("--top-k", type=int, default=3, help="QA: answers per question (default 3)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="one JSON object per input line, for programs")
    args = p.parse_args(list(argv))
    args.file = args.file_option or args.file
    if args.text is None and args.file is None and args.question is None:
        p.error("give --text, --question/--context, a FILE or - (stdin)")

    from biomegatron_nemo.models.base import BioMegatronModelPT
    from biomegatron_nemo.runs.registry import task_of

    try:
        model = BioMegatronModelPT.restore_from(args.model)
    except (OSError, ValueError) as err:  # a missing, broken or foreign file: say so, no traceback
        raise SystemExit(f"biomegatron predict: {err}") from None
    task = task_of(model.eval())
    if task.predict is None:
        raise SystemExit(f"{args.model}: a {task.name} model; predict takes a NER, RE or QA model")
    if task.question_inputs:
        inputs = _qa_items(args, [] if args.question is not None else _read_inputs(args))
    else:
        inputs = _read_inputs(args)
    for row in task.predict(model, inputs, args.batch_size, args.top_k):
        print(json.dumps(row, ensure_ascii=False) if args.json else task.show(row))
    return 0


def _samples(argv: Sequence[str], prog: str) -> int:
    p = argparse.ArgumentParser(prog=prog, description="Print the folder of the sample data the package ships "
                                "(NER, ChemProt, QA, PubMed-style abstracts), for try-outs.",
                                epilog="example:\n  biomegatron analyze label-bias ner $(biomegatron samples)/ner/train.tsv",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.parse_args(list(argv))
    from biomegatron_nemo.common.files import SAMPLES  # not via runs/: that imports every model

    print(SAMPLES)
    return 0


def _export_hf(argv: Sequence[str], prog: str) -> int:
    p = argparse.ArgumentParser(prog=prog, description="Write a .nemo (any task) as a Hugging Face folder that "
                                "transformers loads without this library (weights, config, tokenizer files).",
                                epilog="example:\n  biomegatron export-hf ner.nemo ner_hf/",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a .nemo file")
    p.add_argument("out_dir", help="the folder to write")
    args = p.parse_args(list(argv))
    from biomegatron_nemo.export.hf import export_nemo_hf

    for line in export_nemo_hf(args.model, args.out_dir):
        print(line)
    return 0


# ---------------------------------------------------------------------------- dispatch
def _commands() -> Dict[str, Tuple[Callable[[Sequence[str], str], int], str]]:
    from biomegatron_nemo.runs.registry import FINETUNING, TASKS

    table = {name: ((lambda argv, prog, m=module: _delegate(m, argv, prog)), summary)
             for name, (module, summary) in DELEGATED.items()}
    table["pretrain"] = (lambda argv, prog: _run("pretrain", "pretrain", argv), TASKS["pretrain"].summary)
    table["finetune"] = (_finetune, f"fine-tune and test a task: {' | '.join(FINETUNING)}")
    table["predict"] = (_predict, "run a fine-tuned .nemo on text (entities, relations, answers)")
    table["export-hf"] = (_export_hf, "a .nemo as a Hugging Face folder")
    table["analyze"] = (_analyze, "paper analyses: break-rate | label-bias")
    table["samples"] = (_samples, "print the folder of the shipped sample data")
    return table


def _sub(argv: Sequence[str], prog: str, choices: Dict[str, str], usage: str) -> Optional[Tuple[str, List[str]]]:
    if not argv or argv[0] in ("-h", "--help"):
        rows = "\n".join(f"  {name:<12} {summary}" for name, summary in choices.items())
        print(f"usage: {prog} {usage}\n\n{rows}\n\n{prog} NAME --help: the options of each")
        return None
    if argv[0] not in choices:
        raise SystemExit(f"{prog}: unknown {usage.split()[0].lower()} {argv[0]!r}; expected one of {', '.join(choices)}")
    return argv[0], list(argv[1:])


def _finetune(argv: Sequence[str], prog: str) -> int:
    from biomegatron_nemo.runs.registry import FINETUNING

    chosen = _sub(argv, prog, {name: task.summary for name, task in FINETUNING.items()}, "TASK [KEY=VALUE ...]")
    return 0 if chosen is None else _run(f"finetune {chosen[0]}", chosen[0], chosen[1])


def _analyze(argv: Sequence[str], prog: str) -> int:
    chosen = _sub(argv, prog, {k: v[1] for k, v in ANALYSES.items()}, "ANALYSIS [OPTIONS]")
    return 0 if chosen is None else _delegate(ANALYSES[chosen[0]][0], chosen[1], f"{prog} {chosen[0]}")


#: errors a user causes (a missing or broken file, a bad key, a refused checkpoint): one line, no traceback.
#: ConfigError, DataFormatError and UnsafeCheckpointError are ValueErrors; FileNotFoundError is an OSError.
USER_ERRORS = (ValueError, OSError)
#: options of the command itself, taken out wherever they stand
VERBOSITY_FLAGS = {"-v": 1, "--verbose": 1, "--debug": 2}


def _verbosity(argv: List[str]) -> Tuple[int, List[str]]:
    levels = [VERBOSITY_FLAGS[a] for a in argv if a in VERBOSITY_FLAGS]
    return max(levels, default=0), [a for a in argv if a not in VERBOSITY_FLAGS]


def _one_line(err: BaseException) -> str:
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    from biomegatron_nemo.common.logs import configure_logging

    verbosity, argv = _verbosity(list(sys.argv[1:] if argv is None else argv))
    configure_logging(verbosity)
    commands = _commands()
    if not argv or argv[0] in ("-h", "--help"):
        rows = "\n".join(f"  {name:<12} {summary}" for name, (_, summary) in commands.items())
        print(f"usage: biomegatron [--verbose | --debug] COMMAND [ARGS]\n\nBioMegatron on megatron-core and NeMo: "
              f"vocabularies, pretraining, fine-tuning, evaluation, inference, checkpoint conversion.\n\ncommands:\n"
              f"{rows}\n\nbiomegatron COMMAND --help: the options of each, with an example.\n"
              "-v, --verbose: logs at INFO level on stderr (the default shows warnings of this library and "
              "errors of the others); --debug: DEBUG level, and tracebacks of errors.")
        return 0 if argv else 2
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"biomegatron_nemo {version('biomegatron_nemo')}")
        return 0
    if argv[0] not in commands:
        print(f"biomegatron: unknown command {argv[0]!r}; expected one of {', '.join(commands)}", file=sys.stderr)
        return 2
    prog = f"biomegatron {argv[0]}"
    try:
        return commands[argv[0]][0](argv[1:], prog)
    except USER_ERRORS as err:
        if verbosity >= 2:
            raise
        logging.getLogger(__name__).info("the error's traceback", exc_info=True)
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
