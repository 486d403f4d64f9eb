"""What every fine-tuning task model (NER, relation extraction, question answering) shares on top
of the base lifecycle.

:class:`FineTuningTaskModel` owns

* the data loaders of a fine-tuning split: training batches shuffled and grouped by length
  (``group_by_length``) or cut to a token budget (``max_tokens``), data-parallel aware;
  evaluation batches sorted by length; and the
  sorted loader ``evaluate`` / ``predict`` use (callers map results back by index);
* the evaluation rows the ``on_eval_output`` hook collects per split, gathered over all ranks at
  epoch end (data parallel, and the last pipeline stage), and the scores of the last epoch;
* one-time warnings;
* the argument checks of ``predict`` / ``evaluate`` / ``answer`` (:func:`check_list`,
  :func:`check_text`, :func:`check_input_file`, :func:`check_positive_int`): a wrong type is a
  ``TypeError`` and a wrong value a ``ValueError``, each naming the method, the argument and the
  item's position, before any of it reaches the tokenizer or torch.

Task models derive from it (classification ones through
:class:`~biomegatron_nemo.models.classification.ClassificationTaskModel`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Dict, List, Optional

import torch
from lightning.pytorch import Trainer
from omegaconf import DictConfig

from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.models.base import BioMegatronModelPT

log = logging.getLogger(__name__)


class FineTuningTaskModel(BioMegatronModelPT):
    """Loaders, evaluation-row gathering and warnings of the fine-tuning models."""

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        self._eval_rows: Dict[str, list] = {"val": [], "test": []}
        #: split → the scores of its last evaluation epoch
        self.last_scores: Dict[str, Dict] = {}
        super().__init__(cfg=cfg, trainer=trainer)

    # ------------------------------------------------------------------ data
    def make_dataloader(self, dataset, data_config, split: str, sampler=None) -> torch.utils.data.DataLoader:
        """The loader of a fine-tuning split: training shuffled in length-grouped batches
        (``group_by_length``) or in token budgets (``max_tokens``), evaluation sorted by length
        (predictions carry their example index), unless the caller brings its own ``sampler``
        (e.g. oversampling). ``dataset`` has ``lengths()`` and ``collate_fn``."""
        from biomegatron_nemo.data import batching

        batch_size = int(data_config.batch_size)
        max_tokens = data_config.get("max_tokens")
        shuffle = data_config.shuffle if data_config.shuffle is not None else split == "train"
        workers = int(data_config.num_workers)
        if max_tokens is not None:
            if sampler is not None:
                raise ConfigError("cannot be combined with this split's own sampling (e.g. oversample); "
                                  "set max_tokens: null", key=f"{split}_ds.max_tokens", where=type(self).__name__)
            if shuffle:
                sampler = batching.TokenBudgetSampler(dataset.lengths(), int(max_tokens), batch_size,
                                                      seed=int(self.cfg.seed), **self.data_parallel_ranks())
            else:
                sampler = batching.FixedOrderSampler(
                    batching.token_budget_batches(dataset.lengths(), int(max_tokens), batch_size))
            # each sampler item is a whole batch, collated by the dataset wrapper (in the workers)
            loader_class = batching.ResumableDataLoader if shuffle else torch.utils.data.DataLoader
            return loader_class(batching.BatchedExamples(dataset), batch_size=None, sampler=sampler,
                                num_workers=workers, collate_fn=batching.already_collated)
        if sampler is None and shuffle:
            # this data-parallel rank's share of one seeded order (grouped by the global batch)
            ranks = self.data_parallel_ranks()
            if data_config.group_by_length:
                sampler = batching.LengthGroupedSampler(dataset.lengths(), batch_size, seed=int(self.cfg.seed), **ranks)
            else:
                sampler = batching.ShuffledSampler(len(dataset), seed=int(self.cfg.seed), **ranks)
        elif sampler is None:
            sampler = batching.FixedOrderSampler(batching.length_sorted_order(dataset.lengths()))
        # training orders resume mid-epoch at exactly the next batch
        resumable = isinstance(sampler, batching.EpochSampler)
        loader_class = batching.ResumableDataLoader if resumable else torch.utils.data.DataLoader
        return loader_class(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                            collate_fn=dataset.collate_fn, drop_last=False)

    @staticmethod
    def examples_of(loader: torch.utils.data.DataLoader):
        """The task dataset behind a loader of :meth:`make_dataloader` (under ``max_tokens`` the
        loader's dataset is a :class:`~biomegatron_nemo.data.batching.BatchedExamples` view of it)."""
        from biomegatron_nemo.data.batching import BatchedExamples

        dataset = loader.dataset
        return dataset.dataset if isinstance(dataset, BatchedExamples) else dataset

    def data_parallel_ranks(self) -> Dict[str, int]:
        """``num_replicas`` / ``rank`` of this process for an :class:`EpochSampler`."""
        from megatron.core import parallel_state

        if not parallel_state.model_parallel_is_initialized():
            return {"num_replicas": 1, "rank": 0}
        return {"num_replicas": parallel_state.get_data_parallel_world_size(),
                "rank": parallel_state.get_data_parallel_rank()}

    def inference_loader(self, dataset, batch_size: int) -> torch.utils.data.DataLoader:
        """``evaluate`` / ``predict``: batches sorted by length (callers map back by index)."""
        from biomegatron_nemo.data.batching import FixedOrderSampler, length_sorted_order

        return torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                           sampler=FixedOrderSampler(length_sorted_order(dataset.lengths())),
                                           collate_fn=dataset.collate_fn)

    def check_single_stage(self, what: str) -> None:
        """``evaluate`` / ``predict`` run the encoder directly: refuse pipeline parallelism."""
        if self.pipeline_parallel:
            raise NotImplementedError(f"{what} with pipeline parallelism is not supported; "
                                      "restore the .nemo with pipeline_model_parallel_size=1")

    # ------------------------------------------------------------------ evaluation
    def take_eval_rows(self, split: str) -> Optional[list]:
        """The rows collected for ``split`` from every rank, or None during Lightning's sanity check."""
        rows, self._eval_rows[split] = self._eval_rows[split], []
        if self.trainer is not None and self.trainer.sanity_checking:
            return None
        return gather_all_ranks(rows)

    def warn_once(self, message: str) -> None:
        if message not in getattr(self, "_warned", set()):
            object.__setattr__(self, "_warned", getattr(self, "_warned", set()) | {message})
            log.warning(message)


