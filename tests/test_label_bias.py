"""Label bias (paper Table 9): definitions and the command."""

from collections import Counter

import pytest

from biomegatron_nemo.analysis.label_bias import answer_bias, label_bias, main

from _data_paths import BROKEN, FIXTURES, SHARED_DATA
from helpers.pictures import assert_png


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


@pytest.mark.parametrize("task, name, json_flag", [("ner", "ner_iob2.tsv", []),
                                                   ("qa", "bioasq_squad_format.json", ["--json"])])
def test_plot_draws_the_histogram_and_leaves_the_output_alone(task, name, json_flag, tmp_path, capsys):
    args = [task, str(FIXTURES / name), *json_flag]
    assert main(args) == 0
    plain = capsys.readouterr().out
    picture = tmp_path / "charts" / "bias.png"  # a folder that does not exist yet
    assert main(args + ["--plot", str(picture)]) == 0
    captured = capsys.readouterr()
    assert captured.out == plain and captured.err.strip() == f"plot: {picture}"
    assert_png(picture)


def test_plot_with_an_unknown_format_is_refused_before_reading(tmp_path, capsys):
    assert main(["ner", str(FIXTURES / "ner_iob2.tsv"), "--plot", str(tmp_path / "bias.txt")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--plot" in captured.err and ".png" in captured.err
