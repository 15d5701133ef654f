"""Model health from the ledger: is the planner's model honest about its uncertainty?

Pure computation, no I/O: from the completed experiments (in the order their
results came) and the reasons they were proposed with, this module scores
each result against the model that proposed it (the prequential z of
:mod:`selflab.planners.calibration`), keeps the rolling figures over the last
``window`` results, reads the leave-one-out figures the planner recorded after
its last full fit (``reason["loo"]``), counts extrapolating proposals
(``reason["extrapolation"]``), and decides the ``miscalibrated`` verdict
against a :class:`~selflab.planners.calibration.CalibrationBand`.

Events (payload :class:`~selflab.controller.events.CalibrationVerdict`; the
ledger records the verdict's *changes*, since the figures themselves can be
recomputed from the ledger at any time):

=========================  ====================================================
``miscalibrated``          an outcome's rolling figures left the band
                           (with the numbers)
``calibration_restored``   they came back inside it (same payload)
=========================  ====================================================

**In a campaign.** After each result (:meth:`Study.tell
<selflab.controller.study.Study.tell>`, and the runner for every completed
flight) :meth:`CampaignRecord.check_calibration
<selflab.controller.record.CampaignRecord.check_calibration>` asks a
:class:`CalibrationMonitor` for the events to write. The monitor scores each
result once (a cache of what the ledger holds, rebuilt from it on a resume)
and compares the verdict with what the *ledger* says
(:attr:`CampaignState.miscalibrated <selflab.controller.projection.CampaignState.miscalibrated>`),
so a resumed campaign writes nothing until the verdict really changes.
``selflab status`` and the console show :func:`health_status`.

Example (after each result)::

    results = [state.experiments[i] for i in state.completions]
    for kind, payload in calibration_events(results, outcomes, flagged=state.miscalibrated):
        append(kind, payload.model_dump())
    print("\\n".join(assess(results, outcomes).lines()))      # selflab status
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from selflab.controller.events import CalibrationVerdict, EventKind, NewEvent
from selflab.planners.calibration import DEFAULT_BAND, CalibrationBand, CalibrationStats, LooStats, PredictedOutcome, rolling
from selflab.planners.protocol import NOISE_SUFFIX
from selflab.planners.reasons import is_extrapolating

VerdictKind = Literal["miscalibrated", "calibration_restored"]


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
                    text += f"  MISCALIBRATED (band: {self.band.describe()})"
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
    return [s for s in (_score(r, outcome) for r in results) if s is not None]


def _score(r: Result, outcome: str) -> Score | None:
    """``r`` scored against its proposal's prediction of ``outcome`` (``None`` without one)."""
    predicted = PredictedOutcome.from_reason(r.reason, outcome)
    y = r.outcomes.get(outcome)
    if predicted is None or y is None:
        return None
    noise = _reported_noise(r, outcome)
    z, raw = predicted.z(y, noise_std=noise), predicted.z(y, noise_std=noise, raw=True)
    return None if z is None or raw is None else Score(experiment_id=r.experiment_id, z=z, raw_z=raw)


def _reported_noise(r: Result, outcome: str) -> float | None:
    """The noise std a result reports of ``outcome`` (``NAME_sd``), when finite and non-negative."""
    noise = r.outcomes.get(outcome + NOISE_SUFFIX)
    return noise if noise is not None and math.isfinite(noise) and noise >= 0 else None


@dataclass(frozen=True)
class Predictions:
    """What the models predicted of one outcome against what was measured, for
    the results whose proposal recorded a prediction, in the order results
    came; each array has shape ``(n,)``. ``std`` is the predictive std of a
    reading (the model's std and the noise, as the score used them:
    ``z = (observed - mean) / std``)."""

    outcome: str
    experiment_id: np.ndarray
    observed: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    z: np.ndarray


def predictions(results: Iterable[Result], outcome: str) -> Predictions:
    """The :class:`Predictions` of ``outcome`` over ``results`` (see :func:`scores`)."""
    rows = []
    for r in results:
        predicted, score = PredictedOutcome.from_reason(r.reason, outcome), _score(r, outcome)
        if predicted is None or score is None:
            continue
        unit = predicted.z(predicted.mean + 1.0, noise_std=_reported_noise(r, outcome))  # (1 / the std the score divides by)
        if unit is None or unit <= 0:
            continue
        rows.append((r.experiment_id, r.outcomes[outcome], predicted.mean, 1.0 / unit, score.z))
    ids, observed, mean, std, z = (np.array(column) for column in zip(*rows)) if rows else (np.zeros(0),) * 5
    return Predictions(outcome, ids.astype(int), observed.astype(float), mean.astype(float), std.astype(float), z.astype(float))


def assess(results: Sequence[Result], outcomes: Sequence[str], band: CalibrationBand | None = None) -> ModelHealth:
    """The model's health after ``results`` (completed experiments, in the order
    their results came) for ``outcomes`` (objectives, then constrained outcomes)."""
    band = band or DEFAULT_BAND
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
) -> list[tuple[VerdictKind, CalibrationVerdict]]:
    """The events to record after the latest result: ``miscalibrated`` for an
    outcome whose rolling figures left the band and is not in ``flagged``
    (the outcomes the ledger already marks miscalibrated), and
    ``calibration_restored`` for one in ``flagged`` whose figures are back inside."""
    return _changes({outcome: scores(results, outcome) for outcome in outcomes}, flagged, band or DEFAULT_BAND)


