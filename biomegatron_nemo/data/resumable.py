"""Resuming mid-run on exactly the next sample: a dataset view that skips consumed samples.

Lightning restarts a plain map-style dataloader from its first batch when a run resumes
mid-epoch, so a resumed pretraining run would see different data than an uninterrupted one.
Megatron-LM solves this with a sampler that starts at ``consumed_samples``; here the same idea
is a dataset view, which keeps Lightning's data-parallel ``DistributedSampler`` usable
unchanged: global sample ``i`` of the resumed run is sample ``consumed + i`` of the dataset.
"""

from __future__ import annotations

import torch


class SkipConsumedSamples(torch.utils.data.Dataset):
    """``dataset[consumed:]`` as a dataset; ``consumed`` is set when training (re)starts."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.consumed = 0

    def skip(self, consumed: int) -> None:
        if consumed < 0 or consumed > len(self.dataset):
            raise ValueError(f"cannot skip {consumed} samples of a dataset of {len(self.dataset)}")
        self.consumed = int(consumed)

    def __len__(self) -> int:
        return len(self.dataset) - self.consumed

    def __getitem__(self, index: int):
        return self.dataset[self.consumed + index]


class DataParallelSequentialSampler(torch.utils.data.distributed.DistributedSampler):
    """Unshuffled data-parallel sampling whose length follows the dataset at iteration time.

    Rank ``r`` of ``W`` takes samples ``r, r + W, r + 2W, ...``, so global batch ``j`` is
    samples ``[j·B, (j+1)·B)`` whatever ``W`` is (``B`` = global batch). Lightning leaves a
    ``DistributedSampler`` in place (it would inject a shuffling one for training), and
    ``torch``'s own fixes its length when built — before a resume has skipped anything.
    """

    def __init__(self, dataset, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=True)

    def __len__(self) -> int:
        return len(self.dataset) // self.num_replicas

    def __iter__(self):
        return iter(range(self.rank, len(self) * self.num_replicas, self.num_replicas))


class ConsumedSamplesDataLoader(torch.utils.data.DataLoader):
    """The pretraining loader over a :class:`SkipConsumedSamples` dataset.

    Its place is restored from the checkpoint's optimizer step (the model skips ``step × global
    batch`` samples before Lightning starts iterating), so it keeps no state of its own. It still
    has ``state_dict`` / ``load_state_dict``: Lightning warns, on every mid-epoch resume, that a
    loader without them "is not resumable", which is not so here.
    """

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to load: the position comes from the checkpoint's ``global_step``."""
