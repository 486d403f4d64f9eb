"""File loaders every stage shares, so that even undecodable bytes or broken JSON get a line number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Tuple, Union

from biomegatron_nemo.common.errors import DataFormatError


def iter_lines(path: Union[str, Path]) -> Iterator[Tuple[int, str]]:
    """``(line number, text without the line break)`` for each line of a UTF-8 file.

    Decoding line by line (rather than letting ``open`` decode) turns a bad byte into a
    :class:`DataFormatError` that names its line; a leading byte-order mark is dropped.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataFormatError(path, lineno, f"not UTF-8 text (byte {raw[e.start]:#04x} "
                                      f"at column {e.start + 1})") from None
            if lineno == 1:
                text = text.removeprefix("\ufeff")
            yield lineno, text.rstrip("\r\n")


def load_json(path: Union[str, Path]):
    """Parse a JSON file; syntax errors and non-UTF-8 bytes become :class:`DataFormatError`."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise DataFormatError(path, None, f"not UTF-8 text (byte offset {e.start})") from None
