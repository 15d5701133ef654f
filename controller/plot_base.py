"""What every selflab figure shares: axis labels, the marks of an infeasible
result and of a best-so-far line, the one way to draw a best-so-far trace
over several runs (:func:`draw_best_so_far`), and :func:`save`.

Figures are drawn through :class:`matplotlib.figure.Figure` and its Agg
canvas, never ``pyplot`` (see :mod:`selflab.controller.plots`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

Trace = Sequence[float | None]

INFEASIBLE = {"marker": "x", "color": "C3", "s": 30, "linewidths": 1.2}
"""How an infeasible result (an outcome constraint violated) is drawn, in every figure."""
BEST = {"color": "C3", "lw": 1.8}
"""How a best-so-far line is drawn in the campaign figures."""


def label(name: str, unit: str | None) -> str:
    """An axis label: ``name [unit]``, or ``name`` without a unit."""
    return f"{name} [{unit}]" if unit else name


def _array(traces: Sequence[Trace]) -> np.ndarray:
    """Traces as a ``(runs, evaluations)`` float array, NaN-padded and NaN for ``None``."""
    length = max((len(t) for t in traces), default=0)
    out = np.full((len(traces), length), np.nan)
    for i, trace in enumerate(traces):
        out[i, : len(trace)] = [np.nan if v is None else v for v in trace]
    return out


def draw_best_so_far(ax: Axes, traces: Sequence[Trace], label: str, color: Any = None) -> None:
    """Median of ``traces`` (each: best so far after evaluation 1, 2, ...) with
    the interquartile band when there are several runs."""
    data = _array(traces)
    if data.size == 0:
        return
    x = np.arange(1, data.shape[1] + 1)
    counts = np.sum(~np.isnan(data), axis=0)
    columns = counts > 0
    median = np.full(data.shape[1], np.nan)
    median[columns] = np.nanmedian(data[:, columns], axis=0)
    (line,) = ax.plot(x, median, label=label, color=color, lw=1.8)
    if data.shape[0] > 1:
        low = np.full_like(median, np.nan)
        high = np.full_like(median, np.nan)
        low[columns], high[columns] = np.nanpercentile(data[:, columns], [25, 75], axis=0)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("evaluations")


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    return path


def log_floor(traces: Sequence[Trace]) -> float:
    """Where a zero is drawn on a log axis: a decade below the smallest
    positive value of ``traces`` (``1e-12`` when there is none)."""
    positive = [float(v) for t in traces for v in t if v is not None and v > 0 and math.isfinite(v)]
    return 10.0 ** (math.floor(math.log10(min(positive))) - 1) if positive else 1e-12
