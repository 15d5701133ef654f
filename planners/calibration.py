"""Is the model's uncertainty honest? Prequential scores, rolling figures,
leave-one-out statistics, the calibrated band, and the rescale factor.

**Prequential z.** Each result is scored against the model that proposed it,
from the prediction its proposal's reason recorded (``reason["predicted"]``,
``reason["noise_std"]`` and ``reason["calibration"]["std_scale"]``, read by
:meth:`PredictedOutcome.from_reason`)::

    z = (y - mean) / sqrt(std**2 + noise_std**2)

``std`` is the latent posterior std at the point, ``noise_std`` the std that
observation noise adds to a reading (the result's own reported noise when it
has one, else the model's estimate). A calibrated model gives z ~ N(0, 1): a
*spread* (root mean square of z, :attr:`CalibrationStats.z_spread`) of 1 and
90 % of results inside ``|z| <= 1.645`` (:attr:`CalibrationStats.coverage90`).
For an outcome modelled on a warped scale (:mod:`selflab.planners.warp`) mean
and std are the posterior median and its delta-method spread, so z is then an
approximation.

**The calibrated band** (:class:`CalibrationBand`). A campaign judges by
:data:`DEFAULT_BAND`, the sequential band below (since Session 11; before,
by the window rule). The window rule (``CalibrationBand()``'s defaults):
over the last ``window`` (15) scored results a model is
``miscalibrated`` when fewer than ``coverage_low`` (70 %) of them lie inside
their 90 % intervals, i.e. 5 or more of 15 outside, which a calibrated model
does with probability 1.3 % per window, but in 21 % of 100-result campaigns at
some window (simulated). Optional bounds on the spread (``spread_low``,
``spread_high``) are off by default, because the spread is dominated by rare
large misses: a GP scoring random Branin points (``benchmarks/trust.py``)
keeps 85-98 % of results inside their 90 % intervals, yet its spread is
0.6-3.1, from a few scores beyond 10 among a bulk that is underconfident
(median ``|z|`` 0.26, against 0.67 for N(0, 1)). On Hartmann6 BO it fired by
evaluation 30 in 9 of 10 seeds 0-9 (where it was chosen) but 6 of 10 fresh
seeds, and stayed quiet on 8 and 7 of 10 Branin campaigns: selflab's BO is
only moderately overconfident (72-75 % of results inside their 90 % intervals
by evaluation 30), too close to the random-points GP (89 %) for 15 scores
to separate them every time.

**The sequential rule** (``evidence_high``; :data:`SEQUENTIAL_BAND`)
accumulates evidence instead of counting in a fixed window: each score adds
the log-likelihood ratio of its bin of ``|z|`` (the bulk, the rest of the 90 %
interval, outside it) for intervals 1.5 times too narrow against calibrated
ones, and the band leaves when some run of the last ``window`` scores sums to
more than ``evidence_high`` nats (:func:`overconfidence_evidence`, a CUSUM). It
uses both signs of overconfidence (misses outside the 90 % intervals, and a
bulk wider than N(0, 1)'s) and no single score adds more than 1 nat, so an
underconfident bulk with heavy tails (the Branin GP) does not trip it. The
run must lie within the window, so a flag clears once ``window`` scores have
come in without such a run. Its threshold is set on simulated calibrated
scores, not on campaigns; its figures on three seed sets are in
``benchmarks/RESULTS.md`` (issue 18, Session 9).

**Leave-one-out** (:class:`LooStats`): the same figures for each training
point predicted from all the others (hyperparameters held), plus R² and the
Spearman rank correlation of predicted against observed. It reads much closer
to calibrated than the prequential scores do (the points were not chosen by
the model that predicts them), which is why the verdict uses the latter.

**Rescaling** (``calibration: rescale``, :func:`rescale_factor`): the
planner multiplies the model's std (latent and noise alike, so the mean is
unchanged) by the robust spread (:func:`robust_spread`, 1.4826 times the
median ``|z|``) of the *raw* scores of the last ``window`` results, those
computed from the unscaled std (each reason records the factor it applied,
``calibration.std_scale``, so the raw score is recoverable). A root mean
square would let one large miss inflate every interval after it: measured on
Hartmann6 (10 seeds, ``benchmarks/RESULTS.md``) it took the 90 % coverage of
evaluations 21-40 from 0.89 (no rescaling) to 0.97.

Example::

    z = prequential_z(0.7, proposal.reason, "yield")   # (0.7 - mean) / sqrt(std**2 + noise_std**2)
    stats = CalibrationStats.of([0.1, -2.5, 3.0, 0.4, 1.9, -0.2, 2.2, -3.1, 0.3, 2.8] * 2)
    CalibrationBand(window=20).miscalibrated(stats)   # True: coverage 0.5 (spread 2.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from selflab.planners.protocol import Observation

Z90 = 1.6448536269514722
"""Half-width, in standard deviations, of the central 90 % interval of a normal."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PredictedOutcome(_Record):
    """What the model that proposed an experiment expected of one outcome, in
    the outcome's units, as its reason records it (:meth:`from_reason`)."""

    mean: float
    std: float = Field(ge=0)
    """Latent posterior std at the point, as the acquisition used it (rescaled when ``std_scale != 1``)."""
    noise_std: float = Field(0.0, ge=0)
    """Std that observation noise adds to a reading (the model's estimate; rescaled like ``std``)."""
    std_scale: float = Field(1.0, gt=0)
    """The factor ``calibration: rescale`` applied to the model's std (1: none)."""

    @classmethod
    def from_reason(cls, reason: Mapping[str, Any], outcome: str) -> PredictedOutcome | None:
        """The prediction of ``outcome`` in a proposal's reason: ``predicted[outcome]``
        (``mean``, ``std``), ``noise_std[outcome]`` (default 0) and
        ``calibration.std_scale[outcome]`` (default 1); ``None`` when there is
        none (a model-free proposal) or a number is missing or not finite."""
        entry = _get(reason, "predicted", outcome)
        if not isinstance(entry, Mapping):
            return None
        values = {"mean": entry.get("mean"), "std": entry.get("std"),
                  "noise_std": _get(reason, "noise_std", outcome), "std_scale": _get(reason, "calibration", "std_scale", outcome)}
        try:
            found = cls(**{k: v for k, v in values.items() if v is not None})
        except (ValidationError, TypeError):
            return None
        return found if all(math.isfinite(v) for v in (found.mean, found.std, found.noise_std, found.std_scale)) else None

    def z(self, y: float, *, noise_std: float | None = None, raw: bool = False) -> float | None:
        """The prequential score of reading ``y`` (see module docs); ``noise_std``:
        the reading's own reported noise, when it has one; ``raw``: against the
        model's unscaled std (``std / std_scale``). ``None`` when the predicted
        spread is zero or ``y`` is not finite."""
        s = self.std_scale
        noise = self.noise_std / s if noise_std is None else noise_std
        total = math.sqrt((self.std / s) ** 2 + noise**2) * (1.0 if raw else s)
        if not (total > 0 and math.isfinite(y)):
            return None
        return (y - self.mean) / total


