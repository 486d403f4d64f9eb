"""The pretraining loss curve: a real 10-step run through the config, Trainer and exp_manager
leaves loss_curve.png and loss_curve.tsv in its log folder, with every step's logged losses; a
resumed run continues the same table."""

import json
from pathlib import Path

import pytest

from helpers.pictures import assert_png
from helpers.training import pretrain

from biomegatron_nemo.runs.loss_curve import read_loss_table


def test_a_run_draws_its_losses_and_a_resume_continues_them(tmp_path, tiny_vocab, corpus):
    exp = tmp_path / "exp"
    extra = ["model.binary_head=true"]  # two heads: the curve has a total and its two parts
    trainer, _ = pretrain(exp, tiny_vocab, corpus, 10, tmp_path / "first.json", extra=extra)
    run_dir = exp / "biomegatron_pretrain" / "run"
    assert Path(trainer.log_dir) == run_dir  # exp_manager's folder, next to the TensorBoard events
    assert_png(run_dir / "loss_curve.png")
    header = (run_dir / "loss_curve.tsv").read_text().splitlines()[0].split("\t")
    assert header[:4] == ["step", "train_loss", "train_mlm_loss", "train_sentence_order_loss"]
    assert "val_loss" in header
    rows = read_loss_table(run_dir / "loss_curve.tsv")
    train = {s: r for s, r in rows.items() if "train_loss" in r}
    assert sorted(train) == list(range(1, 11))
    record = json.loads((tmp_path / "first.json").read_text())
    for step, row in train.items():
        # the loss the step trained on, and the total is the sum of the heads' losses
        assert row["train_loss"] == pytest.approx(record["losses"][str(step)], abs=1e-6)
        assert row["train_loss"] == pytest.approx(row["train_mlm_loss"] + row["train_sentence_order_loss"], abs=1e-5)
    assert rows[10]["val_loss"] == pytest.approx(record["val_losses"]["10"], abs=1e-6)

    pretrain(exp, tiny_vocab, corpus, 12, tmp_path / "resumed.json", extra=extra)  # 2 more steps
    resumed = read_loss_table(run_dir / "loss_curve.tsv")
    assert sorted(s for s, r in resumed.items() if "train_loss" in r) == list(range(1, 13))
    assert {s: resumed[s] for s in range(1, 11)} == rows  # the first run's part kept as it was
    later = json.loads((tmp_path / "resumed.json").read_text())["losses"]
    assert resumed[12]["train_loss"] == pytest.approx(later["12"], abs=1e-6)
    assert_png(run_dir / "loss_curve.png")
