"""ONNX export (biomegatron_nemo/export/onnx.py): every task model's ``.nemo`` exports to a file
whose onnxruntime outputs equal the restored PyTorch model's within 1e-4, at two batch sizes and
sequence lengths with padding (the dynamic axes), and carries the labels a server needs.

The reference is the restored model's ``forward`` (the call training and ``predict`` make), not the
export wrapper: a wrong head or a dropped mask fails it (each was tried).
"""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from omegaconf import OmegaConf

from biomegatron_nemo.export.onnx import INPUTS, export_nemo_to_onnx, export_onnx, main
from biomegatron_nemo.models.base import BioMegatronModelPT
from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel
from biomegatron_nemo.models.question_answering import QuestionAnsweringModel
from biomegatron_nemo.models.sequence_classification import SequenceClassificationModel
from biomegatron_nemo.models.token_classification import TokenClassificationModel

from helpers.models import pretraining_config

# dropout on, as in trained models: the graph must be the eval-mode forward
ENCODER = {"preset": "micro", "hidden_dropout": 0.1, "attention_dropout": 0.1, "layer_spec": "portable",
           "max_position_embeddings": 64}
NER_LABELS = ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
RE_LABELS = ["CPR:3", "CPR:4", "CPR:5", "false"]
#: (batch size, sequence length, real length of each row): two shapes, padded rows in both
SHAPES = [(2, 9, [9, 5]), (3, 23, [14, 23, 3])]
KINDS = ("ner", "re", "qa", "mlm")


def _build(kind, vocab):
    tokenizer = {"vocab_file": str(vocab)}
    if kind == "ner":
        return TokenClassificationModel(OmegaConf.create({"tokenizer": tokenizer, "encoder": ENCODER,
                                                          "label_map": NER_LABELS}))
    if kind == "re":  # the pooler path of the sequence head, and the entity-marker tokens
        return SequenceClassificationModel(OmegaConf.create({"tokenizer": tokenizer, "encoder": ENCODER,
                                                             "pooling": "pooler", "label_map": RE_LABELS}))
    if kind == "qa":
        return QuestionAnsweringModel(OmegaConf.create({"tokenizer": tokenizer, "encoder": ENCODER}))
    cfg = pretraining_config(vocab, binary_head=True)
    cfg.encoder = ENCODER
    return BioMegatronPretrainingModel(cfg)


@pytest.fixture(scope="module")
def nemo_files(tmp_path_factory, tiny_vocab, megatron_single):
    folder = tmp_path_factory.mktemp("onnx_nemo")
    files = {}
    for seed, kind in enumerate(KINDS):
        model = _build(kind, tiny_vocab)
        _spread_weights(model, seed)
        files[kind] = folder / f"{kind}.nemo"
        model.save_to(str(files[kind]))
    return files


def _spread_weights(model, seed):
    """Weights of a trained model's scale (initialisation leaves the masked-LM logits near 0.005):
    outputs of order 1, where 1e-4 tells a right graph from a wrong one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
            elif "layernorm" not in name.lower() and "norm" not in name.split(".")[-2].lower():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _batch(vocab_size, batch_size, seq_len, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (batch_size, seq_len), generator=g)
    ids[:, 0] = 2  # [CLS]
    mask = (torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids[mask == 0] = 0  # [PAD]
    types = torch.zeros_like(ids)
    types[:, seq_len // 3:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _reference(kind, model, batch):
    """The restored model's outputs through its forward (the call training and predict make), the
    masked-LM logits cut to one per tokenizer id (the export leaves Megatron's padding rows out)."""
    with torch.no_grad():
        out = model(**batch)
    if kind == "qa":
        return {"start_logits": out.start_logits, "end_logits": out.end_logits}
    if kind == "mlm":
        return {"logits": out.logits[..., :model.tokenizer.vocab_size], "sentence_order_logits": out.sentence_order_logits}
    return {"logits": out.logits}


def _per_token(output, mask):
    return output.dim() >= 2 and output.shape[1] == mask.shape[1]


def _real_difference(theirs, ours, mask):
    """Max abs difference over the real tokens (per-token outputs) or over the padded rows."""
    keep = mask.bool() if _per_token(ours, mask) else mask.min(dim=1).values == 0
    return float(np.abs(theirs[keep.numpy()] - ours[keep].numpy()).max())


def _run(session, batch):
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {k: batch[k].numpy() for k in INPUTS})))


@pytest.mark.parametrize("kind", KINDS)
def test_onnxruntime_gives_the_restored_models_outputs_at_two_shapes(kind, nemo_files, tmp_path, record_property):
    path = tmp_path / f"{kind}.onnx"
    summary = export_nemo_to_onnx(nemo_files[kind], path)
    model = BioMegatronModelPT.restore_from(str(nemo_files[kind]), map_location=torch.device("cpu")).eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUTS) == summary["inputs"]
    assert all(i.shape == ["batch", "sequence"] and i.type == "tensor(int64)" for i in session.get_inputs())
    assert [o.name for o in session.get_outputs()] == summary["outputs"]
    worst = 0.0
    for seed, (b, s, lengths) in enumerate(SHAPES):
        batch = _batch(model.tokenizer.vocab_size, b, s, lengths, seed)
        ours, theirs = _reference(kind, model, batch), _run(session, batch)
        assert list(theirs) == list(ours)
        for name, expected in ours.items():
            assert theirs[name].shape == tuple(expected.shape), name
            mask = batch["attention_mask"]
            real = expected[mask.bool()] if _per_token(expected, mask) else expected
            assert float(real.abs().max()) > 0.5, "outputs too small to tell heads apart"
            diff = float(np.abs(theirs[name] - expected.numpy()).max())
            assert diff <= 1e-4, f"{kind} {name} at {b}x{s}: max abs difference {diff}"
            worst = max(worst, diff)
        # The padding matters: ignoring the mask changes the real tokens' outputs, so a graph
        # that lost its mask input could not have passed the comparison above.
        unmasked = _run(session, {**batch, "attention_mask": torch.ones_like(batch["attention_mask"])})
        assert max(_real_difference(unmasked[n], ours[n], batch["attention_mask"]) for n in ours) > 1e-3
    record_property("max_abs_difference", worst)
    print(f"{kind}: max abs difference onnxruntime vs PyTorch {worst:.3g}")


