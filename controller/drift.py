r"""Drift checks: re-measure a reference point every N experiments and judge
whether the instrument's readings moved (issue 18, item 4). Pure: no I/O.

A campaign with ``drift: {every: N, ...}`` in its config re-measures a
*reference point* once ``N`` experiments have completed since the last check:
the point the config names, or ``incumbent``, the best observed point when
the first check is due (kept, from the first check's reason, for every later
check, so the readings stay comparable). The check is an ordinary experiment
in the ledger, proposed by ``drift_check`` with ``reason["drift_check"]``
(:meth:`DriftCheck.proposal`), dispatched like any other (limits, interlocks,
human oversight apply).

**The decision** (:func:`judge`). The reference's earlier readings
:math:`y_1..y_n` (every completed reading of that point at the target
fidelity since the last suspected drift) give a mean :math:`\bar y` and a
sigma. The new reading :math:`y` is judged by its prediction error in sigma,

.. math::  z = (y - \bar y) / (\sigma \sqrt{1 + 1/n}),

and :math:`|z|` above ``threshold_sigma`` (default 4) is a suspected drift.
Sigma never rests on a few readings alone, so two readings that agree by
chance cannot make it vanish:

- with ``min_sigma`` (the instrument's repeatability, as its user knows it)
  it is :math:`\max(s_n, \sigma_{min})`, :math:`s_n` the readings' sample
  std (0 for one reading);
- otherwise a guess :math:`\sigma_0` of the noise, the larger of the
  planner's noise estimate (the latest ``reason["noise_std"]`` of the
  outcome, which the ``bo`` planner records) and 1 % of the outcome's
  observed range, is worth :data:`PRIOR_DOF` readings:
  :math:`\sigma^2 = (\nu_0 \sigma_0^2 + \sum (y_i - \bar y)^2) / (\nu_0 + n - 1)`
  (the posterior mean of a normal model's variance under a scaled
  inverse-chi-squared prior), so the readings take over as they accumulate;
  and one earlier reading is not enough to judge (the check is a baseline).

A suspected drift starts the reference's history afresh: from the reading
that raised it (``warn``, ``recalibrate``: the new level) or from the next
one (``pause``: a person may have fixed the instrument before resuming).
Every verdict is a function of the ledger (:meth:`DriftCheck.verdicts`), so
a resumed campaign neither repeats nor loses one.

**Recalibrate** (:meth:`DriftCheck.recalibration`): for each suspected
drift, results measured up to the last in-control reading of the reference
get the measured shift :math:`y - \bar y` added (they are put on the
instrument's present scale: an additive, step-like drift), and results
between that reading and the check that found the drift are left out of the
planner's data, since nobody knows which side of the drift they fell on.
Shifts add up over several drifts. Only the drift's outcome is shifted.

Example::

    >>> j = judge([0.50, 0.51, 0.49], 0.62, sigma_floor=0.01, threshold_sigma=4.0)
    >>> round(j.mean, 3), round(j.sigma, 3), round(j.shift, 3), round(j.shift_sigma, 1), j.suspected
    (0.5, 0.01, 0.12, 10.4, True)
    >>> judge([0.50, 0.51, 0.49], 0.52, sigma_floor=0.01, threshold_sigma=4.0).suspected
    False
    >>> guessed = judge([0.50, 0.51, 0.49], 0.62, sigma_floor=0.005, threshold_sigma=4.0, prior_dof=PRIOR_DOF)
    >>> round(guessed.sigma, 4), round(guessed.shift_sigma, 1), guessed.suspected
    (0.0071, 14.7, True)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from selflab.controller.config_faults import ConfigFault
from selflab.controller.config_models import DriftConfig, LabConfig
from selflab.controller.events import DriftSuspected
from selflab.controller.projection import CampaignState, ExperimentView
from selflab.planners.protocol import Observation, Proposal
from selflab.planners.space import CategoricalParameter, IntParameter, Objective, OutcomeConstraint, SearchSpace, brief, point_key

STRATEGY = "drift_check"
"""``reason["strategy"]`` and the ``planner`` of a drift check's ``proposed`` event."""
PAUSED_BY = "drift check"
"""Who a drift check's ``pause_requested`` names (``policy: pause``)."""
SCALE_FLOOR = 0.01
PRIOR_DOF = 4
"""How many readings' weight the guessed noise gets (no ``min_sigma``)."""
"""Sigma's floor as a fraction of the outcome's observed range, when neither
``min_sigma`` nor the planner's noise estimate says more."""
_TINY = 1e-12

