"""Training checkpoints (Lightning ``.ckpt``) that survive kills and layout changes.

* :class:`AtomicCheckpointIO` writes each checkpoint through
  :func:`~biomegatron_nemo.common.atomic.atomic_write` (complete or absent, never truncated under
  its final name; a full disk is a clear error and the previous checkpoints stay) with the
  checksum of every tensor, and loads it weights-only, naming the file when it is unreadable and
  the tensor when its bytes are not those written.
* :func:`layout_free_optimizer_state` / :func:`load_layout_free_optimizer_state`: the optimizer
  state keyed by parameter *name*, each moment gathered like its weight (tensor-parallel shards
  concatenated, vocabulary padding cut, layers numbered over all pipeline stages), so a run saved
  at TP=2 resumes at TP=1 with its Adam moments and the reverse. megatron-core's
  ``dist_checkpointing`` reshards too, but its save path needs CUDA on 0.16.1 (KNOWN-TRAPS.md);
  gathering costs a full copy of the optimizer state per model-parallel group at save time.
* :func:`complete_saved_batch`: a mid-epoch checkpoint resumes with the step bookkeeping of an
  uninterrupted run.
* :func:`prepare_resume`: the leftovers of a killed run are tidied before a rerun starts:
  ``.partial`` files, and superseded ``-last`` checkpoints the run was about to delete
  (:func:`biomegatron_nemo.runs.launch.resume_checkpoint` chooses which one is resumed).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.io import TorchCheckpointIO

from biomegatron_nemo.checkpoints.checksums import CHECKPOINT_KEY, checkpoint_checksums, verify_checksums
from biomegatron_nemo.checkpoints.layout import (
    gather_named_tensors,
    global_names,
    merge_pipeline_stages,
    shard_named_tensors,
)
from biomegatron_nemo.common.atomic import PARTIAL_SUFFIX, atomic_write

log = logging.getLogger(__name__)

#: marks an optimizer state saved by :func:`layout_free_optimizer_state`
OPTIMIZER_FORMAT = "biomegatron-layout-free-optimizer-1"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic writes and weights-only, error-naming reads."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        checkpoint[CHECKPOINT_KEY] = checkpoint_checksums(checkpoint)
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location: Optional[Callable] = None) -> Dict[str, Any]:
        return load_training_checkpoint(path, verify=True)


def load_training_checkpoint(path, mmap: bool = False, verify: bool = False) -> Dict[str, Any]:
    """A training checkpoint read with ``weights_only=True``; a missing, truncated or foreign file
    is an error naming it. ``verify``: every tensor against its recorded checksum."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such training checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, zipfile errors
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path}: not a readable training checkpoint ({first}); resume from an earlier "
                         "checkpoint of the same folder or remove this one") from err
    if verify:
        verify_checksums(checkpoint, checkpoint.pop(CHECKPOINT_KEY, None), path, "the training checkpoint")
    return checkpoint


# ---------------------------------------------------------------------------- optimizer state
def _layout(model):
    layout = model.weight_layout()
    return set(layout.vocab_sized), layout.vocab_size, dict(layout.tied_copies)


def layout_free_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Dict[str, Any]:
    """``optimizer``'s state independent of the tensor / pipeline layout. Collective: every rank.

    Per-parameter tensors shaped like their parameter (Adam's moments, SGD's momentum) are
    gathered like the weights; other entries (Adam's ``step``) are kept as they are. Parameter
    groups keep their hyper-parameters, with parameter names instead of positions.
    """
    vocab_keys, vocab_size, tied = _layout(model)
    names = {id(p): n for n, p in model.named_parameters()}
    params = {n: p for n, p in model.named_parameters()}
    per_param: Dict[str, Dict[str, Any]] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if names[id(p)] not in tied and p in optimizer.state:
                per_param[names[id(p)]] = optimizer.state[p]
    keys = sorted({k for state in per_param.values() for k in state})
    if dist.is_initialized():  # every rank must run the same gathers: agree on the state's keys
        everyone: List[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, keys)
        keys = sorted({k for ks in everyone for k in ks})
    state: Dict[str, Dict[str, Any]] = {}
    for key in keys:
        shaped = {n: s[key] for n, s in per_param.items()
                  if isinstance(s.get(key), torch.Tensor) and s[key].shape == params[n].shape}
        other = {n: s[key] for n, s in per_param.items() if key in s and n not in shaped}
        for name, value in {**gather_named_tensors(model, shaped, vocab_keys, vocab_size),
                            **merge_pipeline_stages(model, other)}.items():
            state.setdefault(name, {})[key] = value
    groups = []
    global_name = global_names(model)
    for group in optimizer.param_groups:
        members = [global_name(names[id(p)]) for p in group["params"] if names[id(p)] not in tied]
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": members})
    groups = _merge_group_members(groups)
    return {"format": OPTIMIZER_FORMAT, "state": state, "param_groups": groups}