def prequential_z(y: float, reason: Mapping[str, Any], outcome: str, *, noise_std: float | None = None, raw: bool = False) -> float | None:
    """The score of reading ``y`` of ``outcome`` against the proposal's ``reason``
    (see :class:`PredictedOutcome`), or ``None`` without a usable prediction.

    >>> prequential_z(0.7, {"predicted": {"y": {"mean": 0.5, "std": 0.1}}}, "y")
    1.9999999999999996
    """
    predicted = PredictedOutcome.from_reason(reason, outcome)
    return None if predicted is None else predicted.z(y, noise_std=noise_std, raw=raw)


def _get(tree: Any, *keys: str) -> Any:
    """``tree[k1][k2]...``, or ``None`` where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(tree, Mapping):
            return None
        tree = tree.get(key)
    return tree


class CalibrationStats(_Record):
    """Calibration figures of ``n`` scores (NaN with none)."""

    n: int
    z_mean: float
    z_spread: float
    """Root mean square of z: 1 when calibrated, above 1 when overconfident."""
    coverage90: float
    """Fraction of scores with ``|z| <= 1.645`` (results inside their central 90 % interval)."""
    beyond3: float
    """Fraction of scores with ``|z| > 3`` (0.27 % when calibrated)."""
    robust_spread: float = math.nan
    """``1.4826 * median |z|`` (:func:`robust_spread`): the spread of the bulk, which one huge miss does not move."""
    overconfidence: float = math.nan
    """Evidence of overconfidence, in nats: the largest log-likelihood ratio that
    any run of consecutive scores carries for "intervals :data:`OVERCONFIDENT_SCALE`
    times too narrow" against "calibrated" (:func:`overconfidence_evidence`; 0: none)."""

    @classmethod
    def of(cls, z: Sequence[float]) -> CalibrationStats:
        """The figures of scores ``z`` (shape ``(n,)``, in the order results came)."""
        a = np.asarray(z, dtype=float)
        if a.size == 0:
            return cls(n=0, z_mean=math.nan, z_spread=math.nan, coverage90=math.nan, beyond3=math.nan)
        return cls(n=int(a.size), z_mean=float(a.mean()), z_spread=float(np.sqrt(np.mean(a**2))),
                   coverage90=float(np.mean(np.abs(a) <= Z90)), beyond3=float(np.mean(np.abs(a) > 3.0)),
                   robust_spread=robust_spread(a), overconfidence=overconfidence_evidence(a))


