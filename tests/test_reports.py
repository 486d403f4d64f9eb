"""Evaluation reports: NER's per-type table and chart (written by a run's test report), RE's
per-class table, chart and confusion matrix; every picture a PNG matplotlib reads back."""

import pytest
from omegaconf import OmegaConf

from biomegatron_nemo.metrics.classification import classification_scores
from biomegatron_nemo.metrics.ner import format_ner_table, ner_scores
from biomegatron_nemo.runs.reports import write_classification_report, write_ner_report
from biomegatron_nemo.runs.task_io import ner_report

from _data_paths import SAMPLES
from helpers.pictures import assert_png


def _table(path):
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_a_ner_run_report_writes_the_per_type_table_and_chart(tmp_path, tiny_vocab, megatron_single):
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    # an untrained micro model: the report must show whatever the scores are
    cfg = OmegaConf.create({
        "tokenizer": {"library": "wordpiece", "vocab_file": str(tiny_vocab)},
        "encoder": {"preset": "micro", "layer_spec": "portable"},
        "train_ds": {"file": str(SAMPLES / "ner" / "train.tsv"), "max_seq_length": 64},
        "optim": {"name": "adamw", "lr": 1e-3},
    })
    model = TokenClassificationModel(cfg)
    dev = str(SAMPLES / "ner" / "dev.tsv")
    scores = model.evaluate(dev, batch_size=64)
    printed = ner_report(model, dev, tmp_path)  # what a run prints and writes after testing
    assert printed.startswith(format_ner_table(scores)) and (tmp_path / "test_predictions.conll").is_file()
    table = _table(tmp_path / "test_report" / "per_type.tsv")
    assert table[0] == ["type", "precision", "recall", "f1", "support", "predicted"]
    assert [row[0] for row in table[1:]] == [*scores["per_type"], "micro"] and "Chemical" in scores["per_type"]
    for row, (etype, s) in zip(table[1:], scores["per_type"].items()):
        assert row[1:] == [f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['f1']:.4f}", str(s["gold"]), str(s["pred"])]
    assert table[-1][1:] == [f"{scores['precision']:.4f}", f"{scores['recall']:.4f}", f"{scores['f1']:.4f}",
                             str(scores["gold_entities"]), str(scores["pred_entities"])]
    assert_png(tmp_path / "test_report" / "per_type_f1.png")


def test_ner_report_of_hand_made_scores(tmp_path):
    gold = [["B-Chemical", "O", "B-Disease", "I-Disease"], ["B-Chemical", "O"]]
    pred = [["B-Chemical", "O", "B-Disease", "O"], ["O", "O"]]
    written = write_ner_report(ner_scores(gold, pred), tmp_path)
    assert _table(written["per_type"])[1:] == [["Chemical", "1.0000", "0.5000", "0.6667", "2", "1"],
                                               ["Disease", "0.0000", "0.0000", "0.0000", "1", "1"],
                                               ["micro", "0.5000", "0.3333", "0.4000", "3", "2"]]
    assert_png(written["per_type_picture"])


def test_re_report_tables_and_pictures(tmp_path):
    gold = ["CPR:3", "CPR:3", "CPR:4", "false", "false", "CPR:9"]
    pred = ["CPR:3", "false", "CPR:4", "CPR:4", "false", "CPR:3"]
    scores = classification_scores(gold, pred)
    written = write_classification_report(scores, tmp_path)
    rows = {row[0]: row[1:] for row in _table(written["per_class"])}
    assert rows["CPR:4"] == ["0.5000", "1.0000", "0.6667", "1", "2"]
    # micro over the positive classes: 2 correct of 4 predicted, of 4 gold; no counts in its row
    assert rows["micro (false excluded)"] == ["0.5000", "0.5000", "0.5000", "", ""]
    confusion = _table(written["confusion_table"])
    assert sum(int(x) for row in confusion[1:] for x in row[1:]) == len(gold)
    for picture in (written["per_class_picture"], written["confusion_picture"]):
        assert_png(picture)


@pytest.mark.parametrize("name", ["plot.png", "plot.svg", "plot.pdf"])
def test_picture_formats_are_known_before_drawing(name):
    from biomegatron_nemo.common.plots import check_picture_path

    assert check_picture_path(name).name == name


def test_unknown_picture_format_is_refused_by_option():
    from biomegatron_nemo.common.plots import check_picture_path

    with pytest.raises(ValueError, match=r"--plot 'table.txt'.*\.png"):
        check_picture_path("table.txt")
