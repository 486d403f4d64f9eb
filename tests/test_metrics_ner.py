"""Entity-level NER scores (seqeval, conlleval mode) against hand-computed values."""

import pytest

from biomegatron_nemo.analysis.evaluate import main
from biomegatron_nemo.metrics.ner import entity_spans, format_ner_table, ner_scores

from _data_paths import FIXTURES, SAMPLES

GOLD = [["B-Chemical", "I-Chemical", "O", "B-Disease", "I-Disease"],
        ["O", "B-Disease", "O", "B-Chemical"]]


def test_perfect_prediction():
    s = ner_scores(GOLD, GOLD)
    assert (s["precision"], s["recall"], s["f1"], s["accuracy"]) == (1.0, 1.0, 1.0, 1.0)
    assert s["gold_entities"] == s["pred_entities"] == s["correct_entities"] == 4


def test_type_mismatch_and_partial_span():
    pred = [["B-Chemical", "I-Chemical", "O", "B-Chemical", "I-Chemical"],  # right span, wrong type
            ["O", "B-Disease", "O", "O"]]                                   # missed the chemical
    s = ner_scores(GOLD, pred)
    # gold 4 (2 Chemical, 2 Disease); predicted 3; correct 2 (first chemical, second disease)
    assert (s["gold_entities"], s["pred_entities"], s["correct_entities"]) == (4, 3, 2)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    chem, dis = s["per_type"]["Chemical"], s["per_type"]["Disease"]
    assert (chem["gold"], chem["pred"], chem["correct"]) == (2, 2, 1)
    assert chem["precision"] == 0.5 and chem["recall"] == 0.5
    assert (dis["gold"], dis["pred"], dis["correct"]) == (2, 1, 1) and dis["recall"] == 0.5
    assert s["accuracy"] == pytest.approx(6 / 9)  # 3 of 9 tags differ


def test_no_predicted_entities_scores_zero_without_error():
    pred = [["O"] * 5, ["O"] * 4]
    s = ner_scores(GOLD, pred)
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    assert s["pred_entities"] == 0 and s["gold_entities"] == 4
    assert s["per_type"]["Chemical"]["pred"] == 0


def test_no_gold_entities():
    gold = [["O", "O", "O"]]
    s = ner_scores(gold, [["B-Chemical", "O", "O"]])
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    assert s["per_type"] == {"Chemical": {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                          "gold": 0, "pred": 1, "correct": 0}}
    assert ner_scores(gold, gold)["f1"] == 0.0  # conlleval prints 0 when there is nothing to find


def test_entity_cut_at_sentence_end_does_not_join_next_sentence():
    # "B-Disease" ends sentence 1 and "I-Disease" starts sentence 2: two entities, not one
    gold = [["O", "B-Disease"], ["I-Disease", "O"]]
    assert len(entity_spans(gold[0])) == 1
    s = ner_scores(gold, [["O", "B-Disease"], ["B-Disease", "O"]])
    assert s["gold_entities"] == 2 and s["f1"] == 1.0


def test_i_after_o_opens_an_entity_like_conlleval():
    assert entity_spans(["O", "I-Chemical", "I-Chemical", "O"]) == [("Chemical", 1, 2)]
    # a B- prediction of the same span counts as correct
    s = ner_scores([["O", "I-Chemical", "I-Chemical"]], [["O", "B-Chemical", "I-Chemical"]])
    assert s["f1"] == 1.0


def test_length_mismatch_names_the_sentence():
    with pytest.raises(ValueError, match="sentence 1: 4 gold tags but 3"):
        ner_scores(GOLD, [GOLD[0], ["O"] * 3])


def test_table_prints_conlleval_style_lines():
    table = format_ner_table(ner_scores(GOLD, GOLD))
    assert "processed 9 tokens with 4 phrases; found: 4 phrases; correct: 4." in table
    assert "FB1: 100.00" in table and "Chemical: precision: 100.00%" in table


def test_evaluate_output_equals_conlleval_output(capsys):
    """Expected text printed by conlleval.pl (2004-01-26) for the sample dev set with 15% of the
    tags replaced at random (I- after O, type changes, broken spans)."""
    gold = SAMPLES / "ner" / "dev.tsv"
    assert main(["ner", "--gold", str(gold), "--pred", str(FIXTURES / "ner_sample_dev_pred.txt")]) == 0
    assert capsys.readouterr().out == (FIXTURES / "ner_sample_dev_pred.conlleval.txt").read_text()