OVERCONFIDENT_SCALE = 1.5
"""The overconfidence the sequential test looks for: scores ``N(0, 1.5^2)``, i.e.
intervals 1.5 times too narrow (selflab's ``bo`` on Hartmann6 scores at
1.5-1.6 while data are few; plain botorch at 2.3-2.5, issue 18)."""
BULK = 0.6744897501960817
"""The median of ``|z|`` for ``z ~ N(0, 1)``: the edge of the bulk bin."""
_EDGES = (BULK, Z90)


def _bin_probabilities(scale: float) -> np.ndarray:
    """``(3,)``: P(|z| <= BULK), P(BULK < |z| <= Z90), P(|z| > Z90) for ``z ~ N(0, scale^2)``."""
    inside = [math.erf(e / scale / math.sqrt(2.0)) for e in _EDGES]
    return np.array([inside[0], inside[1] - inside[0], 1.0 - inside[1]])


EVIDENCE_PER_BIN = np.log(_bin_probabilities(OVERCONFIDENT_SCALE) / _bin_probabilities(1.0))
"""Log-likelihood ratio (nats) one score adds, by its bin: inside the bulk
-0.365, between the bulk and the 90 % edge -0.051, outside the 90 % interval
+1.004 (for :data:`OVERCONFIDENT_SCALE` 1.5)."""


def overconfidence_evidence(z: Sequence[float]) -> float:
    """The largest summed log-likelihood ratio (nats) over any run of
    consecutive scores ``z`` (shape ``(n,)``, in order), each score counted by
    its bin of ``|z|``: the bulk (``<= 0.674``, half of a calibrated model's
    scores), the rest of the 90 % interval, outside it (see
    :data:`EVIDENCE_PER_BIN`). 0 when no run leans overconfident.

    It is a CUSUM (Page's test) of calibrated ``N(0, 1)`` against ``N(0, 1.5^2)``
    on binned scores, so that evidence accumulates over as many results as it
    takes instead of a fixed count in a window, and the two signals of
    overconfidence enter together: results outside their 90 % intervals (the
    coverage) and a bulk of scores wider than it should be (the robust spread).
    Binning bounds what one score can add (+1.0 nats however far it misses), so
    a single huge miss, or the heavy tails of a model whose bulk is
    underconfident, do not raise it alone.

    >>> round(overconfidence_evidence([3.0, 0.1, 2.5, 2.0, 0.2]), 3)
    2.646
    """
    a = np.abs(np.asarray(z, dtype=float))
    a = a[np.isfinite(a)]
    steps = EVIDENCE_PER_BIN[np.searchsorted(np.array(_EDGES), a, side="left")]
    best = run = 0.0
    for step in steps:
        run = max(0.0, run + float(step))
        best = max(best, run)
    return best


