"""A ``.nemo`` saved from a model that lives on the GPU restores on CPU with equal outputs.

The NER model is built from the example's own config (conf/token_classification.yaml, composed
the way examples/token_classification.py composes it), moved to CUDA, and its weights are
changed there (so what is saved can only be the GPU copy, not the initialisation). Saved with
``save_to``, restored with ``restore_from(..., map_location="cpu")``: the weights must be
bit-identical (the vocabulary's padding rows aside, which layout-free files do not keep), and ``evaluate`` on the shipped dev file and ``predict`` on raw text must give the
same tags, spans and (to float rounding) scores on CPU as on the GPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[2]
VOCAB = ROOT / "tests" / "fixtures" / "pretraining" / "sample_vocab.txt"
TEXTS = [
    "Cisplatin induced nephrotoxicity in rats was reduced by magnesium.",
    "Sepsis-associated encephalopathy is common in critically ill patients.",
    "",
]


def _example_config():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    spec = importlib.util.spec_from_file_location("ner_example", ROOT / "examples" / "token_classification.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # registers ${samples:...}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("token_classification", overrides=[
            f"model.tokenizer.vocab_file={VOCAB}",
            # portable: the spec a CPU can restore (auto is portable too on a GPU without TE)
            "model.encoder.layer_spec=portable"])
    OmegaConf.resolve(cfg)
    return cfg


def test_nemo_saved_on_gpu_restores_on_cpu_with_equal_outputs(megatron_single, exact_fp32_matmuls, tmp_path):
    from biomegatron_nemo.encoder.config import padded_vocab_size
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    cfg = _example_config()
    model = TokenClassificationModel(cfg.model).to("cuda").eval()
    assert all(p.is_cuda for p in model.parameters())
    generator = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, device="cuda", generator=generator))
    gpu_state = {k: v.detach().cpu().clone() if torch.is_tensor(v) else v for k, v in model.state_dict().items()}
    dev_file = cfg.model.validation_ds.file
    gpu_scores = model.evaluate(dev_file, output_file=str(tmp_path / "gpu.conll"))
    gpu_entities = model.predict(TEXTS)
    predicted = [line.split()[-1] for line in (tmp_path / "gpu.conll").read_text().splitlines() if line.strip()]
    assert len(set(predicted)) > 1  # the changed weights tag more than "O": the comparison below means something

    path = tmp_path / "ner_gpu.nemo"
    model.save_to(str(path))
    assert all(p.is_cuda for p in model.parameters())  # saving does not move the live model

    restored = TokenClassificationModel.restore_from(str(path), map_location="cpu")
    restored.eval()
    assert all(p.device.type == "cpu" for p in restored.parameters())
    cpu_state = restored.state_dict()
    assert cpu_state.keys() == gpu_state.keys()
    # Layout-free .nemo files keep the tokenizer's rows of vocabulary-sized tensors; the rows
    # Megatron pads the vocabulary with (for equal tensor-parallel shards) are not data.
    vocab = restored.tokenizer.vocab_size
    padded = padded_vocab_size(vocab)
    for key, value in gpu_state.items():
        if torch.is_tensor(value):
            rows = vocab if value.dim() and value.shape[0] == padded else None
            assert torch.equal(cpu_state[key].cpu()[:rows], value[:rows]), key
        else:  # megatron-core's `_extra_state` entries (None without Transformer Engine)
            assert cpu_state[key] == value, key

    cpu_scores = restored.evaluate(dev_file, output_file=str(tmp_path / "cpu.conll"))
    assert (tmp_path / "cpu.conll").read_text() == (tmp_path / "gpu.conll").read_text()
    assert cpu_scores["f1"] == gpu_scores["f1"]
    cpu_entities = restored.predict(TEXTS)
    assert len(cpu_entities) == len(gpu_entities) == len(TEXTS) and cpu_entities[-1] == []
    strip = [[{k: v for k, v in e.items() if k != "score"} for e in text] for text in gpu_entities]
    assert [[{k: v for k, v in e.items() if k != "score"} for e in text] for text in cpu_entities] == strip
    for gpu_text, cpu_text in zip(gpu_entities, cpu_entities):
        for g, c in zip(gpu_text, cpu_text):
            assert c["score"] == pytest.approx(g["score"], abs=1e-4)
