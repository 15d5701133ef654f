"""Figures for ``selflab bench`` and ``selflab report``.

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

Example::

    fig = bench_figure({"sobol": [[3.0, 2.0, 2.0], [4.0, 1.0, 1.0]]}, title="branin",
                       ylabel="regret of the best y", log=True)
    save(fig, "out.png")
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

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


@dataclass(frozen=True)
class Results:
    """A campaign's completed results for one outcome, in the order they came.

    ``values``, ``fidelity``, ``feasible`` (outcome constraints met), ``counted``
    (at the target fidelity and feasible: what the best so far counts): each
    ``(n,)``; ``best``: the best so far over the counted results after each one
    (``None`` before the first); ``cost``: cumulative cost spent when each came
    in (for :func:`cost_figure`).
    """

    name: str
    unit: str | None
    direction: str
    values: np.ndarray
    fidelity: np.ndarray
    feasible: np.ndarray
    counted: np.ndarray
    best: Sequence[float | None]
    cost: np.ndarray | None = None
    target_fidelity: float = 1.0
    recommended: tuple[float, float] | None = None
    """The campaign's current recommendation as the planner predicts it: ``(mean, std)``."""


_OTHER_FIDELITY = ("o", "s", "^", "D", "v")
"""Hollow markers of results at fidelities other than the target, lowest fidelity first."""


def _draw_results(ax: Axes, r: Results, x: np.ndarray, *, multi_fidelity: bool) -> None:
    """Counted results as dots, other fidelities as hollow grey circles,
    infeasible ones as red crosses, and the best so far as a step line held
    to the right edge (markers where it improves, so a single point shows)."""
    other = ~np.isclose(r.fidelity, r.target_fidelity)
    shown = r.feasible & ~other
    ax.scatter(x[shown], r.values[shown], s=16, color="C0", zorder=3,
               label=f"result at fidelity {r.target_fidelity:g}" if multi_fidelity else "result")
    for k, f in enumerate(sorted(set(r.fidelity[other & r.feasible].tolist()))):
        at = other & r.feasible & np.isclose(r.fidelity, f)
        ax.scatter(x[at], r.values[at], s=18, marker=_OTHER_FIDELITY[k % len(_OTHER_FIDELITY)], facecolors="none",
                   edgecolors="0.5", zorder=2, label=f"fidelity {f:g} (not counted)")
    if (~r.feasible).any():
        ax.scatter(x[~r.feasible], r.values[~r.feasible], zorder=3, label="infeasible (not counted)", **INFEASIBLE)
    best = np.array([np.nan if b is None else b for b in r.best], dtype=float)
    if np.isfinite(best).any():
        first = int(np.argmax(np.isfinite(best)))
        xs = np.append(x[first:], x[-1] + (x[-1] - x[0]) * 0.02 + 1e-9)
        ys = np.append(best[first:], best[-1])
        ax.step(xs, ys, where="post", label="best so far (counted results)", **BEST)
        improved = np.r_[True, best[first + 1:] != best[first:-1]]
        ax.plot(x[first:][improved], best[first:][improved], "o", ms=5, mfc="none", mec=BEST["color"], zorder=4)
    if r.recommended is not None and len(x):
        mean, std = r.recommended
        ax.errorbar([x[-1] + max(1.0, 0.04 * (x[-1] - x[0]))], [mean], yerr=[[1.96 * std], [1.96 * std]], fmt="D", ms=6,
                    capsize=3, color="C2", zorder=5, label=f"recommendation: predicted {mean:.3g} ± {1.96 * std:.2g} (95 %)")


def results_figure(panels: Sequence[Results], *, title: str, hypervolume: Sequence[float] | None = None) -> Figure:
    """One panel per objective: every result against its completion number
    (see :func:`_draw_results`); with ``hypervolume`` (several objectives) a last
    panel with the hypervolume of the counted results after each one."""
    rows = len(panels) + (hypervolume is not None)
    fig = Figure(figsize=(6.8, 3.0 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, 1, sharex=True))
    multi = any(not np.allclose(p.fidelity, p.target_fidelity) for p in panels)
    for ax, r in zip(axes, panels):
        x = np.arange(1, len(r.values) + 1)
        _draw_results(ax, r, x, multi_fidelity=multi)
        ax.set_ylabel(label(r.name, r.unit) + f" ({r.direction})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if hypervolume is not None:
        ax = axes[-1]
        x = np.arange(1, len(hypervolume) + 1)
        ax.step(np.append(x, x[-1] + 0.3), np.append(hypervolume, hypervolume[-1]), where="post", color="C2", lw=1.8,
                label="dominated hypervolume (counted results)")
        ax.set_ylabel("hypervolume")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1].set_xlabel("completed experiments, in the order the results came")
    axes[0].set_title(title)
    return fig


