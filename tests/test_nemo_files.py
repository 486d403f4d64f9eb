""".nemo files: self-contained (the vocabulary travels inside), exact round trips, and loading
never runs pickled code."""

import pickle
import shutil
import tarfile

import pytest
import torch

from helpers.models import all_positions, pretraining_config, synthetic_mlm_batch


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return all_positions(model, batch).logits


def test_round_trip_is_exact_and_carries_the_vocabulary(tmp_path, tiny_vocab, megatron_single):
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

    private = tmp_path / "private"
    private.mkdir()
    vocab = shutil.copy(tiny_vocab, private / "vocab.txt")
    model = BioMegatronPretrainingModel(pretraining_config(vocab, binary_head=True))
    batch = synthetic_mlm_batch(model.tokenizer.vocab_size)
    expected = _logits(model, batch)
    nemo_file = tmp_path / "model.nemo"
    model.save_to(str(nemo_file))
    with tarfile.open(nemo_file) as tar:
        names = tar.getnames()
    assert any(name.endswith("vocab.txt") for name in names), names
    shutil.rmtree(private)  # the .nemo alone must be enough

    restored = BioMegatronPretrainingModel.restore_from(str(nemo_file))
    assert restored.tokenizer.inv_vocab == model.tokenizer.inv_vocab
    torch.testing.assert_close(_logits(restored, batch), expected, rtol=0, atol=0)
    assert restored.binary_head is not None


class _RunsCode:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_restore_refuses_pickled_code(tmp_path, tiny_vocab, megatron_single):
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

    model = BioMegatronPretrainingModel(pretraining_config(tiny_vocab))
    nemo_file = tmp_path / "model.nemo"
    model.save_to(str(nemo_file))
    unpacked = tmp_path / "unpacked"
    with tarfile.open(nemo_file) as tar:
        tar.extractall(unpacked, filter="data")
    weights = next(unpacked.rglob("model_weights.ckpt"))
    state = torch.load(weights, weights_only=True)
    state["evil"] = _RunsCode()
    torch.save(state, weights)
    evil_file = tmp_path / "evil.nemo"
    with tarfile.open(evil_file, "w:") as tar:
        for path in unpacked.iterdir():
            tar.add(path, arcname=f"./{path.name}")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        BioMegatronPretrainingModel.restore_from(str(evil_file))


def test_restore_names_missing_and_unused_weights(tmp_path, tiny_vocab, megatron_single):
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

    model = BioMegatronPretrainingModel(pretraining_config(tiny_vocab))
    state = model.layout_free_state_dict()
    state.pop("mlm_head.output_layer.bias")
    with pytest.raises(ValueError, match="lacks weights the model needs: \\['mlm_head.output_layer.bias'\\]"):
        model.load_layout_free_state_dict(state)


def test_restore_with_a_trainer_builds_before_loading(tmp_path, tiny_vocab, megatron_single):
    """With a trainer, new models wait for configure_model(); restored ones must build at once."""
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel
    from biomegatron_nemo.parallel.trainer import build_trainer

    model = BioMegatronPretrainingModel(pretraining_config(tiny_vocab))
    batch = synthetic_mlm_batch(model.tokenizer.vocab_size)
    model.save_to(str(tmp_path / "model.nemo"))
    trainer = build_trainer({"devices": 1, "max_steps": 1, "enable_progress_bar": False})
    restored = BioMegatronPretrainingModel.restore_from(str(tmp_path / "model.nemo"), trainer=trainer)
    torch.testing.assert_close(_logits(restored, batch), _logits(model, batch), rtol=0, atol=0)


