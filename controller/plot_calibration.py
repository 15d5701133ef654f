"""The prequential calibration figure of ``selflab report``: is the planner's
model honest about its uncertainty, judged on the results it proposed?

Each result whose proposal recorded a prediction is scored against the model
that proposed it (:mod:`selflab.controller.model_health`). Three panels:

1. **predicted against observed**: each result's predicted mean with its
   central 90 % interval (``mean ± 1.645 std``, the std of a reading,
   noise included), the identity line, and how many results fell inside;
2. **the z histogram** (``z = (observed - mean) / std``) with the standard
   normal density a calibrated model gives; scores beyond ±6 are counted in
   the end bins, and the legend says how many;
3. **the rolling 90 % coverage** over the last ``window`` results against the
   result number, with the nominal 90 % and the band's coverage bound,
   shaded where the band (both its rules: coverage, and the sequential
   evidence of overconfidence) judges the model ``miscalibrated``.

Pure drawing from :class:`~selflab.controller.model_health.Predictions`
(see :mod:`selflab.controller.plots`).

Example::

    fig = prequential_figure(predictions(results, "yield"), band=DEFAULT_BAND, unit="%", title="...")
    save(fig, "prequential_yield.png")
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from selflab.controller.model_health import Predictions
from selflab.controller.plot_base import label
from selflab.planners.calibration import Z90, CalibrationBand, rolling

Z_EDGE = 6.0
"""The z histogram spans ``[-Z_EDGE, Z_EDGE]``; scores beyond are counted in the end bins."""


def rolling_coverage(z: np.ndarray, window: int) -> np.ndarray:
    """``(n,)``: the fraction of the last ``window`` scores (fewer at the start)
    with ``|z| <= 1.645``, after each score."""
    inside = (np.abs(np.asarray(z, dtype=float)) <= Z90).astype(float)
    sums = np.cumsum(inside)
    lagged = np.concatenate([np.zeros(window), sums])[: len(sums)]
    counts = np.minimum(np.arange(1, len(sums) + 1), window)
    return (sums - lagged) / counts


def prequential_figure(p: Predictions, *, band: CalibrationBand, title: str, unit: str | None = None) -> Figure:
    """The three panels of the module docs for one outcome (``p`` not empty)."""
    n = len(p.z)
    fig = Figure(figsize=(14.0, 4.6), layout="constrained")
    ax_pred, ax_hist, ax_roll = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.15, 1.0, 1.15]})
    inside = np.abs(p.z) <= Z90
    half = Z90 * p.std

    for mask, color, text in ((inside, "C0", "inside"), (~inside, "C3", "outside")):
        if mask.any():
            ax_pred.errorbar(p.observed[mask], p.mean[mask], yerr=half[mask], fmt="o", ms=4, capsize=2, lw=0.8, color=color,
                             alpha=0.8, label=f"{int(mask.sum())} of {n} {text} their 90 % interval")
    ends = np.concatenate([p.observed, p.mean - half, p.mean + half])
    low, high = float(np.min(ends)), float(np.max(ends))
    pad = 0.03 * (high - low or 1.0)
    ax_pred.plot([low - pad, high + pad], [low - pad, high + pad], color="0.3", ls="--", lw=1, label="predicted = observed")
    ax_pred.set_xlabel(f"observed {label(p.outcome, unit)}")
    ax_pred.set_ylabel(f"predicted {label(p.outcome, unit)} (when proposed)")
    ax_pred.set_title("predicted before the result, 90 % intervals", fontsize=9)
    ax_pred.legend(fontsize=7, loc="upper left")
    ax_pred.grid(alpha=0.3)

    bins = np.linspace(-Z_EDGE, Z_EDGE, 25)
    beyond = int(np.sum(np.abs(p.z) > Z_EDGE))
    ax_hist.hist(np.clip(p.z, -Z_EDGE + 1e-9, Z_EDGE - 1e-9), bins=bins, density=True, color="C0", alpha=0.55,
                 label=f"z of {n} results" + (f" ({beyond} beyond ±{Z_EDGE:g}, in the end bins)" if beyond else ""))
    xs = np.linspace(-Z_EDGE, Z_EDGE, 400)
    ax_hist.plot(xs, np.exp(-0.5 * xs**2) / math.sqrt(2 * math.pi), color="0.15", lw=1.5, label="standard normal (calibrated)")
    for edge in (-Z90, Z90):
        ax_hist.axvline(edge, color="0.5", ls=":", lw=1)
    spread = float(np.sqrt(np.mean(p.z**2)))
    ax_hist.plot([], [], " ", label=f"all {n}: spread {spread:.2f} (1 = calibrated), mean {float(np.mean(p.z)):+.2f}")
    ax_hist.set_xlabel("z = (observed - predicted mean) / predicted std")
    ax_hist.set_ylabel("density")
    ax_hist.set_xlim(-Z_EDGE, Z_EDGE)
    ax_hist.set_title("scores against the model that proposed each result", fontsize=9)
    ax_hist.legend(fontsize=7, loc="best")
    ax_hist.grid(alpha=0.3)

    x = np.arange(1, n + 1)
    coverage = rolling_coverage(p.z, band.window)
    full = x >= band.window
    early = x <= band.window  # (the dashed start joins the solid line at the first full window)
    ax_roll.plot(x[early], coverage[early], color="C0", lw=1.2, ls="--", alpha=0.6)
    ax_roll.plot(x[full], coverage[full], color="C0", lw=1.6, label=f"coverage of the last {band.window}")
    ax_roll.axhline(0.9, color="0.3", ls="--", lw=1, label="nominal 90 %")
    ax_roll.axhline(band.coverage_low, color="C3", ls=":", lw=1.2, label=f"miscalibrated below {band.coverage_low:.0%}")
    z = [float(v) for v in p.z]
    flagged = np.array([band.miscalibrated(rolling(z[max(0, k - band.window):k], band.window)) for k in x], dtype=bool)
    if flagged.any():
        label_text = "miscalibrated (coverage or evidence)" if band.evidence_high is not None else "miscalibrated"
        ax_roll.fill_between(x, 0, 1.05, where=flagged, color="C3", alpha=0.12, lw=0, label=label_text)
    ax_roll.set_ylim(0, 1.05)
    ax_roll.set_xlim(0.5, max(n, band.window) + 0.5)
    ax_roll.set_xlabel("scored result, in the order results came")
    ax_roll.set_ylabel("fraction inside the 90 % interval")
    ax_roll.set_title(f"rolling coverage (dashed: fewer than {band.window} scored)", fontsize=9)
    ax_roll.legend(fontsize=7, loc="lower left")
    ax_roll.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig
