"""megatron-core's tensor-parallel linears, as ``F.linear`` where nothing is split and working under
autocast (bf16-mixed on CPU and GPU) where something is. Parameters, state-dict names and
initialisation stay megatron-core's; the layer specs and the masked-LM head use these.

* **One tensor-parallel rank** (no sequence parallelism, no fused weight-gradient accumulation):
  ``F.linear(x, W, b)`` with the bias inside the matmul (``addmm``) and no separate bias returned
  (callers skip a ``None`` bias: the same sum). megatron-core's autograd function only overlaps
  matmuls with communication, and its ``skip_bias_add`` hands an fp32 bias back, which would
  promote bf16 activations to fp32. While traced for ONNX the layer takes megatron-core's path.
* **Several ranks**: megatron-core's function, whose ``custom_fwd(device_type="cuda")`` does nothing
  under CPU autocast (the backward would then fail on mixed dtypes): input, weight and bias are cast
  to the autocast dtype and the function runs with autocast off, as ``custom_fwd`` does on CUDA. A
  returned bias is cast to the output's dtype.
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