Point = dict[str, float | int | str]


def is_check(exp: ExperimentView) -> bool:
    """Whether ``exp`` is a drift check (its reason says so)."""
    return exp.reason.get("strategy") == STRATEGY


def settings(config: Mapping[str, Any] | None) -> DriftConfig | None:
    """The ``drift`` section of a config snapshot (``None``: drift checks off)."""
    raw = (config or {}).get("drift")
    return None if raw is None else DriftConfig.model_validate(raw)


# --- the decision ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """One new reading against earlier ones: ``mean`` and ``sigma`` of the
    earlier readings (``sd``: their sample std, 0 for one), the ``shift``
    (new - mean, outcome units) and ``shift_sigma`` (the z above, signed)."""

    mean: float
    sd: float
    sigma: float
    shift: float
    shift_sigma: float
    suspected: bool


def judge(earlier: Sequence[float], new: float, *, sigma_floor: float, threshold_sigma: float,
          prior_dof: int | None = None) -> Judgement:
    """Judge reading ``new`` against ``earlier`` readings of the same point
    (at least one): suspected when :math:`|z|` exceeds ``threshold_sigma``.
    ``prior_dof=None``: ``sigma_floor`` is a known noise level, and sigma is
    the larger of it and the readings' std; else it is a guess worth
    ``prior_dof`` readings (see the module docs)."""
    n = len(earlier)
    if n < 1:
        raise ValueError("judge needs at least one earlier reading")
    mean = math.fsum(earlier) / n
    sd = statistics.stdev(earlier) if n >= 2 else 0.0
    if prior_dof is None:
        sigma = max(sd, sigma_floor)
    else:
        sigma = math.sqrt((prior_dof * sigma_floor ** 2 + (n - 1) * sd ** 2) / (prior_dof + n - 1))
    sigma = max(sigma, _TINY * max(1.0, abs(mean)))
    shift = new - mean
    z = shift / (sigma * math.sqrt(1.0 + 1.0 / n))
    return Judgement(mean=mean, sd=sd, sigma=sigma, shift=shift, shift_sigma=z, suspected=abs(z) > threshold_sigma)


class DriftVerdict(BaseModel):
    """What one completed drift check says (``baseline``: nothing earlier to compare with)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    experiment_id: int
    outcome: str
    reference: Point
    status: Literal["baseline", "ok", "suspected"]
    new_reading: float
    earlier_ids: list[int] = []
    earlier_mean: float | None = None
    earlier_std: float | None = None
    """Sample std of the earlier readings (``None`` with fewer than two)."""
    sigma: float | None = None
    """The sigma judged with (see :func:`judge`)."""
    sigma_floor: float | None = None
    floor_source: str = ""
    """``min_sigma`` (a known floor), ``planner_noise`` or ``outcome_range`` (a guess, see :func:`judge`)."""
    shift: float | None = None
    shift_sigma: float | None = None
    threshold_sigma: float
    in_control_through: int | None = None
    """The last earlier reading's experiment: the drift happened after it."""

    def payload(self, policy: str) -> DriftSuspected:
        """The ``drift_suspected`` payload of a suspected verdict."""
        assert self.status == "suspected" and self.shift is not None and self.shift_sigma is not None
        assert self.earlier_mean is not None and self.sigma is not None and self.sigma_floor is not None
        return DriftSuspected(outcome=self.outcome, reference=dict(self.reference), experiment_id=self.experiment_id,
                              earlier_ids=list(self.earlier_ids), earlier_mean=self.earlier_mean, earlier_std=self.earlier_std,
                              sigma=self.sigma, sigma_floor=self.sigma_floor, floor_source=self.floor_source,
                              new_reading=self.new_reading, shift=self.shift, shift_sigma=self.shift_sigma,
                              threshold_sigma=self.threshold_sigma, policy=policy,  # type: ignore[arg-type]
                              in_control_through=self.in_control_through)

    def line(self) -> str:
        """One line for a log or ``selflab status``."""
        if self.status == "baseline":
            why = "nothing to compare yet" if not self.earlier_ids else "too few readings to judge without a noise estimate"
            return f"experiment {self.experiment_id}: {self.outcome} = {self.new_reading:.6g} at the reference (baseline: {why})"
        return (f"experiment {self.experiment_id}: {self.outcome} = {self.new_reading:.6g} at the reference, "
                f"{self.shift_sigma:+.1f} sigma from the mean {self.earlier_mean:.6g} of {len(self.earlier_ids)} earlier reading(s) "
                f"(sigma {self.sigma:.3g}, floor from {self.floor_source.replace('_', ' ')}, threshold {self.threshold_sigma:g}): "
                + ("drift suspected" if self.status == "suspected" else "in control"))


