"""A checksum of every tensor a checkpoint holds, written with it and verified when it is read.

``torch.load`` reads a flipped bit in a tensor's bytes as a slightly different weight: no error,
a model that is quietly wrong, or a resumed run that diverges. So every training checkpoint and
every ``.nemo`` records a CRC-32 of each tensor's bytes (``zlib``: 4 GB/s on one core, the
fastest checksum in the standard library, and made for catching corrupted storage), keyed by the
tensor's place in the checkpoint (``state_dict/encoder.layers.0...``, ``optimizer_states/0/...``).
Reading recomputes them, and a mismatch names the file and the tensor. Files written before
checksums existed still load, with a warning that they were not verified.

* training checkpoints: the ``tensor_checksums`` entry of the checkpoint dict
  (:func:`checkpoint_checksums`);
* ``.nemo`` files and converted-checkpoint caches: :data:`CHECKSUMS_FILE` next to the weights
  file (:func:`save_weights` / :func:`load_weights`), so other readers of the weights file see
  the plain state dict they expect.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import torch

from biomegatron_nemo.common.errors import DataFormatError

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "tensor_checksums"
CHECKSUMS_FILE = "model_weights.checksums.json"
FORMAT = "crc32"


def iter_tensors(tree: Any, prefix: str = "") -> Iterator[Tuple[str, torch.Tensor]]:
    """``(place, tensor)`` for every tensor in a nested dict / list, depth first."""
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, Mapping):
        for key, value in tree.items():
            if not (prefix == "" and key == CHECKPOINT_KEY):
                yield from iter_tensors(value, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from iter_tensors(value, f"{prefix}/{index}" if prefix else str(index))


def crc32(tensor: torch.Tensor) -> str:
    """CRC-32 of a tensor's bytes in memory order (any dtype, any device)."""
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return f"{zlib.crc32(data):08x}"


def tensor_checksums(tree: Any) -> Dict[str, str]:
    """``{place: crc32}`` for every tensor in a nested dict / list (a checkpoint, a state dict)."""
    return {place: crc32(tensor) for place, tensor in iter_tensors(tree)}


def verify_checksums(tree: Any, recorded: Optional[Mapping[str, str]], source, what: str) -> None:
    """A :class:`DataFormatError` naming ``source`` and the first tensor whose bytes differ from
    its recorded checksum (or that is missing or unrecorded); a warning when nothing was recorded."""
    if recorded is None:
        log.warning("%s: %s was written without checksums (by an earlier version); it loads unverified",
                    source, what)
        return
    recorded = dict(recorded.get("tensors") or {})
    seen = set()
    for place, tensor in iter_tensors(tree):
        seen.add(place)
        if place not in recorded:
            raise DataFormatError(source, None, f"tensor {place} has no recorded checksum: {what} was changed "
                                  "after it was written", field=what)
        if crc32(tensor) != recorded[place]:
            raise DataFormatError(source, None, f"tensor {place} does not match the checksum written with it: "
                                  f"{what} is corrupt (damaged on disk or in a copy); use another copy or an "
                                  "earlier checkpoint", field=what)
    missing = sorted(set(recorded) - seen)
    if missing:
        raise DataFormatError(source, None, f"tensors {missing[:5]} are missing: {what} was changed after it "
                              "was written", field=what)


def checkpoint_checksums(checkpoint: Mapping[str, Any]) -> Dict[str, Any]:
    """The :data:`CHECKPOINT_KEY` entry of a training checkpoint: every tensor but its own."""
    return {"format": FORMAT, "tensors": tensor_checksums(checkpoint)}


def save_weights(state: Mapping[str, torch.Tensor], path) -> None:
    """``torch.save(state, path)`` and the checksums beside it (:data:`CHECKSUMS_FILE`)."""
    torch.save(state, path)
    sums = checkpoint_checksums(state)
    with open(os.path.join(os.path.dirname(os.fspath(path)), CHECKSUMS_FILE), "w", encoding="utf-8") as f:
        json.dump(sums, f, indent=0, sort_keys=True)


def recorded_checksums(weights_path) -> Optional[Dict[str, Any]]:
    """The checksums :func:`save_weights` wrote beside ``weights_path``; None for an older file."""
    path = os.path.join(os.path.dirname(os.fspath(weights_path)), CHECKSUMS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_weights(path, source=None, what: str = "model_weights.ckpt", map_location="cpu") -> Dict[str, torch.Tensor]:
    """A weights file read weights-only and verified against its checksums (``source`` names the
    file a user knows, e.g. the ``.nemo`` it was unpacked from)."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    verify_checksums(state, recorded_checksums(path), source or path, what)
    return state


def nemo_checksums(nemo_path) -> Optional[Dict[str, Any]]:
    """The checksums inside a ``.nemo`` (a tar, or a folder it was unpacked into); None for an older file."""
    import tarfile

    if os.path.isdir(nemo_path):
        return recorded_checksums(os.path.join(nemo_path, "model_weights.ckpt"))
    with tarfile.open(nemo_path) as tar:
        member = next((m for m in tar.getmembers() if os.path.basename(m.name) == CHECKSUMS_FILE), None)
        return json.load(tar.extractfile(member)) if member is not None else None


def verify_nemo_restore(state: Mapping[str, torch.Tensor]) -> None:
    """Verify weights NeMo's own ``ModelPT.restore_from`` (its default connector, not ours) hands
    to ``load_state_dict``, against the checksums in the ``.nemo`` being restored."""
    from nemo.utils.app_state import AppState

    app = AppState()
    if app.is_model_being_restored and app.model_restore_path and os.path.exists(app.model_restore_path):
        verify_checksums(state, nemo_checksums(app.model_restore_path), app.model_restore_path, "model_weights.ckpt")
