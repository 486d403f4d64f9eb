"""`make demo` runs end to end (here at a few steps per stage): every stage, from the vocabulary to
the answer of `biomegatron predict`, and the fine-tuning stages from the real pretrained MiniLM."""

import json
import subprocess
import sys

import pytest

from helpers.processes import EXAMPLES, clean_env


@pytest.mark.slow
def test_every_stage_of_the_demo_runs(tmp_path, minilm):
    done = subprocess.run([sys.executable, str(EXAMPLES / "demo.py"), "--output", str(tmp_path / "demo"),
                           "--pretrained", str(minilm), "--pretrain-steps", "2", "--ner-epochs", "1",
                           "--re-epochs", "1", "--qa-epochs", "1"],
                          capture_output=True, text=True, env=clean_env(), cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    stages = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert [s["stage"][:2] for s in stages] == ["1.", "2.", "3.", "4.", "5.", "6.", "7.", "8."]
    figures = {s["stage"][:1]: s["figures"] for s in stages}
    assert figures["4"]["nemo"].endswith("ner.nemo") and 0 <= figures["4"]["dev_entity_f1"] <= 1
    assert figures["5"]["sentences"] == 3 and figures["8"]["answers"] >= 1
    for picture in ("ner_dev_report/per_type_f1.png", "re_dev_report/confusion_matrix.png"):
        assert (tmp_path / "demo" / picture).stat().st_size > 1000, picture