def cost_figure(r: Results, *, title: str) -> Figure:
    """Each result at the cumulative cost spent when it came in, coloured by
    fidelity (and a colour bar) only when the campaign has several, with the
    best so far at the target fidelity as a step line."""
    assert r.cost is not None
    fig = Figure(figsize=(6.6, 4.2), layout="constrained")
    ax = fig.subplots()
    multi = len(set(r.fidelity.tolist())) > 1
    if multi:
        ok = r.feasible
        dots = ax.scatter(r.cost[ok], r.values[ok], c=r.fidelity[ok], cmap="viridis", s=20, vmin=0, vmax=1, zorder=3)
        fig.colorbar(dots, ax=ax, label="fidelity")
        if (~ok).any():
            ax.scatter(r.cost[~ok], r.values[~ok], label="infeasible (not counted)", zorder=3, **INFEASIBLE)
        best = np.array([np.nan if b is None else b for b in r.best], dtype=float)
        if np.isfinite(best).any():
            first = int(np.argmax(np.isfinite(best)))
            xs = np.append(r.cost[first:], r.cost[-1] * 1.02 + 1e-9)
            ys = np.append(best[first:], best[-1])
            ax.step(xs, ys, where="post", label=f"best so far at fidelity {r.target_fidelity:g}", **BEST)
            ax.plot(r.cost[r.counted], r.values[r.counted], "o", ms=8, mfc="none", mec=BEST["color"], zorder=4,
                    label=f"results at fidelity {r.target_fidelity:g}")
    else:
        _draw_results(ax, r, r.cost, multi_fidelity=False)
    ax.set_xlabel("cumulative cost spent")
    ax.set_ylabel(label(r.name, r.unit))
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


@dataclass(frozen=True)
class Front:
    """Several objectives' results for :func:`pareto_figure`: ``points`` ``(n, k)``
    in completion order, ``feasible`` and ``pareto`` masks ``(n,)``, and the
    hypervolume ``reference`` point ``(k,)``, all in the objectives' units."""

    names: Sequence[str]
    units: Sequence[str | None]
    points: np.ndarray
    feasible: np.ndarray
    pareto: np.ndarray
    reference: np.ndarray
    reference_given: Sequence[bool]


