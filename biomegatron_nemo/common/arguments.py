"""The argument checks of the models' public methods (``predict``, ``evaluate``, ``answer``): a
wrong type is a ``TypeError`` and a wrong value a ``ValueError``, each naming the method, the
argument and the item's position, before any of it reaches the tokenizer or torch."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import List


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
