"""Model health from the ledger: is the planner's model honest about its uncertainty?

Pure computation, no I/O: from the completed experiments (in the order their
results came) and the reasons they were proposed with, this module scores
each result against the model that proposed it (the prequential z of
:mod:`selflab.planners.calibration`), keeps the rolling figures over the last
``window`` results, reads the leave-one-out figures the planner recorded after
its last full fit (``reason["loo"]``), counts extrapolating proposals
(``reason["extrapolation"]``), and decides the ``miscalibrated`` verdict
against a :class:`~selflab.planners.calibration.CalibrationBand`.

Events (payloads below; the ledger records the verdict's *changes*, since the
figures themselves can be recomputed from the ledger at any time):

=========================  ====================================================
``miscalibrated``          an outcome's rolling figures left the band
                           (:class:`CalibrationVerdict`, with the numbers)
``calibration_restored``   they came back inside it (same payload)
=========================  ====================================================

Example (after each result)::

    results = [state.experiments[i] for i in state.completions]
    for kind, payload in calibration_events(results, outcomes, flagged=currently_flagged):
        append(kind, payload.model_dump())
    print("\\n".join(assess(results, outcomes).lines()))      # selflab status
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from selflab.planners.calibration import CalibrationBand, CalibrationStats, LooStats, PredictedOutcome, rolling
from selflab.planners.extrapolation import is_extrapolating
from selflab.planners.protocol import NOISE_SUFFIX


class Result(Protocol):
    """A completed experiment as the projection holds it
    (:class:`selflab.controller.projection.ExperimentView` is one)."""

    experiment_id: int
    outcomes: dict[str, float]
    reason: dict[str, Any]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Score(_Payload):
    """One result scored against the model that proposed it."""

    experiment_id: int
    z: float
    raw_z: float
    """Against the model's unscaled std (differs from ``z`` under ``calibration: rescale``)."""


class CalibrationVerdict(_Payload):
    """Payload of ``miscalibrated`` and ``calibration_restored``: one outcome's
    rolling figures when the verdict changed, and the band they were judged by."""

    outcome: str
    experiment_id: int
    """The result whose score changed the verdict."""
    window: int
    n_scored: int
    """Results of this outcome scored so far."""
    z_mean: float
    z_spread: float
    coverage90: float
    beyond3: float
    band: CalibrationBand


class OutcomeHealth(_Payload):
    """What ``selflab status`` shows of one outcome's model."""

    outcome: str
    n_scored: int
    rolling: CalibrationStats
    """Over the last ``window`` scores."""
    overall: CalibrationStats
    """Over every score."""
    miscalibrated: bool
    loo: LooStats | None = None
    """From the latest proposal that recorded leave-one-out figures (a full fit)."""
    loo_experiment_id: int | None = None


class ModelHealth(_Payload):
    """The model's health over a campaign so far."""

    window: int
    band: CalibrationBand
    outcomes: tuple[OutcomeHealth, ...]
    proposals_flagged: int
    """Of the last ``window`` proposals with extrapolation flags, how many were ``extrapolating``."""
    proposals_checked: int

    @property
    def miscalibrated(self) -> list[str]:
        return [o.outcome for o in self.outcomes if o.miscalibrated]

    def lines(self) -> list[str]:
        """Human lines for ``selflab status`` (empty when nothing was scored or flagged)."""
        out = []
        for o in self.outcomes:
            if not o.n_scored and o.loo is None:
                continue
            r = o.rolling
            text = f"{o.outcome}: no result scored yet"
            if o.n_scored:
                text = (f"{o.outcome}: prequential z spread {r.z_spread:.2f} (1 = calibrated), mean {r.z_mean:+.2f}, "
                        f"90 % intervals held {r.coverage90:.0%} over the last {r.n}")
                if o.miscalibrated:
                    text += f"  MISCALIBRATED ({_describe(self.band)})"
            if o.loo is not None:
                text += (f"; leave-one-out (fit at experiment {o.loo_experiment_id}): spread {_fmt(o.loo.z_spread)}, "
                         f"coverage {_fmt(o.loo.coverage90, pct=True)}, R2 {_fmt(o.loo.r2)}, rank corr. {_fmt(o.loo.rank_correlation)}")
            out.append(text)
        if self.proposals_checked:
            out.append(f"extrapolating: {self.proposals_flagged} of the last {self.proposals_checked} model proposals")
        return out