def pareto_figure(front: Front, *, title: str) -> Figure:
    """Every pair of objectives: results coloured by completion order (a colour
    bar), infeasible ones crossed, the Pareto set ringed and joined, and the
    hypervolume's reference point with the edges of the region it bounds."""
    k = len(front.names)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    fig = Figure(figsize=(5.6 * len(pairs) + 0.8, 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(pairs)))
    order = np.arange(1, len(front.points) + 1)
    ok = front.feasible
    dots = None
    for ax, (i, j) in zip(axes, pairs):
        p = front.points
        dots = ax.scatter(p[ok, i], p[ok, j], c=order[ok], cmap="viridis", s=22, zorder=3, vmin=1, vmax=max(len(order), 2))
        if (~ok).any():
            ax.scatter(p[~ok, i], p[~ok, j], zorder=3, label="infeasible", **INFEASIBLE)
        on = p[front.pareto][np.argsort(p[front.pareto, i])]
        ax.plot(on[:, i], on[:, j], "-", color="C3", lw=1.2, zorder=2)
        ax.scatter(on[:, i], on[:, j], s=70, facecolors="none", edgecolors="C3", lw=1.4, zorder=4, label="Pareto set")
        ref = front.reference
        given = "" if front.reference_given[i] and front.reference_given[j] else " (inferred)"
        ax.plot([ref[i]], [ref[j]], marker="*", ms=13, color="k", ls="none", zorder=5, label=f"reference point{given}")
        ax.axvline(ref[i], color="k", ls=":", lw=0.8)
        ax.axhline(ref[j], color="k", ls=":", lw=0.8)
        ax.set_xlabel(label(front.names[i], front.units[i]))
        ax.set_ylabel(label(front.names[j], front.units[j]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if dots is not None:
        fig.colorbar(dots, ax=list(axes), label="completion order")
    fig.suptitle(title)
    return fig


@dataclass(frozen=True)
class Slice:
    """A 1-D slice of a planner's model along one parameter through a point.

    ``x``: the parameter's values (numbers, or choice labels for a
    categorical); ``mean``, ``lower``, ``upper``: the model's posterior there
    (same length; the central 95 % interval); ``at``: the point's value of
    this parameter; ``observed_x``, ``observed_y``, ``observed_fidelity``,
    ``observed_feasible``: the results, projected onto this parameter.
    """

    parameter: str
    x: Sequence[Any]
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    at: Any
    categorical: bool = False
    log: bool = False
    unit: str | None = None
    observed_x: Sequence[Any] = ()
    observed_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    observed_fidelity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    observed_feasible: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


def slices_figure(slices: Sequence[Slice], outcome: str, *, unit: str | None, title: str, target_fidelity: float = 1.0,
                  floor: float | None = None, median: bool = False) -> Figure:
    """One subplot per parameter: the posterior mean (``median``: the median,
    for a warped outcome) and its 95 % interval, the results projected onto the
    parameter, and a dotted line at the slice's point. ``floor``: the least
    value the outcome can take (drawn band and mean are held above it)."""
    cols = 2 if len(slices) == 4 else min(3, len(slices))
    rows = -(-len(slices) // cols)
    fig = Figure(figsize=(4.4 * cols, 3.3 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    centre = "posterior median" if median else "posterior mean"
    for ax, s in zip(axes, slices):
        mean, lower, upper = (np.asarray(v, dtype=float) for v in (s.mean, s.lower, s.upper))
        if floor is not None:
            mean, lower, upper = (np.maximum(v, floor) for v in (mean, lower, upper))
        if s.categorical:
            x = np.arange(len(s.x))
            ax.errorbar(x, mean, yerr=[mean - lower, upper - mean], fmt="o", capsize=4, color="C0",
                        label=f"{centre}, 95 % interval")
            ax.set_xticks(x, [str(v) for v in s.x])
            where = {str(v): i for i, v in enumerate(s.x)}
            ox = np.array([where.get(str(v), np.nan) for v in s.observed_x], dtype=float) + 0.08  # (beside the interval bar)
            ax.axvline(where[str(s.at)], color="C3", ls=":", lw=1, label="slice point")
        else:
            x = np.asarray(s.x, dtype=float)
            ax.plot(x, mean, color="C0", label=centre)
            ax.fill_between(x, lower, upper, color="C0", alpha=0.2, lw=0, label="95 % interval (± 1.96 σ)")
            ox = np.asarray(s.observed_x, dtype=float)
            ax.axvline(float(s.at), color="C3", ls=":", lw=1, label="slice point")
            if s.log:
                ax.set_xscale("log")
        if len(ox):
            target = np.isclose(s.observed_fidelity, target_fidelity)
            good = s.observed_feasible
            at = f" at fidelity {target_fidelity:g}" if (~target).any() else ""
            ax.scatter(ox[target & good], s.observed_y[target & good], s=10, color="k", alpha=0.6, zorder=3,
                       label=f"results{at} (projected)")
            if (~target & good).any():
                ax.scatter(ox[~target & good], s.observed_y[~target & good], s=10, facecolors="none", edgecolors="0.5",
                           zorder=2, label="results at other fidelities (projected)")
            if (~good).any():
                ax.scatter(ox[~good], s.observed_y[~good], zorder=3, label="infeasible results", **{**INFEASIBLE, "s": 16})
        ax.set_xlabel(label(s.parameter, s.unit))
        ax.set_ylabel(label(outcome, unit))
        ax.grid(alpha=0.3)
    for ax in axes[len(slices):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:len(slices)]:  # (one legend for the figure: every kind of mark any panel has)
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=8)
    fig.suptitle(title)
    return fig


@dataclass(frozen=True)
class Calibration:
    """Leave-one-out predictions of one outcome against what was measured:
    ``observed``, ``mean``, ``lower``, ``upper``, ``fidelity`` (each ``(n,)``)
    and ``coverage``, the fraction of ``observed`` inside ``[lower, upper]``."""

    name: str
    unit: str | None
    observed: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    fidelity: np.ndarray
    coverage: float


def calibration_figure(c: Calibration, *, title: str, floor: float | None = None) -> Figure:
    """Predicted (leave-one-out, with 95 % intervals) against observed, the
    identity line, and in the legend how many results fall inside their
    interval. ``floor``: the least value the outcome can take (intervals are
    drawn above it; the counts are of the intervals as predicted)."""
    fig = Figure(figsize=(5.4, 5.8), layout="constrained")
    ax = fig.subplots()
    levels = sorted(set(c.fidelity.tolist()))
    low_end = c.lower if floor is None else np.maximum(c.lower, floor)
    for k, f in enumerate(levels):
        at = c.fidelity == f
        inside = int(np.sum((c.observed[at] >= c.lower[at]) & (c.observed[at] <= c.upper[at])))
        what = f"fidelity {f:g}: " if len(levels) > 1 else ""
        mean = c.mean[at] if floor is None else np.maximum(c.mean[at], floor)
        ax.errorbar(c.observed[at], mean, yerr=[mean - low_end[at], c.upper[at] - mean], fmt="o", ms=4,
                    capsize=2, lw=0.8, color=f"C{k}", alpha=0.8,
                    label=f"{what}{inside} of {int(at.sum())} inside their 95 % interval")
    ends = np.concatenate([c.observed, low_end, c.upper])
    low, high = float(np.min(ends)), float(np.max(ends))
    pad = 0.03 * (high - low or 1.0)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.3", ls="--", lw=1, label="predicted = observed")
    ax.plot([], [], " ", label=f"coverage {c.coverage:.0%} (95 % expected)")
    ax.set_xlabel(f"observed {label(c.name, c.unit)}")
    ax.set_ylabel(f"predicted {label(c.name, c.unit)} (leave-one-out)")
    ax.set_title(title, fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=8)
    ax.grid(alpha=0.3)
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
