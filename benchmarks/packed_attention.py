"""Attention over packed sequences on a CPU: the three ways to keep each example's attention within
the example, timed forward + backward on one thread, for batches of BC5CDR-chem's sentence lengths.

    python benchmarks/packed_attention.py [--batches 20] [--heads 4] [--head-dim 64] [--output R.jsonl]

* ``buckets``: what the portable attention does with ``encoder.packed_sequences``: the examples in
  buckets of similar lengths (:func:`~biomegatron_nemo.encoder.packing.bucket_bounds`), each bucket
  padded to its longest for SDPA with a key mask;
* ``padded``: all examples in one bucket, the batch's padded ``[b, s]`` layout;
* ``block-diagonal``: SDPA over the whole packed sequence with a ``[t, t]`` mask that allows only
  pairs of the same example;
* ``nested``: torch's jagged nested tensors (``nested_tensor_from_jagged`` on ``cu_seqlens``).

Each must give the same output (checked); the median time per batch of each is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from side_by_side import record_result
from systems import length_batches, real_lengths


def padded(q, k, v, lengths, cu):
    b, s = len(lengths), int(lengths.max())
    index = torch.cat([torch.arange(n) + i * s for i, n in enumerate(lengths.tolist())])
    heads, dim = q.shape[1:]

    def to_padded(x):
        return x.new_zeros(b * s, heads, dim).index_copy(0, index, x).view(b, s, heads, dim).transpose(1, 2)

    mask = (torch.arange(s)[None] < lengths[:, None])[:, None, None, :]
    out = F.scaled_dot_product_attention(to_padded(q), to_padded(k), to_padded(v), attn_mask=mask)
    return out.transpose(1, 2).reshape(b * s, heads, dim).index_select(0, index)


def _sdpa(query, key, value, key_padding):
    """The portable attention's call: ``[s, b, n, d]`` and a True-is-padding mask → ``[s, b, n * d]``."""
    q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if key_padding is None else ~key_padding)
    return out.permute(2, 0, 1, 3).flatten(2)


def buckets(q, k, v, lengths, cu):
    from biomegatron_nemo.encoder.packing import PackedSequences

    mask = torch.arange(int(lengths.max()))[None] < lengths[:, None]
    return PackedSequences.from_attention_mask(mask.long()).attend_in_buckets(_sdpa, q, k, v).view_as(q)


def block_diagonal(q, k, v, lengths, cu):
    example = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    mask = example[:, None] == example[None, :]
    out = F.scaled_dot_product_attention(*(x.transpose(0, 1)[None] for x in (q, k, v)), attn_mask=mask)
    return out[0].transpose(0, 1)


def nested(q, k, v, lengths, cu):
    qs, ks, vs = (torch.nested.nested_tensor_from_jagged(x, offsets=cu).transpose(1, 2) for x in (q, k, v))
    return F.scaled_dot_product_attention(qs, ks, vs).transpose(1, 2).values()


WAYS = {"buckets": buckets, "padded": padded, "block-diagonal": block_diagonal, "nested": nested}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=20, help="batches of 32 sentences, in a random order")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--output", help="append the result as one JSON line to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    times = {name: [] for name in WAYS}
    for lengths in length_batches(real_lengths("bc5cdr", 128), 32, grouped=False)[:args.batches]:
        lengths = torch.tensor(lengths)
        cu = F.pad(lengths.cumsum(0), (1, 0))
        q, k, v = (torch.randn(int(lengths.sum()), args.heads, args.head_dim, requires_grad=True) for _ in range(3))
        reference = padded(q, k, v, lengths, cu)
        for name, attend in WAYS.items():
            torch.testing.assert_close(attend(q, k, v, lengths, cu), reference, rtol=1e-4, atol=1e-5)
            start = time.perf_counter()
            attend(q, k, v, lengths, cu).sum().backward()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    record_result({"benchmark": "packed_attention", "heads": args.heads, "head_dim": args.head_dim,
                   "batches": args.batches, "ms_forward_backward": ms}, args.output)


if __name__ == "__main__":
    main()
