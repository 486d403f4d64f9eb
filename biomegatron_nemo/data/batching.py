"""Batches that waste little padding: length-grouped training order, length-sorted evaluation order.

Batches are padded to their longest example, so random batches of BC5CDR sentences (a few to 128+
sub-tokens) spend most of their compute on padding. :class:`LengthGroupedSampler` orders the
training examples the way Hugging Face Trainer's ``group_by_length`` does: a seeded random
permutation, cut into mega-batches of ``50 × batch_size``, each sorted by length (longest first),
cut into batches, and the full batches shuffled (the longest first; short ones last). Consecutive ``batch_size`` indices are one batch, so
it is a plain sampler for a ``DataLoader(batch_size=...)``. Under data parallelism it groups by
the *global* batch and hands each rank every ``world``-th index of it, so each rank's batch comes
from one group of similar lengths and every rank makes the same number of steps.

The order depends only on the seed and the epoch (``set_epoch``, which Lightning calls; without
it each new iteration counts as the next epoch), and :class:`ResumableDataLoader` saves the place in
the epoch in Lightning's checkpoints, so a run resumed mid-epoch continues with exactly the next
batch. Every training order is such an :class:`EpochSampler`: length-grouped, plainly shuffled
(:class:`ShuffledSampler`), class-balanced (:class:`ClassBalancedSampler`) or in token budgets
(:class:`TokenBudgetSampler`). :func:`length_sorted_order` is the evaluation order: longest
first; callers map predictions back by example index.

With ``max_tokens``, batches hold up to that many *padded* tokens (examples × the longest)
instead of a fixed number of examples, as fairseq's ``--max-tokens``: many short sentences or a
few long ones, so every step does about the same work (training: :class:`TokenBudgetSampler`;
evaluation: the length-sorted order cut the same way, :func:`token_budget_batches`).
:class:`FineTuningDataConfig` is the loader section every fine-tuning dataset config extends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import torch

from biomegatron_nemo.common.config import Schema, option
from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.data.resumable import EpochSampler

MEGA_BATCH_MULTIPLIER = 50  # Hugging Face's LengthGroupedSampler uses the same


@dataclass
class FineTuningDataConfig(Schema):
    """A ``train_ds`` / ``validation_ds`` / ``test_ds`` section of the fine-tuning models."""

    file: Optional[str] = option(None, "the data file (NER: token<TAB>tag lines, a blank line between sentences)")
    max_seq_length: int = option(128, "window length in sub-tokens, [CLS] and [SEP] included")
    batch_size: int = option(32, "examples (windows) per batch and data-parallel rank")
    num_workers: int = option(0, "DataLoader worker processes")
    shuffle: Optional[bool] = option(None, "shuffle every epoch; null: for the training split only")
    group_by_length: bool = option(True, "shuffled batches of similar lengths (Hugging Face's group_by_length), "
                                         "so little is padding, and resumable mid-epoch at exactly the next "
                                         "batch; evaluation is always sorted by length")
    max_tokens: Optional[int] = option(None, "batches of up to this many padded tokens (examples x the longest) "
                                             "per rank, at most batch_size examples each (raise batch_size so "
                                             "batches of short examples can grow): similar lengths together, "
                                             "shuffled for training, in length order for evaluation; null: "
                                             "batch_size examples a batch")
    defer_setup: bool = option(True, "build the data in setup(), once tokenizer and labels exist (keep true)")

    def check(self) -> None:
        if self.max_seq_length < 3:
            raise ConfigError(f"must be >= 3 ([CLS], a token, [SEP]), got {self.max_seq_length}", key="max_seq_length")
        if self.batch_size < 1:
            raise ConfigError(f"must be >= 1, got {self.batch_size}", key="batch_size")
        if self.num_workers < 0:
            raise ConfigError(f"must be >= 0, got {self.num_workers}", key="num_workers")
        if self.max_tokens is not None and self.max_tokens < self.max_seq_length:
            raise ConfigError(f"must be >= max_seq_length ({self.max_seq_length}) so that the longest window fits, "
                              f"got {self.max_tokens}", key="max_tokens")
        if not self.defer_setup:
            raise ConfigError("must be true: the data needs the model's tokenizer and label map", key="defer_setup")


def length_sorted_order(lengths: Sequence[int]) -> List[int]:
    """Indices by decreasing length (ties in index order): the least padding for evaluation."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def length_grouped_order(lengths: Sequence[int], batch_size: int, seed: int) -> List[int]:
    """One epoch's training order (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    permutation = torch.randperm(len(lengths), generator=generator).tolist()
    mega = batch_size * MEGA_BATCH_MULTIPLIER
    batches: List[List[int]] = []
    for start in range(0, len(permutation), mega):
        group = sorted(permutation[start:start + mega], key=lambda i: -lengths[i])
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    # A short batch (the end of a mega-batch) goes last: the DataLoader cuts the index stream
    # every batch_size indices, so one in the middle would misalign every batch after it.
    full = [b for b in batches if len(b) == batch_size]
    short = [b for b in batches if len(b) < batch_size]
    order = [full[k] for k in torch.randperm(len(full), generator=generator).tolist()]
    if order:  # the longest batch first (as Hugging Face does): an out-of-memory error shows at once
        longest = max(range(len(order)), key=lambda k: lengths[order[k][0]])
        order.insert(0, order.pop(longest))
    return [i for batch in order + short for i in batch]


class LengthGroupedSampler(EpochSampler):
    """Batches of similar lengths (see the module docstring), grouped by the *global* batch
    (``batch_size × num_replicas``) so each rank's batch comes from one group."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 1234, num_replicas: int = 1,
                 rank: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(len(lengths), seed=seed, num_replicas=num_replicas, rank=rank)
        self.lengths = list(lengths)
        self.batch_size = int(batch_size)

    def epoch_order(self, seed: int) -> List[int]:
        return length_grouped_order(self.lengths, self.batch_size * self.num_replicas, seed)


