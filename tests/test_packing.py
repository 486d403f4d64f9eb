"""Packed sequences (``encoder.packed_sequences``, encoder/packing.py): the encoder runs only a
batch's real tokens, and every task's loss and gradients equal the padded batch's; the layout
bookkeeping is exact; settings it cannot honour are refused."""

import pytest
import torch
from omegaconf import OmegaConf

from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.encoder.config import EncoderConfig
from biomegatron_nemo.encoder.packing import (BUCKET_COST_PAIRS, MIN_PADDING_TO_PACK, PackedSequences,
                                              bucket_bounds, worth_packing)

from _data_paths import SAMPLES
from helpers.models import batch_loss, synthetic_mlm_batch

ENCODER = {"preset": "micro", "hidden_dropout": 0.0, "attention_dropout": 0.0, "layer_spec": "portable"}


def test_the_layout_of_a_padded_batch_is_exact():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    packed = PackedSequences.from_attention_mask(mask)
    assert packed.qkv_format == "thd"
    assert packed.cu_seqlens_q.tolist() == [0, 3, 4, 8] and packed.cu_seqlens_q.dtype == torch.int32
    assert packed.max_seqlen_q == packed.max_seqlen_kv == 4
    assert packed.token_index.tolist() == [0, 1, 2, 4, 8, 9, 10, 11]
    assert packed.position_ids().tolist() == [0, 1, 2, 0, 0, 1, 2, 3]  # restarting at every example
    values = torch.arange(12.0).view(3, 4, 1) + 1
    flat = packed.pack(values)
    assert flat.squeeze(1).tolist() == [1, 2, 3, 5, 9, 10, 11, 12]
    back = packed.to_padded(flat)
    assert torch.equal(back, values * mask[..., None])  # zeros at padding


def test_attention_buckets_minimise_query_key_pairs_plus_a_cost_per_bucket():
    assert BUCKET_COST_PAIRS == 4096
    # one bucket: 5 x 100² + 4096 = 54,096 pairs; [100, 98] [10, 9, 8]: 2 x 100² + 3 x 10² + 2 x 4096 = 28,492;
    # a third bucket saves at most 2 x (10² - 9²) = 38 pairs, less than it costs
    assert bucket_bounds([100, 98, 10, 9, 8]) == [0, 2, 5]
    assert bucket_bounds([20, 19, 18]) == [0, 3]  # splitting saves fewer pairs than a bucket costs
    assert bucket_bounds([]) == [0]
    packed = PackedSequences.from_attention_mask(torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0]]))
    assert [(b.examples, b.length) for b in packed.buckets] == [(3, 3)]
    assert packed.buckets[0].tokens.tolist() == [2, 3, 4, 0, 1, 5, 6]  # longest first
    assert packed.buckets[0].slots.tolist() == [0, 1, 2, 3, 4, 6, 7]
    assert packed.bucket_order.tolist() == [3, 4, 0, 1, 2, 5, 6]


def _models(build, config):
    """The same weights, padded and packed."""
    padded = build(OmegaConf.create(config))
    packed_config = OmegaConf.merge(config, {"encoder": {"packed_sequences": True}})
    packed = build(packed_config)
    packed.load_state_dict(padded.state_dict())
    return padded, packed


def _loss_and_grads(model, batch):
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the heads' dropout: same shapes in both layouts, so the same masks
    loss = batch_loss(model, batch)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_step(padded, packed, batch):
    assert worth_packing(batch["attention_mask"]), "the batch must hold enough padding to run packed"
    loss, grads = _loss_and_grads(padded, batch)
    packed_loss, packed_grads = _loss_and_grads(packed, batch)
    assert packed_loss == pytest.approx(loss, rel=1e-5, abs=1e-6)
    assert grads.keys() == packed_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _batch(dataset, indices):
    return dataset.collate_fn([dataset[i] for i in indices])


def _by_length(dataset):
    """Eight items of varied lengths: the longest, the shortest and six in between."""
    order = sorted(range(len(dataset)), key=lambda i: dataset.lengths()[i])
    return [order[int(k * (len(order) - 1) / 7)] for k in range(8)]


def test_masked_lm_and_sentence_order(tiny_vocab, megatron_single):
    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

    config = {"tokenizer": {"vocab_file": str(tiny_vocab)}, "encoder": ENCODER, "binary_head": True}
    padded, packed = _models(BioMegatronPretrainingModel, config)
    batch = synthetic_mlm_batch(padded.tokenizer.vocab_size, batch_size=4, seq_len=16)
    batch["attention_mask"][1, 11:] = 0
    batch["loss_mask"] *= batch["attention_mask"]  # nothing is predicted at padding
    batch["lm_labels"][batch["loss_mask"] == 0] = -100
    _assert_same_step(padded, packed, batch)


def test_token_classification(tiny_vocab, megatron_single):
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    config = {"tokenizer": {"vocab_file": str(tiny_vocab)}, "encoder": ENCODER, "head": {"num_layers": 2},
              "label_map": ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]}
    padded, packed = _models(TokenClassificationModel, config)
    dataset = padded.make_dataset(padded.read_sentences(str(SAMPLES / "ner" / "train.tsv")), 64)
    _assert_same_step(padded, packed, _batch(dataset, _by_length(dataset)))


