"""Core attention that runs on CPU and GPU: ``torch.nn.functional.scaled_dot_product_attention``.

megatron-core's own ``DotProductAttention`` allocates its score buffer from a global memory
buffer on ``torch.cuda.current_device()`` and cannot run on a CPU; Transformer Engine needs
CUDA. This module is the ``core_attention`` of the ``portable`` layer spec: same call contract
as megatron-core's core attention (q, k, v as ``[s, b, heads_per_partition, head_dim]``, a
boolean mask with True = masked out, output ``[s, b, heads_per_partition * head_dim]``), so it
plugs into megatron-core's ``SelfAttention`` through the spec and needs no other change.
Tensor parallelism splits heads: each rank sees only its ``heads / TP`` heads, which is what
SelfAttention hands us.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import parallel_state, tensor_parallel
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig

from .packing import PackedSequences


class PortableDotProductAttention(MegatronModule):
    """Scaled dot-product attention over the heads of one tensor-parallel rank."""

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: Optional[float] = None,
        softmax_scale: Optional[float] = None,
        cp_comm_type: Optional[str] = None,
        pg_collection=None,
    ):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("the portable attention does not support context parallelism; use the te spec")
        if attn_mask_type not in (AttnMaskType.padding, AttnMaskType.no_mask):
            raise ValueError(f"BERT encoders use padding masks, got attn_mask_type={attn_mask_type}")
        self.layer_number = max(1, layer_number)
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout
        head_dim = config.kv_channels
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        attn_mask_type: Optional[AttnMaskType] = None,
        attention_bias: Optional[torch.Tensor] = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        if attention_bias is not None:
            raise ValueError("attention bias needs the te spec")
        if packed_seq_params is not None:
            # thd: [t, n, d] of the real tokens; attended in buckets of similar lengths, padded
            if not isinstance(packed_seq_params, PackedSequences):
                raise ValueError("the portable attention takes packed sequences from the encoder "
                                 "(encoder.packed_sequences), which records their padded layout")
            return packed_seq_params.attend_in_buckets(self._attend, query, key, value)
        return self._attend(query, key, value, attention_mask)

    def _attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``[s, b, n, d]`` queries, keys, values and a True-is-masked mask → ``[s, b, n * d]``."""
        seq_len, batch, heads, head_dim = query.shape
        # [s, b, n, d] -> [b, n, s, d], the layout SDPA expects.
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        if k.shape[1] != heads:  # grouped-query attention: repeat kv heads to match queries
            k = k.repeat_interleave(heads // k.shape[1], dim=1)
            v = v.repeat_interleave(heads // v.shape[1], dim=1)
        # megatron-core masks are True where attention is forbidden; SDPA's boolean masks are
        # True where attention is allowed.
        allowed = None if attention_mask is None else ~attention_mask
        dropout_p = self.dropout_p if self.training else 0.0
        if dropout_p > 0.0 and q.is_cuda and parallel_state.model_parallel_is_initialized():
            # Heads differ between TP ranks, so their dropout masks must come from the
            # model-parallel RNG stream, as in megatron-core's DotProductAttention.
            with tensor_parallel.get_cuda_rng_tracker().fork():
                context = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=allowed, dropout_p=dropout_p, scale=self.softmax_scale)
        else:
            context = F.scaled_dot_product_attention(
                q, k, v, attn_mask=allowed, dropout_p=dropout_p, scale=self.softmax_scale)
        # [b, n, s, d] -> [s, b, n*d]
        return context.permute(2, 0, 1, 3).reshape(seq_len, batch, heads * head_dim)
