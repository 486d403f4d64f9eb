"""The Hugging Face peer's training loop, shared by the side-by-side benchmarks.

The same recipe as our models under NeMo: AdamW (torch's fused implementation, HF Trainer's default
``adamw_torch_fused``, and ours) without weight decay on biases and LayerNorm weights, NeMo's WarmupHoldPolicy (lr · (step + 1) / (warmup + 1), then constant), gradient
clipping at 1.0, trained until a wall-clock budget runs out.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Tuple

import torch


def hf_loader(dataset, args) -> torch.utils.data.DataLoader:
    """The peer's training loader: length-grouped (``args.batching == "grouped"``, the sampler our
    models use, as HF Trainer's ``group_by_length``) or randomly shuffled batches (HF Trainer's
    default), in our seeded order."""
    from biomegatron_nemo.data.batching import LengthGroupedSampler, ShuffledSampler

    if getattr(args, "batching", "random") == "grouped":
        sampler = LengthGroupedSampler(dataset.lengths(), args.batch_size, seed=args.seed)
    else:  # the order our random batches take (and one examples_trained can replay)
        sampler = ShuffledSampler(len(dataset), seed=args.seed)
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                                       collate_fn=dataset.collate_fn)


def adamw_with_warmup(model: torch.nn.Module, lr: float, warmup_steps: int):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and not n.endswith(".bias")]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and not n.endswith(".bias"))]
    optimizer = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, weight_decay=0.01, betas=(0.9, 0.999), fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup_steps + 1)))
    return optimizer, schedule


def train_within_budget(model: torch.nn.Module, loader, loss_of: Callable, lr: float, warmup_steps: int,
                        minutes: float, max_steps: Optional[int] = None) -> Tuple[int, float]:
    """Train ``model`` on ``loader`` (epochs repeat) for ``max_steps`` steps, or else until
    ``minutes`` pass; ``loss_of(model, batch)`` gives the loss. Returns (steps, seconds)."""
    optimizer, schedule = adamw_with_warmup(model, lr, warmup_steps)
    steps, started = 0, time.perf_counter()
    budget = float("inf") if max_steps else minutes * 60
    model.train()
    while time.perf_counter() - started < budget and steps < (max_steps or float("inf")):
        for batch in loader:
            loss = loss_of(model, batch)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            steps += 1
            if time.perf_counter() - started >= budget or steps == max_steps:
                break
    return steps, time.perf_counter() - started
