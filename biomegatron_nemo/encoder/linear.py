"""megatron-core's tensor-parallel linears, made to work under CPU autocast (bf16-mixed on CPU).

megatron-core's ``ColumnParallelLinear`` / ``RowParallelLinear`` run their matmuls in an autograd
function decorated with ``torch.amp.custom_fwd(device_type="cuda")``. Under CPU autocast that
decoration does nothing: the forward matmul runs in bf16 (autocast casts it) while the function
saves the fp32 input and weight, so the backward multiplies a bf16 gradient with fp32 tensors and
fails ("expected m1 and m2 to have the same dtype"). On CUDA, ``custom_fwd`` casts the inputs and
turns autocast off inside the function; these subclasses do the same for CPU autocast — input,
weight and bias cast to the autocast dtype, the function run with autocast off — so forward and
backward agree. The fp32 master weights receive fp32 gradients (through the cast). Outside CPU
autocast they are megatron-core's classes unchanged. The layer specs and the masked-LM head use them.
"""

from __future__ import annotations

import torch
from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear


class _CpuAutocastMixin:
    def _forward_impl(self, input, weight, *args, **kwargs):
        if input.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
            if kwargs.get("bias") is not None:
                kwargs["bias"] = kwargs["bias"].to(dtype)
            with torch.autocast("cpu", enabled=False):
                return super()._forward_impl(input.to(dtype), weight.to(dtype), *args, **kwargs)
        return super()._forward_impl(input, weight, *args, **kwargs)


class AutocastColumnParallelLinear(_CpuAutocastMixin, ColumnParallelLinear):
    """``ColumnParallelLinear`` that also runs under CPU autocast."""


class AutocastRowParallelLinear(_CpuAutocastMixin, RowParallelLinear):
    """``RowParallelLinear`` that also runs under CPU autocast."""
