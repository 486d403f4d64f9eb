"""``.nemo`` save/restore that is independent of the parallel layout and never unpickles code.

NeMo's ``SaveRestoreConnector`` runs on global rank 0 only and writes that rank's
``state_dict()`` — with TP=2 a ``.nemo`` silently holds half of every partitioned weight. This
connector gathers the layout-free state dict on every rank first (a collective; see
:mod:`biomegatron_nemo.checkpoints.layout`), then lets NeMo's connector write it on rank 0 with
its usual packing of config and artifacts. Restoring cuts the layout-free weights for the
restoring rank's layout, so a ``.nemo`` saved at TP=2 restores at TP=1 and the reverse.

Weights are read with ``torch.load(weights_only=True)``: loading a checkpoint never runs pickled
code from it. The archive is written atomically (:func:`~biomegatron_nemo.common.atomic.atomic_write`):
a run killed while saving leaves the previous ``.nemo`` intact, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from typing import Dict, Iterator

import torch
import torch.distributed as dist
from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

from biomegatron_nemo.common.atomic import atomic_write


class LayoutFreeSaveRestoreConnector(SaveRestoreConnector):
    """NeMo connector for :class:`~biomegatron_nemo.models.base.BioMegatronModelPT` models."""

    def save_to(self, model, save_path: str):
        full_state = model.layout_free_state_dict()  # collective on all ranks
        with _state_dict_override(model, full_state):
            result = super().save_to(model, save_path)  # writes on global rank 0 only
        if dist.is_initialized():
            dist.barrier()
        return result

    def load_instance_with_state_dict(self, instance, state_dict, strict):
        instance.load_layout_free_state_dict(state_dict, strict=strict)
        instance._set_model_restore_state(is_being_restored=False)  # as NeMo's connector does

    def _inject_model_parallel_rank_for_ckpt(self, dirname, basename):
        # NeMo expects one weights file per model-parallel rank; ours is a single layout-free one.
        return os.path.join(dirname, basename)

    @staticmethod
    def _make_nemo_file_from_folder(filename, source_dir):
        # NeMo's tars straight into the final name: a kill mid-way left a truncated .nemo there
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)

        def pack(f):
            with tarfile.open(fileobj=f, mode="w:") as tar:
                tar.add(source_dir, arcname=".")

        atomic_write(filename, pack)

    @staticmethod
    def _load_state_dict_from_disk(model_weights, map_location="cpu"):
        return torch.load(model_weights, map_location=map_location, weights_only=True)


@contextlib.contextmanager
def _state_dict_override(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> Iterator[None]:
    """Make ``model.state_dict()`` return ``state`` (NeMo's connector writes what it returns)."""
    model.state_dict = lambda *args, **kwargs: state  # instance attribute shadows the method
    try:
        yield
    finally:
        del model.state_dict
