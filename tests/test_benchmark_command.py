"""`biomegatron benchmark` runs the paper's five benchmarks end to end for one encoder — here a
micro encoder on the shipped samples with a tiny budget — and prints one table beside the
published numbers, also written as Markdown and JSON."""

import json
import tarfile

import yaml

from omegaconf import OmegaConf

from biomegatron_nemo.runs.benchmark import SUITE
from biomegatron_nemo.cli import main
from biomegatron_nemo.runs.schemas import SAMPLES

ENCODER = {"preset": "micro", "layer_spec": "portable"}


def test_the_suite_runs_every_task_and_tables_them_beside_the_published_numbers(tmp_path, tiny_vocab,
                                                                               megatron_single, capsys):
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

    encoder = tmp_path / "lm.nemo"
    BioMegatronPretrainingModel(OmegaConf.create({"tokenizer": {"vocab_file": str(tiny_vocab)},
                                                  "encoder": ENCODER})).save_to(str(encoder))
    out = tmp_path / "bench"
    assert main(["benchmark", str(encoder), "--samples", "--budget", "2", "--recipe", "small",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "benchmark.json").read_text())
    names = {s["benchmark"] for s in record["scores"]}
    assert names == {b.name for b in SUITE}
    for score in record["scores"]:
        assert 0.0 <= score["value"] <= 100.0 and score["split"] == "dev"
    table = (out / "benchmark.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert all(row in printed for row in rows)  # the printed table is the written one
    assert rows[0] == "| benchmark | metric | split | this encoder | BioBERT | PubMedBERT | BioMegatron |"
    assert len(rows[1:]) == sum(len(b.metrics) for b in SUITE)
    # beside ours: the paper's best BioMegatron figure (BioASQ: fine-tuned directly, as this run was)
    assert "| BC5CDR-chem | f1 | dev |" in table and "| 92.90 (345m) |" in table  # Table 1
    assert "| ChemProt | f1 | dev |" in table and "| 74.80 (110m) | 75.60 (110m) | 77.00 (345m) |" in table
    bioasq = next(r for r in rows if r.startswith("| BioASQ-7b-factoid | strict_accuracy |"))
    assert bioasq.endswith("|  |  | 40.60 (1.2b) |"), bioasq  # Table 4; BioBERT's are after SQuAD
    assert {p["task"] for p in record["published"]} >= {b.name for b in SUITE}

    # the paper's QA order: SQuAD first, then BioASQ from that model; the published column follows
    squad_out = tmp_path / "squad_first"
    sample = SAMPLES / "qa"
    assert main(["benchmark", str(encoder), "--samples", "--budget", "2", "--recipe", "small", "--output",
                 str(squad_out), "--tasks", "BioASQ-7b-factoid", "--squad-train", str(sample / "train.json"),
                 "--squad-dev", str(sample / "dev.json")]) == 0
    record = json.loads((squad_out / "benchmark.json").read_text())
    assert [(s["benchmark"], s["metric"]) for s in record["scores"]] == [
        ("SQuAD-v1.1", "exact_match"), ("SQuAD-v1.1", "f1"), ("BioASQ-7b-factoid", "strict_accuracy"),
        ("BioASQ-7b-factoid", "lenient_accuracy"), ("BioASQ-7b-factoid", "mrr")]
    bioasq = next(r for r in (squad_out / "benchmark.md").read_text().splitlines()
                  if r.startswith("| BioASQ-7b-factoid | strict_accuracy |"))
    assert bioasq.endswith("| 42.80 (345m) |  | 47.40 (1.2b) |"), bioasq  # Table 2
    # the BioASQ model was initialised from the SQuAD model, heads included
    with tarfile.open(record["scores"][2]["files"]["model"]) as tar:
        config = yaml.safe_load(tar.extractfile(next(m for m in tar if m.name.endswith("model_config.yaml"))))
    assert config["language_model"]["pretrained"] == record["scores"][0]["files"]["model"]
    assert config["init_heads"] is True


def test_the_paper_recipe_names_only_keys_the_configs_have():
    from biomegatron_nemo.runs.benchmark import Benchmark, recipe_overrides
    from biomegatron_nemo.runs.schemas import compose_run_config
    from biomegatron_nemo.runs.registry import TASKS

    squad = Benchmark("SQuAD-v1.1", "qa", ("f1",), "", "")
    for bench in [*SUITE, squad]:
        overrides = recipe_overrides("paper", bench)
        assert any(o.startswith("trainer.max_epochs=") for o in overrides), bench.name
        cfg = compose_run_config(TASKS[bench.task].config_name, overrides)  # a misspelt key raises
        assert cfg.model.optim.name == "adam"
