"""Figures of a planner's model (``selflab report``, the console): its
posterior along each parameter through a point (:func:`slices_figure`), and
its leave-one-out predictions against what was measured (:func:`calibration_figure`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from selflab.controller.plot_base import INFEASIBLE, label


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
