"""megatron-core's tensor-parallel linears: one ``F.linear`` where nothing is split, and working
under autocast (bf16-mixed on CPU and GPU) where something is.

The subclasses keep megatron-core's parameters, state-dict names, initialisation and, with
several tensor-parallel ranks, its forward and communication. They change two things.

**One rank, nothing to overlap** (tensor-parallel size 1, no sequence parallelism, no fused
weight-gradient accumulation): the layer is ``F.linear(x, W, b)`` with torch's own backward and
returns no separate bias. megatron-core's autograd function exists to overlap the matmuls with
communication; on one rank it is the same matmuls, but ``skip_bias_add`` layers hand their bias
back to the caller (the MLP adds it before GELU; the attention and MLP output projections add it
with dropout and the residual) and even the others add it in a pass of their own. In ``addmm``
the bias is part of the matmul, and the callers skip a bias that is ``None``: the result is the
same sum. ``F.linear`` is also what autocast (CPU and CUDA) casts natively, so bf16 activations
stay bf16. Measured on this machine in docs/benchmarks.md. (While traced for ONNX export the
layer takes megatron-core's path, whose graph the exporter's shape inference follows.)

**Several ranks**: megatron-core's function, decorated with
``torch.amp.custom_fwd(device_type="cuda")``, which under CPU autocast does nothing: the forward
matmul would run in bf16 while the function saves the fp32 input and weight, and the backward
fails ("expected m1 and m2 to have the same dtype"). Under CPU autocast the input, weight and bias
are cast to the autocast dtype and the function runs with autocast off, as ``custom_fwd`` does on
CUDA, so forward and backward agree; the fp32 master weights receive fp32 gradients (through the
cast). A bias returned to the caller is cast to the output's dtype: added as the fp32 parameter it
would promote the activation, and every op after it, to fp32.

The layer specs and the masked-LM head use them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear


class _PortableLinearMixin:
    def _matmul_only(self) -> bool:
        """True when megatron-core's forward would do nothing but the matmul and bias."""
        group = getattr(self, "tp_group", None)
        return ((group is None or group.size() == 1) and not self.sequence_parallel
                and not self.gradient_accumulation_fusion and not getattr(self, "explicit_expert_comm", False)
                and not self.config.defer_embedding_wgrad_compute)

    def forward(self, input_, weight=None, *args, **kwargs):
        # Traced for ONNX export, megatron-core's path (the same sum): the TorchScript exporter's
        # shape inference loses the rank of activations after a 3-D F.linear.
        if self._matmul_only() and not torch.jit.is_tracing():
            return F.linear(input_, self.weight if weight is None else weight, self.bias), None
        output, bias = super().forward(input_, *((weight,) if weight is not None else ()), *args, **kwargs)
        if bias is not None and bias.dtype != output.dtype and torch.is_autocast_enabled(output.device.type):
            bias = bias.to(output.dtype)
        return output, bias

    def _forward_impl(self, input, weight, *args, **kwargs):
        if input.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
            if kwargs.get("bias") is not None:
                kwargs["bias"] = kwargs["bias"].to(dtype)
            with torch.autocast("cpu", enabled=False):
                return super()._forward_impl(input.to(dtype), weight.to(dtype), *args, **kwargs)
        return super()._forward_impl(input, weight, *args, **kwargs)


class AutocastColumnParallelLinear(_PortableLinearMixin, ColumnParallelLinear):
    """``ColumnParallelLinear``: ``F.linear`` on one rank; runs under CPU autocast on several."""


class AutocastRowParallelLinear(_PortableLinearMixin, RowParallelLinear):
    """``RowParallelLinear``: ``F.linear`` on one rank; runs under CPU autocast on several."""
