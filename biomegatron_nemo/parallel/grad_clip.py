"""The gradient norm of the whole model across tensor and pipeline ranks (clipping and the NaN/inf
guard of ``BioMegatronModelPT.configure_gradient_clipping`` both use it, computed once a step).

Lightning clips by the norm of the parameters a rank holds; under tensor parallelism that is
a shard of each partitioned weight (plus a copy of every replicated one), under pipeline
parallelism a share of the layers — each rank would clip by a different, wrong norm.
megatron-core's ``clip_grad_norm_fp32`` does it right but allocates on CUDA; this is the same
rule on whatever device the gradients live: squared norms of partitioned parameters and of one
copy of each replicated or tied parameter, summed over the model-parallel group.
"""

from __future__ import annotations

from typing import Iterable

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