class ShuffledSampler(EpochSampler):
    """A seeded random permutation every epoch (``group_by_length: false``)."""

    def epoch_order(self, seed: int) -> List[int]:
        return torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(seed)).tolist()


class ClassBalancedSampler(EpochSampler):
    """Every class drawn equally often, with replacement, ``len(targets)`` draws an epoch
    (relation extraction's ``oversample``)."""

    def __init__(self, targets: Sequence[int], seed: int = 1234, num_replicas: int = 1, rank: int = 0):
        super().__init__(len(targets), seed=seed, num_replicas=num_replicas, rank=rank)
        counts: dict = {}
        for t in targets:
            counts[t] = counts.get(t, 0) + 1
        self.weights = torch.tensor([1.0 / counts[t] for t in targets], dtype=torch.double)

    def epoch_order(self, seed: int) -> List[int]:
        return torch.multinomial(self.weights, len(self.weights), replacement=True,
                                 generator=torch.Generator().manual_seed(seed)).tolist()


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_examples: int,
                         generator: Optional[torch.Generator] = None) -> List[List[int]]:
    """Batches of at most ``max_tokens`` padded tokens (examples × the longest) and ``max_examples``
    examples, cut greedily from the examples sorted longest first. Ties are in index order, or in a
    random order drawn from ``generator``. The cuts depend only on the sorted lengths, so the
    number of batches is the same whatever the tie order (an epoch's step count is known before
    it starts). An example longer than ``max_tokens`` is a batch of its own."""
    if max_tokens < 1 or max_examples < 1:
        raise ValueError(f"max_tokens and max_examples must be >= 1, got {max_tokens} and {max_examples}")
    ties = torch.randperm(len(lengths), generator=generator).tolist() if generator is not None else range(len(lengths))
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], ties[i]))
    batches: List[List[int]] = []
    for i in order:
        # sorted longest first: a batch's first example is its longest
        if batches and len(batches[-1]) < max_examples and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


class TokenBudgetSampler(EpochSampler):
    """Training batches of up to ``max_tokens`` padded tokens (:func:`token_budget_batches`, ties
    drawn anew each epoch), in a seeded random order with the longest batch first. Each item is a
    batch (a list of indices), for a ``DataLoader(BatchedExamples(dataset), batch_size=None)``.

    Under data parallelism consecutive batches of the sorted cut (similar lengths) form a group of
    ``num_replicas``, one batch per rank, and the groups are shuffled, so the ranks of a step do
    about the same work; every rank makes the same number of steps (the last group is filled by
    repeating the first batches, as ``DistributedSampler`` pads)."""

    def __init__(self, lengths: Sequence[int], max_tokens: int, max_examples: int, seed: int = 1234,
                 num_replicas: int = 1, rank: int = 0):
        self.lengths = list(lengths)
        self.max_tokens, self.max_examples = int(max_tokens), int(max_examples)
        batches = len(token_budget_batches(self.lengths, self.max_tokens, self.max_examples))
        super().__init__(batches, seed=seed, num_replicas=num_replicas, rank=rank)

    def epoch_order(self, seed: int) -> List[List[int]]:
        generator = torch.Generator().manual_seed(seed)
        batches = token_budget_batches(self.lengths, self.max_tokens, self.max_examples, generator)
        world = self.num_replicas
        groups = [batches[i:i + world] for i in range(0, len(batches), world)]
        short = [g for g in groups if len(g) < world]  # at most one, the shortest examples: it goes last
        full = [g for g in groups if len(g) == world]
        order = [full[k] for k in torch.randperm(len(full), generator=generator).tolist()]
        if order:  # the longest group first: an out-of-memory error shows at once
            longest = max(range(len(order)), key=lambda k: self.lengths[order[k][0][0]])
            order.insert(0, order.pop(longest))
        return [batch for group in order + short for batch in group]


class BatchedExamples(torch.utils.data.Dataset):
    """``dataset`` a batch at a time: item ``[i, j, …]`` is the collated batch of those examples.

    A ``DataLoader`` batches by a fixed count unless it is given a ``batch_sampler``, and Lightning
    re-creates or replaces a custom batch sampler when it sets up distributed sampling. A loader
    with ``batch_size=None`` over this dataset, and a sampler whose items are batches
    (:class:`TokenBudgetSampler`, a ``DistributedSampler`` Lightning leaves alone), makes batches
    of any size, collated in the loader's workers."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: Sequence[int]):
        return self.dataset.collate_fn([self.dataset[i] for i in indices])

    def lengths(self) -> List[int]:
        return self.dataset.lengths()


def already_collated(batch):
    """The ``collate_fn`` of a loader over :class:`BatchedExamples` (a module-level function, so
    that worker processes can pickle it)."""
    return batch


class FixedOrderSampler(torch.utils.data.Sampler):
    """The given order, every epoch: of indices (evaluation sorted by length), or of batches of
    indices (evaluation in token budgets, over :class:`BatchedExamples`)."""

    def __init__(self, order: Sequence):
        self.order = list(order)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator:
        return iter(self.order)