class CalibrationBand(_Record):
    """When rolling figures say ``miscalibrated`` (see module docs for the defaults' rationale).

    Two rules, either of which marks a model miscalibrated: the window rule
    (the default band: fewer than ``coverage_low`` of the last ``window``
    scores inside their 90 % intervals, or a spread outside
    ``spread_low``-``spread_high``; judged on a full window), and the
    sequential rule (``evidence_high``, off by default: some run of the last
    ``window`` scores carries more than ``evidence_high`` nats of evidence of
    overconfidence, :attr:`CalibrationStats.overconfidence`; judged from
    ``min_scored`` scores on). :data:`SEQUENTIAL_BAND` is the sequential band
    that ``benchmarks/trust.py`` measured.
    """

    window: int = Field(15, ge=2, description="the last this many scored results are judged")
    coverage_low: float = Field(0.7, ge=0, le=1, description="fewer results than this inside their 90 % intervals: overconfident")
    spread_low: float | None = Field(None, ge=0, description="a spread (root mean square of z) below this: underconfident (off by default)")
    spread_high: float | None = Field(None, gt=0, description="a spread above this: overconfident (off by default)")
    evidence_high: float | None = Field(
        None, gt=0, description="overconfidence evidence (nats, CalibrationStats.overconfidence) above this: overconfident (off by default)")
    min_scored: int | None = Field(None, ge=1, description="the sequential rule judges from this many scores on (default: a full window)")

    @model_validator(mode="after")
    def _min_within_window(self) -> CalibrationBand:
        if self.min_scored is not None and self.min_scored > self.window:
            raise ValueError(f"min_scored ({self.min_scored}) must not exceed window ({self.window})")
        return self

    def miscalibrated(self, stats: CalibrationStats) -> bool:
        """Whether ``stats`` (of the last :attr:`window` scores, in order) leave
        the band; ``False`` with fewer scores than the rules need."""
        if (self.evidence_high is not None and stats.n >= (self.min_scored or self.window)
                and stats.overconfidence > self.evidence_high):
            return True
        if stats.n < self.window:
            return False
        return (stats.coverage90 < self.coverage_low
                or (self.spread_high is not None and stats.z_spread > self.spread_high)
                or (self.spread_low is not None and stats.z_spread < self.spread_low))

    def describe(self) -> str:
        """The band in words, for a status line or a log line.

        >>> SEQUENTIAL_BAND.describe()
        'overconfidence evidence <= 4 nats in the last 20 (judged from 10 scored), 90 % intervals hold >= 50 % of the last 20'
        """
        parts = []
        if self.evidence_high is not None:
            parts.append(f"overconfidence evidence <= {self.evidence_high:g} nats in the last {self.window} "
                         f"(judged from {self.min_scored or self.window} scored)")
        parts.append(f"90 % intervals hold >= {self.coverage_low * 100:.0f} % of the last {self.window}")
        if self.spread_low is not None or self.spread_high is not None:
            parts.append(f"spread within {self.spread_low or 0:g}-{self.spread_high if self.spread_high is not None else math.inf:g}")
        return ", ".join(parts)


SEQUENTIAL_BAND = CalibrationBand(window=20, min_scored=10, evidence_high=4.0, coverage_low=0.5)
"""The sequential band (see module docs): miscalibrated once some run of the
last 20 scores carries more than 4 nats of evidence of overconfidence (from 10
scores on), or fewer than half of the last 20 lie inside their 90 %
intervals. The threshold 4 is set by simulation on calibrated ``N(0, 1)``
scores alone: a false alarm in about 9 % of 100-result campaigns and 1 % of
24-result ones (``benchmarks/trust.py`` reports the rates it measured)."""

DEFAULT_BAND = SEQUENTIAL_BAND
"""The band a campaign's verdict (the ``miscalibrated`` and
``calibration_restored`` events), ``selflab status``, the console and the
report judge by. The sequential band since Session 11: on three sets of
fresh seeds it stayed quiet on a calibrated random Branin campaign in 21 of
24 (the window rule, ``CalibrationBand()``: 17 of 24), fired as often on the
overconfident Hartmann6 loops, five evaluations earlier, with 2.5 times
fewer false alarms on simulated calibrated scores (``benchmarks/RESULTS.md``)."""


def rolling(z: Sequence[float], window: int) -> CalibrationStats:
    """The figures of the last ``window`` scores (all of them when fewer)."""
    return CalibrationStats.of(list(z)[-window:])


