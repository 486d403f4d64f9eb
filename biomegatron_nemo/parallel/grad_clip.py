"""Clipping and the NaN/inf guard of every optimizer step (:func:`clip_and_check`), by the gradient
norm of the whole model across tensor and pipeline ranks, computed once a step.

Lightning clips by the norm of the parameters a rank holds; under tensor parallelism that is
a shard of each partitioned weight (plus a copy of every replicated one), under pipeline
parallelism a share of the layers — each rank would clip by a different, wrong norm.
megatron-core's ``clip_grad_norm_fp32`` does it right but allocates on CUDA; this is the same
rule on whatever device the gradients live: squared norms of partitioned parameters and of one
copy of each replicated or tied parameter, summed over the model-parallel group.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.tensor_parallel.layers import param_is_not_tensor_parallel_duplicate
from megatron.core.transformer.module import param_is_not_shared


def model_parallel_grad_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """The L2 norm of the full model's gradient (identical on every model-parallel rank)."""
    grads = [p.grad for p in parameters
             if p.grad is not None and param_is_not_shared(p) and param_is_not_tensor_parallel_duplicate(p)]
    if not grads:
        return torch.zeros(())
    squared = torch.nn.utils.get_total_norm(grads, 2.0, foreach=True).double() ** 2
    if dist.is_initialized() and parallel_state.model_parallel_is_initialized():
        dist.all_reduce(squared, group=parallel_state.get_model_parallel_group())
    return squared.sqrt().float()


def clip_and_check(params: List[torch.nn.Parameter], clip: Optional[float], on_nonfinite: str, step: Optional[int]) -> bool:
    """Clip ``params``' gradients by ``clip`` (the whole model's norm) unless that norm is NaN or
    inf: then ``on_nonfinite="error"`` raises a ``FloatingPointError`` naming the step, and
    ``"skip"`` drops the gradients (the optimizer then leaves every weight as it is) and returns
    True. The norm is taken after the data-parallel reduction and over all model-parallel ranks,
    so every rank decides alike (a rank raising alone would leave the others in a collective)."""
    norm = model_parallel_grad_norm(params)
    if bool(torch.isfinite(norm)):
        if clip:
            torch.nn.utils.clip_grads_with_norm_(params, float(clip), norm, foreach=True)
        return False
    if on_nonfinite == "error":
        raise FloatingPointError(
            f"step {step}: the gradient norm is {float(norm)} (a NaN or inf loss or gradient); the run stops "
            "before this update. Lower the learning rate or check this step's batch; "
            "model.on_nonfinite=skip drops such updates instead")
    for p in params:
        p.grad = None
    return True
