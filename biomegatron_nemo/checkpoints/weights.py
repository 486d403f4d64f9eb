"""A model's weights in and out of checkpoints, whatever its tensor / pipeline layout.

What a model must declare for this is a :class:`WeightLayout` (``model.weight_layout()``): which
tensors have the padded vocabulary as their first dimension, and which local tensors are copies
of another (a last pipeline stage's copy of the tied word embeddings). With it:

* :func:`layout_free_state_dict` — the model's full weights (collective over all ranks);
* :func:`load_layout_free_state_dict` — full weights into this rank's shards, naming missing and
  unused tensors;
* :func:`read_nemo_weights` — the weights inside a ``.nemo`` file, read weights-only and verified
  against their checksums, with errors that name the file; :func:`check_nemo_file` — a broken or truncated archive named before restoring;
* :func:`load_encoder_weights` — initialise some of a model's weights (e.g. ``encoder.*``) from
  a pretrained checkpoint's layout-free weights, naming what does not fit.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from typing import Dict, Mapping, Sequence, Tuple

import torch

from biomegatron_nemo.checkpoints.checksums import CHECKSUMS_FILE, load_weights
from biomegatron_nemo.checkpoints.layout import (
    gather_layout_free_state_dict,
    shard_layout_free_state_dict,
    tensor_shapes,
)

WEIGHTS_FILE = "model_weights.ckpt"


@dataclass(frozen=True)
class WeightLayout:
    """What layout-free checkpoints need to know about a model's tensors."""

    #: state-dict keys whose dim 0 is the padded vocabulary (trimmed to the tokenizer's size)
    vocab_sized: Tuple[str, ...] = ()
    #: local key → the layout-free key it duplicates (left out when saving, filled when loading)
    tied_copies: Mapping[str, str] = field(default_factory=dict)
    #: rows the vocabulary-sized tensors keep in a checkpoint (the tokenizer's size)
    vocab_size: int = 0


def layout_free_state_dict(model: torch.nn.Module, layout: WeightLayout) -> Dict[str, torch.Tensor]:
    """Full weights, independent of TP/PP. Collective: call on every rank."""
    return gather_layout_free_state_dict(model, vocab_keys=layout.vocab_sized, vocab_size=layout.vocab_size,
                                         drop_keys=layout.tied_copies)


def load_layout_free_state_dict(model: torch.nn.Module, layout: WeightLayout,
                                state_dict: Mapping[str, torch.Tensor], strict: bool = True):
    """Load full weights into this rank's shards; ``strict`` names missing and unused tensors."""
    from megatron.core import parallel_state

    local = shard_layout_free_state_dict(model, state_dict, vocab_keys=layout.vocab_sized,
                                         aliases=layout.tied_copies)
    if strict:
        missing = sorted(set(tensor_shapes(model)) - set(local))
        if missing:
            raise ValueError(f"checkpoint lacks weights the model needs: {missing}")
        # under pipeline parallelism every stage uses only its share of the checkpoint
        if parallel_state.get_pipeline_model_parallel_world_size() == 1:
            unused = sorted(set(state_dict) - {layout.tied_copies.get(k, k) for k in local})
            if unused:
                raise ValueError(f"checkpoint has weights the model does not use: {unused}")
    # the plain module load: a model's own load_state_dict may take layout-free weights (and land here)
    return torch.nn.Module.load_state_dict(model, local, strict=False)


