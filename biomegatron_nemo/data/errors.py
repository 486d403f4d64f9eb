"""The one exception every benchmark reader raises for malformed input (DESIGN.md rule 7), and
the file loaders the readers share, so that even undecodable bytes or broken JSON get a line number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union


class DataFormatError(ValueError):
    """A data file does not follow its format.

    The message always starts with ``file:line:`` (or ``file:`` when the problem is the file as
    a whole) so editors and terminals can jump to it; ``field`` names the column or JSON key.
    """

    def __init__(self, path, line: Optional[int], message: str, field: Optional[str] = None):
        self.path = str(path)
        self.line = line
        self.field = field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" [{field}]" if field else ""
        super().__init__(f"{where}:{what} {message}")


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
