"""TokenClassificationModel: overfitting in both labelling modes, validation F1, evaluate/predict,
the .nemo round trip in a fresh process, bad inputs, and the losses against hand-computed values.

A micro encoder (2 layers, hidden 64) on a WordPiece vocabulary learned from the SAMPLE NER set,
windows of 16 sub-tokens (so sentences really are split and mapped back), 200 steps on 32
sentences: entity F1 = 1.0 on them proves labels, alignment, windows and decoding agree.
"""

import json
import math
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from biomegatron_nemo.data.conll import read_conll
from biomegatron_nemo.common.errors import DataFormatError
from biomegatron_nemo.encoder.losses import (
    balanced_class_weights,
    cross_entropy_normalizer,
    dice_loss,
    summed_cross_entropy,
)
from biomegatron_nemo.models.token_classification import TokenClassificationModel
from biomegatron_nemo.tokenizers.train import train_wordpiece

from _data_paths import SAMPLES
from helpers.processes import fresh_process_result

MODES = ["first_subtoken", "all_subtokens"]
TEXTS = ["Cisplatin induced nephrotoxicity in rats.", "", "   ",
         "Patients with epilepsy were treated with valproic acid for 3 weeks."]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A vocabulary learned on the sample train set and its first 32 sentences as a file."""
    d = tmp_path_factory.mktemp("ner")
    train = read_conll(SAMPLES / "ner" / "train.tsv")
    (d / "text.txt").write_text("\n".join(" ".join(s.words) for s in train) + "\n")
    # 1000 pieces: entity words still split into several sub-tokens, yet a micro model fits fast
    train_wordpiece([str(d / "text.txt")], str(d), vocab_size=1000, soft_limit=True, progress=False)
    blocks = (SAMPLES / "ner" / "train.tsv").read_text().strip().split("\n\n")[:32]
    (d / "train32.tsv").write_text("\n\n".join(blocks) + "\n")
    return d


def ner_config(workdir, train_file, mode="first_subtoken", **overrides):
    cfg = {
        "seed": 1234,
        "tokenizer": {"library": "wordpiece", "vocab_file": str(workdir / "vocab.txt")},
        "encoder": {"preset": "micro", "hidden_dropout": 0.0, "attention_dropout": 0.0, "layer_spec": "portable"},
        "labelling_mode": mode,
        "head": {"num_layers": 1, "dropout": 0.0},
        "train_ds": {"file": str(train_file), "max_seq_length": 16, "batch_size": 16},
        "validation_ds": {"file": str(train_file), "max_seq_length": 16, "batch_size": 64},
        "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0},
    }
    cfg.update(overrides)
    return OmegaConf.create(cfg)


@pytest.fixture(scope="module", params=MODES)
def trained(request, workdir):
    """A model fitted for 200 steps on the 32 sentences (a copy of the file, deleted later)."""
    from biomegatron_nemo.parallel.trainer import build_trainer

    # One thread for a micro model: Lightning would otherwise set torch's thread count to the
    # core count (when OMP_NUM_THREADS is unset), ten times slower on a busy 2-core machine.
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    train_file = workdir / f"train32-{request.param}.tsv"
    shutil.copy(workdir / "train32.tsv", train_file)
    trainer = build_trainer({"max_steps": 200, "check_val_every_n_epoch": 1000, "num_sanity_val_steps": 0,
                             "enable_progress_bar": False, "enable_model_summary": False})
    model = TokenClassificationModel(ner_config(workdir, train_file, request.param), trainer=trainer)
    trainer.fit(model)
    metrics = trainer.validate(model, verbose=False)[0]
    yield model, train_file, metrics
    torch.set_num_threads(threads)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS")
    else:
        os.environ["OMP_NUM_THREADS"] = omp


@pytest.fixture(scope="module")
def two_ranks(trained, workdir, tmp_path_factory):
    """This file's 2-process runs on the first_subtoken model, saved, one after the other in one
    launch of two ranks (a launch costs each rank seconds of imports): PP=2 validation of
    ``pp_dev`` (an even number of windows, validated in one batch of them; record ``pp``), then
    data-parallel validation and 2 training steps in token-budget batches (``dp_dev``; record
    ``dp``). Returns ``{"pp_dev", "pp", "dp_dev", "dp"}``: files and the runs' records."""
    from helpers.distributed import run_distributed
    from helpers.ner import spawned_pipeline_validation, spawned_token_budget_run
    from helpers.training import spawned_in_turn

    model, _, _ = trained
    tmp = tmp_path_factory.mktemp("two_ranks")
    blocks = (SAMPLES / "ner" / "dev.tsv").read_text().strip().split("\n\n")
    # PP: a held-out file (not the training sentences), cut to an even number of windows: one
    # batch of them splits into 2 microbatches
    pp_dev = tmp / "pp_dev.tsv"
    for n in range(40, 20, -1):
        pp_dev.write_text("\n\n".join(blocks[:n]) + "\n")
        windows = len(model.make_dataset(model.read_sentences(str(pp_dev)), 16))
        if windows % 2 == 0:
            break
    dp_dev = tmp / "dp_dev.tsv"
    dp_dev.write_text("\n\n".join(blocks[:40]) + "\n")
    train_file = workdir / "train32.tsv"  # the fixture's own copy may be deleted by an earlier test
    path = tmp / "ner.nemo"
    model.save_to(str(path))
    run_distributed(spawned_in_turn, 2, [
        (spawned_pipeline_validation, (str(path), str(pp_dev), windows, str(tmp / "pp.json"))),
        (spawned_token_budget_run, (str(path), str(train_file), str(dp_dev), 64, str(tmp / "dp.json"))),
    ])
    return {"pp_dev": pp_dev, "pp": json.loads((tmp / "pp.json").read_text()),
            "dp_dev": dp_dev, "dp": json.loads((tmp / "dp.json").read_text())}