def check_nemo_file(path: str) -> None:
    """A clear error naming ``path`` unless it is a complete ``.nemo`` archive (a tar holding
    ``model_config.yaml`` and the weights), before NeMo's restore meets it deep inside ``tarfile``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such .nemo file")
    try:
        with tarfile.open(path) as tar:
            members = tar.getmembers()  # reads every header (not the data)
    except (tarfile.TarError, EOFError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "unexpected end of data" in first:
            raise ValueError(f"{path}: truncated .nemo file: the archive ends inside a member ({first})") from err
        raise ValueError(f"{path}: not a readable .nemo file (a tar archive): {first}") from err
    names = {os.path.basename(m.name) for m in members}
    missing = [name for name in ("model_config.yaml", WEIGHTS_FILE) if name not in names]
    if missing:
        raise ValueError(f"{path}: not a .nemo file of this library: no {' or '.join(missing)} inside")


def read_nemo_weights(path: str) -> Dict[str, torch.Tensor]:
    """The layout-free weights stored in a ``.nemo`` file (never unpickles code)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such .nemo file")
    try:
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(path) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(WEIGHTS_FILE)), None)
            if member is None:
                raise ValueError(f"{path}: not a .nemo file (no {WEIGHTS_FILE} inside)")
            tar.extract(member, tmp, filter="data")
            sums = os.path.join(os.path.dirname(member.name), CHECKSUMS_FILE)
            for other in tar.getmembers():
                if os.path.normpath(other.name) == os.path.normpath(sums):
                    tar.extract(other, tmp, filter="data")
            return load_weights(os.path.join(tmp, member.name), source=path, what=WEIGHTS_FILE)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable .nemo file (a tar archive): {err}") from err


def load_encoder_weights(model: torch.nn.Module, layout: WeightLayout, full: Mapping[str, torch.Tensor],
                         source: str, prefixes: Sequence[str] = ("encoder.",), appended_ids: Sequence[int] = (),
                         seed: int = 1234, init_std: float = 0.02) -> None:
    """Initialise the weights under ``prefixes`` from the layout-free weights ``full`` of a
    pretrained checkpoint (``source`` names it in errors).

    ``appended_ids`` are token ids the model's vocabulary has after the checkpoint's (entity
    markers added as special tokens): vocabulary-sized tensors grow to them, the checkpoint's rows
    kept and the new ones drawn from N(0, ``init_std``) with ``seed`` (zeros for biases) — the same
    on every rank and at every tensor-parallel size. Any other shape mismatch, or a tensor the
    model needs that the checkpoint lacks, is one ValueError line naming the first and counting
    the rest. Collective under model parallelism.
    """
    prefixes = tuple(prefixes)
    full = {k: v for k, v in full.items() if k.startswith(prefixes)}
    if not full:
        raise ValueError(f"{source}: no weights under {list(prefixes)}")
    own = layout_free_state_dict(model, layout)
    full = _grow_vocabulary(full, own, set(layout.vocab_sized) | set(layout.tied_copies.values()),
                            set(appended_ids), seed, init_std)
    problems = [f"{k} is {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} in the model"
                for k, v in full.items() if k in own and own[k].shape != v.shape]
    problems += [f"{k} is missing from the checkpoint" for k in sorted(own)
                 if k.startswith(prefixes) and k not in full]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"cannot initialise from {source}: {problems[0]}{more}")
    local = shard_layout_free_state_dict(model, full, vocab_keys=layout.vocab_sized, aliases=layout.tied_copies)
    model.load_state_dict(local, strict=False)


def _grow_vocabulary(full: Dict[str, torch.Tensor], own: Mapping[str, torch.Tensor], vocab_keys: set,
                     appended: set, seed: int, init_std: float) -> Dict[str, torch.Tensor]:
    """Checkpoint tensors with rows added for the appended token ids (see load_encoder_weights)."""
    out = dict(full)
    generator = torch.Generator().manual_seed(seed)
    for key in sorted(vocab_keys & set(full) & set(own)):
        have, want = full[key], own[key]
        extra = range(have.shape[0], want.shape[0])
        if not extra or have.shape[1:] != want.shape[1:] or not set(extra) <= appended:
            continue
        if have.dim() == 1:
            rows = torch.zeros(len(extra), dtype=have.dtype)
        else:
            rows = (torch.randn((len(extra),) + tuple(have.shape[1:]), generator=generator) * init_std).to(have.dtype)
        out[key] = torch.cat([have, rows], dim=0)
    return out