@dataclass(frozen=True)
class Recalibration:
    """What ``policy: recalibrate`` does to the planner's data: ``offsets``
    (experiment id -> added to ``outcome``) and ``dropped`` experiment ids."""

    outcome: str
    offsets: dict[int, float] = field(default_factory=dict)
    dropped: frozenset[int] = frozenset()
    drifts: tuple[int, ...] = ()
    """The checks that found each drift."""

    def reason(self) -> dict[str, Any]:
        """What a proposal's reason records of it."""
        return {"outcome": self.outcome, "drifts": list(self.drifts), "shifted": len(self.offsets), "dropped": sorted(self.dropped),
                "max_offset": max((abs(v) for v in self.offsets.values()), default=0.0)}

    def apply(self, observations: Sequence[Observation], completions: Sequence[int]) -> list[Observation]:
        """``observations`` (one per ``completions`` id, in that order) as the planner is to see them."""
        out: list[Observation] = []
        for obs, eid in zip(observations, completions, strict=False):
            if eid in self.dropped:
                continue
            offset = self.offsets.get(eid, 0.0)
            if offset and self.outcome in obs.outcomes:
                obs = obs.model_copy(update={"outcomes": {**obs.outcomes, self.outcome: obs.outcomes[self.outcome] + offset}})
            out.append(obs)
        return out + list(observations[len(completions):])


# --- a campaign's drift checks -----------------------------------------------------------------


