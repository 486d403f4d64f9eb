"""The exceptions every stage raises for bad input (DESIGN.md rule 8): a data file that does not
follow its format (:class:`DataFormatError`, naming file and line) and a configuration that does
not follow its schema (:class:`ConfigError`, naming the key)."""

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


class ConfigError(ValueError):
    """A configuration does not follow its schema: an unknown key, a wrong type, a bad value.

    The message names the key by its full path (``train_ds.batch_size``) and the config it belongs
    to (``where``: a model class or a file), so the user can find and fix it.
    """

    def __init__(self, reason: str, key: Optional[str] = None, where: Optional[str] = None):
        self.reason = reason
        self.key = key
        self.where = where
        place = f"{where}: " if where else ""
        name = f"{key}: " if key else ""
        super().__init__(f"{place}{name}{reason}")
