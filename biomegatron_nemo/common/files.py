"""File loaders every stage shares, so that even undecodable bytes, broken JSON or a runaway line
get a line number.

Line-oriented files of annotated data (CoNLL NER, TSV, label maps, vocabularies) are read with
:func:`iter_lines`, which refuses a line longer than :data:`MAX_LINE_BYTES` after reading only
that much of it: real lines are a few hundred bytes, so a longer one means a broken file (a
binary, or a file whose line ends were lost), and reading it whole could exhaust memory.
Pretraining corpora have their own reader and limit (:mod:`biomegatron_nemo.common.corpus`).
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Iterator, Tuple, Union

from biomegatron_nemo.common.errors import DataFormatError

#: the sample data shipped inside the package (``${samples:ner/train.tsv}`` in a config)
SAMPLES = Path(__file__).resolve().parents[1] / "samples"

#: Longest line (bytes, without its line break) :func:`iter_lines` accepts: 1 MiB.
MAX_LINE_BYTES = 1 << 20

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def describe_decode_error(line: bytes, start: int, first_line: bool) -> str:
    """What a line's UTF-8 decoding error means for the user: the byte and its column, and a hint
    when the file starts like UTF-16 (Windows tools write it with a byte-order mark)."""
    if first_line and line.startswith(_UTF16_BOMS):
        return "invalid UTF-8: the file starts with a UTF-16 byte-order mark (UTF-16 text? save it as UTF-8)"
    return f"invalid UTF-8 (byte {line[start]:#04x} at column {start + 1}); re-encode the file as UTF-8"


def iter_lines(path: Union[str, Path], max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Tuple[int, str]]:
    """``(line number, text without the line break)`` for each line of a UTF-8 file.

    Decoding line by line (rather than letting ``open`` decode) turns a bad byte into a
    :class:`DataFormatError` that names its line; a leading byte-order mark is dropped; a line
    longer than ``max_line_bytes`` is an error naming it, found without reading the rest of it.
    """
    with open(path, "rb") as f:
        lineno = 0
        while True:
            raw = f.readline(max_line_bytes + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                raise DataFormatError(path, lineno, f"line longer than {max_line_bytes:,} bytes; this "
                                      "is not a line of this format (a binary file, or lost line ends?)")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataFormatError(path, lineno, describe_decode_error(raw, e.start, lineno == 1)) from None
            if lineno == 1:
                text = text.removeprefix("\ufeff")
            yield lineno, text.rstrip("\r\n")


def load_json(path: Union[str, Path]):
    """Parse a JSON file; syntax errors, an empty file and non-UTF-8 bytes become
    :class:`DataFormatError` naming the line. JSON has no line-length limit (SQuAD's official
    files are one 30 MB line), so the whole file is read."""
    with open(path, "rb") as f:
        raw = f.read().removeprefix(codecs.BOM_UTF8)  # positions of errors then index raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        raise DataFormatError(path, line, describe_decode_error(raw[line_start:], e.start - line_start,
                                                                line == 1)) from None
    if not text.strip():
        raise DataFormatError(path, None, "empty file; expected JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        # a cut file fails at its end, or inside the string it was cut in
        cut = e.pos >= len(text.rstrip()) or (e.msg.startswith("Unterminated string") and '"' not in text[e.pos + 1:])
        end = " (the file ends early: truncated?)" if cut else ""
        raise DataFormatError(path, e.lineno, f"invalid JSON: {e.msg} (column {e.colno}){end}") from None
