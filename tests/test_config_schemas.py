"""Typed config schemas: misspelt keys, wrong types and bad values fail at once, naming the key;
the YAML files in conf/ only override the schemas; docs/configuration.md is the schemas'."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from biomegatron_nemo.common.config import defaults_of, validate_config
from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel, PretrainingModelConfig
from biomegatron_nemo.models.token_classification import TokenClassificationModel, TokenClassificationModelConfig
from biomegatron_nemo.parallel.trainer import build_trainer
from biomegatron_nemo.runs.registry import TASKS
from biomegatron_nemo.runs.schemas import register_run_configs

from helpers.models import write_tiny_vocab

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    return write_tiny_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt")


def ner_cfg(vocab, **sections):
    cfg = {"tokenizer": {"library": "wordpiece", "vocab_file": str(vocab)}, "encoder": {"preset": "micro"},
           "label_map": ["O", "B-Chemical"], "train_ds": {"file": "train.tsv"}}
    cfg.update(sections)
    return OmegaConf.create(cfg)


@pytest.mark.parametrize("sections, message", [
    ({"head": {"num_layer": 1}}, "head.num_layer: unknown key; did you mean head.num_layers?"),
    ({"train_ds": {"file": "t.tsv", "batchsize": 8}}, "train_ds.batchsize: unknown key; did you mean train_ds.batch_size?"),
    ({"encoder": {"hiden_size": 64}}, "encoder.hiden_size: unknown key; did you mean encoder.hidden_size?"),
    ({"labeling_mode": "all_subtokens"}, "labeling_mode: unknown key; did you mean labelling_mode?"),
    ({"train_ds": {"file": "t.tsv", "batch_size": "many"}}, "train_ds.batch_size: wrong type or value"),
    ({"head": {"dropout": 1.5}}, "head.dropout: must be in [0, 1), got 1.5"),
    ({"encoder": {"preset": "micro", "num_attention_heads": 3}}, "encoder.num_attention_heads: hidden_size 64 is not divisible"),
    ({"loss": {"name": "dice", "class_weights": [1, 2]}}, "loss.class_weights: is set but loss.name='dice'"),
    ({"optim": {"lr": 1e-3, "sched": {"name": "Cosine"}}}, "optim.sched.name: 'Cosine' is not one of"),
    ({"optim": {"name": "rmsprop", "fused": True}}, "optim.fused: rmsprop has no fused implementation"),
    ({"train_ds": {"file": "t.tsv", "max_tokens": 100}}, "train_ds.max_tokens: must be >= max_seq_length (128)"),
    ({"tokenizer": {"library": "sentencepiece", "vocab_file": "v.txt"}}, "tokenizer.vocab_file: ['vocab_file'] are not used"),
])
def test_a_bad_key_fails_at_once_naming_it(vocab, sections, message, monkeypatch):
    # "at once": before the tokenizer or any layer is built
    monkeypatch.setattr("biomegatron_nemo.models.base.build_tokenizer", _never_called)
    with pytest.raises(ConfigError) as err:
        TokenClassificationModel(ner_cfg(vocab, **sections))
    assert str(err.value).startswith("TokenClassificationModel: ") and message in str(err.value)


def _never_called(*args, **kwargs):
    raise AssertionError("the model was built before its config was checked")


def test_a_yaml_file_with_a_misspelt_key_fails(vocab, tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(f"tokenizer:\n  vocab_file: {vocab}\nencoder:\n  preset: micro\ntrain_ds:\n  file: t.tsv\n"
                    "  batchsize: 8\n")
    with pytest.raises(ConfigError, match="train_ds.batchsize: unknown key"):
        TokenClassificationModel(OmegaConf.load(path))
    with pytest.raises(ConfigError, match=r"BioMegatronPretrainingModel: data.max_ngrams: unknown key; did you mean data.max_ngram\?"):
        BioMegatronPretrainingModel(OmegaConf.create({"tokenizer": {"vocab_file": str(vocab)},
                                                      "data": {"data_prefix": "x", "max_ngrams": 3}}))


def test_the_checked_config_holds_every_default(vocab, megatron_single):
    model = TokenClassificationModel(ner_cfg(vocab))
    defaults = defaults_of(TokenClassificationModelConfig)
    assert model.cfg.head.num_layers == defaults["head"]["num_layers"] == 2
    assert model.cfg.window_overlap == 32 and model.cfg.train_ds.batch_size == 32
    from omegaconf.errors import ConfigAttributeError

    with pytest.raises(ConfigAttributeError):  # struct mode: a misspelt attribute in code fails too
        model.cfg.head.num_layer  # noqa: B018


def test_trainer_and_parallel_sections_are_checked():
    with pytest.raises(ConfigError, match=r"trainer.max_epoch: not an argument of lightning's Trainer; did you mean trainer.max_epochs\?"):
        build_trainer({"max_epoch": 3})
    with pytest.raises(ConfigError, match="parallel: tensor_model_paralel_size: unknown key"):
        build_trainer({}, {"tensor_model_paralel_size": 2})
    with pytest.raises(ConfigError, match="parallel: pipeline_model_parallel_size: must be >= 1"):
        build_trainer({}, {"pipeline_model_parallel_size": 0})


def _leaves(values, prefix=""):
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("task", sorted(TASKS))
def test_yaml_files_only_override_the_schema(task):
    """Every key of a composed conf/ file is the schema's default unless the file sets it, and the
    file sets nothing to the default it already has (no encoder preset is chosen by default: a
    pretrained checkpoint decides the architecture, else the schema's tiny)."""
    from hydra import compose, initialize_config_dir

    register_run_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        composed = OmegaConf.to_container(compose(TASKS[task].config_name), resolve=False)
    own = yaml.safe_load((CONF / f"{TASKS[task].config_name}.yaml").read_text())
    own.pop("defaults"), own.pop("hydra", None)
    own = _leaves(own)
    defaults = _leaves(defaults_of(TASKS[task].run_schema))
    composed = _leaves(composed)
    restated = sorted(k for k, v in own.items() if k in defaults and defaults[k] == v)
    assert not restated, f"{TASKS[task].config_name}.yaml restates schema defaults: {restated}"
    unknown = sorted(set(own) - set(defaults) - {k for k in own if k.split(".")[0] in ("trainer", "exp_manager")})
    assert not unknown
    for key, value in composed.items():
        expected = own.get(key, defaults.get(key))
        assert value == expected, key


@pytest.mark.slow
def test_cfg_job_prints_the_schema_defaults():
    """What a user sees with --cfg job is the schema's defaults merged with the YAML file."""
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "token_classification.py"), "--cfg", "job"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = yaml.safe_load(result.stdout)
    defaults = defaults_of(TokenClassificationModelConfig)
    assert printed["model"]["head"] == defaults["head"] and printed["model"]["loss"] == defaults["loss"]
    assert printed["model"]["train_ds"]["batch_size"] == defaults["train_ds"]["batch_size"]
    assert printed["model"]["optim"]["lr"] == 1.0e-3  # the file's override
    assert printed["model"]["encoder"]["preset"] is None  # the pretrained checkpoint's, else tiny
    from biomegatron_nemo.runs.schemas import compose_run_config

    assert compose_run_config("token_classification", ["model/encoder=345m"]).model.encoder.preset == "345m"