@dataclass(frozen=True)
class DriftCheck:
    """A campaign's drift checks: its ``drift`` config and the problem it judges by."""

    config: DriftConfig
    outcome: str
    objective: Objective
    """Whose best observed point is the ``incumbent``."""
    constraints: tuple[OutcomeConstraint, ...] = ()
    target_fidelity: float = 1.0

    @classmethod
    def of(cls, config: DriftConfig, objectives: Sequence[Objective], constraints: Sequence[OutcomeConstraint] = (),
           target_fidelity: float = 1.0) -> DriftCheck:
        outcome = config.outcome or objectives[0].name
        objective = next((o for o in objectives if o.name == outcome), objectives[0])
        return cls(config=config, outcome=outcome, objective=objective, constraints=tuple(constraints), target_fidelity=target_fidelity)

    def due(self, state: CampaignState) -> bool:
        """Whether a check is due: ``every`` experiments (checks aside)
        completed after the last check was proposed, and no check open."""
        last = 0
        for exp in state.experiments.values():
            if is_check(exp):
                if not exp.terminal:
                    return False
                last = max(last, exp.experiment_id)
        done = 0
        for eid in reversed(state.completions):
            exp = state.experiments[eid]
            if eid > last and not is_check(exp):
                done += 1
                if done >= self.config.every:
                    return True
        return False

    def reference(self, state: CampaignState) -> Point | None:
        """The point to re-measure: the config's, or the one the first check
        recorded, or else the incumbent now (``None``: no result yet)."""
        if isinstance(self.config.reference, dict):
            return dict(self.config.reference)
        first = min((e for e in state.experiments.values() if is_check(e)), key=lambda e: e.experiment_id, default=None)
        if first is not None:
            return dict(first.reason[STRATEGY]["reference"])
        best = state.best(self.objective.name, self.objective.direction, self.target_fidelity, self.constraints)
        return None if best is None else dict(best.params)

    def proposal(self, state: CampaignState) -> Proposal | None:
        """The drift check to run now, if one is due and there is a reference."""
        if not self.due(state):
            return None
        point = self.reference(state)
        if point is None:
            return None
        key = point_key(point)
        readings = sum(1 for eid in state.completions if point_key(state.experiments[eid].params) == key)
        return Proposal(params=point, fidelity=self.target_fidelity, reason={"strategy": STRATEGY, STRATEGY: {
            "reference": point, "reference_kind": "named" if isinstance(self.config.reference, dict) else "incumbent",
            "outcome": self.outcome, "every": self.config.every, "threshold_sigma": self.config.threshold_sigma,
            "policy": self.config.policy, "readings_so_far": readings}})

    def verdicts(self, state: CampaignState) -> list[DriftVerdict]:
        """The verdict of every completed check, in the order their results came."""
        point = self.reference(state)
        if point is None:
            return []
        key = point_key(point)
        history: list[tuple[int, float]] = []
        found: list[DriftVerdict] = []
        for pos, eid in enumerate(state.completions):
            exp = state.experiments[eid]
            if point_key(exp.params) != key or exp.fidelity != self.target_fidelity or self.outcome not in exp.outcomes:
                continue
            value = exp.outcomes[self.outcome]
            if not math.isfinite(value):
                continue
            if not is_check(exp):  # (a planner's or a person's reading of the reference point: history only)
                history.append((eid, value))
                continue
            common = {"experiment_id": eid, "outcome": self.outcome, "reference": point, "new_reading": value,
                      "threshold_sigma": self.config.threshold_sigma}
            if not history:
                found.append(DriftVerdict(status="baseline", **common))
                history.append((eid, value))
                continue
            floor, source = self.sigma_floor(state, pos, eid)
            known = source != "outcome_range"
            if not known and len(history) < 2:  # (one reading says nothing of the noise)
                found.append(DriftVerdict(status="baseline", earlier_ids=[i for i, _ in history], sigma_floor=floor,
                                          floor_source=source, **common))
                history.append((eid, value))
                continue
            j = judge([v for _, v in history], value, sigma_floor=floor, threshold_sigma=self.config.threshold_sigma,
                      prior_dof=None if known else PRIOR_DOF)
            found.append(DriftVerdict(status="suspected" if j.suspected else "ok", earlier_ids=[i for i, _ in history],
                                      earlier_mean=j.mean, earlier_std=j.sd if len(history) >= 2 else None, sigma=j.sigma,
                                      sigma_floor=floor, floor_source=source, shift=j.shift, shift_sigma=j.shift_sigma,
                                      in_control_through=history[-1][0], **common))
            if j.suspected:
                history = [] if self.config.policy == "pause" else [(eid, value)]
            else:
                history.append((eid, value))
        return found

    def sigma_floor(self, state: CampaignState, pos: int, eid: int) -> tuple[float, str]:
        """Sigma's floor (``min_sigma``) or guess for the check ``eid`` (the
        ``pos``-th result), from what the ledger held when its result came:
        ``(sigma, source)``."""
        if self.config.min_sigma is not None:
            return float(self.config.min_sigma), "min_sigma"
        values = [state.experiments[i].outcomes.get(self.outcome, math.nan) for i in state.completions[:pos + 1]]
        values = [v for v in values if math.isfinite(v)]
        scale = SCALE_FLOOR * (max(values) - min(values)) if values else 0.0
        noise = 0.0
        for i in range(eid - 1, 0, -1):  # the planner's latest noise estimate before the check
            exp = state.experiments.get(i)
            said = exp.reason.get("noise_std") if exp is not None else None
            value = said.get(self.outcome) if isinstance(said, Mapping) else None
            if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
                noise = float(value)
                break
        return (noise, "planner_noise") if noise > scale else (scale, "outcome_range")

    def unrecorded(self, state: CampaignState) -> list[DriftVerdict]:
        """Suspected verdicts the ledger holds no ``drift_suspected`` event for yet."""
        recorded = {int(p["experiment_id"]) for p in state.drift_suspected}
        return [v for v in self.verdicts(state) if v.status == "suspected" and v.experiment_id not in recorded]

    def recalibration(self, state: CampaignState) -> Recalibration | None:
        """``policy: recalibrate``: the offsets and drops of every suspected
        drift (see the module docs); ``None`` when there is nothing to do."""
        if self.config.policy != "recalibrate":
            return None
        suspected = [v for v in self.verdicts(state) if v.status == "suspected"]
        if not suspected:
            return None
        where = {eid: pos for pos, eid in enumerate(state.completions)}
        offsets: dict[int, float] = {}
        dropped: set[int] = set()
        for v in suspected:
            assert v.in_control_through is not None and v.shift is not None
            good, found = where[v.in_control_through], where[v.experiment_id]
            for pos, eid in enumerate(state.completions[:found]):
                if pos <= good:
                    offsets[eid] = offsets.get(eid, 0.0) + v.shift
                else:
                    dropped.add(eid)
        return Recalibration(outcome=self.outcome, offsets={k: v for k, v in offsets.items() if k not in dropped},
                             dropped=frozenset(dropped), drifts=tuple(v.experiment_id for v in suspected))


