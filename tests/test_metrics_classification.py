"""BLUE micro-F1 over positive classes, per-class table and confusion matrix."""

import pytest

from biomegatron_nemo.data.chemprot import CHEMPROT_LABELS
from biomegatron_nemo.metrics.classification import classification_scores, format_classification_table


def test_micro_f1_excludes_the_negative_class():
    gold = ["CPR:3", "CPR:4", "CPR:4", "false", "false", "CPR:9"]
    pred = ["CPR:3", "CPR:4", "false", "CPR:4", "false", "CPR:3"]
    s = classification_scores(gold, pred)
    # positive predictions: CPR:3, CPR:4, CPR:4, CPR:3 = 4, correct 2; positive gold = 4
    assert s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5
    assert s["accuracy"] == pytest.approx(3 / 6)  # the correct "false" counts only here
    assert s["per_class"]["CPR:4"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2,
                                       "pred": 2, "correct": 1}
    assert s["per_class"]["CPR:3"]["precision"] == 0.5 and s["per_class"]["CPR:9"]["recall"] == 0.0
    assert "false" not in s["per_class"]
    assert s["confusion"]["CPR:9"]["CPR:3"] == 1 and s["confusion"]["false"]["CPR:4"] == 1


def test_all_negative_predictions_give_zero_not_an_error():
    gold = ["CPR:3", "false", "CPR:5"]
    s = classification_scores(gold, ["false"] * 3, labels=CHEMPROT_LABELS)
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    assert s["confusion"]["CPR:5"]["false"] == 1 and s["labels"] == list(CHEMPROT_LABELS)


def test_unknown_label_names_the_row():
    with pytest.raises(ValueError, match="row 1: predicted label 'CPR:7'"):
        classification_scores(["CPR:3", "false"], ["CPR:3", "CPR:7"], labels=CHEMPROT_LABELS)


def test_table_has_micro_row_and_confusion_matrix():
    t = format_classification_table(classification_scores(["CPR:3", "false"], ["CPR:3", "false"],
                                                          labels=CHEMPROT_LABELS))
    assert "micro     1.0000  1.0000  1.0000" in t
    assert "confusion matrix" in t
