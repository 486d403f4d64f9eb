"""The masked-LM loss runs the head on the masked positions only (models/pretraining.py): it must
equal a cross-entropy over every position's logits, computed independently with torch, and give
the same gradients."""

import torch
import torch.nn.functional as F

from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel

from helpers.models import all_positions, pretraining_config, synthetic_mlm_batch, write_tiny_vocab


def test_masked_positions_only_give_the_loss_and_gradients_of_all_positions(tmp_path):
    model = BioMegatronPretrainingModel(pretraining_config(write_tiny_vocab(tmp_path / "vocab.txt")))
    batch = synthetic_mlm_batch(model.tokenizer.vocab_size, batch_size=4, seq_len=16)
    mask = batch["loss_mask"].bool()
    assert 0 < mask.sum() < mask.numel() // 2  # a real subset

    model.zero_grad()
    loss = model.loss(model(**model.forward_inputs(batch)), batch)["mlm"]
    loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    logits = all_positions(model, batch).logits[..., :model.tokenizer.vocab_size]  # every position
    reference = F.cross_entropy(logits[mask].float(), batch["lm_labels"][mask], reduction="mean")
    reference.backward()
    assert torch.allclose(loss, reference, rtol=1e-5, atol=1e-6), (float(loss), float(reference))
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(ours[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