def gather_all_ranks(rows: list) -> list:
    """Every rank's rows on every rank: data-parallel ranks hold different examples, and under
    pipeline parallelism only the last stage holds any (repeats across TP ranks collapse when
    rows are keyed by example)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return rows
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, rows)
    return [r for part in gathered for r in part]


# ---------------------------------------------------------------------- argument checks
def check_list(value, method: str, argument: str, what: str) -> List:
    """``value`` as a list; a ``TypeError`` unless it is a list-like of items (a string or a
    mapping is one item, so it must be wrapped)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        wrap = "; wrap a single one in a list" if isinstance(value, (str, bytes, Mapping)) else ""
        raise TypeError(f"{method}: {argument} must be a list of {what}, got {type(value).__name__}{wrap}")
    return list(value)


def check_text(value, method: str, argument: str) -> str:
    """``value`` if it is a string, else a ``TypeError`` naming ``argument`` (e.g. ``texts[2]``)."""
    if not isinstance(value, str):
        raise TypeError(f"{method}: {argument} is {type(value).__name__}; expected a string")
    return value


def check_positive_int(value, method: str, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{method}: {argument} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{method}: {argument} must be >= 1, got {value}")
    return value


def check_input_file(value, method: str, argument: str = "file") -> str:
    """The path of an existing file, else an error naming the argument and the path."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{method}: {argument} must be a path (str or os.PathLike), got {type(value).__name__}")
    path = os.fspath(value)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{method}: {argument} {path!r} does not exist")
    if not os.path.isfile(path):
        raise IsADirectoryError(f"{method}: {argument} {path!r} is a folder, not a file")
    return path