def test_docs_page_is_generated_from_the_schemas():
    from biomegatron_nemo.runs.config_docs import main, render

    assert main(["--check", str(ROOT / "docs" / "configuration.md")]) == 0
    page = render()
    for key in ("model.head.num_layers", "model.train_ds.batch_size", "model.data.max_ngram", "trainer.max_steps"):
        assert f"`{key}`" in page


def test_schema_checks_run_on_every_model_config():
    with pytest.raises(ConfigError, match="language_model.nemo_file and init_from each name a pretrained checkpoint"):
        validate_config({"init_from": "a.nemo", "language_model": {"nemo_file": "b.nemo"}}, PretrainingModelConfig)


def test_the_ner_benchmark_config_follows_the_schema(vocab, monkeypatch):
    """benchmarks/ner_bc5cdr.py builds its model config in Python: the schema must accept it."""
    import importlib.util

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as when run as a script: its folder first
    spec = importlib.util.spec_from_file_location("ner_bc5cdr", ROOT / "benchmarks" / "ner_bc5cdr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse_args(["--seed", "1", "--vocab", str(vocab), "--train", "t.tsv", "--max-tokens", "4096",
                              "--packed"])
    cfg = validate_config(module.model_config(args), TokenClassificationModelConfig)
    assert cfg.train_ds.max_tokens == 4096 and cfg.encoder.packed_sequences
    from biomegatron_nemo.models.config import nemo_optim_config

    sched = nemo_optim_config(cfg.optim)["sched"]
    assert sched["name"] == "WarmupHoldPolicy" and sched["warmup_steps"] == 100 and "warmup_ratio" not in sched


@pytest.mark.parametrize("optim, fused, foreach", [
    ({}, True, None),                                   # AdamW: fused unless told otherwise
    ({"fused": False}, None, True),                     # the foreach update instead
    ({"fused": False, "foreach": False}, None, False),  # torch's per-tensor loop
    ({"name": "rmsprop"}, None, True),                  # no fused RMSprop in torch: foreach
])
def test_the_optimizer_is_built_fused_or_foreach_as_configured(vocab, optim, fused, foreach):
    model = TokenClassificationModel(ner_cfg(vocab, optim={"lr": 1e-3, **optim}))
    optimizer, _ = model.setup_optimization(model.cfg.optim)
    defaults = optimizer.defaults
    assert defaults.get("fused") == fused and defaults.get("foreach") == foreach, defaults
    batch = _ner_batch(model)
    sum(model.loss(model(**model.forward_inputs(batch)), batch).values()).backward()
    weight = next(model.classifier.parameters())
    before = weight.detach().clone()
    optimizer.step()  # the chosen kernel runs on these (CPU, fp32) parameters
    assert not torch.equal(before, weight)


def _ner_batch(model, batch=2, seq=8):
    ids = torch.randint(5, model.tokenizer.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
            "labels": torch.zeros_like(ids), "loss_mask": torch.ones_like(ids)}