def test_overfits_32_sentences_to_entity_f1_1(trained, workdir, tmp_path):
    model, train_file, metrics = trained
    sentences = read_conll(train_file)
    assert len(model._validation_dl.dataset) > len(sentences)  # windows really split sentences
    # validation: entity F1 overall and per type, on whole sentences
    assert metrics["val_f1"] == 1.0
    assert metrics["val_f1_Chemical"] == 1.0 and metrics["val_f1_Disease"] == 1.0
    out = tmp_path / "pred.conll"
    scores = model.evaluate(str(train_file), output_file=str(out), batch_size=5)
    assert scores["f1"] == 1.0 and scores["gold_entities"] > 50
    # conlleval input: `word gold pred`, one blank line after each sentence
    blocks = out.read_text().strip("\n").split("\n\n")
    assert len(blocks) == len(sentences)
    first = [line.split(" ") for line in blocks[0].split("\n")]
    assert [w for w, _, _ in first] == sentences[0].words
    assert [g for _, g, _ in first] == [p for _, _, p in first] == sentences[0].tags


def test_predict_returns_character_spans_and_handles_long_texts(trained):
    model, _, _ = trained
    result = model.predict(TEXTS, batch_size=2)
    assert len(result) == len(TEXTS)
    assert result[1] == [] and result[2] == []  # empty and whitespace-only
    last = result[3]
    assert [(e["type"], e["text"]) for e in last] == [("Disease", "epilepsy"), ("Chemical", "valproic acid")]
    for e in last:
        assert TEXTS[3][e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1
    # 12 copies: far beyond 16 sub-tokens, so the text is tagged through overlapping windows
    long_text = " ".join([TEXTS[3]] * 12)
    spans = model.predict([long_text])[0]
    found = [(e["start"], e["text"]) for e in spans]
    assert all(long_text[e["start"]:e["end"]] == e["text"] for e in spans)
    step = len(TEXTS[3]) + 1
    expected = [(k * step + TEXTS[3].index(w), w) for k in range(12) for w in ("epilepsy", "valproic acid")]
    # windows of 14 sub-tokens give little context; most copies are still tagged exactly
    assert len(set(found) & set(expected)) >= 20
    assert found[-1][0] > len(long_text) - step  # the last window is reached
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType; expected a string"):
        model.predict(["Aspirin.", None])


@pytest.mark.slow
@pytest.mark.parametrize("trained", ["first_subtoken"], indirect=True)
def test_pipeline_parallel_validation_computes_the_real_entity_f1(trained, two_ranks):
    """Under PP=2 the validation F1 comes from the last stage's predictions (gathered), and it
    equals the single-stage evaluation of the same weights; the batch runs as 2 microbatches."""
    model, _, _ = trained
    expected = model.evaluate(str(two_ranks["pp_dev"]))["f1"]
    assert 0.0 < expected < 1.0  # a real, unsaturated score
    record = two_ranks["pp"]
    assert record["val_f1"] == pytest.approx(expected, abs=1e-6)  # logged as float32
    assert record["last_stage_collected"] and not record["first_stage_collected"]


@pytest.mark.slow
@pytest.mark.parametrize("trained", ["first_subtoken"], indirect=True)
def test_nemo_round_trip_in_a_fresh_process(trained, workdir, tmp_path):
    model, train_file, _ = trained
    path = tmp_path / "ner.nemo"
    model.save_to(str(path))
    with tarfile.open(path) as tar:
        assert any(name.endswith("label_map.txt") for name in tar.getnames())
    before = model.predict(TEXTS)
    assert before[0], "the overfitted model finds entities to compare"
    train_file.unlink()  # a restored model needs no data file
    script = ("import json, sys\n"
              "from biomegatron_nemo.models.token_classification import TokenClassificationModel\n"
              "m = TokenClassificationModel.restore_from(sys.argv[1], map_location='cpu')\n"
              "print('RESULT=' + json.dumps({'pred': m.predict(json.loads(sys.argv[2])), "
              "'labels': list(m.cfg.label_map)}))\n")
    result = fresh_process_result(script, path, json.dumps(TEXTS))
    assert result["labels"] == model.label_map.labels
    assert result["pred"] == before
    # the same file as a pretrained encoder for a new task model (language_model.nemo_file)
    cfg = OmegaConf.merge(OmegaConf.to_container(model.cfg), {
        "language_model": {"nemo_file": str(path)}, "label_map": None, "label_map_file": None,
        "train_ds": {"file": str(workdir / "train32.tsv")}})
    fresh = TokenClassificationModel(cfg)
    trained_weights, fresh_weights = model.layout_free_state_dict(), fresh.layout_free_state_dict()
    encoder_keys = [k for k in trained_weights if k.startswith("encoder.")]
    assert encoder_keys and all(torch.equal(fresh_weights[k], trained_weights[k]) for k in encoder_keys)
    assert not torch.equal(fresh_weights["classifier.mlp.1.weight"], trained_weights["classifier.mlp.1.weight"])


@pytest.mark.parametrize("trained", ["first_subtoken"], indirect=True)
def test_bad_evaluation_files_raise_clear_errors(trained, tmp_path):
    model, _, _ = trained
    unseen = tmp_path / "unseen.tsv"
    unseen.write_text("Aspirin\tB-Chemical\n.\tO\n\nBRCA1\tB-Gene\nmutations\tO\n")
    with pytest.raises(DataFormatError, match=r"unseen\.tsv:4: \[tag\] tag 'B-Gene' .*never seen in training"):
        model.evaluate(str(unseen))
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n\n")
    with pytest.raises(DataFormatError, match=r"empty\.tsv: no sentences"):
        model.evaluate(str(empty))
    columns = tmp_path / "columns.tsv"
    columns.write_text("Aspirin\tB-Chemical\n.\tO\textra\n")
    with pytest.raises(DataFormatError, match=r"columns\.tsv:2: \[columns\] expected 2 columns"):
        model.evaluate(str(columns))


def test_configs_and_training_files_are_checked(workdir, tmp_path, megatron_single):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(DataFormatError, match=r"empty\.tsv: no sentences"):
        TokenClassificationModel(ner_config(workdir, empty))
    with pytest.raises(ValueError, match="no train_ds.file"):
        TokenClassificationModel(ner_config(workdir, "x", train_ds=None, validation_ds=None))
    with pytest.raises(ValueError, match="labelling_mode: 'words' is not one of"):
        TokenClassificationModel(ner_config(workdir, empty, "words"))
    with pytest.raises(ValueError, match="loss.name: 'focal' is not one of"):
        TokenClassificationModel(ner_config(workdir, empty, loss={"name": "focal"}))
    # a given label map is used as is (O first); a tag outside it in train_ds is refused by line
    cfg = ner_config(workdir, workdir / "train32.tsv", label_map=["B-Chemical", "O"])
    model = TokenClassificationModel(cfg)
    assert model.label_map.labels == ["O", "B-Chemical", "I-Chemical"]
    with pytest.raises(DataFormatError, match=r"train32\.tsv:\d+: \[tag\] tag '.-Disease'"):
        model.setup_training_data(model.cfg.train_ds)


def test_weighted_loss_auto_weights_and_frozen_encoder(workdir, megatron_single):
    cfg = ner_config(workdir, workdir / "train32.tsv", freeze_encoder=True,
                     loss={"name": "weighted_cross_entropy", "class_weights": "auto"})
    model = TokenClassificationModel(cfg)
    model.setup_training_data(model.cfg.train_ds)
    counts = [0] * len(model.label_map)
    for window in model._train_dl.dataset.windows:
        for label in window.labels:
            if label >= 0:
                counts[label] += 1
    weights = list(model.cfg.loss.class_weights)  # resolved, so a restored model has them
    assert weights == pytest.approx(balanced_class_weights(counts), rel=1e-5)
    assert weights[0] < weights[model.label_map["B-Chemical"]]  # "O" is the common class
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    batch = next(iter(model._train_dl))
    output = model(**model.forward_inputs(batch))
    loss = model.loss(output, batch)["ner"]
    w = torch.tensor(weights)
    expected = torch.nn.functional.cross_entropy(output.logits.flatten(0, 1), batch["labels"].flatten(),
                                                 weight=w, ignore_index=-100)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


# ---------------------------------------------------------------------------- losses by hand
LOGITS = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]]])  # 3 positions, 2 classes
LABELS = torch.tensor([[0, 1, -100]])  # the last position is ignored


