"""The evaluation command: each task end to end on fixture files, and its errors."""

import json
import subprocess
import sys

import pytest

from biomegatron_nemo.analysis.evaluate import main

from _data_paths import BROKEN, FIXTURES


def test_help_lists_tasks_and_prediction_formats():
    out = subprocess.run([sys.executable, "-m", "biomegatron_nemo.analysis.evaluate", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "{ner,re,squad,bioasq}" in out and "nbest_predictions.json" in out


def test_ner_from_conlleval_style_prediction_file(tmp_path, capsys):
    pred = tmp_path / "pred.txt"
    # three columns "word gold pred": the prediction misses "catalepsy"
    lines = [l.split("\t") for l in (FIXTURES / "ner_iob2.tsv").read_text().splitlines()]
    pred.write_text("\n".join(" ".join([w[0], w[1], "O" if w[0] == "catalepsy" else w[1]]) if w != [""] else ""
                              for w in lines) + "\n")
    assert main(["ner", "--gold", str(FIXTURES / "ner_iob2.tsv"), "--pred", str(pred), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["gold_entities"], s["pred_entities"], s["correct_entities"]) == (5, 4, 4)
    assert s["recall"] == pytest.approx(0.8) and s["per_type"]["Disease"]["recall"] == pytest.approx(2 / 3)


def test_ner_token_mismatch_names_both_files(tmp_path, capsys):
    pred = tmp_path / "pred.tsv"
    pred.write_text((FIXTURES / "ner_iob2.tsv").read_text().replace("induced", "caused", 1))
    assert main(["ner", "--gold", str(FIXTURES / "ner_iob2.tsv"), "--pred", str(pred)]) == 2
    assert f"{pred}:2:" in capsys.readouterr().err


def test_re_with_label_per_line_and_unknown_label(capsys):
    gold = FIXTURES / "chemprot_header.tsv"
    assert main(["re", "--gold", str(gold), "--pred", str(BROKEN / "re_pred_unknown_label.tsv")]) == 2
    assert f"{BROKEN / 're_pred_unknown_label.tsv'}:2:" in capsys.readouterr().err


def test_re_with_ids(tmp_path, capsys):
    pred = tmp_path / "pred.tsv"
    pred.write_text("index\tprediction\n2.T5.T6\tCPR:3\n1.T1.T2\tfalse\n1.T1.T3\tCPR:4\n")
    assert main(["re", "--gold", str(FIXTURES / "chemprot_header.tsv"), "--pred", str(pred), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["precision"] == 0.5 and s["recall"] == 0.5  # CPR:3 right, CPR:4 on a false row, CPR:4 missed


def test_squad_and_bioasq(tmp_path, capsys):
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"q1": "pain", "q2": "in 1897", "q3": "", "q4": "aspirin", "q5": "x"}))
    assert main(["squad", "--gold", str(FIXTURES / "squad_v2_small.json"), "--pred", str(pred), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["exact"] == pytest.approx(100 * 4 / 5) and s["NoAns_exact"] == 100.0
    nbest = tmp_path / "nbest.json"
    nbest.write_text(json.dumps({"5a1b_001": [{"text": "estrogen", "probability": 0.6}],
                                 "5a1b_002": [{"text": "Nolvadex", "probability": 0.3}],
                                 "5c2d_001": [{"text": "FBN1", "probability": 0.9}]}))
    sub = tmp_path / "submission.json"
    assert main(["bioasq", "--gold", str(FIXTURES / "bioasq_golden.json"), "--pred", str(nbest),
                 "--submission", str(sub)]) == 0
    out = capsys.readouterr().out
    assert "strict accuracy (SAcc): 0.5000" in out and "mean reciprocal rank (MRR): 0.7500" in out
    assert json.loads(sub.read_text())["questions"][0]["exact_answer"] == [["estrogen"], ["Nolvadex"]]


OFFICIAL = FIXTURES.parent / "squad_official"  # outputs of the official SQuAD scripts (see its README)


@pytest.mark.parametrize("args,expected", [
    (["--gold", "data-v1.1.json", "--pred", "predictions-v1.1.json"], "expected_v1.1.json"),
    (["--gold", "data-v2.0.json", "--pred", "predictions-v2.0.json"], "expected_v2.0.json"),
    (["--gold", "data-v2.0.json", "--pred", "predictions-v2.0.json", "--na-prob", "na_prob-v2.0.json",
      "--na-prob-thresh", "0.5"], "expected_v2.0_na_thresh0.5.json"),
])
def test_squad_reproduces_official_scripts(args, expected, capsys):
    args = [str(OFFICIAL / a) if a.endswith(".json") else a for a in args]
    assert main(["squad", *args, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    official = json.loads((OFFICIAL / expected).read_text())
    assert set(official) <= set(s) <= set(official) | {"total", "missing"}
    for key, value in official.items():
        assert s[key] == pytest.approx(value, rel=1e-12), key


def test_squad_version_from_is_impossible_keys_or_flag(tmp_path, capsys):
    for name, keys in (("data-v1.1.json", {"exact_match", "f1"}), ("data-v2.0.json", {"exact", "NoAns_total"})):
        doc = json.loads((OFFICIAL / name).read_text(encoding="utf-8"))
        del doc["version"]  # auto: v2.0 only when questions carry is_impossible
        gold = tmp_path / name
        gold.write_text(json.dumps(doc), encoding="utf-8")
        pred = str(OFFICIAL / name.replace("data", "predictions"))
        assert main(["squad", "--gold", str(gold), "--pred", pred, "--json"]) == 0
        assert keys <= set(json.loads(capsys.readouterr().out))
    v2 = ["--gold", str(OFFICIAL / "data-v2.0.json"), "--pred", str(OFFICIAL / "predictions-v2.0.json")]
    assert main(["squad", *v2, "--version", "1.1"]) == 2  # unanswerable questions: no v1.1 score
    assert "'v2_noans_empty' has no gold answers" in capsys.readouterr().err
    v1 = ["--gold", str(OFFICIAL / "data-v1.1.json"), "--pred", str(OFFICIAL / "predictions-v1.1.json")]
    assert main(["squad", *v1, "--version", "2.0", "--json"]) == 0
    assert "HasAns_total" in json.loads(capsys.readouterr().out)
