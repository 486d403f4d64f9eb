"""Pictures written to files: the figure, the grouped bar chart and the save every report shares.

matplotlib draws everything; this module only chooses sizes and labels. Figures are built with
``matplotlib.figure.Figure`` and rendered by the Agg canvas, never through ``pyplot``: pyplot
keeps global state and a GUI backend, which a training job or a server has no use for and which
``matplotlib.use("Agg")`` would switch under the feet of a notebook that imported this library.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Tuple, Union

from biomegatron_nemo.common.atomic import atomic_write

#: resolution of every picture: small files (tens of KB) that still read well in a browser
DPI = 100


def picture_formats() -> Tuple[str, ...]:
    """File suffixes matplotlib can write (``png``, ``pdf``, ``svg``, ...)."""
    from matplotlib.figure import Figure

    return tuple(sorted(Figure().canvas.get_supported_filetypes()))


def check_picture_path(path: Union[str, Path], option: str = "--plot") -> Path:
    """``path`` as a Path when matplotlib can write its format (its suffix), else a ValueError
    naming ``option``: checked before a command computes anything, so a typo costs nothing."""
    path = Path(path)
    suffix = path.suffix.lstrip(".").lower()
    if suffix not in picture_formats():
        raise ValueError(f"{option} {str(path)!r}: the file name must end in a picture format matplotlib "
                         f"writes ({', '.join('.' + s for s in picture_formats())}), e.g. .png")
    return path


def draw_for_command(draw: Callable[[Path], object], path: Path, option: str = "--plot") -> int:
    """A command's ``--plot``: ``draw(path)``, then 0 and ``plot: PATH`` on stderr (stdout stays
    the command's report alone), or 2 and the error naming the option when the file cannot be
    written."""
    try:
        draw(path)
    except OSError as err:
        print(f"error: {option} {str(path)!r}: {err}", file=sys.stderr)
        return 2
    print(f"plot: {path}", file=sys.stderr)
    return 0


def new_figure(width: float, height: float):
    """A ``(figure, axes)`` pair of that size in inches, not registered with pyplot."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    return figure, figure.subplots()


def save_figure(figure, path: Union[str, Path], dpi: int = DPI) -> Path:
    """Write ``figure`` to ``path`` (format from the suffix) complete or not at all: a run killed
    while it redraws its loss curve keeps the previous picture, never half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    fmt = path.suffix.lstrip(".").lower() or "png"
    atomic_write(path, lambda f: figure.savefig(f, format=fmt, dpi=dpi))
    return path


def bar_chart(path: Union[str, Path], categories: Sequence[str], series: Mapping[str, Sequence[float]], *,
              ylabel: str, title: str, ylim: Optional[Tuple[float, float]] = None, value_format: str = "{:.2f}",
              xlabel: Optional[str] = None) -> Path:
    """Grouped bars: one group per category, one bar per series (with a legend when there are
    several), each bar labelled with its value."""
    categories = [str(c) for c in categories]
    n_series = max(len(series), 1)
    legend = len(series) > 1
    axes_width = min(max(3.3, 0.32 * len(categories) * n_series + 0.25 * len(categories)), 14)
    # the legend sits beside the axes (inside, it would hide the tallest bars): room for its names
    legend_width = 0.3 + 0.075 * max((len(str(n)) for n in series), default=0) if legend else 0.0
    figure, ax = new_figure(axes_width + 1.2 + legend_width, 3.6)
    width = 0.8 / n_series
    for k, (name, values) in enumerate(series.items()):
        offset = (k - (n_series - 1) / 2) * width
        drawn = ax.bar([i + offset for i in range(len(categories))], list(values), width, label=name)
        ax.bar_label(drawn, fmt=value_format, fontsize=7, padding=1)
    # slant the names when the longest (about 0.08 in a character) is wider than its group
    slant = max((len(c) for c in categories), default=0) * 0.08 > axes_width / max(len(categories), 1)
    ax.set_xticks(range(len(categories)), categories, rotation=30 if slant else 0, ha="right" if slant else "center")
    if ylim is not None:
        ax.set_ylim(*ylim)
    else:
        ax.margins(y=0.12)  # room for the value labels above the highest bar
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    if legend:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return save_figure(figure, path)