def scores(results: Iterable[Result], outcome: str) -> list[Score]:
    """The prequential scores of ``outcome``, one per result whose proposal
    recorded a prediction of it, in the order of ``results`` (the order results
    came). A result reporting its own noise (``NAME_sd``) is scored with it."""
    found = []
    for r in results:
        predicted = PredictedOutcome.from_reason(r.reason, outcome)
        y = r.outcomes.get(outcome)
        if predicted is None or y is None:
            continue
        noise = r.outcomes.get(outcome + NOISE_SUFFIX)
        noise = noise if noise is not None and math.isfinite(noise) and noise >= 0 else None
        z, raw = predicted.z(y, noise_std=noise), predicted.z(y, noise_std=noise, raw=True)
        if z is not None and raw is not None:
            found.append(Score(experiment_id=r.experiment_id, z=z, raw_z=raw))
    return found


def assess(results: Sequence[Result], outcomes: Sequence[str], band: CalibrationBand | None = None) -> ModelHealth:
    """The model's health after ``results`` (completed experiments, in the order
    their results came) for ``outcomes`` (objectives, then constrained outcomes)."""
    band = band or CalibrationBand()
    healths = []
    for outcome in outcomes:
        z = [s.z for s in scores(results, outcome)]
        recent = rolling(z, band.window)
        loo, loo_id = _latest_loo(results, outcome)
        healths.append(OutcomeHealth(outcome=outcome, n_scored=len(z), rolling=recent, overall=CalibrationStats.of(z),
                                     miscalibrated=band.miscalibrated(recent), loo=loo, loo_experiment_id=loo_id))
    checked = [r.reason for r in results if isinstance(r.reason.get("extrapolation"), Mapping)][-band.window:]
    return ModelHealth(window=band.window, band=band, outcomes=tuple(healths),
                       proposals_flagged=sum(is_extrapolating(reason) for reason in checked), proposals_checked=len(checked))


def calibration_events(
    results: Sequence[Result], outcomes: Sequence[str], flagged: Iterable[str] = (), band: CalibrationBand | None = None
) -> list[tuple[Literal["miscalibrated", "calibration_restored"], CalibrationVerdict]]:
    """The events to record after the latest result: ``miscalibrated`` for an
    outcome whose rolling figures left the band and is not in ``flagged``
    (the outcomes the ledger already marks miscalibrated), and
    ``calibration_restored`` for one in ``flagged`` whose figures are back inside."""
    band = band or CalibrationBand()
    flagged = set(flagged)
    events: list[tuple[Literal["miscalibrated", "calibration_restored"], CalibrationVerdict]] = []
    for outcome in outcomes:
        found = scores(results, outcome)
        if not found:
            continue
        recent = rolling([s.z for s in found], band.window)
        now = band.miscalibrated(recent)
        if now == (outcome in flagged) or (not now and recent.n < band.window):
            continue
        verdict = CalibrationVerdict(outcome=outcome, experiment_id=found[-1].experiment_id, window=band.window, n_scored=len(found),
                                     z_mean=recent.z_mean, z_spread=recent.z_spread, coverage90=recent.coverage90,
                                     beyond3=recent.beyond3, band=band)
        events.append(("miscalibrated" if now else "calibration_restored", verdict))
    return events


def _latest_loo(results: Sequence[Result], outcome: str) -> tuple[LooStats | None, int | None]:
    """The leave-one-out figures of ``outcome`` in the latest reason that has them."""
    for r in reversed(results):
        entry = (r.reason.get("loo") or {}).get(outcome)
        if isinstance(entry, Mapping):
            values = {k: (math.nan if v is None else v) for k, v in entry.items()}
            try:
                return LooStats(**values), r.experiment_id
            except ValueError:
                return None, None
    return None, None


def _fmt(x: float, *, pct: bool = False) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.0%}" if pct else f"{x:.2f}"


def _describe(band: CalibrationBand) -> str:
    """The band in words: ``90 % intervals must hold >= 70 % of the last 15``."""
    text = f"90 % intervals must hold >= {band.coverage_low:.0%} of the last {band.window}"
    if band.spread_low is not None or band.spread_high is not None:
        text += f", spread within {band.spread_low or 0:g}-{band.spread_high if band.spread_high is not None else math.inf:g}"
    return text
