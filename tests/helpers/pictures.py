"""Checks on the pictures the library writes: real PNG files that matplotlib reads back."""

from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, max_bytes: int = 100_000) -> None:
    """``path`` starts with the PNG signature, decodes to an image of some size, and is small
    enough to commit and embed in the docs."""
    import matplotlib.image

    path = Path(path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    height, width = matplotlib.image.imread(str(path)).shape[:2]
    assert height > 100 and width > 100, (path, height, width)
    assert path.stat().st_size < max_bytes, (path, path.stat().st_size)
