"""The one exception every benchmark reader raises for malformed input (DESIGN.md rule 7)."""

from __future__ import annotations

from typing import Optional


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
