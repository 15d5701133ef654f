"""Figures for ``selflab bench`` and ``selflab report``, written as PNG files.

Pure drawing from plain numbers: callers extract the data (from benchmark
results or a ledger) and pass lists or arrays. matplotlib is used through
:class:`matplotlib.figure.Figure` and its Agg canvas, never ``pyplot``, so
no global backend state is touched and nothing needs a display.

There is one way to draw a best-so-far trace, :func:`draw_best_so_far`: the
median over runs against the evaluation number, with the interquartile band
when there are several runs. ``None`` entries (nothing feasible yet) are
gaps.

Example::

    path = bench_figure({"sobol": [[3.0, 2.0, 2.0], [4.0, 1.0, 1.0]]}, "out.png",
                        title="branin", ylabel="best y", optimum=0.397887)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

Trace = Sequence[float | None]


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


def bench_figure(series: Mapping[str, Sequence[Trace]], path: str | Path, *, title: str, ylabel: str,
                 optimum: float | None = None) -> Path:
    """One best-so-far line (median, IQR band) per planner; a dashed line at the optimum."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for label, traces in series.items():
        draw_best_so_far(ax, traces, label)
    if optimum is not None:
        ax.axhline(optimum, color="0.4", ls="--", lw=1, label="optimum")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return save(fig, path)


def traces_figure(series: Mapping[str, Trace], path: str | Path, *, title: str) -> Path:
    """One subplot per objective: the campaign's best so far (key: the y label)."""
    fig = Figure(figsize=(6.4, 3.2 * len(series)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(series), 1))
    for ax, (ylabel, trace) in zip(axes, series.items()):
        draw_best_so_far(ax, [trace], ylabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_title(title)
    return save(fig, path)


def pareto_figure(points: np.ndarray, names: Sequence[str], pareto: np.ndarray, path: str | Path, *, title: str) -> Path:
    """Observed points (``(n, k)``) for every pair of the ``k`` objectives, the
    Pareto set (boolean mask ``(n,)``) highlighted and joined."""
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    fig = Figure(figsize=(5.2 * len(pairs), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(pairs)))
    for ax, (i, j) in zip(axes, pairs):
        ax.scatter(points[~pareto, i], points[~pareto, j], s=14, color="0.6", label="observed")
        front = points[pareto][np.argsort(points[pareto, i])]
        ax.plot(front[:, i], front[:, j], "o-", color="C3", ms=5, label="Pareto set")
        ax.set_xlabel(names[i])
        ax.set_ylabel(names[j])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save(fig, path)


@dataclass(frozen=True)
class Slice:
    """A 1-D slice of a surrogate along one parameter through the best point.

    ``x``: the parameter's values (numbers, or choice labels for a
    categorical); ``mean``, ``std``: the prediction there (same length);
    ``at``: the best point's value of this parameter.
    """

    parameter: str
    x: Sequence[Any]
    mean: np.ndarray
    std: np.ndarray
    at: Any
    categorical: bool = False
    log: bool = False


def slices_figure(slices: Sequence[Slice], outcome: str, path: str | Path, *, title: str) -> Path:
    """One subplot per parameter: mean and ±2 standard deviations of ``outcome``."""
    cols = min(3, len(slices))
    rows = -(-len(slices) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.3 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, s in zip(axes, slices):
        if s.categorical:
            positions = np.arange(len(s.x))
            ax.errorbar(positions, s.mean, yerr=2 * s.std, fmt="o", capsize=4)
            ax.set_xticks(positions, [str(v) for v in s.x])
            ax.axvline(list(map(str, s.x)).index(str(s.at)), color="C3", ls=":", lw=1)
        else:
            x = np.asarray(s.x, dtype=float)
            ax.plot(x, s.mean, color="C0")
            ax.fill_between(x, s.mean - 2 * s.std, s.mean + 2 * s.std, color="C0", alpha=0.2, lw=0)
            ax.axvline(float(s.at), color="C3", ls=":", lw=1)
            if s.log:
                ax.set_xscale("log")
        ax.set_xlabel(s.parameter)
        ax.set_ylabel(outcome)
        ax.grid(alpha=0.3)
    for ax in axes[len(slices):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return save(fig, path)


def cost_regret_figure(series: Mapping[str, Sequence[tuple[Sequence[float], Trace]]], path: str | Path, *,
                       title: str, ylabel: str, points: int = 200) -> Path:
    """Regret against cumulative cost: per planner, the median (and IQR band)
    over runs, each run given as ``(cost_trace, regret_trace)`` and held as a
    step function (a run's regret at cost ``c`` is its value after the last
    evaluation costing ``<= c``; infinitely bad before its first value, so
    the median shows once more than half the runs have one). Log y-axis."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    top = max((costs[-1] for runs in series.values() for costs, _ in runs if len(costs)), default=1.0)
    grid = np.linspace(0.0, top, points)
    for label, runs in series.items():
        curves = np.full((len(runs), len(grid)), np.inf)   # no recommendation yet: infinitely bad
        for i, (costs, regrets) in enumerate(runs):
            if not len(costs):
                continue
            steps = np.searchsorted(np.asarray(costs, dtype=float), grid + 1e-12, side="right") - 1
            values = np.array([np.inf if r is None else max(float(r), 1e-12) for r in regrets])
            curves[i] = np.where(steps >= 0, values[np.clip(steps, 0, None)], np.inf)
        with np.errstate(invalid="ignore"):
            median = np.median(curves, axis=0)
            (line,) = ax.plot(grid, np.where(np.isfinite(median), median, np.nan), label=label, lw=1.8)
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
    return save(fig, path)


def cost_figure(cost: Sequence[float], values: Sequence[float], fidelity: Sequence[float],
                best: Trace, path: str | Path, *, ylabel: str, title: str) -> Path:
    """Each result at the cumulative cost spent when it came in, coloured by
    fidelity, and the best so far at the target fidelity as a step line."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    dots = ax.scatter(cost, values, c=fidelity, cmap="viridis", s=18, vmin=0, vmax=1)
    fig.colorbar(dots, ax=ax, label="fidelity")
    ax.step(cost, [np.nan if b is None else b for b in best], where="post", color="C3", label="best so far (target fidelity)")
    ax.set_xlabel("cumulative cost")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return save(fig, path)
