"""The task contract every model keeps: ``forward(input_ids, attention_mask, token_type_ids=None)``
returns typed logits and ``loss(output, batch)`` the named losses; ``predict``, ONNX and Hugging Face
export go through that ``forward``; and after ``import biomegatron_nemo`` (which stays cheap), NeMo's
own ``ModelPT.restore_from`` restores every model of this library as its own class."""

import json
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from biomegatron_nemo.models.outputs import MaskedLMOutput, SequenceClassifierOutput, SpanQAOutput, TokenClassifierOutput

from helpers.processes import clean_env

ENCODER = {"preset": "micro", "hidden_dropout": 0.0, "attention_dropout": 0.0, "layer_spec": "portable"}
OUTPUT_OF = {"ner": TokenClassifierOutput, "re": SequenceClassifierOutput, "qa": SpanQAOutput, "pretrain": MaskedLMOutput}


@pytest.fixture(scope="module")
def models(tiny_vocab, megatron_single):
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel
    from biomegatron_nemo.models.question_answering import QuestionAnsweringModel
    from biomegatron_nemo.models.sequence_classification import SequenceClassificationModel
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    common = {"tokenizer": {"vocab_file": str(tiny_vocab)}, "encoder": ENCODER, "head": {"num_layers": 1}}
    return {
        "ner": TokenClassificationModel(OmegaConf.create({**common, "label_map": ["O", "B-Chemical", "I-Chemical"]})),
        "re": SequenceClassificationModel(OmegaConf.create({**common, "pooling": "pooler",
                                                            "label_map": ["CPR:3", "false"]})),
        "qa": QuestionAnsweringModel(OmegaConf.create(common)),
        "pretrain": BioMegatronPretrainingModel(OmegaConf.create({"tokenizer": common["tokenizer"],
                                                                  "encoder": ENCODER, "binary_head": True})),
    }


def _inputs(model):
    tok = model.tokenizer
    rows = [[tok.cls_id] + tok.encode(t).ids + [tok.sep_id] for t in ("cisplatin induced nephrotoxicity", "insulin")]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


@pytest.mark.parametrize("kind", sorted(OUTPUT_OF))
def test_forward_returns_typed_logits_and_the_loss_is_separate(models, kind):
    model = models[kind].eval()
    ids, mask = _inputs(model)
    with torch.no_grad():
        output = model(input_ids=ids, attention_mask=mask)
    assert type(output) is OUTPUT_OF[kind]
    first = next(iter(output.tensors().values()))
    assert first.shape[0] == 2 and torch.isfinite(first).all()
    if kind == "ner":
        assert output.logits.shape == (2, ids.shape[1], 3)
        labels = torch.where(mask.bool(), torch.zeros_like(ids), torch.full_like(ids, -100))
        losses = model.loss(output, {"labels": labels})
        expected = torch.nn.functional.cross_entropy(output.logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        assert set(losses) == {"ner"} and float(losses["ner"]) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("kind", ["ner", "re", "qa"])
def test_predict_onnx_and_hugging_face_export_call_forward(models, kind, tmp_path, monkeypatch):
    from biomegatron_nemo.export.hf import export_hf
    from biomegatron_nemo.export.onnx import export_onnx

    model = models[kind]
    calls = []
    forward = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, *a, **k: calls.append("forward") or forward(self, *a, **k))
    inputs = {"ner": ["cisplatin induced nephrotoxicity ."], "re": ["@CHEMICAL$ inhibits @GENE$ ."],
              "qa": [{"question": "what does insulin do ?", "context": "insulin lowers glucose in blood ."}]}[kind]
    model.predict(inputs)
    assert calls, "predict did not call forward"
    calls.clear()
    export_onnx(model, tmp_path / "model.onnx")
    assert calls, "the ONNX export did not trace forward"
    calls.clear()
    export_hf(model, tmp_path / "hf")
    assert calls, "the Hugging Face export's check did not call forward"


@pytest.mark.slow
def test_nemo_restores_every_model_after_a_cheap_import(models, tmp_path):
    paths = {}
    for kind, model in models.items():
        paths[kind] = str(tmp_path / f"{kind}.nemo")
        model.save_to(paths[kind])
    code = """
import json, sys, time
started = time.perf_counter()
import biomegatron_nemo
cheap = {"seconds": time.perf_counter() - started, "nemo": "nemo" in sys.modules, "torch": "torch" in sys.modules}
import torch
from nemo.core import ModelPT
result = {"import": cheap}
for kind, path in json.loads(sys.argv[1]).items():
    model = ModelPT.restore_from(path).eval()
    ids = torch.tensor([[2, 40, 41, 3]])
    with torch.no_grad():
        output = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    result[kind] = [type(model).__name__, type(output).__name__]
print("RESULT=" + json.dumps(result))
"""
    done = subprocess.run([sys.executable, "-c", code, json.dumps(paths)], capture_output=True, text=True,
                          env=clean_env(), cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("RESULT="))[len("RESULT="):])
    assert not result["import"]["nemo"] and not result["import"]["torch"]  # registered without importing NeMo
    assert result["import"]["seconds"] < 1.0
    assert result == {**result, "ner": ["TokenClassificationModel", "TokenClassifierOutput"],
                      "re": ["SequenceClassificationModel", "SequenceClassifierOutput"],
                      "qa": ["QuestionAnsweringModel", "SpanQAOutput"],
                      "pretrain": ["BioMegatronPretrainingModel", "MaskedLMOutput"]}
