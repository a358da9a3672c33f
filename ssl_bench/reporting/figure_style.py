"""The look shared by every figure: a colour-blind-safe palette (Okabe & Ito, 2008), sizes for a two-column paper,
fonts, one legend per figure, and lines on which a NaN value is marked instead of leaving a gap.

Sizes: :data:`COLUMN_WIDTH` (one column, 3.5 in = 89 mm) and :data:`PAGE_WIDTH` (both columns, 7.16 in = 182 mm),
the IEEE / MICCAI two-column measures; fonts at 8 pt so a figure pasted at its natural size matches the text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

#: Okabe-Ito colours, the order used for runs / estimators / classes (black last)
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
#: highlight colours over grey-scale images (uncertain region, ground truth)
VERMILLION, YELLOW, SKY_BLUE = "#D55E00", "#F0E442", "#56B4E9"
LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
COLUMN_WIDTH = 3.5
PAGE_WIDTH = 7.16
#: a NaN value is drawn as this marker at the bottom edge of its axis, at its x
NAN_MARKER = {"marker": "x", "markersize": 5, "markeredgewidth": 1.2, "linestyle": "none"}

PAPER_RC: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "axes.prop_cycle": None,  # set below (needs matplotlib)
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text (selectable, editable)
    "svg.fonttype": "none",
}

F = TypeVar("F", bound=Callable[..., Any])


def paper_rc() -> dict[str, Any]:
    from cycler import cycler

    return {**PAPER_RC, "axes.prop_cycle": cycler(color=list(OKABE_ITO))}


def paper_style(func: F) -> F:
    """Run a figure function under :func:`paper_rc` (artists take the style when they are made)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context(paper_rc()):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def colour(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def new_figure(ncols: int, nrows: int = 1, *, width: float = PAGE_WIDTH, panel_height: float = 2.2) -> tuple[Any, Any]:
    """A constrained-layout figure ``width`` inches wide with ``nrows`` x ``ncols`` panels (axes[row][col])."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, panel_height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def line_with_nan_marks(ax: Any, x: Sequence[float], y: Sequence[float], **style: Any) -> bool:
    """Plot ``y`` over ``x`` through its finite points and mark each NaN point with :data:`NAN_MARKER` at the bottom
    edge of the axis (in the line's colour), so a missing value is visible instead of a gap. True if any was NaN."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(ys)
    (line,) = ax.plot(xs[ok], ys[ok], **style)
    if ok.all():
        return False
    ax.plot(
        xs[~ok],
        np.zeros(int((~ok).sum())),
        transform=ax.get_xaxis_transform(),
        color=line.get_color(),
        clip_on=False,
        **NAN_MARKER,
    )
    return True


def nan_handle() -> Any:
    """The legend entry explaining :data:`NAN_MARKER`."""
    from matplotlib.lines import Line2D

    return Line2D([], [], color="0.3", label="NaN (no value)", **NAN_MARKER)


def figure_legend(fig: Any, handles: Sequence[Any], *, title: str | None = None, ncols: int | None = None) -> None:
    """The figure's one legend, below the panels (outside the data)."""
    if not handles:
        return
    fig.legend(
        handles=list(handles),
        loc="outside lower center",
        ncols=ncols or min(len(handles), 4),
        title=title,
    )
