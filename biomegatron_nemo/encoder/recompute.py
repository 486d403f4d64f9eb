"""Full activation recompute on any device: megatron-core's ``TransformerBlock`` with its layer
checkpointing able to run without CUDA.

With ``recompute_granularity: full`` megatron-core keeps only the input of each chunk of layers
and reruns the chunk in the backward (``recompute_method: uniform``: every chunk of
``recompute_num_layers`` layers; ``block``: the first ``recompute_num_layers`` layers of the
stage, one by one). Its checkpoint function (``tensor_parallel.checkpoint``) saves and restores
the CUDA RNG states so that the rerun draws the same dropout masks, and fails where there is no
CUDA. On CUDA this block is megatron-core's unchanged. Elsewhere the same chunks are rerun through
``torch.utils.checkpoint`` (non-reentrant, restoring the CPU RNG state: dropout masks repeat
exactly, so the gradients equal those without recompute). Tensor parallelism on CPU draws its
dropout from the CPU generator too (:mod:`.attention`), so nothing else needs restoring.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from megatron.core.transformer.transformer_block import TransformerBlock
from torch.utils.checkpoint import checkpoint


def recompute_chunks(num_layers: int, method: str, layers_per_chunk: int) -> List[Tuple[int, int, bool]]:
    """``(first, end, rerun)`` layer ranges of one stage, in megatron-core's order."""
    if method == "uniform":
        return [(i, min(i + layers_per_chunk, num_layers), True) for i in range(0, num_layers, layers_per_chunk)]
    if method == "block":
        return [(i, i + 1, i < layers_per_chunk) for i in range(num_layers)]
    raise ValueError(f"recompute_method must be uniform or block, got {method!r}")


class RecomputingTransformerBlock(TransformerBlock):
    """``TransformerBlock`` whose full recompute also runs without CUDA (see the module docstring)."""

    def _checkpointed_forward(self, hidden_states, attention_mask, context, context_mask, rotary_pos_emb,
                              attention_bias, packed_seq_params, use_inner_quantization_context,
                              padding_mask=None):
        if hidden_states.is_cuda:
            return super()._checkpointed_forward(hidden_states, attention_mask, context, context_mask,
                                                 rotary_pos_emb, attention_bias, packed_seq_params,
                                                 use_inner_quantization_context, padding_mask)

        def layers(first: int, end: int):
            def run(hidden_states, context):
                for index in range(first, end):
                    hidden_states, context = self._get_layer(index)(
                        hidden_states=hidden_states, attention_mask=attention_mask, context=context,
                        context_mask=context_mask, rotary_pos_emb=rotary_pos_emb, attention_bias=attention_bias,
                        inference_context=None, packed_seq_params=packed_seq_params, padding_mask=padding_mask)
                return hidden_states, context
            return run

        for first, end, rerun in recompute_chunks(self.num_layers_per_pipeline_rank, self.config.recompute_method,
                                                  self.config.recompute_num_layers):
            if rerun:
                hidden_states, context = checkpoint(layers(first, end), hidden_states, context,
                                                    use_reentrant=False, preserve_rng_state=True)
            else:
                hidden_states, context = layers(first, end)(hidden_states, context)
        return hidden_states