def _changes(found_by_outcome: Mapping[str, Sequence[Score]], flagged: Iterable[str],
             band: CalibrationBand) -> list[tuple[VerdictKind, CalibrationVerdict]]:
    """The verdict changes of each outcome's scores (in order) against ``flagged`` (see :func:`calibration_events`)."""
    flagged = set(flagged)
    events: list[tuple[VerdictKind, CalibrationVerdict]] = []
    for outcome, found in found_by_outcome.items():
        if not found:
            continue
        recent = rolling([s.z for s in found[-band.window:]], band.window)
        now = band.miscalibrated(recent)
        if now == (outcome in flagged) or (not now and recent.n < band.window):
            continue
        verdict = CalibrationVerdict(outcome=outcome, experiment_id=found[-1].experiment_id, window=band.window, n_scored=len(found),
                                     z_mean=recent.z_mean, z_spread=recent.z_spread, coverage90=recent.coverage90,
                                     beyond3=recent.beyond3, overconfidence=recent.overconfidence, band=band)
        events.append(("miscalibrated" if now else "calibration_restored", verdict))
    return events


class Ledgered(Protocol):
    """What a :class:`CalibrationMonitor` reads of a campaign's projection
    (:class:`selflab.controller.projection.CampaignState` is one)."""

    @property
    def completions(self) -> Sequence[int]: ...
    @property
    def experiments(self) -> Mapping[int, Result]: ...
    @property
    def miscalibrated(self) -> Mapping[str, Any]: ...


class CalibrationMonitor:
    """The verdict's changes as results come in, for the ledger.

    Scores each completed experiment once, in the order results came (the
    scores are a cache of the ledger's contents: a fresh monitor on a resumed
    campaign rebuilds them on its first call), and judges the last
    ``band.window`` of each outcome against the verdict the ledger records
    (``state.miscalibrated``), never against its own memory. Costs one score
    per new result and outcome, and a window's statistics per call.
    """

    def __init__(self, outcomes: Sequence[str], band: CalibrationBand | None = None) -> None:
        self.outcomes = list(outcomes)
        self.band = band or DEFAULT_BAND
        self._scores: dict[str, list[Score]] = {o: [] for o in self.outcomes}
        self._seen = 0

    def changes(self, state: Ledgered) -> list[tuple[VerdictKind, CalibrationVerdict]]:
        """The verdict changes after the results ``state`` holds (see :func:`calibration_events`)."""
        for eid in state.completions[self._seen:]:
            result = state.experiments[eid]
            for outcome in self.outcomes:
                found = _score(result, outcome)
                if found is not None:
                    self._scores[outcome].append(found)
        self._seen = len(state.completions)
        return _changes(self._scores, state.miscalibrated, self.band)

    def events(self, state: Ledgered, campaign: str) -> list[NewEvent]:
        """The changes as ledger events of ``campaign`` (stamped when appended)."""
        return [NewEvent(campaign=campaign, kind=EventKind(kind), payload=verdict) for kind, verdict in self.changes(state)]


def verdict_line(kind: str, verdict: Mapping[str, Any]) -> str:
    """The one log line of a verdict change (a ``miscalibrated`` or
    ``calibration_restored`` payload)."""
    head = (f"model of {verdict['outcome']} miscalibrated" if kind == EventKind.MISCALIBRATED
            else f"model of {verdict['outcome']} calibrated again")
    evidence = verdict.get("overconfidence")
    line = (f"{head} at experiment {verdict['experiment_id']}: 90 % intervals held {verdict['coverage90']:.0%} of the last "
            f"{min(verdict['window'], verdict['n_scored'])} results, z spread {verdict['z_spread']:.2f}, mean {verdict['z_mean']:+.2f}")
    if evidence is not None and verdict["band"].get("evidence_high") is not None:
        line += f", overconfidence evidence {evidence:.1f} nats"
    return f"{line} (band: {CalibrationBand(**verdict['band']).describe()})"


def health_status(state: Ledgered, outcomes: Sequence[str], band: CalibrationBand | None = None) -> dict[str, Any]:
    """The ``model_health`` object of ``selflab status --json`` (JSON-safe: NaN
    is ``null``): ``lines`` (the text ``selflab status`` and the console
    show), ``miscalibrated`` (the outcomes the *ledger* marks miscalibrated
    now), the band, and per outcome its scored count, rolling and overall
    figures and leave-one-out figures, and the extrapolating proposals."""
    health = assess([state.experiments[eid] for eid in state.completions], outcomes, band)
    data = health.model_dump(mode="python")
    return _json_safe({
        "lines": health.lines(),
        "miscalibrated": sorted(state.miscalibrated),
        "window": data["window"],
        "band": data["band"],
        "outcomes": list(data["outcomes"]),
        "proposals_flagged": data["proposals_flagged"],
        "proposals_checked": data["proposals_checked"],
    })


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (for JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


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