def test_metadata_maps_logits_to_labels(nemo_files, tmp_path, tiny_vocab):
    for kind, labels in (("ner", NER_LABELS), ("re", RE_LABELS), ("qa", None)):
        path = tmp_path / f"{kind}.onnx"
        summary = export_nemo_to_onnx(nemo_files[kind], path)
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        model_class = {"ner": TokenClassificationModel, "re": SequenceClassificationModel,
                       "qa": QuestionAnsweringModel}[kind]
        assert props["model_class"] == f"{model_class.__module__}.{model_class.__name__}"
        assert props["max_sequence_length"] == "64"
        assert props["biomegatron_nemo_version"]
        if labels is None:
            assert "labels" not in props and summary["labels"] is None
            assert json.loads(props["outputs"]) == ["start_logits", "end_logits"]
            continue
        # NER keeps the label order it was given ("O" first); RE's order is the label map's
        assert json.loads(props["labels"]) == summary["labels"]
        assert sorted(summary["labels"]) == sorted(labels)
        logits = onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim
        assert logits[-1].dim_value == len(labels)
    re_props = {p.key: p.value for p in onnx.load(str(tmp_path / "re.onnx")).metadata_props}
    assert "@CHEMICAL$" in json.loads(re_props["special_ids"])  # the entity markers a server must insert
    vocab_rows = len(tiny_vocab.read_text().splitlines())  # + the entity markers RE appends
    assert int(re_props["vocab_size"]) == vocab_rows + len(json.loads(re_props["special_ids"])) - 5


def test_command_line_exports_and_checks(nemo_files, tmp_path, capsys):
    out = tmp_path / "cli" / "ner.onnx"
    assert main([str(nemo_files["ner"]), str(out), "--opset", "18", "--check"], prog="biomegatron export-onnx") == 0
    printed = capsys.readouterr().out
    assert "labels: " + ", ".join(NER_LABELS) in printed
    diff = float(printed.split("max abs difference onnxruntime vs PyTorch ")[1].split()[0])
    assert diff <= 1e-4
    assert onnx.load(str(out)).opset_import[0].version == 18
    assert main([str(tmp_path / "missing.nemo"), str(tmp_path / "x.onnx")]) == 2
    assert "no such .nemo file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["--help"], prog="biomegatron export-onnx")
    assert done.value.code == 0 and "biomegatron export-onnx ner.nemo ner.onnx --check" in capsys.readouterr().out


def test_external_data_and_refusals(nemo_files, tmp_path):
    model = BioMegatronModelPT.restore_from(str(nemo_files["qa"]), map_location=torch.device("cpu")).eval()
    export_onnx(model, tmp_path / "qa.onnx", external_data=True)
    assert (tmp_path / "qa.onnx.data").stat().st_size > (tmp_path / "qa.onnx").stat().st_size
    batch = _batch(model.tokenizer.vocab_size, *SHAPES[1], seed=3)
    theirs = _run(ort.InferenceSession(str(tmp_path / "qa.onnx"), providers=["CPUExecutionProvider"]), batch)
    ours = _reference("qa", model, batch)
    assert max(float(np.abs(theirs[n] - ours[n].numpy()).max()) for n in ours) <= 1e-4
    with pytest.raises(ValueError, match="fp32"):
        export_onnx(model.to(torch.bfloat16), tmp_path / "bf16.onnx")
    with pytest.raises(ValueError, match="takes a model of this library, got MegatronBertEncoder"):
        export_onnx(model.encoder, tmp_path / "encoder.onnx")


def test_a_model_without_token_types_takes_the_same_three_inputs(tiny_vocab, megatron_single, tmp_path):
    model = TokenClassificationModel(OmegaConf.create({
        "tokenizer": {"vocab_file": str(tiny_vocab)}, "encoder": {**ENCODER, "num_tokentypes": 0},
        "label_map": NER_LABELS})).eval()
    _spread_weights(model, 7)
    export_onnx(model, tmp_path / "ner.onnx", opset=14)
    session = ort.InferenceSession(str(tmp_path / "ner.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUTS)
    batch = _batch(model.tokenizer.vocab_size, *SHAPES[1], seed=4)
    diff = np.abs(_run(session, batch)["logits"] - _reference("ner", model, batch)["logits"].numpy()).max()
    assert diff <= 1e-4
    with pytest.raises(ValueError, match="opset 14 or later"):
        export_onnx(model, tmp_path / "old.onnx", opset=13)
