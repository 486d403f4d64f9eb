"""The biomegatron command: every subcommand answers --help with its options and an example, the
training subcommands compose the same config as the example scripts, and `predict` prints the
output of whichever task a .nemo holds."""

import io
import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from biomegatron_nemo.cli import ANALYSES, DELEGATED, main
from biomegatron_nemo.runs.registry import FINETUNING
from helpers.processes import clean_env

ENCODER = {"preset": "micro", "hidden_dropout": 0.0, "attention_dropout": 0.0, "layer_spec": "portable"}


def _run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_command_lists_every_subcommand(capsys):
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    for name in [*DELEGATED, "pretrain", "finetune", "predict", "export-hf", "analyze", "samples"]:
        assert f"\n  {name} " in out, name
    assert _run(capsys, "frobnicate")[0] == 2


def test_samples_prints_the_shipped_folder(capsys):
    from biomegatron_nemo.runs.schemas import SAMPLES

    code, out, _ = _run(capsys, "samples")
    assert code == 0 and out == f"{SAMPLES}\n" and (SAMPLES / "ner" / "train.tsv").is_file()


@pytest.mark.parametrize("argv", [[name] for name in DELEGATED]
                         + [["analyze", name] for name in ANALYSES] + [["predict"], ["export-hf"], ["samples"]])
def test_each_subcommand_help_lists_options_and_an_example(capsys, argv):
    code, out, _ = _run(capsys, *argv, "--help")
    assert code == 0
    assert out.startswith(f"usage: biomegatron {' '.join(argv)}"), out[:200]
    assert "\n  -h, --help" in out  # its options are listed
    assert "example" in out


@pytest.mark.parametrize("argv", [["pretrain"], *[["finetune", t] for t in FINETUNING]])
def test_training_help_lists_every_config_key(capsys, argv):
    code, out, _ = _run(capsys, *argv, "--help")
    assert code == 0 and out.startswith(f"usage: biomegatron {' '.join(argv)} [--show-config] [KEY=VALUE ...]")
    for key in ("trainer.max_steps=", "exp_manager.resume_if_exists=", "model.optim.lr=", "parallel.seed="):
        assert f"\n  {key}" in out, key
    assert "example:\n  biomegatron " in out


def test_overrides_reach_the_composed_config(capsys):
    code, out, _ = _run(capsys, "finetune", "ner", "--show-config", "trainer.max_epochs=7", "model.optim.lr=0.5")
    cfg = OmegaConf.create(out)
    assert code == 0 and cfg.trainer.max_epochs == 7 and cfg.model.optim.lr == 0.5
    with pytest.raises(SystemExit, match="Could not override 'trainer.max_epochz'"):
        main(["finetune", "ner", "trainer.max_epochz=7"])
    with pytest.raises(SystemExit, match="unknown option --epochs"):
        main(["finetune", "ner", "--epochs", "3"])


@pytest.fixture(scope="module")
def nemo_files(tmp_path_factory, tiny_vocab, megatron_single):
    """An untrained model of each task kind, saved: predict's output shape does not need training."""
    from biomegatron_nemo.models.question_answering import QuestionAnsweringModel
    from biomegatron_nemo.models.sequence_classification import SequenceClassificationModel
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    d = tmp_path_factory.mktemp("cli")
    common = {"tokenizer": {"vocab_file": str(tiny_vocab)}, "encoder": ENCODER}
    models = {
        "ner": TokenClassificationModel(OmegaConf.create({**common, "label_map": ["O", "B-Chemical", "I-Chemical"]})),
        "re": SequenceClassificationModel(OmegaConf.create({**common, "label_map": ["CPR:3", "CPR:4", "false"]})),
        "qa": QuestionAnsweringModel(OmegaConf.create(common)),
    }
    paths = {}
    for kind, model in models.items():
        paths[kind] = d / f"{kind}.nemo"
        model.save_to(str(paths[kind]))
    return paths


def test_predict_prints_entities_relations_and_answers(nemo_files, capsys, tmp_path):
    code, out, _ = _run(capsys, "predict", str(nemo_files["ner"]), "--text", "aspirin induced asthma .", "--json")
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and row["text"] == "aspirin induced asthma ." and isinstance(row["entities"], list)
    for entity in row["entities"]:
        assert set(entity) == {"type", "start", "end", "text", "score"}
        assert row["text"][entity["start"]:entity["end"]] == entity["text"]

    sentences = tmp_path / "re.txt"
    sentences.write_text("@CHEMICAL$ inhibits @GENE$ .\n\n@GENE$ binds @CHEMICAL$ .\n")
    code, out, _ = _run(capsys, "predict", str(nemo_files["re"]), str(sentences), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 2  # the blank line is no input
    for row in rows:
        assert row["label"] in {"CPR:3", "CPR:4", "false"} and set(row["probabilities"]) == {"CPR:3", "CPR:4", "false"}
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-4
    code, out, _ = _run(capsys, "predict", str(nemo_files["re"]), str(sentences))
    assert out.splitlines()[0] == "@CHEMICAL$ inhibits @GENE$ ." and out.splitlines()[1].split()[0] in {"CPR:3", "CPR:4", "false"}

    context = "aspirin inhibits cox in the blood of rats ."
    code, out, _ = _run(capsys, "predict", str(nemo_files["qa"]), "--question", "what does aspirin inhibit ?",
                        "--context", context, "--top-k", "2", "--json")
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(row["answers"]) == 2
    for answer in row["answers"]:
        assert context[answer["start"]:answer["end"]] == answer["text"] and 0 <= answer["probability"] <= 1


def test_predict_names_a_missing_model_or_input(nemo_files, tmp_path):
    with pytest.raises(SystemExit, match=f"{tmp_path / 'none.nemo'}: no such .nemo file"):
        main(["predict", str(tmp_path / "none.nemo"), "--text", "x"])
    with pytest.raises(SystemExit, match=f"{tmp_path / 'none.txt'}: cannot read it"):
        main(["predict", str(nemo_files["ner"]), str(tmp_path / "none.txt")])


@pytest.mark.slow
def test_predict_reads_standard_input_in_a_fresh_process(nemo_files, capsys, monkeypatch):
    proc = subprocess.run([sys.executable, "-m", "biomegatron_nemo", "predict", str(nemo_files["qa"]), "-", "--json"],
                          input=json.dumps({"question": "which drug ?", "context": "aspirin was given ."}) + "\n",
                          capture_output=True, text=True, env=clean_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert row["question"] == "which drug ?" and row["answers"]
    # a line that is no JSON object: the same command, in this process (a fresh one costs seconds of imports)
    monkeypatch.setattr(sys, "stdin", io.StringIO("not json\n"))
    with pytest.raises(SystemExit, match="-:1: expected a JSON object with question and context"):
        main(["predict", str(nemo_files["qa"]), "-"])


@pytest.mark.slow
def test_finetune_runs_as_documented(tmp_path):
    """`biomegatron finetune ner` is the same run as examples/token_classification.py (a few steps)."""
    proc = subprocess.run([sys.executable, "-m", "biomegatron_nemo", "finetune", "ner", "model.encoder.preset=micro",
                           "learn_vocab_size=600", "trainer.max_steps=3", "trainer.enable_progress_bar=false",
                           f"exp_manager.exp_dir={tmp_path}", "do_testing=false"],
                          capture_output=True, text=True, env=clean_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "biomegatron_ner" / "run" / "checkpoints" / "biomegatron_ner.nemo").is_file()