def _merge_group_members(groups: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Each group's parameter names over all pipeline stages (stage order)."""
    from megatron.core import parallel_state

    if not (parallel_state.model_parallel_is_initialized()
            and parallel_state.get_pipeline_model_parallel_world_size() > 1):
        return groups
    stages: List[Any] = [None] * parallel_state.get_pipeline_model_parallel_world_size()
    dist.all_gather_object(stages, [g["params"] for g in groups],
                           group=parallel_state.get_pipeline_model_parallel_group())
    return [{**g, "params": [n for stage in stages for n in stage[i]]} for i, g in enumerate(groups)]


def load_layout_free_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                                     saved: Dict[str, Any]) -> None:
    """Load a state from :func:`layout_free_optimizer_state` into this rank's ``optimizer``
    (whatever layout saved it); a state saved by ``optimizer.state_dict()`` loads as is."""
    if saved.get("format") != OPTIMIZER_FORMAT:
        optimizer.load_state_dict(saved)
        return
    vocab_keys, _, tied = _layout(model)
    names = {id(p): n for n, p in model.named_parameters()}
    if len(saved["param_groups"]) != len(optimizer.param_groups):
        raise ValueError(f"the checkpoint's optimizer has {len(saved['param_groups'])} parameter groups, "
                         f"this model's {len(optimizer.param_groups)}")
    global_name = global_names(model)
    sources: Dict[str, str] = {}  # local parameter name -> its layout-free name in the checkpoint
    positions: Dict[str, int] = {}
    groups = []
    for number, (group, stored) in enumerate(zip(optimizer.param_groups, saved["param_groups"])):
        members = set(stored["params"])
        for p in group["params"]:
            local = names[id(p)]
            sources[local] = tied.get(local, global_name(local))
            if sources[local] not in members and local not in tied:
                raise ValueError(f"the checkpoint's optimizer has no {sources[local]} in parameter group {number}; "
                                 "it was saved by a different model")
            positions[local] = len(positions)
        groups.append({**{k: v for k, v in stored.items() if k != "params"},
                       "params": [positions[names[id(p)]] for p in group["params"]]})
    # each kind of entry (exp_avg, momentum_buffer, ...) cut for this rank in one pass, like the weights
    shapes = {n: p.shape for n, p in model.named_parameters() if n in sources}
    state: Dict[int, Dict[str, Any]] = {}
    keys = {k for local in sources for k in saved["state"].get(sources[local], {})}
    for key in sorted(keys):
        full = {sources[n]: saved["state"][sources[n]][key] for n in sources if key in saved["state"].get(sources[n], {})}
        shaped = {src: v for src, v in full.items() if isinstance(v, torch.Tensor) and v.dim() > 0}
        pieces = shard_named_tensors(model, shaped, shapes, vocab_keys, aliases=sources)
        for local, source in sources.items():
            if source in full:
                state.setdefault(positions[local], {})[key] = pieces.get(local, full[source])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------------------- resume
def prepare_resume(checkpoint_dir, keep: Optional[str] = None) -> List[str]:
    """Tidy what a killed run left in ``checkpoint_dir`` (global rank 0, before ``exp_manager``):
    ``.partial`` files, and — when ``keep`` names the ``-last`` checkpoint chosen for resuming —
    the other ``-last`` files the killed run was about to delete. Returns what was removed, each
    with the reason."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    removed = []
    for partial in sorted(folder.glob(f"*{PARTIAL_SUFFIX}")):
        partial.unlink(missing_ok=True)
        removed.append(f"{partial} (half-written by an interrupted save)")
    if keep is not None:
        for older in sorted(folder.glob("*last.ckpt")):
            if older.resolve() != Path(keep).resolve():
                older.unlink(missing_ok=True)
                removed.append(f"{older} (superseded by {Path(keep).name}: the run was killed after "
                               "writing that one and before removing this one)")
    for line in removed:
        log.warning("removed %s", line)
    return removed


def complete_saved_batch(checkpoint: Dict[str, Any]) -> None:
    """Count the batch a mid-epoch checkpoint was saved in as done.

    Lightning's checkpoint callbacks save inside the batch (``on_train_batch_end``, or validation
    in the middle of an epoch), after the optimizer step but before the epoch loop marks the batch
    completed and counts it in ``_batches_that_stepped``. Restored as saved, a run therefore resumed
    one batch behind its optimizer steps: logged step numbers one lower than an uninterrupted
    run's, ``val_check_interval`` validations one batch late (a checkpoint at the end of the run
    then carried no validation metric: ``val_loss=0.0000`` in its name). The optimizer step of that
    batch is in the checkpoint (``global_step``), so the batch is marked completed here, before
    Lightning restores its loops from the same dict.
    """
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop")
    if not fit_loop or "epoch_loop.batch_progress" not in fit_loop:
        return
    progress = fit_loop["epoch_loop.batch_progress"]
    for counter in ("total", "current"):
        values = progress.get(counter, {})
        if values.get("processed", 0) > values.get("completed", 0):
            values["completed"] = values["processed"]
    state = fit_loop.get("epoch_loop.state_dict", {})
    if "_batches_that_stepped" in state and "global_step" in checkpoint:
        state["_batches_that_stepped"] = max(int(state["_batches_that_stepped"]), int(checkpoint["global_step"]))
    _count_steps_in_both_optimization_modes(fit_loop)


def _count_steps_in_both_optimization_modes(fit_loop: Dict[str, Any]) -> None:
    """Lightning counts optimizer steps (``global_step``) in the automatic-optimization loop, or in
    the manual one that pipeline-parallel runs use; a run saved at PP=2 and resumed at PP=1 (or the
    reverse) would restart its count, its learning-rate schedule and its data at step 0. Both
    loops get the count of the one that ran."""
    automatic = (fit_loop.get("epoch_loop.automatic_optimization.optim_progress") or {}).get("optimizer")
    manual = fit_loop.get("epoch_loop.manual_optimization.optim_step_progress")
    if not automatic or not manual or "step" not in automatic:
        return
    for counter in ("total", "current"):
        steps = max(int(automatic["step"][counter].get("completed", 0)), int(manual[counter].get("completed", 0)))
        for progress in (automatic["step"][counter], manual[counter], automatic.get("zero_grad", {}).get(counter, {})):
            for field in progress:
                progress[field] = max(int(progress[field]), steps)
