"""Training flows run identically at different parallel layouts, for parity tests.

Each flow restores the same ``.nemo`` (so every layout starts from the same weights), runs a few
SGD steps on fixed batches and writes what it saw — losses, vocab-gathered logits, final
layout-free weights — to ``out`` (rank 0 only).
"""

from __future__ import annotations

import torch
from omegaconf import open_dict

from helpers.models import all_positions, batch_loss, synthetic_mlm_batch

STEPS = 3


def _optimizer(model):
    # SGD, not Adam: the key bias has a mathematically zero gradient (softmax is shift
    # invariant), and Adam's m/sqrt(v) would blow its float-rounding noise up to ±lr.
    return torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)


def _gathered_logits(model, batch):
    from biomegatron_nemo.parallel.state import gather_along_last_dim

    with torch.no_grad():
        logits = all_positions(model, batch).logits
    return gather_along_last_dim(logits)[..., : model.tokenizer.vocab_size]


def train_flow(nemo_file: str, tp: int, pp: int, out: str, num_microbatches: int = 1, save_to: str | None = None):
    """Restore at (tp, pp), record logits + 3 steps of losses + final weights; optionally save."""
    import torch.distributed as dist

    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel
    from biomegatron_nemo.parallel import initialize_megatron

    initialize_megatron(tp, pp)
    model = BioMegatronPretrainingModel.restore_from(nemo_file)
    if pp > 1:
        with open_dict(model.cfg):
            model.cfg.pipeline = {"num_microbatches": num_microbatches}
    record = {}
    batches = [synthetic_mlm_batch(model.tokenizer.vocab_size, seed=s) for s in range(STEPS)]
    if pp == 1:
        record["logits"] = _gathered_logits(model, batches[0])
    optimizer = _optimizer(model)
    losses = []
    for batch in batches:
        optimizer.zero_grad()
        if pp == 1:
            loss = batch_loss(model, batch)
            loss.backward()
        else:
            loss = model.pipeline_runner.step(batch)
        optimizer.step()
        losses.append(float(loss.detach()))
    record["losses"] = losses
    record["weights"] = model.layout_free_state_dict()
    if save_to:
        model.save_to(save_to)
    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save(record, out)


def spawned_train_flow(rank, world_size, nemo_file, tp, pp, out, num_microbatches=1, save_to=None):
    train_flow(nemo_file, tp, pp, out, num_microbatches, save_to)


def spawned_restore_logits(rank, world_size, nemo_file, tp, out):
    """Restore at TP=tp and record vocab-gathered logits of the first batch, padded and packed."""
    import torch.distributed as dist

    from biomegatron_nemo.models.pretraining import BioMegatronPretrainingModel
    from biomegatron_nemo.parallel import initialize_megatron

    initialize_megatron(tp, 1)
    model = BioMegatronPretrainingModel.restore_from(nemo_file)
    batch = synthetic_mlm_batch(model.tokenizer.vocab_size, seed=0)
    logits = _gathered_logits(model, batch)
    from biomegatron_nemo.encoder.packing import worth_packing

    assert worth_packing(batch["attention_mask"])  # padding enough to run packed
    model.encoder.encoder_config.packed_sequences = True  # the same weights, only the real tokens computed
    packed_logits = _gathered_logits(model, batch)
    if dist.get_rank() == 0:
        torch.save({"logits": logits, "packed_logits": packed_logits}, out)
