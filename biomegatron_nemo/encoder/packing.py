"""Packed sequences: the encoder runs a batch's real tokens only, example after example.

A batch padded to its longest example spends part of every embedding, linear layer and LayerNorm
on padding. With ``encoder.packed_sequences`` the encoder gathers the real tokens of the padded
``[b, s]`` batch into one sequence of ``t`` tokens (megatron-core's ``thd`` layout: ``[t, 1, h]``)
and tells attention where each example starts through megatron-core's :class:`PackedSeqParams`
(``cu_seqlens``), so attention stays within each example. A token's position id is its column in
the padded batch, so positions restart at every example and equal the padded run's. The outputs
are scattered back to ``[b, s, h]`` (zeros at padding), so heads, losses and decoders are those of
the padded run, and the loss equals it (to float rounding; dropout draws other masks).

Batches, samplers and data-parallel splits are untouched: packing is how a batch is computed, not
which examples it holds, so mid-epoch resume and the data-parallel order stay exact.

Attention reads :class:`PackedSequences`, a :class:`PackedSeqParams` that also carries where the
tokens came from: Transformer Engine's attention (``te`` spec, GPU) runs ``thd`` natively from
``cu_seqlens``; the portable attention (CPU) attends in buckets of examples of similar lengths, each
padded to its longest (:meth:`PackedSequences.attend_in_buckets`), which on a CPU was faster than one
padded bucket, one block-diagonal mask or nested tensors (``docs/training_speed.md``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from megatron.core.packed_seq_params import PackedSeqParams


#: a batch with less padding than this share runs padded: gathering its tokens into the packed
#: layout and back costs about what so little padding would (break-even near 5-6% on a CPU,
#: docs/training_speed.md); a batch without padding then also keeps SDPA's unmasked kernels
MIN_PADDING_TO_PACK = 0.05

#: the fixed cost of one more attention call, in query-key pairs: buckets are merged unless
#: splitting them saves more pairs than this (measured on a CPU, docs/training_speed.md)
BUCKET_COST_PAIRS = 4096


def worth_packing(attention_mask: torch.Tensor) -> bool:
    """Whether a ``[b, s]`` batch (1 at real tokens) holds enough padding to run packed."""
    return float((attention_mask < 0.5).sum()) >= MIN_PADDING_TO_PACK * attention_mask.numel()


@dataclass
class AttentionBucket:
    """Examples of similar lengths attended together, padded to the longest of them."""

    #: ``[k]`` positions in the packed sequence of the bucket's tokens, example after example
    tokens: torch.Tensor
    #: ``[k]`` the same tokens' places in the bucket's flattened ``[examples * length]`` layout
    slots: torch.Tensor
    #: ``[examples, 1, 1, length]`` True where a key is padding (megatron-core's mask convention);
    #: None where all have the same length
    key_padding: Optional[torch.Tensor]
    examples: int
    length: int


def bucket_bounds(lengths: List[int]) -> List[int]:
    """Cut points of ``lengths`` (sorted, longest first) into buckets: the fewest query-key pairs
    (each bucket ``examples × longest²``) plus :data:`BUCKET_COST_PAIRS` per bucket, by dynamic
    programming over the sorted order."""
    n = len(lengths)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(end):  # bucket lengths[start:end], its longest lengths[start]
            cost = best[start] + (end - start) * lengths[start] ** 2 + BUCKET_COST_PAIRS
            if cost < best[end]:
                best[end], cut[end] = cost, start
    bounds, end = [], n
    while end:
        bounds.append(end)
        end = cut[end]
    return [0] + bounds[::-1]


@dataclass
class PackedSequences(PackedSeqParams):
    """megatron-core's ``thd`` parameters of one batch, with the padded layout it came from and the
    buckets the portable attention runs in."""

    #: ``[t]`` positions of the real tokens in the flattened ``[b * s]`` padded batch, example by example
    token_index: Optional[torch.Tensor] = None
    batch_size: int = 0
    padded_length: int = 0
    #: each example's number of real tokens (host side)
    lengths: List[int] = field(default_factory=list)
    #: the portable attention's buckets and ``[t]`` order, planned on first use (:attr:`buckets`):
    #: Transformer Engine's attention reads ``cu_seqlens`` only, and is spared the planning
    _plan: Optional[Tuple[List[AttentionBucket], torch.Tensor]] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_attention_mask(cls, attention_mask: torch.Tensor) -> "PackedSequences":
        """The packing of a ``[b, s]`` batch whose ``attention_mask`` is 1 at real tokens."""
        batch, length = attention_mask.shape
        real = attention_mask > 0.5
        token_index = real.reshape(-1).nonzero().squeeze(1)
        lengths = real.sum(dim=1, dtype=torch.int32)
        cu_seqlens = torch.nn.functional.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
        longest = int(lengths.max()) if batch else 0
        return cls(qkv_format="thd", cu_seqlens_q=cu_seqlens, cu_seqlens_kv=cu_seqlens, max_seqlen_q=longest,
                   max_seqlen_kv=longest, token_index=token_index, batch_size=batch, padded_length=length,
                   lengths=lengths.tolist())

    @property
    def buckets(self) -> List[AttentionBucket]:
        """The portable attention's buckets of examples of similar lengths (:func:`bucket_bounds`)."""
        return self._planned()[0]

    @property
    def bucket_order(self) -> torch.Tensor:
        """``[t]``: where each packed token is in the concatenation of the buckets' tokens."""
        return self._planned()[1]

    def _planned(self) -> Tuple[List[AttentionBucket], torch.Tensor]:
        if self._plan is None:
            self._plan = self._bucket()
        return self._plan

    def _bucket(self) -> Tuple[List[AttentionBucket], torch.Tensor]:
        lengths, device = self.lengths, self.token_index.device
        starts = [0, *itertools.accumulate(lengths)]
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        bounds = bucket_bounds([lengths[i] for i in order])
        buckets, tokens = [], []
        for first, end in zip(bounds, bounds[1:]):
            members = order[first:end]
            longest = lengths[members[0]]
            bucket_tokens = torch.cat([torch.arange(starts[i], starts[i] + lengths[i]) for i in members])
            slots = torch.cat([torch.arange(lengths[i]) + k * longest for k, i in enumerate(members)])
            key_padding = torch.arange(longest)[None, :] >= torch.tensor([lengths[i] for i in members])[:, None]
            # examples of one length: no mask, so SDPA may take its faster unmasked kernels
            key_padding = key_padding[:, None, None, :].to(device) if lengths[members[-1]] < longest else None
            buckets.append(AttentionBucket(bucket_tokens.to(device), slots.to(device), key_padding,
                                           len(members), longest))
            tokens.append(bucket_tokens)
        order_of_tokens = torch.argsort(torch.cat(tokens)) if tokens else torch.zeros(0, dtype=torch.long)
        return buckets, order_of_tokens.to(device)

    def position_ids(self) -> torch.Tensor:
        """``[t]``: each token's column in the padded batch (restarting at every example)."""
        return self.token_index % self.padded_length

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """``[b, s, ...]`` → ``[t, ...]``: the real tokens' entries, example by example."""
        return padded.reshape(self.batch_size * self.padded_length, *padded.shape[2:]).index_select(0, self.token_index)

    def to_padded(self, packed: torch.Tensor) -> torch.Tensor:
        """``[t, ...]`` → ``[b, s, ...]``, zeros at padding (differentiable)."""
        flat = packed.new_zeros(self.batch_size * self.padded_length, *packed.shape[1:])
        return flat.index_copy(0, self.token_index, packed).view(self.batch_size, self.padded_length,
                                                                 *packed.shape[1:])

    def attend_in_buckets(self, attend, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """``attend([s, b, n, d] q, k, v, key mask) → [s, b, n * d]`` run on each bucket's examples,
        padded to the bucket's longest; ``[t, n, d]`` packed in, ``[t, n * d]`` packed out."""
        outputs = []
        for bucket in self.buckets:
            def padded(packed: torch.Tensor) -> torch.Tensor:
                flat = packed.new_zeros(bucket.examples * bucket.length, *packed.shape[1:])
                flat = flat.index_copy(0, bucket.slots, packed.index_select(0, bucket.tokens))
                return flat.view(bucket.examples, bucket.length, *packed.shape[1:]).transpose(0, 1)

            context = attend(padded(query), padded(key), padded(value), bucket.key_padding)
            outputs.append(context.transpose(0, 1).reshape(bucket.examples * bucket.length, -1)
                           .index_select(0, bucket.slots))
        return torch.cat(outputs).index_select(0, self.bucket_order)
