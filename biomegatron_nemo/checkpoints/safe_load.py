"""Load third-party checkpoints without running anything they contain.

Megatron-LM's ``model_optim_rng.pt`` pickles more than tensors: its ``args`` (an
``argparse.Namespace``), objects of classes from Megatron-LM's own modules (for example
``megatron.model.enums.AttnMaskType``, which this library does not have), and NumPy random states.
``torch.load(weights_only=True)`` refuses all of them, and a plain ``torch.load`` would import and
call whatever the file names.

:func:`safe_torch_load` uses PyTorch's own weights-only unpickler (``torch.load(weights_only=True)``,
which rebuilds tensors and plain containers and calls nothing else) with a small allow-list:

* ``argparse.Namespace`` (attributes only);
* NumPy arrays and dtypes (``_reconstruct``, ``ndarray``, ``dtype`` and the dtype classes), as in
  random-number-generator states;
* every class named by a ``megatron.*`` module is replaced by an inert placeholder
  (:class:`MegatronPlaceholder`) that records its arguments and state and does nothing else — the
  real class is never imported.

Any other global (``os.system``, ``builtins.eval``, a class of any other package) is refused with a
:class:`UnsafeCheckpointError` naming the file and the globals; nothing in the file runs. There is no
unsafe fallback.
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import torch

#: modules whose unknown classes become inert placeholders (Megatron-LM's own)
PLACEHOLDER_MODULES = ("megatron.",)


class UnsafeCheckpointError(ValueError):
    """A checkpoint names a global outside the allow-list; it was not loaded."""


class MegatronPlaceholder:
    """Stands in for a class of Megatron-LM's modules: keeps what the pickle gives it, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder {type(self).__module__}.{type(self).__qualname__}{self.args or ''}>"


def _placeholder(qualified: str) -> type:
    module, _, name = qualified.rpartition(".")
    return type(name, (MegatronPlaceholder,), {"__module__": module, "__qualname__": name})


def _numpy_globals() -> Dict[str, Any]:
    """NumPy's array reconstruction, under its NumPy 1.x and 2.x names."""
    import numpy as np

    reconstruct = np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
    return {"numpy.core.multiarray._reconstruct": reconstruct, "numpy._core.multiarray._reconstruct": reconstruct,
            "numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}


def _numpy_dtype_classes() -> List[type]:
    """NumPy 2's dtype classes (``numpy.dtypes.UInt32DType``, ...): an unpickled ``numpy.dtype``
    is an instance of one of them, which the unpickler must be allowed to build."""
    import numpy as np

    dtypes = getattr(np, "dtypes", None)
    return [c for c in vars(dtypes).values() if isinstance(c, type) and issubclass(c, np.dtype)] if dtypes else []


def allowed_globals(path: Union[str, Path], names: List[str]) -> List[Union[type, Tuple[Any, str]]]:
    """The allow-list entries for the globals ``names`` of a file, or :class:`UnsafeCheckpointError`
    naming those outside it."""
    numpy_globals = _numpy_globals()
    allowed: List[Union[type, Tuple[Any, str]]] = []
    refused = []
    for name in names:
        if name == "argparse.Namespace":
            allowed.append(argparse.Namespace)
        elif name in numpy_globals:
            allowed.append((numpy_globals[name], name))
            if name == "numpy.dtype":
                allowed.extend(_numpy_dtype_classes())
        elif name.startswith(PLACEHOLDER_MODULES):
            allowed.append(_placeholder(name))
        else:
            refused.append(name)
    if refused:
        raise UnsafeCheckpointError(
            f"{path}: refusing to load: it names {', '.join(refused)}, which a weights checkpoint has no "
            "reason to contain (loading it could run code). Nothing in the file was run.")
    return allowed


def safe_torch_load(path: Union[str, Path]) -> Any:
    """``torch.load`` of a checkpoint that may hold Megatron-LM's objects, without running code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            zipped = torch.serialization._is_zipfile(f)
        if zipped:  # the format since torch 1.6: its globals can be listed without unpickling
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            with torch.serialization.safe_globals(allowed_globals(path, names)):
                return torch.load(path, map_location="cpu", weights_only=True)
        return _load_legacy(path)
    except UnsafeCheckpointError:
        raise
    except Exception as err:  # a truncated zip, a pickle the weights-only unpickler refuses, ...
        detail = str(err).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        raise ValueError(f"{path}: not a readable PyTorch checkpoint: {type(err).__name__}: "
                         f"{detail[0] if detail else ''}") from err


_UNSUPPORTED = re.compile(r"GLOBAL ([\w.]+)")


def _load_legacy(path: Path) -> Any:
    """Files of torch < 1.6 (2020's Megatron-LM releases): the weights-only unpickler names one
    refused global at a time; each is judged by the same allow-list and the load retried."""
    names: List[str] = []
    while True:
        try:
            with torch.serialization.safe_globals(allowed_globals(path, names)):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            found = _UNSUPPORTED.search(str(err))
            if not found or found.group(1) in names:
                raise
            names.append(found.group(1))