def test_weighted_cross_entropy_by_hand():
    ce0, ce1 = math.log(1 + math.exp(-2)), math.log(1 + math.exp(-1))  # -log softmax of the gold class
    weights = torch.tensor([1.0, 3.0])
    total = summed_cross_entropy(LOGITS, LABELS, weights)
    assert float(total) == pytest.approx(1 * ce0 + 3 * ce1, rel=1e-6)
    assert cross_entropy_normalizer(LABELS, weights) == 4.0
    assert cross_entropy_normalizer(LABELS) == 2.0
    assert float(summed_cross_entropy(LOGITS, LABELS)) == pytest.approx(ce0 + ce1, rel=1e-6)


def test_dice_loss_by_hand():
    s = 1 / (1 + math.exp(-2))  # softmax([2, 0])[0]
    t = 1 / (1 + math.exp(-1))  # softmax([0, 1])[1]
    p = [[s, 1 - s], [1 - t, t]]  # position 0 is class 0, position 1 class 1
    dice0 = (2 * p[0][0] + 1) / (p[0][0] ** 2 + p[1][0] ** 2 + 1 + 1)
    dice1 = (2 * p[1][1] + 1) / (p[0][1] ** 2 + p[1][1] ** 2 + 1 + 1)
    assert float(dice_loss(LOGITS, LABELS, smooth=1.0)) == pytest.approx(1 - (dice0 + dice1) / 2, rel=1e-6)
    # confident and right → near 0; confident and wrong → near 1
    assert float(dice_loss(torch.tensor([[[20.0, -20.0], [-20.0, 20.0]]]), LABELS[:, :2], smooth=1e-6)) < 1e-5
    assert float(dice_loss(torch.tensor([[[-20.0, 20.0], [20.0, -20.0]]]), LABELS[:, :2], smooth=1e-6)) > 0.99


