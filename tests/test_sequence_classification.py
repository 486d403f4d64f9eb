"""SequenceClassificationModel (relation extraction): overfitting, the .nemo round trip in a fresh
process, evaluate against the command-line scorer and a hand count, entity markers (single tokens,
truncation around them, new embedding rows for a pretrained encoder, TP=2 parity), bad inputs.

A micro encoder (2 layers, hidden 64) on a WordPiece vocabulary learned from the SAMPLE ChemProt
set; the first 32 rows (all six classes) fitted for 120 steps reach accuracy 1.0 on them.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.data.batching import ClassBalancedSampler
from biomegatron_nemo.data.chemprot import SequenceClassificationDataset, read_classification_tsv
from biomegatron_nemo.runs.reports import write_classification_report
from biomegatron_nemo.analysis.evaluate import main as evaluate_main
from biomegatron_nemo.models.sequence_classification import (
    SequenceClassificationModel,
    mask_entities,
)
from biomegatron_nemo.tokenizers.train import train_wordpiece

from _data_paths import SAMPLES
from helpers.processes import fresh_process_result, run_example

SENTENCES = ["@CHEMICAL$ inhibits @GENE$ activity in vitro.", "@GENE$ levels did not change after @CHEMICAL$."]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("re")
    rows = (SAMPLES / "chemprot" / "train.tsv").read_text().splitlines()
    (d / "text.txt").write_text("\n".join(r.split("\t")[1] for r in rows) + "\n")
    train_wordpiece([str(d / "text.txt")], str(d), vocab_size=600, soft_limit=True, progress=False)
    (d / "train32.tsv").write_text("\n".join(rows[:32]) + "\n")
    return d


def re_config(workdir, train_file, **overrides):
    cfg = {
        "tokenizer": {"library": "wordpiece", "vocab_file": str(workdir / "vocab.txt")},
        "encoder": {"preset": "micro", "hidden_dropout": 0.0, "attention_dropout": 0.0, "layer_spec": "portable"},
        "head": {"num_layers": 2, "hidden_size": 32, "dropout": 0.0},
        "train_ds": {"file": str(train_file), "max_seq_length": 64, "batch_size": 16},
        "optim": {"lr": 3e-3, "weight_decay": 0.0, "sched": {"warmup_ratio": 0.05}},
    }
    cfg.update(overrides)
    return OmegaConf.create(cfg)


@pytest.fixture(scope="module")
def trained(workdir):
    from biomegatron_nemo.parallel.trainer import build_trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a micro model: more threads only fight on a shared 2-core machine
    trainer = build_trainer({"max_steps": 120, "num_sanity_val_steps": 0, "enable_progress_bar": False,
                             "enable_model_summary": False})
    model = SequenceClassificationModel(re_config(workdir, workdir / "train32.tsv"), trainer=trainer)
    trainer.fit(model)
    yield model
    torch.set_num_threads(threads)


def test_overfits_32_examples_to_accuracy_1(trained, workdir):
    scores = trained.evaluate(str(workdir / "train32.tsv"))
    assert scores["accuracy"] == 1.0 and scores["f1"] == 1.0
    assert trained.label_map.labels == ["CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9", "false"]
    gold = [ex.label for ex in read_classification_tsv(workdir / "train32.tsv")]
    assert all(scores["per_class"][c]["support"] == gold.count(c) > 0 for c in scores["per_class"])


def test_markers_are_single_tokens_recorded_in_the_config(trained):
    tok = trained.tokenizer
    assert list(trained.cfg.tokenizer.special_tokens) == ["@CHEMICAL$", "@GENE$", "@CHEM-GENE$"]
    encoding = tok.encode(SENTENCES[0])
    assert encoding.tokens[0] == "@CHEMICAL$" and "@GENE$" in encoding.tokens


def test_evaluate_equals_the_command_line_scorer_and_a_hand_count(trained, tmp_path, capsys):
    dev = SAMPLES / "chemprot" / "dev.tsv"
    out, report = tmp_path / "pred.tsv", tmp_path / "report"
    scores = trained.evaluate(str(dev), output_file=str(out))
    write_classification_report(scores, report)
    lines = [line.split("\t") for line in out.read_text().splitlines()]
    gold = read_classification_tsv(dev)
    assert [r[0] for r in lines] == [g.guid for g in gold] and all(0 < float(r[2]) <= 1 for r in lines)
    # micro-F1 over the positive classes, counted by hand from the written file
    pred = [r[1] for r in lines]
    tp = sum(p == g.label != "false" for p, g in zip(pred, gold))
    n_pred, n_gold = sum(p != "false" for p in pred), sum(g.label != "false" for g in gold)
    precision, recall = tp / n_pred, tp / n_gold
    assert scores["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    capsys.readouterr()
    assert evaluate_main(["re", "--gold", str(dev), "--pred", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["f1"] == pytest.approx(scores["f1"])
    assert (report / "confusion_matrix.png").stat().st_size > 1000
    table = (report / "confusion_matrix.tsv").read_text().splitlines()
    assert len(table) == 7 and sum(int(x) for row in table[1:] for x in row.split("\t")[1:]) == len(gold)


@pytest.mark.slow
def test_nemo_round_trip_in_a_fresh_process(trained, tmp_path):
    path = tmp_path / "re.nemo"
    trained.save_to(str(path))
    before = trained.predict(SENTENCES)
    assert before[0]["label"] in trained.label_map.labels
    assert sum(before[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    code = ("import json, sys\n"
            "from biomegatron_nemo.models.sequence_classification import SequenceClassificationModel\n"
            "m = SequenceClassificationModel.restore_from(sys.argv[1])\n"
            "print('RESULT=' + json.dumps(m.predict(json.loads(sys.argv[2]))))\n")
    after = fresh_process_result(code, path, json.dumps(SENTENCES), cwd=tmp_path)
    assert after == before


def test_predict_spans_masks_the_entities(trained):
    text = "Aspirin inhibits COX-2 activity in vitro."
    assert mask_entities(text, (0, 7), (17, 22), ("@CHEMICAL$", "@GENE$")) == SENTENCES[0]
    assert trained.predict_spans([(text, (0, 7), (17, 22))]) == trained.predict([SENTENCES[0]])
    with pytest.raises(ValueError, match="must be non-empty, inside the text"):
        mask_entities(text, (0, 7), (5, 9), ("@CHEMICAL$", "@GENE$"))
    with pytest.raises(ValueError, match=r"sentences\[1\] is empty"):
        trained.predict(["@CHEMICAL$ and @GENE$", "  "])
    with pytest.raises(TypeError, match=r"sentences\[0\] is NoneType"):
        trained.predict([None])


def test_long_sentences_keep_both_markers(trained):
    filler = " ".join(["the"] * 80)
    rows = read_classification_tsv_from([f"x1\t{filler} @CHEMICAL$ binds @GENE$ .\tCPR:3",
                                         f"x2\t@CHEMICAL$ {filler} @GENE$\tfalse"], trained)
    ds = trained.make_dataset(rows, 32)
    tokens = [trained.tokenizer.id_to_token(i) for i in ds[0]["input_ids"]]
    assert len(tokens) == 32 and "@CHEMICAL$" in tokens and "@GENE$" in tokens
    assert ds.n_truncated == 2 and ds.n_markers_cut == 1  # x2's markers are 80 tokens apart


def read_classification_tsv_from(lines, model, tmp=Path("/tmp")):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False, dir=tmp) as f:
        f.write("\n".join(lines) + "\n")
    try:
        return model.read_examples(f.name)
    finally:
        os.unlink(f.name)


def test_bad_inputs_name_file_and_line(trained, tmp_path):
    cases = {
        "unknown_label.tsv": ("a\t@CHEMICAL$ x @GENE$\tCPR:3\nb\t@CHEMICAL$ y @GENE$\tCPR:7\n", 2, "label 'CPR:7' is not one of"),
        "no_marker.tsv": ("a\t@CHEMICAL$ x @GENE$\tCPR:3\nb\tno markers here\tfalse\n", 2, "expected two entity markers"),
        "empty.tsv": ("a\t@CHEMICAL$ x @GENE$\tCPR:3\nb\t  \tfalse\n", 2, "empty sentence"),
        "columns.tsv": ("a\t@CHEMICAL$ x @GENE$\tCPR:3\nb\t@CHEMICAL$ y @GENE$\tfalse\textra\n", 2, "expected 3 tab-separated columns"),
    }
    for name, (text, line, fragment) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(DataFormatError) as err:
            trained.evaluate(str(path))
        assert str(err.value).startswith(f"{path}:{line}:") and fragment in str(err.value), name
    # with missing_markers=warn the sentence is kept and counted
    examples = trained.read_examples(str(tmp_path / "no_marker.tsv"))
    ds = SequenceClassificationDataset(examples, trained.tokenizer, trained.label_map.labels, missing_markers="warn")
    assert ds.n_missing_markers == 1 and len(ds) == 2


def test_class_balanced_sampler_draws_every_class_equally():
    targets = [0] * 90 + [1] * 9 + [2]
    sampler = ClassBalancedSampler(targets, seed=3)
    sampler.set_epoch(0)
    draws = list(sampler)
    counts = [sum(targets[i] == c for i in draws) for c in range(3)]
    assert len(draws) == 100 and all(20 <= n <= 47 for n in counts)
    again = ClassBalancedSampler(targets, seed=3)
    again.set_epoch(0)
    assert draws == list(again)  # seeded by (seed, epoch): the same on every rank and after a resume
    again.set_epoch(1)
    assert draws != list(again)


@pytest.mark.slow
def test_a_pretrained_encoder_gets_embedding_rows_for_the_markers(workdir, tmp_path, megatron_single):
    """The pretrained vocabulary has no markers: its rows are kept, the markers' rows are new,
    and TP=2 gives the TP=1 logits of the grown model (tests/helpers/relation.py)."""
    from biomegatron_nemo.checkpoints.weights import read_nemo_weights
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel
    from helpers.distributed import run_distributed
    from helpers.relation import spawned_logits

    pretrained = BioMegatronPretrainingModel(OmegaConf.create({
        "tokenizer": {"vocab_file": str(workdir / "vocab.txt")}, "encoder": {"preset": "micro"}}))
    lm = tmp_path / "lm.nemo"
    pretrained.save_to(str(lm))
    old = read_nemo_weights(str(lm))["encoder.embedding.word_embeddings.weight"]
    cfg = re_config(workdir, workdir / "train32.tsv", language_model={"nemo_file": str(lm)})
    model = SequenceClassificationModel(cfg)
    new = model.layout_free_state_dict()["encoder.embedding.word_embeddings.weight"]
    assert new.shape[0] == old.shape[0] + 3 == model.tokenizer.vocab_size
    assert torch.equal(new[: old.shape[0]], old)
    assert 0.005 < float(new[old.shape[0]:].std()) < 0.05  # N(0, 0.02), not zeros or copies
    # the grown model at TP=1 and TP=2
    config_file = tmp_path / "re.yaml"
    OmegaConf.save(cfg, config_file)
    run_distributed(spawned_logits, 2, str(config_file), SENTENCES, str(tmp_path / "tp2.pt"))
    tp2 = torch.load(tmp_path / "tp2.pt", weights_only=True)
    batch = _batch(model, SENTENCES)
    with torch.no_grad():
        model.eval()
        tp1 = model(**model.forward_inputs(batch)).logits
    torch.testing.assert_close(tp2, tp1, atol=1e-5, rtol=0)


def _batch(model, sentences):
    from biomegatron_nemo.data.chemprot import ClassificationExample

    ds = model.make_dataset([ClassificationExample(str(i), s, None) for i, s in enumerate(sentences)])
    return ds.collate_fn([ds[i] for i in range(len(ds))])


def test_oversampling_splits_one_draw_sequence_over_data_parallel_ranks():
    """Each data-parallel rank takes its share of the one sequence the seeded sampler draws."""
    targets = [0] * 90 + [1] * 9 + [2]
    whole = list(ClassBalancedSampler(targets, seed=3))
    shares = [list(ClassBalancedSampler(targets, seed=3, num_replicas=2, rank=r)) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 50
    assert shares[0] == whole[0::2] and shares[1] == whole[1::2]


@pytest.mark.slow
def test_the_example_script_runs_as_documented(tmp_path):
    """examples/sequence_classification.py on the shipped samples: trains, tests, writes its files;
    then tests the saved .nemo again with do_training=false restore_from=..."""
    common = [f"exp_manager.exp_dir={tmp_path}", "trainer.enable_progress_bar=false"]
    # one epoch: the files and the restored run are checked, not the scores (each epoch validates and checkpoints)
    first = run_example("sequence_classification", ["trainer.max_epochs=1", *common], cwd=tmp_path)
    run = tmp_path / "biomegatron_re" / "run"
    assert "micro" in first.stdout and (run / "test_report" / "confusion_matrix.png").exists()
    rows = (run / "test_predictions.tsv").read_text().splitlines()
    assert len(rows) == 26 and all(len(r.split("\t")) == 3 for r in rows)
    nemo = run / "checkpoints" / "biomegatron_re.nemo"
    run_example("sequence_classification", ["do_training=false", f"restore_from={nemo}", *common,
                                            "exp_manager.version=again"], cwd=tmp_path)
    assert (tmp_path / "biomegatron_re" / "again" / "test_predictions.tsv").read_text().splitlines() == rows


def test_oversampling_and_token_budget_batches_are_refused_together():
    from biomegatron_nemo.common.config import validate_config
    from biomegatron_nemo.common.errors import ConfigError
    from biomegatron_nemo.data.chemprot import RelationDataConfig

    validate_config({"file": "t.tsv", "max_tokens": 4096}, RelationDataConfig, where="re")
    with pytest.raises(ConfigError, match="re: oversample: oversample draws single examples; it cannot be combined"):
        validate_config({"file": "t.tsv", "oversample": True, "max_tokens": 4096}, RelationDataConfig, where="re")