def campaign_check(config: Mapping[str, Any] | None) -> DriftCheck | None:
    """The drift checks of a campaign's config snapshot (``None``: off)."""
    found = settings(config)
    if found is None or not config:
        return None
    objectives = [Objective.model_validate(o) for o in config.get("objectives", [])]
    if not objectives:
        return None
    constraints = [OutcomeConstraint.model_validate(c) for c in config.get("constraints", [])]
    return DriftCheck.of(found, objectives, constraints, float(config.get("target_fidelity", 1.0)))


def drift_status(state: CampaignState) -> dict[str, Any] | None:
    """What ``selflab status`` says of the drift checks (``None``: off):
    the last verdict, how many drifts were suspected, and one line."""
    check = campaign_check(state.config)
    if check is None:
        return None
    found = check.verdicts(state)
    last = found[-1] if found else None
    suspected = len(state.drift_suspected)
    line = (f"last check {last.line()}" if last is not None else f"no check completed yet (every {check.config.every} experiments)")
    line += f"; {suspected} drift(s) suspected, policy {check.config.policy}" if suspected else f"; policy {check.config.policy}"
    return {"every": check.config.every, "policy": check.config.policy, "outcome": check.outcome,
            "last": last.model_dump(mode="json") if last is not None else None, "suspected": suspected, "line": line}


# --- config checks ----------------------------------------------------------------------------


def drift_faults(config: LabConfig) -> list[ConfigFault]:
    """The ``drift`` section's faults that span fields: an unknown outcome, a
    named reference outside the space or outside every instrument's limits."""
    drift = config.drift
    if drift is None:
        return []
    faults: list[ConfigFault] = []
    outcomes = config.outcome_names
    if drift.outcome is not None and drift.outcome not in outcomes:
        faults.append(ConfigFault(loc="drift.outcome", message=f"{brief(drift.outcome)} is not an objective or a constrained "
                                  f"outcome; one of {', '.join(outcomes)}"))
    if isinstance(drift.reference, dict):
        point = typed_point(config.space, drift.reference)
        wrong = config.space.violations(point)
        if wrong:
            faults.append(ConfigFault(loc="drift.reference", message=f"{brief(drift.reference)}: {'; '.join(wrong)}; "
                                      "name a point inside the space, or use reference: incumbent"))
        else:
            limits = {i.name: i.limits for i in config.instruments}
            inside = [name for name, lim in limits.items()
                      if all(k not in point or lo <= float(point[k]) <= hi for k, (lo, hi) in lim.items())]
            if not inside:
                said = "; ".join(f"{name}: " + ", ".join(f"{k} in [{lo:g}, {hi:g}]" for k, (lo, hi) in lim.items())
                                 for name, lim in limits.items() if lim)
                faults.append(ConfigFault(loc="drift.reference", message=f"{brief(drift.reference)} is outside every "
                                          f"instrument's limits ({said}); name a point an instrument may run"))
    return faults


def typed_point(space: SearchSpace, point: Mapping[str, Any]) -> Point:
    """``point`` with integer parameters as ints and categorical ones matched to their choice (others as given)."""
    typed: Point = dict(point)
    for p in space.parameters:
        value = point.get(p.name)
        if isinstance(p, IntParameter) and isinstance(value, float) and value.is_integer():
            typed[p.name] = int(value)
        elif isinstance(p, CategoricalParameter) and value is not None:
            typed[p.name] = next((c for c in p.choices if str(c) == str(value)), value)
    return typed


__all__ = ["PAUSED_BY", "STRATEGY", "DriftCheck", "DriftVerdict", "Judgement", "Recalibration", "campaign_check", "drift_faults", "drift_status",
           "is_check", "judge", "settings", "typed_point"]
