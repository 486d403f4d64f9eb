"""Label bias (paper Table 9): definitions and the command."""

from collections import Counter

import pytest

from biomegatron_nemo.analysis.label_bias import answer_bias, label_bias, main

from _data_paths import BROKEN, FIXTURES, SHARED_DATA


def test_minority_over_majority_with_chemprot_dev_counts():
    counts = Counter({"false": 9404, "CPR:4": 1094, "CPR:3": 550, "CPR:9": 457, "CPR:6": 199, "CPR:5": 116})
    r = label_bias(counts)
    assert r["samples"] == 11820 and r["majority_label"] == "false"
    assert r["bias"] == pytest.approx(2416 / 9404) and round(r["bias"], 3) == 0.257


def test_qa_bias_is_min_repeat_over_max_repeat():
    r = answer_bias(Counter({"FBN1": 4, "TAM": 1, "XK": 2}))
    assert r["bias"] == 0.25 and r["samples"] == 7 and r["histogram"] == {1: 1, 2: 1, 4: 1}


def test_ner_command_counts_every_tag(capsys):
    # ner_iob2.tsv: O×5, B-Chemical×2, B-Disease×2, I-Disease×3 → (2+2+3)/5
    assert main(["ner", str(FIXTURES / "ner_iob2.tsv")]) == 0
    out = capsys.readouterr().out
    assert "samples: 12" in out and "bias: 1.400" in out and "majority label: O" in out
    assert "I-Disease: 3" in out


def test_qa_command_and_json(capsys):
    assert main(["qa", str(FIXTURES / "bioasq_squad_format.json"), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"bias": 1.0' in out and '"samples": 3' in out


def test_bad_file_is_a_clear_error(capsys):
    assert main(["ner", str(BROKEN / "ner_bad_tag.tsv")]) == 2
    assert f"{BROKEN / 'ner_bad_tag.tsv'}:4:" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED_DATA / "chemprot" / "dev.tsv").exists(), reason="shared data absent")
def test_chemprot_dev_prints_paper_value(capsys):
    assert main(["re", str(SHARED_DATA / "chemprot" / "dev.tsv")]) == 0
    out = capsys.readouterr().out
    assert "samples: 11,820" in out and "bias: 0.257" in out
