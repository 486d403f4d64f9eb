"""bf16-mixed on CPU: megatron-core's linears run under CPU autocast (encoder/linear.py); a bf16
step's loss and gradients track fp32 within bf16 tolerance; Lightning's ``precision: bf16-mixed``
trains with fp32 master weights and optimizer state."""

import pytest
import torch

from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

from helpers.models import batch_loss, pretraining_config, synthetic_mlm_batch, write_tiny_vocab


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    return write_tiny_vocab(tmp_path_factory.mktemp("bf16") / "vocab.txt")


def _loss_and_grads(model, batch, bf16: bool):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = batch_loss(model, batch)
    loss.backward()
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_a_bf16_step_tracks_fp32(vocab):
    model = BioMegatronPretrainingModel(pretraining_config(vocab, binary_head=True))
    batch = synthetic_mlm_batch(model.tokenizer.vocab_size, batch_size=8, seq_len=32)
    loss32, grads32 = _loss_and_grads(model, batch, bf16=False)
    loss16, grads16 = _loss_and_grads(model, batch, bf16=True)
    assert abs(loss16 - loss32) < 0.02 * abs(loss32)
    assert grads16.keys() == grads32.keys()
    assert all(g.dtype == torch.float32 for g in grads16.values())  # fp32 master weights get fp32 gradients
    flat32 = torch.cat([g.flatten() for g in grads32.values()])
    flat16 = torch.cat([grads16[n].flatten() for n in grads32])
    assert torch.nn.functional.cosine_similarity(flat16, flat32, dim=0) > 0.99
    for name in ("encoder.encoder.layers.0.self_attention.linear_qkv.weight", "mlm_head.lm_head.dense.weight"):
        rel = (grads16[name] - grads32[name]).norm() / grads32[name].norm()
        assert rel < 0.05, f"{name}: relative gradient error {rel:.3f}"


def test_lightning_bf16_mixed_trains_with_fp32_weights_and_optimizer_state(tmp_path):
    """NER through the Trainer with ``precision: bf16-mixed``: the linears compute in bf16, the
    weights and AdamW's moments stay fp32, the loss goes down."""
    from omegaconf import OmegaConf

    from biomegatron_nemo.models.token_classification import TokenClassificationModel
    from biomegatron_nemo.parallel.trainer import build_trainer
    from biomegatron_nemo.tokenizers.train import train_wordpiece

    from _data_paths import SAMPLES

    lines = [line.split("\t")[0] for line in (SAMPLES / "ner" / "train.tsv").read_text().splitlines() if line]
    (tmp_path / "text.txt").write_text(" ".join(lines) + "\n")
    vocab = train_wordpiece([str(tmp_path / "text.txt")], str(tmp_path), vocab_size=600, soft_limit=True,
                            progress=False)[0]
    cfg = OmegaConf.create({"tokenizer": {"vocab_file": vocab},
                            "encoder": {"preset": "micro", "layer_spec": "portable"},
                            "train_ds": {"file": str(SAMPLES / "ner" / "train.tsv"), "batch_size": 32},
                            "optim": {"lr": 3e-3, "weight_decay": 0.0}})
    trainer = build_trainer({"max_steps": 20, "precision": "bf16-mixed", "enable_progress_bar": False,
                             "enable_model_summary": False, "log_every_n_steps": 1})
    model = TokenClassificationModel(cfg, trainer=trainer)
    seen, losses = [], []
    original = model.training_step

    def recording_step(batch, batch_idx):
        if not losses:  # the layers exist once Lightning has called configure_model
            model.encoder.encoder.layers[0].mlp.linear_fc1.register_forward_hook(
                lambda m, i, o: seen.append(o[0].dtype))
        loss = original(batch, batch_idx)
        losses.append(float(loss))
        return loss

    model.training_step = recording_step
    trainer.fit(model)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    state = trainer.optimizers[0].state
    assert state and all(s["exp_avg"].dtype == torch.float32 for s in state.values())
    assert all(map(lambda x: x == x, losses)) and sum(losses[-5:]) < sum(losses[:5])


@pytest.mark.parametrize("path", ["one-rank F.linear", "megatron-core's function"])
def test_bf16_activations_stay_bf16_between_the_linears(vocab, path, monkeypatch):
    """Under CPU autocast every linear after the first of a layer receives a bf16 activation: no
    fp32 bias (megatron-core's ``skip_bias_add``) promotes the MLP's GELU or the residual stream
    to fp32. Both matmul paths of encoder/linear.py (the several-rank one forced on one rank)
    give fp32 the same loss."""
    from biomegatron_nemo.encoder import linear

    if path != "one-rank F.linear":
        monkeypatch.setattr(linear._PortableLinearMixin, "_matmul_only", lambda self: False)
    model = BioMegatronPretrainingModel(pretraining_config(vocab, binary_head=False))
    batch = synthetic_mlm_batch(model.tokenizer.vocab_size, batch_size=4, seq_len=16)
    seen = {}
    for name, module in model.named_modules():
        if isinstance(module, linear._PortableLinearMixin):
            module.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        batch_loss(model, batch)
    inner = {n: d for n, d in seen.items() if n.endswith(("linear_proj", "linear_fc2"))}
    assert inner and all(d == torch.bfloat16 for d in inner.values()), inner
    model.eval()
    with torch.no_grad():
        loss = float(batch_loss(model, batch))
    monkeypatch.undo()
    with torch.no_grad():
        reference = float(batch_loss(model, batch))  # the one-rank path
    assert loss == pytest.approx(reference, rel=1e-5)
