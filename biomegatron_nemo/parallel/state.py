"""Set up and tear down megatron-core's ``parallel_state`` for one process or many.

megatron-core layers read their tensor/pipeline groups from ``parallel_state``; it needs an
initialised ``torch.distributed`` process group even for a single process. ``gloo`` is used on
CPU (megatron-core works with it), ``nccl`` on CUDA.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel

from biomegatron_nemo.common.config import Schema, option
from biomegatron_nemo.common.errors import ConfigError


@dataclass
class ParallelConfig(Schema):
    """The ``parallel:`` section of a run: the model-parallel layout (the rest of the devices are
    data parallel) and the seed every rank starts from."""

    tensor_model_parallel_size: int = option(1, "ranks that split every layer's weights (TP)")
    pipeline_model_parallel_size: int = option(1, "ranks that split the layers into stages (PP)")
    seed: int = option(1234, "random seed of initialisation and dropout, identical on every rank")

    def check(self) -> None:
        for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, key)}", key=key)


@dataclass(frozen=True)
class ParallelLayout:
    """Sizes and this process's ranks in each dimension."""

    tensor: int
    pipeline: int
    data: int
    tensor_rank: int
    pipeline_rank: int
    data_rank: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def initialize_megatron(tensor_model_parallel_size: int = 1, pipeline_model_parallel_size: int = 1,
                        seed: int = 1234, backend: str | None = None) -> ParallelLayout:
    """Initialise ``torch.distributed`` (a 1-process group if none exists) and megatron-core.

    Idempotent for the same sizes; re-initialises megatron-core when the sizes change.
    """
    if not dist.is_initialized():
        if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:  # launched by torchrun & co.
            dist.init_process_group(backend or default_backend())
        else:
            # A private one-process group. Nothing goes into os.environ: child processes (a
            # fresh interpreter restoring a .nemo, Lightning's launchers) must not inherit a
            # port this process is listening on.
            dist.init_process_group(backend or default_backend(), init_method=f"tcp://127.0.0.1:{_free_port()}",
                                    rank=0, world_size=1)
    world = dist.get_world_size()
    if world % (tensor_model_parallel_size * pipeline_model_parallel_size):
        raise ValueError(
            f"world size {world} is not divisible by tensor ({tensor_model_parallel_size}) x "
            f"pipeline ({pipeline_model_parallel_size}) parallel sizes")
    if parallel_state.model_parallel_is_initialized():
        if (parallel_state.get_tensor_model_parallel_world_size() != tensor_model_parallel_size
                or parallel_state.get_pipeline_model_parallel_world_size() != pipeline_model_parallel_size):
            parallel_state.destroy_model_parallel()
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size, pipeline_model_parallel_size)
    seed_everything_model_parallel(seed)
    _tell_nemo_the_layout()
    return parallel_layout()


def _tell_nemo_the_layout() -> None:
    """NeMo's ``ModelPT.save_to`` calls the connector on every rank only when ``AppState`` knows
    the model-parallel size; our connector's gather is a collective, so every rank must enter."""
    from nemo.utils.app_state import AppState

    app_state = AppState()
    app_state.tensor_model_parallel_size = parallel_state.get_tensor_model_parallel_world_size()
    app_state.pipeline_model_parallel_size = parallel_state.get_pipeline_model_parallel_world_size()
    app_state.model_parallel_size = (app_state.tensor_model_parallel_size
                                     * app_state.pipeline_model_parallel_size)
    app_state.data_parallel_size = parallel_state.get_data_parallel_world_size()


def seed_everything_model_parallel(seed: int) -> None:
    """Same CPU seed on every rank (CPU initialisation builds identical master weights);
    megatron-core's model-parallel CUDA RNG streams on GPU."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        tensor_parallel.model_parallel_cuda_manual_seed(seed)


def parallel_layout() -> ParallelLayout:
    return ParallelLayout(
        tensor=parallel_state.get_tensor_model_parallel_world_size(),
        pipeline=parallel_state.get_pipeline_model_parallel_world_size(),
        data=parallel_state.get_data_parallel_world_size(),
        tensor_rank=parallel_state.get_tensor_model_parallel_rank(),
        pipeline_rank=parallel_state.get_pipeline_model_parallel_rank(),
        data_rank=parallel_state.get_data_parallel_rank(),
    )


def destroy_megatron(destroy_process_group: bool = False) -> None:
    """Forget megatron-core's groups (and optionally the process group), e.g. between tests."""
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if destroy_process_group and dist.is_initialized():
        dist.destroy_process_group()


def gather_along_last_dim(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor-parallel-split last dimension (no autograd).

    megatron-core's ``gather_from_tensor_model_parallel_region`` allocates on
    ``torch.cuda.current_device()``; this one allocates where the input lives (CPU or GPU).
    """
    tp = parallel_state.get_tensor_model_parallel_world_size()
    if tp == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(tp)]
    dist.all_gather(parts, tensor.contiguous(), group=parallel_state.get_tensor_model_parallel_group())
    return torch.cat(parts, dim=-1)


def data_parallel_normalizer(local_count: float) -> float:
    """Global count over the data-parallel group, divided by its size.

    DDP averages gradients over data-parallel ranks; a rank loss of ``local_sum / this``
    therefore averages to ``global_sum / global_count`` — exactly the loss of the global
    batch, however unevenly the counted items (e.g. masked tokens) fall across ranks.
    """
    if not parallel_state.model_parallel_is_initialized() or parallel_state.get_data_parallel_world_size() == 1:
        return max(local_count, 1.0)
    total = torch.tensor([float(local_count)], dtype=torch.float64)
    torch.distributed.all_reduce(total, group=parallel_state.get_data_parallel_group())
    return max(float(total.item()), 1.0) / parallel_state.get_data_parallel_world_size()
