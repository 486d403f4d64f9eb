"""Lightning strategy for megatron-core tensor / pipeline / data parallelism.

:class:`MegatronDDPStrategy` is Lightning's ``DDPStrategy`` with three changes:

1. after the process group is up (``setup_distributed``), it initialises megatron-core's
   ``parallel_state`` with the configured tensor and pipeline sizes;
2. DDP reduces gradients over the **data-parallel group only** (tensor-parallel ranks hold
   different shards, pipeline ranks different layers), and the distributed sampler splits data
   over data-parallel ranks, so every rank of one model replica sees the same batch; with one
   data-parallel replica the model is not wrapped at all;
3. checkpoints hold plain containers, load with ``weights_only=True`` and are written
   atomically (:mod:`biomegatron_nemo.checkpoints.training`); weights *and* optimizer state are
   layout-free (gathered on every rank, written by rank 0), so a run saved at one tensor /
   pipeline layout resumes at another with its optimizer moments.

It works with ``python script.py`` and ``devices=N`` (Lightning spawns the ranks) and with
``torchrun``; backend ``gloo`` on CPU, ``nccl`` on CUDA.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from lightning.pytorch.strategies import DDPStrategy
from megatron.core import parallel_state
from omegaconf import DictConfig

from biomegatron_nemo.common.config import to_plain

from .state import default_backend, initialize_megatron


class MegatronDDPStrategy(DDPStrategy):
    strategy_name = "megatron_ddp"

    def __init__(self, tensor_model_parallel_size: int = 1, pipeline_model_parallel_size: int = 1,
                 seed: int = 1234, **kwargs: Any):
        from biomegatron_nemo.checkpoints.training import AtomicCheckpointIO

        kwargs.setdefault("process_group_backend", default_backend())
        kwargs.setdefault("checkpoint_io", AtomicCheckpointIO())
        super().__init__(**kwargs)
        self.tensor_model_parallel_size = int(tensor_model_parallel_size)
        self.pipeline_model_parallel_size = int(pipeline_model_parallel_size)
        self.seed = int(seed)

    # ------------------------------------------------------------------ setup
    def setup_distributed(self) -> None:
        super().setup_distributed()
        initialize_megatron(self.tensor_model_parallel_size, self.pipeline_model_parallel_size, seed=self.seed)

    def setup(self, trainer) -> None:
        # When not fitting, Lightning's DDPStrategy.setup broadcasts global rank 0's parameters
        # to every rank (there is no DDP wrapper to do it). Under tensor or pipeline parallelism
        # ranks hold different shards and stages: that broadcast fails on shapes (PP) or silently
        # overwrites other ranks' shards with rank 0's (TP). Sync over the data-parallel group.
        from lightning.pytorch.strategies import ddp

        original = ddp._sync_module_states
        ddp._sync_module_states = _sync_data_parallel_replicas
        try:
            super().setup(trainer)
        finally:
            ddp._sync_module_states = original

    def _setup_model(self, model: torch.nn.Module):
        self._ddp_kwargs["process_group"] = parallel_state.get_data_parallel_group()
        if self.pipeline_model_parallel_size > 1:
            # Pipeline stages run their backward inside the pipeline schedule, outside DDP's
            # forward; data-parallel gradients are reduced by the pipeline runner instead.
            return model
        if parallel_state.get_data_parallel_world_size() == 1:
            # One replica has no gradients to reduce; a DDP wrapper would still copy every
            # gradient into its buckets and all-reduce them over a group of one on each step.
            return model
        return super()._setup_model(model)

    @property
    def distributed_sampler_kwargs(self) -> Dict[str, int]:
        return dict(num_replicas=parallel_state.get_data_parallel_world_size(),
                    rank=parallel_state.get_data_parallel_rank())

    # ------------------------------------------------------------------ checkpoints
    def lightning_module_state_dict(self) -> Dict[str, Any]:
        return self.lightning_module.layout_free_state_dict()

    def load_model_state_dict(self, checkpoint, strict: bool = True) -> None:
        self.lightning_module.load_layout_free_state_dict(checkpoint["state_dict"], strict=strict)

    def optimizer_state(self, optimizer) -> Dict[str, Any]:
        from lightning.pytorch.core.optimizer import LightningOptimizer

        from biomegatron_nemo.checkpoints.training import layout_free_optimizer_state

        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer._optimizer
        return layout_free_optimizer_state(self.lightning_module, optimizer)  # collective

    def load_optimizer_state_dict(self, checkpoint) -> None:
        from lightning.fabric.utilities.optimizer import _optimizer_to_device

        from biomegatron_nemo.checkpoints.training import load_layout_free_optimizer_state

        for optimizer, state in zip(self.optimizers, checkpoint["optimizer_states"]):
            load_layout_free_optimizer_state(self.lightning_module, optimizer, state)
            _optimizer_to_device(optimizer, self.root_device)

    def save_checkpoint(self, checkpoint: Dict[str, Any], filepath, storage_options: Optional[Any] = None) -> None:
        # Plain containers only, so the checkpoint loads with torch.load(weights_only=True):
        # Lightning stores the hyper-parameters as an OmegaConf object and its class.
        if isinstance(checkpoint.get("hyper_parameters"), DictConfig):
            checkpoint["hyper_parameters"] = to_plain(checkpoint["hyper_parameters"])
        checkpoint.pop("hparams_type", None)
        super().save_checkpoint(checkpoint, filepath, storage_options=storage_options)


def _sync_data_parallel_replicas(module: torch.nn.Module) -> None:
    """Make the data-parallel replicas of this rank's shard equal to the first replica's."""
    from torch.distributed.utils import _sync_module_states

    group = parallel_state.get_data_parallel_group()
    if torch.distributed.get_world_size(group) == 1:
        return
    _sync_module_states(module, group, 250 * 1024 * 1024, src=torch.distributed.get_process_group_ranks(group)[0],
                        params_and_buffers_to_ignore=set())
