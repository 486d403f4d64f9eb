"""An impossible parallel layout is refused, naming the key, before any process group, Trainer or
model exists (runs/launch.py); the run folder of a killed run is tidied before resuming."""

import subprocess
import sys

import pytest
import torch

from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.runs.launch import (check_layout, has_validation, name_checkpoints_by_step, preemption_callbacks,
                                         resume_checkpoint)
from helpers.processes import EXAMPLES, clean_env
from helpers.training import compose_pretrain_config


@pytest.mark.parametrize("overrides, key, message", [
    (["parallel.tensor_model_parallel_size=3", "trainer.devices=3"], "model.encoder.num_attention_heads",
     "num_attention_heads 4 is not divisible by tensor_model_parallel_size 3"),
    (["parallel.tensor_model_parallel_size=2", "trainer.devices=3"], "parallel.tensor_model_parallel_size",
     "3 processes cannot be split into model replicas of tensor (2) x pipeline (1) = 2 ranks"),
    (["parallel.tensor_model_parallel_size=2", "trainer.devices=2", "trainer.num_nodes=3",
      "parallel.pipeline_model_parallel_size=2"], "parallel.tensor_model_parallel_size",
     "6 processes cannot be split"),
    (["parallel.pipeline_model_parallel_size=8", "trainer.devices=8"], "parallel.pipeline_model_parallel_size",
     "8 pipeline stages for 4 transformer layers"),
    (["parallel.pipeline_model_parallel_size=3", "trainer.devices=3"], "model.encoder.num_layers",
     "num_layers 4 is not divisible by pipeline_model_parallel_size 3"),
])
def test_impossible_layouts_are_refused_naming_the_key(overrides, key, message):
    cfg = compose_pretrain_config(["model.encoder.preset=tiny", *overrides])
    with pytest.raises(ConfigError) as err:
        check_layout(cfg)
    assert err.value.key == key and message in str(err.value), str(err.value)


def test_preemption_signals_are_named_and_checked():
    import signal

    from omegaconf import OmegaConf

    (callback,) = preemption_callbacks(OmegaConf.create({}))
    assert callback.signals == [signal.SIGTERM, signal.SIGUSR1]
    (callback,) = preemption_callbacks(OmegaConf.create({"preemption_signals": ["usr2", "SIGINT"]}))
    assert callback.signals == [signal.SIGUSR2, signal.SIGINT]
    assert preemption_callbacks(OmegaConf.create({"preemption_signals": []})) == []
    for wrong in ("SIGKILL", "SIGTERMINATE"):
        with pytest.raises(ConfigError, match=f"preemption_signals.*'{wrong}' is not a signal a process can catch"):
            preemption_callbacks(OmegaConf.create({"preemption_signals": [wrong]}))


def test_the_launcher_world_size_counts(monkeypatch):
    cfg = compose_pretrain_config(["parallel.tensor_model_parallel_size=2", "trainer.devices=2"])
    check_layout(cfg)
    monkeypatch.setenv("WORLD_SIZE", "3")  # torchrun --nproc_per_node=3 with trainer.devices=2
    with pytest.raises(ConfigError, match="3 processes cannot be split"):
        check_layout(cfg)


@pytest.mark.slow
def test_the_example_refuses_before_building_anything(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "pretrain.py"), "parallel.tensor_model_parallel_size=3",
                           "trainer.devices=3", f"exp_manager.exp_dir={tmp_path / 'exp'}",
                           "model.tokenizer.vocab_file=unused.txt", "model.data.data_prefix=[unused]"],
                          capture_output=True, text=True, env=clean_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "model.encoder.num_attention_heads: num_attention_heads 4 is not divisible" in proc.stderr, proc.stderr[-2000:]
    # no exp_manager log folder (Hydra's own record of the run is there: it starts before main)
    assert not (tmp_path / "exp" / "biomegatron_pretrain" / "run").exists()


def _checkpoint(path, step):
    torch.save({"global_step": step, "state_dict": {}}, path)


def test_the_newest_of_several_complete_last_checkpoints_is_resumed(tmp_path):
    folder = tmp_path / "exp" / "x" / "run" / "checkpoints"
    folder.mkdir(parents=True)
    em = {"exp_dir": str(tmp_path / "exp"), "name": "x", "version": "run", "use_datetime_version": False,
          "resume_if_exists": True}
    _checkpoint(folder / "x--val_loss=5.2-last.ckpt", 10)
    assert resume_checkpoint(em) is None  # one: NeMo's own search finds it
    _checkpoint(folder / "x--val_loss=5.1-last.ckpt", 20)
    _checkpoint(folder / "x--val_loss=5.0-last.ckpt", 30)
    (folder / "x--val_loss=5.0-last-unfinished").touch()  # NeMo's marker: that save never ended
    assert resume_checkpoint(em) == str(folder / "x--val_loss=5.1-last.ckpt")
    assert resume_checkpoint({**em, "resume_if_exists": False}) is None
    (folder / "x--val_loss=5.3-end.ckpt").touch()  # a finished run: NeMo's resume_past_end rules
    assert resume_checkpoint(em) is None


def test_a_run_without_validation_names_checkpoints_by_step_not_by_a_metric_never_computed():
    from omegaconf import OmegaConf

    with_file = OmegaConf.create({"model": {"validation_ds": {"file": "dev.tsv"}}, "trainer": {}})
    assert has_validation(with_file)
    assert not has_validation(OmegaConf.create({"model": {"validation_ds": {"file": None}}, "trainer": {}}))
    assert not has_validation(OmegaConf.create({"model": {"validation_ds": None}}))
    assert not has_validation(OmegaConf.create({"model": {"validation_ds": {"file": "dev.tsv"}},
                                                "trainer": {"limit_val_batches": 0}}))
    assert has_validation(OmegaConf.create({"model": {"validation_ds": {"num_samples": 16}}}))  # a pretraining split

    em_cfg = OmegaConf.create({"checkpoint_callback_params": {"monitor": "val_f1", "mode": "max", "save_top_k": 3}})
    name_checkpoints_by_step(em_cfg, "ner")
    assert OmegaConf.to_container(em_cfg.checkpoint_callback_params) == {
        "monitor": "step", "mode": "max", "save_top_k": 3, "filename": "ner--{epoch}-{step}"}
    by_loss = OmegaConf.create({"checkpoint_callback_params": {"monitor": "train_loss"}})
    name_checkpoints_by_step(by_loss, "ner")  # a metric training computes stays
    assert by_loss.checkpoint_callback_params.monitor == "train_loss"
