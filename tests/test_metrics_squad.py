"""SQuAD EM/F1 (v1.1 and v2.0) against hand-computed values."""

import pytest

from biomegatron_nemo.metrics.squad import exact_match_score, f1_score, normalize_answer, squad_scores


def test_normalisation_drops_articles_punctuation_and_extra_whitespace():
    assert normalize_answer("The  Denver\tBroncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("theory") == "theory"  # "the" only as a whole word
    assert exact_match_score("  the Cat.", "cat") == 1.0


def test_token_f1():
    assert f1_score("the cat sat", "cat sat on mat") == pytest.approx(2 / 3)  # p=1, r=1/2
    assert f1_score("dog", "cat") == 0.0
    assert f1_score("", "") == 1.0 and f1_score("pain", "") == 0.0  # v2.0 no-answer
    assert f1_score("a", "") == 1.0  # an article alone normalises to nothing


def test_v11_max_over_gold_answers_and_missing_prediction_scores_zero():
    gold = [{"id": "1", "answers": [{"text": "Denver Broncos"}, {"text": "The Denver Broncos"}]},
            {"id": "2", "answers": [{"text": "1897"}]},
            {"id": "3", "answers": [{"text": "pain"}]}]
    s = squad_scores(gold, {"1": "denver broncos!", "2": "in 1897"})
    assert s["exact_match"] == pytest.approx(100 / 3)
    assert s["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)
    assert s["missing"] == 1 and s["total"] == 3


GOLD_V2 = [{"id": "a", "answers": [{"text": "pain"}], "is_impossible": False},
           {"id": "b", "answers": [], "is_impossible": True}]


def test_v2_has_ans_no_ans_split():
    s = squad_scores(GOLD_V2, {"a": "pain", "b": "aspirin"})
    assert s["exact"] == 50.0 and s["HasAns_exact"] == 100.0 and s["NoAns_exact"] == 0.0
    assert s["HasAns_total"] == 1 and s["NoAns_total"] == 1
    assert squad_scores(GOLD_V2, {"a": "pain", "b": ""})["exact"] == 100.0


def test_v2_threshold_and_best_threshold():
    preds, na = {"a": "pain", "b": "aspirin"}, {"a": 0.1, "b": 0.9}
    s = squad_scores(GOLD_V2, preds, na_probs=na, na_prob_thresh=0.5)
    assert s["exact"] == 100.0  # b's no-answer probability 0.9 > 0.5 → answered "no answer"
    # sweep: all no-answer = 1 right; answering a (p=0.1) → 2 right; answering b → 1
    assert s["best_exact"] == 100.0 and s["best_exact_thresh"] == 0.1
    assert squad_scores(GOLD_V2, preds, na_probs=na)["exact"] == 50.0  # default threshold 1.0
