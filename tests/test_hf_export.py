"""Task models exported to Hugging Face: ``transformers`` alone loads each folder (model and
tokenizer) and gives our logits; ``pipeline("token-classification")`` on an exported NER model finds
our entities; heads HF cannot represent are refused by name.
"""

import pytest
import torch
from omegaconf import OmegaConf

from biomegatron_nemo.export.hf import export_hf
from biomegatron_nemo.models.question_answering import QuestionAnsweringModel
from biomegatron_nemo.models.sequence_classification import SequenceClassificationModel
from biomegatron_nemo.models.token_classification import TokenClassificationModel
from biomegatron_nemo.tokenizers.train import train_wordpiece

from _data_paths import SAMPLES

TEXTS = ["Cisplatin induced nephrotoxicity in rats.", "Lithium treatment caused tremor and polyuria."]
ENCODER = {"preset": "micro", "hidden_dropout": 0.0, "attention_dropout": 0.0, "layer_spec": "portable"}


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf_vocab")
    lines = [line.split("\t")[0] for line in (SAMPLES / "ner" / "train.tsv").read_text().splitlines() if line]
    (d / "text.txt").write_text(" ".join(lines) + "\n")
    return train_wordpiece([str(d / "text.txt")], str(d), vocab_size=800, soft_limit=True, progress=False)[0]


@pytest.fixture(scope="module")
def ner_model(vocab):
    from biomegatron_nemo.parallel.trainer import build_trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = OmegaConf.create({"tokenizer": {"vocab_file": vocab}, "encoder": ENCODER,
                                "head": {"num_layers": 1, "dropout": 0.0},
                                "train_ds": {"file": str(SAMPLES / "ner" / "train.tsv"), "batch_size": 32},
                                "optim": {"lr": 3e-3, "weight_decay": 0.0}})
        trainer = build_trainer({"max_steps": 80, "enable_progress_bar": False, "enable_model_summary": False})
        model = TokenClassificationModel(cfg, trainer=trainer)
        trainer.fit(model)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _encode(tokenizer, texts):
    rows = [[tokenizer.cls_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
            for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def test_exported_ner_model_gives_our_logits_and_entities_in_a_transformers_pipeline(ner_model, tmp_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    lines = export_hf(ner_model, str(tmp_path / "hf"))
    assert lines[-1].startswith("checked: transformers' outputs equal this model's within")
    hf = AutoModelForTokenClassification.from_pretrained(str(tmp_path / "hf")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert len(tokenizer) == ner_model.tokenizer.vocab_size
    assert hf.config.id2label == dict(enumerate(ner_model.label_map.labels))
    batch = _encode(tokenizer, TEXTS)
    with torch.no_grad():
        ours = ner_model(**batch).logits
        theirs = hf(**batch).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=0)
    ours_entities = ner_model.predict(TEXTS)
    assert any(ours_entities), "the trained model finds entities to compare"
    tagger = pipeline("token-classification", model=hf, tokenizer=tokenizer, aggregation_strategy="first")
    for text, mine, found in zip(TEXTS, ours_entities, tagger(TEXTS)):
        assert [(e["type"], e["start"], e["end"]) for e in mine] == \
            [(e["entity_group"], e["start"], e["end"]) for e in found], text


def test_exported_relation_and_qa_models_give_our_logits(vocab, tmp_path):
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer

    re_model = SequenceClassificationModel(OmegaConf.create({
        "tokenizer": {"vocab_file": vocab}, "encoder": ENCODER, "pooling": "pooler",
        "head": {"num_layers": 1, "dropout": 0.0}, "label_map": ["CPR:3", "CPR:4", "false"]})).eval()
    export_hf(re_model, str(tmp_path / "re"))
    hf = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "re")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "re"))
    assert tokenizer.tokenize("@CHEMICAL$ inhibits @GENE$")[0] == "@CHEMICAL$"  # the markers stay one token
    batch = _encode(tokenizer, ["@CHEMICAL$ inhibits @GENE$ in rats.", "@GENE$ and @CHEMICAL$"])
    with torch.no_grad():
        torch.testing.assert_close(re_model(**batch).logits, hf(**batch).logits, atol=1e-5, rtol=0)
    qa = QuestionAnsweringModel(OmegaConf.create({"tokenizer": {"vocab_file": vocab}, "encoder": ENCODER,
                                                  "head": {"num_layers": 1, "dropout": 0.0}})).eval()
    export_hf(qa, str(tmp_path / "qa"))
    hf_qa = AutoModelForQuestionAnswering.from_pretrained(str(tmp_path / "qa")).eval()
    batch = _encode(AutoTokenizer.from_pretrained(str(tmp_path / "qa")), TEXTS)  # no entity markers here
    with torch.no_grad():
        ours = qa(**batch)
        start, end = ours.start_logits, ours.end_logits
        out = hf_qa(**batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close((start[real], end[real]), (out.start_logits[real], out.end_logits[real]),
                               atol=1e-5, rtol=0)


def test_heads_without_a_transformers_counterpart_are_refused(vocab, tmp_path):
    two_layers = QuestionAnsweringModel(OmegaConf.create({"tokenizer": {"vocab_file": vocab}, "encoder": ENCODER}))
    with pytest.raises(ValueError, match="head has 2"):
        export_hf(two_layers, str(tmp_path / "qa"))
    cls_pooling = SequenceClassificationModel(OmegaConf.create({
        "tokenizer": {"vocab_file": vocab}, "encoder": ENCODER, "head": {"num_layers": 1},
        "label_map": ["a", "b"]}))
    with pytest.raises(ValueError, match="pooling=pooler"):
        export_hf(cls_pooling, str(tmp_path / "re"))


def test_an_export_that_would_serve_other_logits_is_refused(ner_model, tmp_path, monkeypatch):
    """The export loads its folder in transformers and compares with the model's forward: a wrong
    name mapping (here the classifier's weight scaled) is an error, not a folder."""
    from biomegatron_nemo.encoder.heads import TokenClassificationHead

    mapping = TokenClassificationHead.hf_tensors

    def off_by_a_bit(self, state, prefix):
        tensors = mapping(self, state, prefix)
        return {**tensors, "classifier.weight": tensors["classifier.weight"] * 1.01}

    monkeypatch.setattr(TokenClassificationHead, "hf_tensors", off_by_a_bit)
    with pytest.raises(ValueError, match="transformers' logits differs from this model's logits by .* not faithful"):
        export_hf(ner_model, str(tmp_path / "hf"))
