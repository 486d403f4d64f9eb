"""What every fine-tuning task model (NER, relation extraction, question answering) shares on top
of the base lifecycle.

:class:`FineTuningTaskModel` owns

* the data loaders of a fine-tuning split: training batches shuffled and grouped by length
  (``group_by_length``) or cut to a token budget (``max_tokens``), data-parallel aware;
  evaluation batches sorted by length;
* the one inference loop (:meth:`FineTuningTaskModel.infer`): a dataset's items through
  ``forward`` in length-sorted batches, in eval mode, turned into per-item rows by the task's
  :meth:`~FineTuningTaskModel.output_rows` — the rows validation and test collect at each step
  too, gathered over all ranks at epoch end (data parallel, and the last pipeline stage);
* the scores of the last evaluation epoch, and one-time warnings.

A task model adds only its decoding: rows → entities, a label and its probabilities, ranked
answers. Classification models derive through
:class:`~biomegatron_nemo.models.classification.ClassificationTaskModel`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import torch
from lightning.pytorch import Trainer
from omegaconf import DictConfig

from biomegatron_nemo.common.errors import ConfigError
from biomegatron_nemo.models.base import BioMegatronModelPT
from biomegatron_nemo.models.outputs import ModelOutput

log = logging.getLogger(__name__)


class FineTuningTaskModel(BioMegatronModelPT):
    """Loaders, the inference loop, evaluation-row gathering and warnings of the fine-tuning models."""

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        self._eval_rows: Dict[str, list] = {"val": [], "test": []}
        #: split → the scores of its last evaluation epoch
        self.last_scores: Dict[str, Dict] = {}
        super().__init__(cfg=cfg, trainer=trainer)

    # ------------------------------------------------------------------ data
    def make_dataloader(self, dataset, data_config, split: str, sampler=None) -> torch.utils.data.DataLoader:
        """The loader of a fine-tuning split (``data_config``: its typed section): training shuffled
        in length-grouped batches (``group_by_length``) or in token budgets (``max_tokens``),
        evaluation sorted by length (rows carry their item index), unless the caller brings its own
        ``sampler`` (e.g. oversampling). ``dataset`` has ``lengths()`` and ``collate_fn``."""
        from biomegatron_nemo.data import batching, resumable

        batch_size, max_tokens, seed = data_config.batch_size, data_config.max_tokens, self.config.seed
        shuffle = data_config.shuffle if data_config.shuffle is not None else split == "train"
        workers = data_config.num_workers
        if max_tokens is not None:
            if sampler is not None:
                raise ConfigError("cannot be combined with this split's own sampling (e.g. oversample); "
                                  "set max_tokens: null", key=f"{split}_ds.max_tokens", where=type(self).__name__)
            if shuffle:
                sampler = batching.TokenBudgetSampler(dataset.lengths(), max_tokens, batch_size, seed=seed,
                                                      **self.data_parallel_ranks())
            else:
                sampler = batching.FixedOrderSampler(batching.token_budget_batches(dataset.lengths(), max_tokens,
                                                                                   batch_size))
            # each sampler item is a whole batch, collated by the dataset wrapper (in the workers)
            loader_class = resumable.ResumableDataLoader if shuffle else torch.utils.data.DataLoader
            return loader_class(batching.BatchedExamples(dataset), batch_size=None, sampler=sampler,
                                num_workers=workers, collate_fn=batching.already_collated)
        if sampler is None and shuffle:
            # this data-parallel rank's share of one seeded order (grouped by the global batch)
            ranks = self.data_parallel_ranks()
            if data_config.group_by_length:
                sampler = batching.LengthGroupedSampler(dataset.lengths(), batch_size, seed=seed, **ranks)
            else:
                sampler = batching.ShuffledSampler(len(dataset), seed=seed, **ranks)
        elif sampler is None:
            sampler = batching.FixedOrderSampler(batching.length_sorted_order(dataset.lengths()))
        # training orders resume mid-epoch at exactly the next batch
        in_epochs = isinstance(sampler, resumable.EpochSampler)
        loader_class = resumable.ResumableDataLoader if in_epochs else torch.utils.data.DataLoader
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

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def infer(self, dataset, batch_size: int, forward: Optional[Callable[..., ModelOutput]] = None
              ) -> Dict[int, Any]:
        """Every item of ``dataset`` (windows, examples, features) through :meth:`forward`, in
        batches sorted by length, in eval mode: ``{item index: row}`` (:meth:`output_rows`).
        ``forward``: another callable with :meth:`forward`'s arguments and output type to run
        instead (``biomegatron annotate``'s bf16 and ONNX Runtime engines)."""
        from biomegatron_nemo.data.batching import FixedOrderSampler, length_sorted_order

        if self.pipeline_parallel:  # the stages of one model are separate processes
            raise NotImplementedError("inference (evaluate, predict) with pipeline parallelism is not supported; "
                                      "restore the .nemo with pipeline_model_parallel_size=1")
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=dataset.collate_fn,
                                             sampler=FixedOrderSampler(length_sorted_order(dataset.lengths())))
        was_training = self.training
        self.eval()
        rows: Dict[int, Any] = {}
        try:
            for batch in loader:
                batch = {k: v.to(self.device) for k, v in batch.items()}
                rows.update(self.output_rows(batch, (forward or self)(**self.forward_inputs(batch))))
        finally:
            self.train(was_training)
        return rows

    def output_rows(self, batch: Dict[str, torch.Tensor], output: ModelOutput) -> Iterable[Tuple[int, Any]]:
        """``(item index, row)`` for each item of a batch: what the task's decoding needs of its
        outputs, on the CPU and without padding."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation
    def on_eval_output(self, split: str, batch, output: ModelOutput) -> None:
        self._eval_rows[split].extend(self.output_rows(batch, output))

    def take_eval_rows(self, split: str) -> Optional[Dict[int, Any]]:
        """The rows collected for ``split`` from every rank, by item index (an item the distributed
        sampler repeated counts once), or None during Lightning's sanity check."""
        rows, self._eval_rows[split] = self._eval_rows[split], []
        if self.trainer is not None and self.trainer.sanity_checking:
            return None
        return dict(gather_all_ranks(rows))

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
