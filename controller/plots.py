"""Figures for ``selflab bench`` and ``selflab report``; the benchmark figures live here.

Pure drawing from plain numbers: callers extract the data (from benchmark
results, a ledger, or a planner's model) into the small records below and
get a :class:`matplotlib.figure.Figure` back; :func:`save` writes it as a
PNG. matplotlib is used through ``Figure`` and its Agg canvas, never
``pyplot``, so no global backend state is touched and nothing needs a
display, and a test can inspect the returned figure's axes.

There is one way to draw a best-so-far trace over several runs,
:func:`draw_best_so_far`: the median over runs against the evaluation
number, with the interquartile band when there are several runs. ``None``
entries (nothing feasible yet) are gaps.

The campaign figures are in :mod:`selflab.controller.plot_campaign`, the
model figures in :mod:`selflab.controller.plot_model`, the shared pieces in
:mod:`selflab.controller.plot_base`; every name is importable from here too.

Example::

    fig = bench_figure({"sobol": [[3.0, 2.0, 2.0], [4.0, 1.0, 1.0]]}, title="branin",
                       ylabel="regret of the best y", log=True)
    save(fig, "out.png")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from selflab.controller.plot_base import BEST, INFEASIBLE, Trace, draw_best_so_far, label, log_floor, save
from selflab.controller.plot_campaign import Front, Results, cost_figure, pareto_figure, results_figure
from selflab.controller.plot_model import Calibration, Slice, calibration_figure, slices_figure

__all__ = [
    "BEST", "INFEASIBLE", "Calibration", "Front", "Results", "Slice", "Trace", "bench_figure", "calibration_figure",
    "cost_figure", "cost_regret_figure", "draw_best_so_far", "label", "log_floor", "pareto_figure", "results_figure",
    "save", "slices_figure",
]


def bench_figure(series: Mapping[str, Sequence[Trace]], *, title: str, ylabel: str, log: bool = False,
                 optimum: float | None = None) -> Figure:
    """One best-so-far line (median, IQR band) per planner. ``log``: a log
    y-axis (for regret traces; zeros are drawn at :func:`log_floor`, a decade
    below the smallest positive value); ``optimum``: a dashed line there."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    floor = log_floor([t for traces in series.values() for t in traces]) if log else None
    for name, traces in series.items():
        if floor is not None:
            traces = [[None if v is None else max(float(v), floor) for v in t] for t in traces]
        draw_best_so_far(ax, traces, name)
    if optimum is not None:
        ax.axhline(optimum, color="0.4", ls="--", lw=1, label="optimum")
    if log:
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        if high < 10 * low:  # (under a decade: plain numbers rather than 5.94 x 10^1 on the minor ticks)
            plain = FuncFormatter(lambda v, _: f"{v:.3g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3, which="both" if log else "major")
    return fig


def cost_regret_figure(series: Mapping[str, Sequence[tuple[Sequence[float], Trace]]], path: str | Path | None = None, *,
                       title: str, ylabel: str, points: int = 200) -> Figure:
    """Regret against cumulative cost: per planner, the median (and IQR band)
    over runs, each run given as ``(cost_trace, regret_trace)`` and held as a
    step function (a run's regret at cost ``c`` is its value after the last
    evaluation costing ``<= c``; infinitely bad before its first value, so
    the median shows once more than half the runs have one). Log y-axis.
    Written to ``path`` when given."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    top = max((costs[-1] for runs in series.values() for costs, _ in runs if len(costs)), default=1.0)
    grid = np.linspace(0.0, top, points)
    for name, runs in series.items():
        curves = np.full((len(runs), len(grid)), np.inf)   # no recommendation yet: infinitely bad
        for i, (costs, regrets) in enumerate(runs):
            if not len(costs):
                continue
            steps = np.searchsorted(np.asarray(costs, dtype=float), grid + 1e-12, side="right") - 1
            values = np.array([np.inf if r is None else max(float(r), 1e-12) for r in regrets])
            curves[i] = np.where(steps >= 0, values[np.clip(steps, 0, None)], np.inf)
        with np.errstate(invalid="ignore"):
            median = np.median(curves, axis=0)
            (line,) = ax.plot(grid, np.where(np.isfinite(median), median, np.nan), label=name, lw=1.8)
            if len(runs) > 1:
                low = np.percentile(curves, 25, axis=0, method="lower")
                high = np.percentile(curves, 75, axis=0, method="higher")
                band = np.isfinite(low) & np.isfinite(high)
                ax.fill_between(grid, np.where(band, low, np.nan), np.where(band, high, np.nan),
                                color=line.get_color(), alpha=0.2, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("cumulative cost")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    if path is not None:
        save(fig, path)
    return fig
