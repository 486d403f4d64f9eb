"""Training orders that resume mid-epoch at exactly the next batch.

A resumed run must see the batches an uninterrupted one would. Lightning restarts a plain
``DataLoader`` at the start of its epoch, and wraps any custom sampler in a *shuffling*
``DistributedSampler`` for training. So every training order here is an :class:`EpochSampler` (a
``DistributedSampler``, which Lightning leaves in place) whose order depends only on (seed,
epoch), and :class:`ResumableDataLoader` keeps its place in the epoch in Lightning's checkpoints:
after a resume, the rest of the epoch comes next, and every later epoch is whole. The loader's
length stays the full epoch's, so Lightning's count of batches in the epoch (restored from the
checkpoint) ends the epoch where an uninterrupted run ends it.

Fine-tuning orders (length-grouped, shuffled, class-balanced, token budgets) are in
``batching``; pretraining's is :class:`SequentialSampler` (megatron-core's sample index is
already a seeded permutation).
"""

from __future__ import annotations

from typing import Iterator, List

import torch


class EpochSampler(torch.utils.data.distributed.DistributedSampler):
    """A training order that depends only on (seed, epoch), this data-parallel rank's share of
    it, resumable at any position (:meth:`skip_next`, used by :class:`ResumableDataLoader`).

    A ``DistributedSampler`` so that Lightning uses it as it is: it wraps any other custom sampler
    in a *shuffling* distributed sampler for training. Rank ``r`` of ``num_replicas`` takes every
    ``num_replicas``-th index from ``r`` (the order padded by repeating its start, as
    ``DistributedSampler`` does, so every rank makes the same number of steps). Without
    ``set_epoch`` each new iteration counts as the next epoch; with ``drop_last`` the indices that
    do not fill a rank are dropped instead. Subclasses define
    :meth:`epoch_order`: ``size`` indices for one epoch.
    """

    def __init__(self, size: int, seed: int = 1234, num_replicas: int = 1, rank: int = 0, drop_last: bool = False):
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed,
                         drop_last=drop_last)
        self._epoch_set = False
        self._skip = 0

    def epoch_order(self, seed: int) -> List[int]:
        """One epoch's global order, drawn from ``seed`` (the sampler's seed + the epoch)."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._epoch_set = True

    def skip_next(self, indices: int) -> None:
        """The next iteration starts ``indices`` into this rank's order (a resumed epoch)."""
        self._skip = int(indices)

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_order(self.seed + self.epoch)
        if not self._epoch_set:
            self.epoch += 1
        self._epoch_set = False
        order += order[: max(0, self.total_size - len(order))]
        skip, self._skip = self._skip, 0
        return iter(order[self.rank:self.total_size:self.num_replicas][skip:])


class SequentialSampler(EpochSampler):
    """The dataset in index order every epoch, split over data-parallel ranks: rank ``r`` of
    ``W`` takes samples ``r, r + W, ...``, so global batch ``j`` is samples ``[j·B, (j+1)·B)``
    whatever ``W`` is (``B`` = global batch), as Megatron-LM's pretraining sampler. Indices that
    do not fill every rank are dropped."""

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(size, num_replicas=num_replicas, rank=rank, drop_last=True)

    def epoch_order(self, seed: int) -> List[int]:
        return list(range(len(self.dataset)))


class ResumableDataLoader(torch.utils.data.DataLoader):
    """A training loader whose place in the epoch goes into Lightning's checkpoints.

    Lightning restores a loader's position only if the loader itself has ``state_dict`` /
    ``load_state_dict``; a plain ``DataLoader`` restarts its epoch on resume, so a run resumed
    mid-epoch would see other batches than an uninterrupted one. This one counts the batches it has
    handed out in the current epoch; after ``load_state_dict`` its next epoch (the same epoch
    number, which Lightning sets on the sampler) skips them in the sampler — no data is loaded for
    them — and continues with exactly the next batch. The sampler must be an :class:`EpochSampler`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochSampler):
            raise TypeError("ResumableDataLoader needs an EpochSampler")
        self._yielded = 0
        self._resume_at = 0

    def __iter__(self):
        skip, self._resume_at = self._resume_at, 0
        # a sampler item is one example, or one batch when batch_size is None (TokenBudgetSampler)
        self.sampler.skip_next(skip * (self.batch_size or 1))
        self._yielded = skip
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": int(self.sampler.epoch), "batches": int(self._yielded)}

    def load_state_dict(self, state: dict) -> None:
        """An empty ``state`` (a checkpoint written before this loader kept one) leaves the place
        to :meth:`resume_at`."""
        if "batches" in state:
            self._resume_at = int(state["batches"])

    def resume_at(self, batches: int) -> None:
        """The next epoch starts ``batches`` batches in."""
        self._resume_at = int(batches)