def test_broken_nemo_files_are_named_before_nemo_unpacks_them(tmp_path):
    """Random bytes, a truncated archive, a tar that is not a .nemo, a missing path: each is an
    error naming the file, never a bare tarfile error from inside NeMo."""
    import os
    import tarfile

    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    (tmp_path / "random.nemo").write_bytes(os.urandom(4096))
    with tarfile.open(tmp_path / "foreign.nemo", "w") as tar:
        (tmp_path / "readme.txt").write_text("hello")
        tar.add(tmp_path / "readme.txt", arcname="readme.txt")
    payload = os.urandom(200_000)
    (tmp_path / "big.bin").write_bytes(payload)
    with tarfile.open(tmp_path / "whole.nemo", "w") as tar:
        tar.add(tmp_path / "big.bin", arcname="model_weights.ckpt")
    data = (tmp_path / "whole.nemo").read_bytes()
    (tmp_path / "truncated.nemo").write_bytes(data[: len(data) // 2])
    (tmp_path / "cut_at_end.nemo").write_bytes(data[: 512 + 150_000])  # the header whole, the data cut
    cut_at_end = "truncated .nemo file"
    cases = {"random.nemo": "not a readable .nemo file", "foreign.nemo": "no model_config.yaml or model_weights.ckpt",
             "truncated.nemo": "truncated .nemo file"}
    cases["cut_at_end.nemo"] = cut_at_end
    for name, fragment in cases.items():
        with pytest.raises(ValueError, match=fragment) as err:
            TokenClassificationModel.restore_from(str(tmp_path / name))
        assert name in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.nemo: no such .nemo file"):
        TokenClassificationModel.restore_from(str(tmp_path / "missing.nemo"))


def _repacked(tmp_path, nemo_file, name, change):
    """``nemo_file`` unpacked, ``change(folder)`` applied, packed again as ``name``."""
    folder = tmp_path / name.replace(".nemo", "")
    with tarfile.open(nemo_file) as tar:
        tar.extractall(folder, filter="data")
    change(folder)
    out = tmp_path / name
    with tarfile.open(out, "w:") as tar:
        tar.add(folder, arcname=".")
    return out


def _edit_weights(edit):
    """Weights changed, and saved with their new checksums (as a tool editing them would)."""
    from biomegatron_nemo.checkpoints.checksums import save_weights

    def change(folder):
        state = torch.load(folder / "model_weights.ckpt", weights_only=True)
        edit(state)
        save_weights(state, folder / "model_weights.ckpt")
    return change


def test_a_nemo_whose_config_or_weights_do_not_fit_is_named(tmp_path, tiny_vocab, megatron_single):
    """model_config.yaml that is not YAML, not UTF-8 or fails the schema: a ConfigError naming the
    .nemo and the line or key; weights that do not fit that config or cannot be read: an error
    naming the .nemo and the tensors (was NeMo's temporary folder, or a bare yaml/torch error)."""
    from omegaconf import OmegaConf

    from biomegatron_nemo.common.errors import ConfigError, DataFormatError
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    model = TokenClassificationModel(OmegaConf.create({
        "tokenizer": {"library": "wordpiece", "vocab_file": str(tiny_vocab)},
        "encoder": {"preset": "micro", "layer_spec": "portable"}, "label_map": ["O", "B-Chemical", "I-Chemical"]}))
    good = tmp_path / "ner.nemo"
    model.save_to(str(good))
    config = model.cfg

    def write_config(text=None, raw=None):
        def change(folder):
            path = folder / "model_config.yaml"
            path.write_bytes(raw if raw is not None else text.encode())
        return change

    yaml_text = OmegaConf.to_yaml(config)
    broken_yaml = yaml_text + "encoder: [\n"
    misspelt = yaml_text.replace("window_overlap:", "window_overlp:")
    resized = OmegaConf.to_yaml(OmegaConf.merge(config, {"encoder": {"hidden_size": 32}}))
    config_cases = {
        "not_yaml.nemo": (write_config(broken_yaml), rf"not valid YAML \(line {broken_yaml.count(chr(10)) + 1}, column 1\)"),
        "latin1.nemo": (write_config(raw=yaml_text.encode().replace(b"window_overlap", b"# caf\xe9\nwindow_overlap")),
                        "not UTF-8 text"),
        "a_list.nemo": (write_config("- 1\n- 2\n"), "TokenClassificationModel: expected a mapping, got ListConfig"),
        "misspelt.nemo": (write_config(misspelt), "TokenClassificationModel: window_overlp: unknown key; did you mean "
                                                  "window_overlap"),
    }
    for name, (change, message) in config_cases.items():
        path = _repacked(tmp_path, good, name, change)
        with pytest.raises(ConfigError, match=rf"^{path} \(model_config.yaml\): {message}"):
            TokenClassificationModel.restore_from(str(path))

    prefix = r"\[model_weights.ckpt\] the weights do not fit the model its model_config.yaml describes: "
    weight_cases = {
        "resized.nemo": (write_config(resized), "encoder.embedding.word_embeddings.weight: checkpoint tensor of "
                                                r"shape \(\d+, 64\) does not fit the model's \(\d+, 32\)"),
        "dropped.nemo": (_edit_weights(lambda s: s.pop("classifier.mlp.1.weight")),
                         r"checkpoint lacks weights the model needs: \['classifier.mlp.1.weight'\]"),
        "extra.nemo": (_edit_weights(lambda s: s.update(stray=torch.zeros(2))),
                       r"checkpoint has weights the model does not use: \['stray'\]"),
        "misshapen.nemo": (_edit_weights(lambda s: s.update({"classifier.mlp.1.weight": torch.zeros(7, 7)})),
                           r"classifier.mlp.1.weight: checkpoint tensor of shape \(7, 7\) does not fit"),
    }
    for name, (change, message) in weight_cases.items():
        path = _repacked(tmp_path, good, name, change)
        with pytest.raises(DataFormatError, match=rf"^{path}: {prefix}{message}"):
            TokenClassificationModel.restore_from(str(path))

    def cut_weights(folder):
        data = (folder / "model_weights.ckpt").read_bytes()
        (folder / "model_weights.ckpt").write_bytes(data[: len(data) // 2])
    cut = _repacked(tmp_path, good, "cut_weights.nemo", cut_weights)
    with pytest.raises(DataFormatError, match=rf"^{cut}: \[model_weights.ckpt\] not a torch checkpoint: no zip archive"):
        TokenClassificationModel.restore_from(str(cut))
    assert TokenClassificationModel.restore_from(str(good)).label_map.labels == model.label_map.labels