class LooStats(_Record):
    """Leave-one-out figures of a fitted model (NaN where undefined)."""

    n: int
    z_mean: float
    z_spread: float
    coverage90: float
    r2: float
    """``1 - SSE / SST`` of the leave-one-out means against the observed values."""
    rank_correlation: float
    """Spearman rank correlation of leave-one-out means and observed values."""

    @classmethod
    def of(cls, observed: np.ndarray, mean: np.ndarray, std: np.ndarray) -> LooStats:
        """From observed values and their leave-one-out means and stds (each ``(n,)``,
        noise included in ``std``)."""
        from scipy.stats import spearmanr

        y, m, s = (np.asarray(a, dtype=float).reshape(-1) for a in (observed, mean, std))
        ok = np.isfinite(y) & np.isfinite(m) & np.isfinite(s) & (s > 0)
        y, m, s = y[ok], m[ok], s[ok]
        z = CalibrationStats.of((y - m) / s) if y.size else CalibrationStats.of([])
        sst = float(np.sum((y - y.mean()) ** 2)) if y.size else 0.0
        r2 = 1.0 - float(np.sum((y - m) ** 2)) / sst if sst > 0 else math.nan
        rho = float(spearmanr(m, y).statistic) if y.size >= 3 and np.ptp(y) > 0 and np.ptp(m) > 0 else math.nan
        return cls(n=int(y.size), z_mean=z.z_mean, z_spread=z.z_spread, coverage90=z.coverage90, r2=r2, rank_correlation=rho)

    def as_reason(self) -> dict[str, float | int | None]:
        """JSON-safe (NaN -> ``None``), for a proposal's reason."""
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in self.model_dump().items()}


MIN_RESCALE_SCORES = 5
"""Fewer raw scores than this: no rescaling (factor 1)."""
RESCALE_LIMITS = (0.5, 10.0)
"""The rescale factor is clipped to this range."""


def robust_spread(z: Sequence[float]) -> float:
    """``1.4826 * median(|z|)``: the spread of scores ``z`` that the rare large
    miss does not inflate (equal to the standard deviation for normal scores);
    NaN with none.

    >>> robust_spread([1.0, -1.0, 1.0, -1.0, 40.0])
    1.4826
    """
    a = np.abs(np.asarray(z, dtype=float))
    return float(1.4826 * np.median(a)) if a.size else math.nan


def rescale_factor(raw_z: Sequence[float], window: int) -> float:
    """The factor ``calibration: rescale`` multiplies the model's std by: the
    :func:`robust_spread` of the last ``window`` raw scores (see module docs),
    clipped to :data:`RESCALE_LIMITS`; 1 with fewer than :data:`MIN_RESCALE_SCORES`.

    >>> rescale_factor([2.0, -2.0, 2.0, -2.0, 2.0], 10)
    2.9652
    """
    z = [v for v in list(raw_z)[-window:] if math.isfinite(v)]
    if len(z) < MIN_RESCALE_SCORES:
        return 1.0
    return float(min(max(robust_spread(z), RESCALE_LIMITS[0]), RESCALE_LIMITS[1]))


class ScoredObservation(Observation):
    """An :class:`~selflab.planners.protocol.Observation` that also carries what
    the model that proposed it predicted (its proposal's ``reason["predicted"]``),
    so that a planner can score its own past predictions (``calibration: rescale``).

    The controller builds these for results whose proposal recorded a
    prediction (:meth:`of`); a plain ``Observation`` is simply not scored.
    """

    predicted: dict[str, PredictedOutcome] = Field(default_factory=dict)

    @classmethod
    def of(cls, observation: Observation, reason: Mapping[str, Any]) -> Observation:
        """``observation`` with the usable predictions of ``reason`` (its proposal's
        reason), or ``observation`` itself when it has none."""
        found = {name: p for name in observation.outcomes if (p := PredictedOutcome.from_reason(reason, name)) is not None}
        return cls(**observation.model_dump(), predicted=found) if found else observation

    def z(self, outcome: str, *, raw: bool = False) -> float | None:
        """The prequential score of ``outcome`` (its reported noise used when it has one), or ``None``."""
        predicted, y = self.predicted.get(outcome), self.outcomes.get(outcome)
        if predicted is None or y is None:
            return None
        return predicted.z(y, noise_std=(self.noise or {}).get(outcome), raw=raw)


def raw_scores(observations: Sequence[Observation], outcome: str) -> list[float]:
    """The raw prequential scores (see :meth:`PredictedOutcome.z`) of ``outcome``
    over the scored observations among ``observations``, in their order."""
    scores = (o.z(outcome, raw=True) for o in observations if isinstance(o, ScoredObservation))
    return [z for z in scores if z is not None]