def test_sequence_classification(tiny_vocab, megatron_single):
    from biomegatron_nemo.models.sequence_classification import SequenceClassificationModel

    config = {"tokenizer": {"vocab_file": str(tiny_vocab)}, "encoder": ENCODER, "pooling": "pooler",
              "label_map": ["CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9", "false"]}
    padded, packed = _models(SequenceClassificationModel, config)
    dataset = padded.make_dataset(padded.read_examples(str(SAMPLES / "chemprot" / "train.tsv")), 96)
    _assert_same_step(padded, packed, _batch(dataset, _by_length(dataset)))


def test_question_answering(tiny_vocab, megatron_single):
    from biomegatron_nemo.data.squad import read_squad
    from biomegatron_nemo.models.question_answering import QuestionAnsweringModel

    config = {"tokenizer": {"vocab_file": str(tiny_vocab)}, "encoder": ENCODER}
    padded, packed = _models(QuestionAnsweringModel, config)
    dataset = padded.make_dataset(read_squad(SAMPLES / "qa" / "train.json"), 128, training=True)
    _assert_same_step(padded, packed, _batch(dataset, _by_length(dataset)))


@pytest.mark.parametrize("order", ["pre", "post"])
def test_inference_outputs_equal_at_real_tokens(tiny_vocab, megatron_single, order):
    """Megatron-BERT and the original post-LayerNorm BERT (BioBERT, PubMedBERT, MiniLM)."""
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    config = {"tokenizer": {"vocab_file": str(tiny_vocab)}, "encoder": {**ENCODER, "layernorm_order": order}, "label_map": ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]}
    padded, packed = _models(TokenClassificationModel, config)
    dataset = padded.make_dataset(padded.read_sentences(str(SAMPLES / "ner" / "dev.tsv")), 64)
    batch = _batch(dataset, _by_length(dataset))
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = padded.eval()(**padded.forward_inputs(batch)).logits
        got = packed.eval()(**packed.forward_inputs(batch)).logits
    torch.testing.assert_close(got[real], expected[real], rtol=1e-5, atol=1e-5)


def test_a_batch_with_little_padding_runs_padded(tiny_vocab, megatron_single, monkeypatch):
    from biomegatron_nemo.encoder.model import MegatronBertEncoder
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    assert MIN_PADDING_TO_PACK == 0.05
    packed_batches = []
    run_packed = MegatronBertEncoder._packed_forward
    monkeypatch.setattr(MegatronBertEncoder, "_packed_forward",
                        lambda self, ids, mask, types: packed_batches.append(int((mask == 0).sum()))
                        or run_packed(self, ids, mask, types))
    config = {"tokenizer": {"vocab_file": str(tiny_vocab)}, "encoder": {**ENCODER, "packed_sequences": True},
              "label_map": ["O", "B-X", "I-X"]}
    model = TokenClassificationModel(OmegaConf.create(config)).eval()
    for padding in (0, 9, 10, 60):  # of 20 x 10 = 200 tokens: 0%, 4.5%, 5% and 30%
        mask = torch.ones(20, 10, dtype=torch.long)
        mask.view(-1)[torch.arange(padding) // 5 * 10 + 9 - torch.arange(padding) % 5] = 0  # row ends, 5 a row
        assert int((mask == 0).sum()) == padding and bool(mask[:, 0].all())
        with torch.no_grad():
            model(input_ids=torch.randint(5, 50, (20, 10)) * mask, attention_mask=mask)
    assert packed_batches == [10, 60]


def test_settings_packing_cannot_honour_are_refused():
    with pytest.raises(ConfigError, match="packed_sequences.*pipeline_model_parallel_size 1"):
        EncoderConfig(preset="micro", packed_sequences=True).validate(pipeline_parallel_size=2)
    with pytest.raises(ConfigError, match="packed_sequences.*local attention"):
        EncoderConfig(preset="micro", packed_sequences=True, layer_spec="local")
    with pytest.raises(ConfigError, match="packed_sequences.*sequence parallelism"):
        EncoderConfig(preset="micro", packed_sequences=True, extra={"sequence_parallel": True})


def test_the_compile_switch_compiles_the_layers_when_training_starts(tiny_vocab, megatron_single):
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    config = {"tokenizer": {"vocab_file": str(tiny_vocab)}, "encoder": {**ENCODER, "compile": True},
              "label_map": ["O", "B-X", "I-X"]}
    model = TokenClassificationModel(OmegaConf.create(config))
    names = [name for name, _ in model.named_parameters()]
    assert model.encoder.encoder._compiled_call_impl is None  # inference and export stay eager
    model.on_fit_start()
    assert model.encoder.encoder._compiled_call_impl is not None
    assert [name for name, _ in model.named_parameters()] == names  # checkpoints keep their keys


def test_a_packed_model_exports_the_padded_graph_and_onnxruntime_agrees_at_real_tokens(tiny_vocab, megatron_single,
                                                                                        tmp_path):
    pytest.importorskip("onnxruntime")
    from biomegatron_nemo.export.onnx import compare_with_onnxruntime, export_onnx
    from biomegatron_nemo.models.token_classification import TokenClassificationModel

    config = {"tokenizer": {"vocab_file": str(tiny_vocab)}, "encoder": {**ENCODER, "packed_sequences": True},
              "label_map": ["O", "B-X", "I-X"]}
    model = TokenClassificationModel(OmegaConf.create(config)).eval()
    export_onnx(model, tmp_path / "ner.onnx")
    assert compare_with_onnxruntime(model, tmp_path / "ner.onnx")["logits"] < 1e-4
