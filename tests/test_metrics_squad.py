"""SQuAD EM/F1 (v1.1 and v2.0): the official scripts' outputs on tests/fixtures/squad_official
(see its README for the script and command behind each expected file), and hand-computed values."""

import json
from pathlib import Path

import pytest

from biomegatron_nemo.metrics.squad import (best_threshold, exact_match_score, f1_score,
                                            normalize_answer, squad_scores)

OFFICIAL = Path(__file__).parent / "fixtures" / "squad_official"


def _load(name):
    return json.loads((OFFICIAL / name).read_text(encoding="utf-8"))


def _questions(name):
    return [qa for article in _load(name)["data"] for p in article["paragraphs"] for qa in p["qas"]]


def test_normalisation_drops_articles_punctuation_and_extra_whitespace():
    assert normalize_answer("The  Denver\tBroncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("theory") == "theory"  # "the" only as a whole word
    assert exact_match_score("  the Cat.", "cat") == 1.0


def test_normalisation_edge_cases():
    assert normalize_answer("“aspirin”") == "“aspirin”"  # unicode quotes are not string.punctuation
    assert normalize_answer("Type–2") == "type–2"  # nor is the en dash
    assert normalize_answer("CAFÉ") == "café"
    assert normalize_answer("the-thiamine") == "thethiamine"  # punctuation goes before articles
    assert normalize_answer(" cox-2\t\u00a0inhibitor\n") == "cox2 inhibitor"  # tab, NBSP, newline
    assert normalize_answer("An anemia, a theory") == "anemia theory"
    assert normalize_answer("The") == normalize_answer(".") == normalize_answer("") == ""


def test_token_f1_per_version():
    for v2 in (True, False):
        assert f1_score("the cat sat", "cat sat on mat", version_2=v2) == pytest.approx(2 / 3)  # p=1, r=1/2
        assert f1_score("dog", "cat", version_2=v2) == 0.0
        assert f1_score("pain", "", version_2=v2) == 0.0 and f1_score("", "pain", version_2=v2) == 0.0
        # Counter intersection: pred {cell: 3, membrane: 1}, gold {cell: 2, membrane: 1} → 3 common
        # p = 3/4, r = 3/3 → F1 = 2 * 3/4 / (7/4) = 6/7
        assert f1_score("cell cell cell membrane", "cell membrane cell", version_2=v2) == pytest.approx(6 / 7)
    # both answers normalise to nothing: v2.0 says they agree (F1 1), v1.1 has no common token (F1 0)
    assert f1_score("", "") == 1.0 and f1_score("a", "") == 1.0  # the default is v2.0
    assert f1_score("", "", version_2=True) == 1.0 and f1_score("the", ".", version_2=True) == 1.0
    assert f1_score("", "", version_2=False) == 0.0 and f1_score("the", ".", version_2=False) == 0.0
    assert exact_match_score("the", ".") == 1.0  # EM is the same in both versions


def test_v11_max_over_gold_answers_and_missing_prediction_scores_zero():
    gold = [{"id": "1", "answers": [{"text": "Denver Broncos"}, {"text": "The Denver Broncos"}]},
            {"id": "2", "answers": [{"text": "1897"}]},
            {"id": "3", "answers": [{"text": "pain"}]}]
    s = squad_scores(gold, {"1": "denver broncos!", "2": "in 1897"})
    assert s["exact_match"] == pytest.approx(100 / 3)
    assert s["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)
    assert s["missing"] == 1 and s["total"] == 3


def test_v11_question_without_gold_answers_is_an_error_naming_it():
    gold = [{"id": "ok", "answers": [{"text": "pain"}]}, {"id": "q_no_gold", "answers": []}]
    with pytest.raises(ValueError, match="q_no_gold"):
        squad_scores(gold, {"ok": "pain", "q_no_gold": ""}, version_2=False)


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
    assert "best_exact" not in squad_scores(GOLD_V2, preds)
    # without a no-answer file every probability is 0.0, as in the official script
    assert squad_scores(GOLD_V2, preds, na_prob_thresh=-1.0)["exact"] == 50.0  # all "no answer"


def test_v2_missing_prediction_is_no_answer_and_counted():
    s = squad_scores(GOLD_V2, {"a": "pain"})  # the official v2.0 script raises KeyError here
    assert s["exact"] == 100.0 and s["total"] == 2 and s["missing"] == 1


# --- the official scripts' outputs -----------------------------------------------------------

V2_CASES = [({}, "expected_v2.0.json"),
            ({"na_probs": "na_prob-v2.0.json"}, "expected_v2.0_na.json"),
            ({"na_probs": "na_prob-v2.0.json", "na_prob_thresh": 0.5}, "expected_v2.0_na_thresh0.5.json"),
            ({"na_probs": "na_prob-v2.0.json", "na_prob_thresh": 0.6}, "expected_v2.0_na_thresh0.6.json")]


def _assert_official(ours, expected):
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_v11_fixture_equals_official_script():
    s = squad_scores(_questions("data-v1.1.json"), _load("predictions-v1.1.json"))
    _assert_official(s, _load("expected_v1.1.json"))
    assert s["total"] == 14 and s["missing"] == 1  # the missing one counts as 0


@pytest.mark.parametrize("kwargs,expected", V2_CASES, ids=[c[1] for c in V2_CASES])
def test_v2_fixture_equals_official_script(kwargs, expected):
    kwargs = {k: _load(v) if k == "na_probs" else v for k, v in kwargs.items()}
    s = squad_scores(_questions("data-v2.0.json"), _load("predictions-v2.0.json"), **kwargs)
    official = _load(expected)
    assert [k for k in s if k != "missing"] == list(official)  # the official keys, in its order
    _assert_official(s, official)
    assert s["missing"] == 0


# (id, EM, F1), hand-computed; the v1.1 F1 rule makes the two "normalises to nothing" cases 0
V11_PER_QUESTION = [
    ("v1_punct", 1, 1), ("v1_unicode_quote", 0, 0), ("v1_en_dash", 0, 0.4),  # p=1/3, r=1/2
    ("v1_accent", 0, 0.5), ("v1_articles_in_words", 1, 1), ("v1_article_hyphen", 0, 0),
    ("v1_whitespace", 1, 1), ("v1_gold_only_article", 1, 0), ("v1_gold_only_punct_pred_article", 1, 0),
    ("v1_empty_pred", 0, 0), ("v1_duplicate_golds", 0, 2 / 3),  # p=1/2, r=1
    ("v1_max_over_golds", 0, 2 / 3),  # vs "lowdose aspirin therapy" 2/3, vs "aspirin" 1/2
    ("v1_repeated_tokens", 0, 6 / 7),
]
V2_PER_QUESTION = [
    ("v2_has", 1, 1), ("v2_gold_article_dropped", 0, 0), ("v2_gold_all_empty", 1, 1),
    ("v2_noans_empty", 1, 1), ("v2_noans_nonempty", 0, 0), ("v2_noans_article", 1, 1),
    ("v2_repeated_tokens", 0, 6 / 7), ("v2_empty_pred_has_ans", 0, 0),
    ("v2_max_over_golds", 0, 2 / 3), ("v2_unicode_punct", 0, 0),
]


@pytest.mark.parametrize("version,qid,em,f1", [("1.1", *c) for c in V11_PER_QUESTION]
                         + [("2.0", *c) for c in V2_PER_QUESTION])
def test_fixture_per_question(version, qid, em, f1):
    gold = {q["id"]: q for q in _questions(f"data-v{version}.json")}[qid]
    pred = _load(f"predictions-v{version}.json")[qid]
    s = squad_scores([gold], {qid: pred}, version_2=version == "2.0")
    key = "exact_match" if version == "1.1" else "exact"
    assert (s[key], s["f1"]) == (pytest.approx(100 * em), pytest.approx(100 * f1))


def test_v2_has_ans_follows_listed_answers_not_normalised_ones():
    s = squad_scores([q for q in _questions("data-v2.0.json") if q["id"] == "v2_gold_all_empty"],
                     {"v2_gold_all_empty": ""}, version_2=True)
    assert s["HasAns_total"] == 1 and "NoAns_total" not in s and s["exact"] == 100.0


def test_best_threshold_sweeps_ties_in_no_answer_file_order():
    gold = _questions("data-v2.0.json")
    preds, na = _load("predictions-v2.0.json"), _load("na_prob-v2.0.json")
    has_ans = {q["id"]: bool(q["answers"]) for q in gold}
    em = {qid: float(e) for qid, e, _ in V2_PER_QUESTION}
    # file order: 3 NoAns → 3; multi +0; at 0.3: noans_nonempty −1, has +1, gold_all_empty +1 → 4
    assert best_threshold(preds, em, na, has_ans) == (pytest.approx(40.0), 0.3)
    # the same probabilities listed in data-set order: has +1 → 4, gold_all_empty +1 → 5 (new best)
    na_gold_order = {q["id"]: na[q["id"]] for q in gold}
    assert best_threshold(preds, em, na_gold_order, has_ans) == (pytest.approx(50.0), 0.3)