def test_example_config_composes_to_a_model_on_the_shipped_samples(workdir, megatron_single):
    """conf/token_classification.yaml as examples/token_classification.py loads it."""
    import importlib.util

    from hydra import compose, initialize_config_dir

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("ner_example", root / "examples" / "token_classification.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # registers ${samples:...}
    with initialize_config_dir(config_dir=str(root / "conf"), version_base=None):
        cfg = compose("token_classification", overrides=[
            f"model.tokenizer.vocab_file={workdir / 'vocab.txt'}", "model.encoder.preset=micro",
            "model.labelling_mode=all_subtokens"])
    OmegaConf.resolve(cfg)
    assert Path(cfg.model.train_ds.file) == SAMPLES / "ner" / "train.tsv"
    model = TokenClassificationModel(cfg.model)
    assert model.label_map.labels == ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
    assert model.config.labelling_mode == "all_subtokens" and model.classifier.mlp[-1].out_features == 5


@pytest.mark.parametrize("trained", ["first_subtoken"], indirect=True)
def test_validation_in_token_budget_batches_scores_as_evaluate_does(trained, tmp_path):
    """validation_ds.max_tokens: batches of several sizes in length order, the same entity F1."""
    from biomegatron_nemo.parallel.trainer import build_trainer

    model, _, _ = trained
    dev = tmp_path / "dev.tsv"
    dev.write_text("\n\n".join((SAMPLES / "ner" / "dev.tsv").read_text().strip().split("\n\n")[:40]) + "\n")
    expected = model.evaluate(str(dev))["f1"]
    assert 0.0 < expected < 1.0  # a real, unsaturated score
    kept = model._validation_dl
    try:
        model.setup_validation_data(OmegaConf.merge(model.cfg.validation_ds, {"file": str(dev), "max_tokens": 80}))
        shapes = [tuple(b["input_ids"].shape) for b in model._validation_dl]
        assert len({rows for rows, _ in shapes}) > 1 and all(rows * width <= 80 for rows, width in shapes)
        assert [width for _, width in shapes] == sorted((width for _, width in shapes), reverse=True)
        trainer = build_trainer({"enable_progress_bar": False, "enable_model_summary": False, "logger": False})
        metrics = trainer.validate(model, verbose=False)[0]
    finally:
        model._validation_dl = kept
    assert metrics["val_f1"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("trained", ["first_subtoken"], indirect=True)
def test_token_budget_batches_under_data_parallelism(trained, workdir, two_ranks):
    """Two data-parallel ranks: Lightning leaves the token-budget sampler alone (each rank trains
    on its own share of one epoch order), and validation in token-budget batches, split over the
    ranks by Lightning and gathered, gives the single-process entity F1."""
    from biomegatron_nemo.data.batching import TokenBudgetSampler

    model, _, _ = trained
    train_file = workdir / "train32.tsv"  # the file two_ranks trained on
    expected_f1 = model.evaluate(str(two_ranks["dp_dev"]))["f1"]
    assert 0.0 < expected_f1 < 1.0
    record = two_ranks["dp"]
    assert record["val_f1"] == pytest.approx(expected_f1, abs=1e-6)
    lengths = model.make_dataset(model.read_sentences(str(train_file)), 16).lengths()
    for rank, batches in enumerate(record["batches"]):
        sampler = TokenBudgetSampler(lengths, max_tokens=64, max_examples=64, seed=int(model.cfg.seed),
                                     num_replicas=2, rank=rank)
        sampler.set_epoch(0)
        assert batches == list(sampler)[:2], f"rank {rank}"
    assert record["batches"][0] != record["batches"][1]
