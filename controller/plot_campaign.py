"""Figures of one campaign's results (``selflab report``, the console):
every result against its completion number (:func:`results_figure`) or the
cost spent (:func:`cost_figure`), and the Pareto set of several objectives
(:func:`pareto_figure`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from selflab.controller.plot_base import BEST, INFEASIBLE, label


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
