"""The ask/tell API: a campaign as a synchronous Python object over the ledger.

A :class:`Study` is how a notebook, a robot script or a person drives a
campaign: ``ask`` for experiments, run them however you like, ``tell`` (or
``fail``, or ``abandon``) what happened. Every action is an event in the
ledger, appended at once, and what the study knows is the projection of
those events (:mod:`selflab.controller.projection`): close the notebook, reopen the
study with ``resume=True`` and it carries on where the ledger says. A study
holds its campaign's lease (:mod:`selflab.controller.lease`) while it is open, so no
other controller (``selflab run``, another notebook) drives the campaign at
the same time. The lease, the start and the appends are the plumbing of
:class:`selflab.controller.record.CampaignRecord`; here are the actions. A
:class:`selflab.controller.runner.Runner` drives a study with instruments.
No asyncio and no instruments here.

Example (a study built from Python objects alone)::

    from selflab.controller.ledger import Ledger
    from selflab.controller.study import Study
    from selflab.planners.baselines import SobolPlanner
    from selflab.planners.space import FloatParameter, Objective, SearchSpace

    space = SearchSpace(parameters=[FloatParameter(name="x", low=0, high=1)])
    with Study.create("demo", space, [Objective(name="y", direction="maximize")],
                      ledger=Ledger("sqlite:///runs/demo.sqlite"), planner=SobolPlanner()) as study:
        for _ in range(10):
            (trial,) = study.ask()
            study.tell(trial.trial_id, {"y": 1 - (trial.params["x"] - 0.3) ** 2})
        print(study.recommend())
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from selflab.controller import lease
from selflab.controller.config import LabConfig, build_planner, load_config, parse_config
from selflab.controller.config_models import DriftConfig, WarmStartSource
from selflab.controller.drift import PAUSED_BY, STRATEGY, DriftCheck, DriftVerdict, campaign_check
from selflab.controller.ledger import Event, Ledger, NewEvent
from selflab.controller.oversight import approve_event, default_actor, edit_event, instrument_limits, keep_away, origin, veto_event
from selflab.controller.projection import CampaignState, ExperimentView
from selflab.controller.readings import ReadingError, clean_readings
from selflab.controller.space_explore import STRATEGY as EXPLORE_OPENED
from selflab.controller.space_explore import opened_points
from selflab.controller.space_edits import BOUNDARY_WINDOW, OPS, EditRefused, SpaceEdit, boundary_hits, edit_payload, evolved_context
from selflab.controller.warm_sources import load_sources, parse_sources
from selflab.controller.record import (
    CampaignRecord,
    Problem,
    StartHook,
    StudyError,
    changed_problem,
    package_version,
    started_payload,
)
from selflab.planners.calibration import ScoredObservation
from selflab.planners.protocol import (
    Failure,
    FidelityOption,
    Observation,
    Pending,
    PlanContext,
    Planner,
    Proposal,
    Recommendation,
    Recommender,
    SourceTask,
)
from selflab.planners.space import Objective, OutcomeConstraint, Parameter, SearchSpace, brief, point_key

_log = logging.getLogger("selflab")

ClockKind = Literal["wall", "simulated"]
"""The campaign clock: real time, or simulated time that a runner moves to each
experiment's declared end (instruments that declare ``duration(params)``)."""


class Trial(BaseModel):
    """One experiment of a study, as the ledger tells it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    trial_id: int
    params: dict[str, float | int | str]
    fidelity: float = 1.0
    status: str
    """``proposed`` (asked, no result yet), ``dispatched``, ``completed``, ``failed``, ``abandoned`` or ``stale``;
    with human oversight also ``awaiting_approval`` and ``vetoed``."""
    reason: dict[str, Any] = {}
    """Why the planner proposed it (strategy, acquisition value, predicted mean and std, ...)."""
    outcomes: dict[str, float] = {}
    error: str = ""

    @classmethod
    def of(cls, exp: ExperimentView) -> Trial:
        return cls(trial_id=exp.experiment_id, params=exp.params, fidelity=exp.fidelity, status=exp.shown_status,
                   reason=exp.reason, outcomes=exp.outcomes, error=exp.error)


class Study(CampaignRecord):
    """A campaign driven by ask/tell. Build one with :meth:`open` (from a
    config) or :meth:`create` (from Python objects); close it (or use it as a
    context manager) to give its lease back."""

    def __init__(self, problem: Problem, ledger: Ledger, planner: Planner, *, snapshot: dict[str, Any] | None = None,
                 resume: bool = False, lease_ttl_s: float = lease.LEASE_TTL_S, clock: str = "wall",
                 on_start: StartHook | None = None, resume_hint: str = "open it with resume=True to carry on",
                 warm_start: Sequence[SourceTask] | None = None,
                 limits: Mapping[str, Mapping[str, tuple[float, float]]] | None = None) -> None:
        """Take the campaign's lease and record its start (see
        :class:`selflab.controller.record.CampaignRecord`). ``warm_start``: the
        source tasks (default: read from the ``warm_start`` sources of the
        config ``snapshot``, before anything is written; :mod:`selflab.controller.warm_sources`).
        ``limits``: instrument -> its limits, the config's narrowed by its
        driver's (a :class:`~selflab.controller.runner.Runner` passes its
        stations'); default: the config's alone (:attr:`limits`)."""
        self.planner = planner
        self._limits = None if limits is None else {name: dict(lims) for name, lims in limits.items()}
        self.warm_start: tuple[SourceTask, ...] = (
            tuple(warm_start) if warm_start is not None else load_sources((snapshot or {}).get("warm_start") or [], problem, ledger))
        """Earlier campaigns this one is warm-started from, as the planner's context carries them."""
        self._observations: list[Observation] = []
        """The completed trials as the planner sees them, built once each, in order (see :meth:`observations`)."""
        self._veto_radius: float | None = None
        """Set by :meth:`keep_away_from_vetoed`; ``None``: the snapshot's ``oversight.veto_radius``."""
        self._recommending_s = 0.0
        """Seconds the planner's recommendations took since the last proposal (their fits, which
        the next proposal finds cached): each proposal's reason says them (``recommendation_seconds``)."""
        super().__init__(problem, ledger, snapshot=snapshot, resume=resume, lease_ttl_s=lease_ttl_s, clock=clock,
                         on_start=on_start, resume_hint=resume_hint)

    # --- building -----------------------------------------------------------------

    @classmethod
    def open(cls, config: LabConfig | Mapping[str, Any] | str | Path, ledger: Ledger | str | None = None, *,
             planner: Planner | None = None, resume: bool = False, lease_ttl_s: float = lease.LEASE_TTL_S,
             clock: ClockKind = "wall") -> Study:
        """The study of a campaign config (a :class:`LabConfig`, its dict, or a
        YAML path). ``ledger`` defaults to the config's; ``planner`` to the
        config's planner; ``clock`` is ``wall`` unless a
        :class:`~selflab.controller.runner.Runner` is to drive simulators on
        simulated time. Raises :class:`selflab.controller.config.ConfigError` for a
        bad config, :class:`selflab.controller.ledger.LedgerError` when another
        controller runs the campaign, and :class:`StudyError` when the
        ledger's campaign cannot be carried on (``resume`` not given, or a
        changed problem)."""
        if isinstance(config, (str, Path)):
            config = load_config(config)
        elif not isinstance(config, LabConfig):
            config = parse_config(config)
        if not isinstance(ledger, Ledger):
            ledger = Ledger(ledger or config.ledger_url)
        return cls(problem_of(config), ledger, planner or build_planner(config), snapshot=config.model_dump(mode="json"),
                   resume=resume, lease_ttl_s=lease_ttl_s, clock=_clock(clock))

    @classmethod
    def create(cls, name: str, space: SearchSpace | Sequence[Parameter], objectives: Sequence[Objective], *,
               ledger: Ledger | str, planner: Planner, constraints: Sequence[OutcomeConstraint] = (), seed: int = 0,
               target_fidelity: float = 1.0, resume: bool = False, lease_ttl_s: float = lease.LEASE_TTL_S,
               clock: ClockKind = "wall", drift: DriftConfig | Mapping[str, Any] | None = None,
               warm_start: Sequence[WarmStartSource | Mapping[str, Any]] = ()) -> Study:
        """A study from Python objects alone: no YAML, no import strings.
        ``clock="simulated"`` stamps its events on simulated time, for a
        :class:`~selflab.controller.runner.Runner` on simulators that declare
        their durations. ``drift`` turns drift checks on, as a config's
        ``drift`` section does (:mod:`selflab.controller.drift`).
        ``warm_start``: earlier campaigns to transfer from (``{"ledger": URL,
        "campaign": NAME}``, as a config's ``warm_start``; the ledger defaults
        to this one; :mod:`selflab.controller.warm_sources`)."""
        if not isinstance(space, SearchSpace):
            space = SearchSpace(parameters=list(space))
        problem = Problem(name=name, space=space, objectives=tuple(objectives), constraints=tuple(constraints), seed=seed,
                          target_fidelity=target_fidelity)
        snapshot = None
        if drift is not None:
            try:
                checks = DriftConfig.model_validate(drift)
            except ValidationError as exc:
                raise StudyError(f"drift: {exc.errors()[0]['msg']} ({'.'.join(map(str, exc.errors()[0]['loc']))})") from None
            snapshot = {**problem.snapshot(), "drift": checks.model_dump(mode="json")}
        if warm_start:  # (earlier campaigns to transfer from, recorded like a config's warm_start)
            snapshot = {**(snapshot or problem.snapshot()), "warm_start": [w.model_dump(mode="json") for w in parse_sources(warm_start)]}
        return cls(problem, ledger if isinstance(ledger, Ledger) else Ledger(ledger), planner, resume=resume,
                   lease_ttl_s=lease_ttl_s, clock=_clock(clock), snapshot=snapshot)

    # --- asking and telling ---------------------------------------------------------

    def ask(self, n: int = 1, *, fidelities: Sequence[FidelityOption] | None = None,
            candidates: Sequence[Mapping[str, Any]] | None = None) -> list[Trial]:
        """Ask the planner for ``n`` experiments and record them ``proposed``
        (with the planner's reason), in one transaction.

        ``fidelities`` are the fidelities on offer with their costs (default:
        the target fidelity only); ``candidates`` restricts proposals to a pool
        of points (those already measured or pending are left out).
        """
        if n < 1:
            raise StudyError(f"ask for at least one trial (got n={n})")
        with self._guard:
            self.follow()
            self._refuse_while_drift_paused()
            proposals = self.propose(n, fidelities=fidelities, candidates=candidates)
            self._refuse_while_drift_paused()
            events = self.proposed_events(proposals)
            self._append(events)
            self.check_boundaries()
            return [Trial.of(self.state.experiments[e.experiment_id or 0]) for e in events]

    def propose(self, n: int, *, fidelities: Sequence[FidelityOption] | None = None,
                candidates: Sequence[Mapping[str, Any]] | None = None) -> list[Proposal]:
        """The planner's next ``n`` proposals, written nowhere (the runner
        records each with its dispatch; :meth:`ask` records them alone).
        The data is read under the study's lock and the planner runs outside
        it, so a model fit in a worker thread never holds up a result.

        With drift checks on (``drift`` in the config), the completed checks
        are judged first (:meth:`check_drift`; under ``policy: pause`` a new
        suspicion returns no proposal), and a due check comes first: the
        reference point, proposed by ``drift_check``
        (:mod:`selflab.controller.drift`)."""
        with self._guard:
            checks = self.drift_check
            recalibration = None
            if checks is not None:
                held = self.state.hold is not None
                if self.check_drift() and not held and self.state.hold is not None:
                    return []  # (a drift check paused the campaign: nothing more until a person resumes it)
                reference = checks.proposal(self.state)
                if reference is not None:
                    n -= 1
                    if n == 0:
                        return [reference]
                recalibration = checks.recalibration(self.state)
            else:
                reference = None
            opened = [] if candidates is not None else opened_points(
                self.state.space_view, self.state.experiments.values(), self.problem.seed, self.problem.target_fidelity)[:n]
            if opened:  # (a person widened a range and asked to look there first)
                n -= len(opened)
                if n == 0:
                    return [reference] * (reference is not None) + opened
            context = self.context(fidelities=fidelities, candidates=candidates)
            space, version = self.space, self.state.space_view.version
            observations = self.observations()
            if recalibration is not None:  # (policy: recalibrate: earlier results on the instrument's present scale)
                observations = recalibration.apply(observations, self.state.completions)
            pending = self.pending() + [Pending(params=p.params, fidelity=p.fidelity) for p in [*([reference] if reference else []), *opened]]
            data = (space, self.problem.objectives, observations, pending, n)
            vetoed = [e.params for e in self.state.vetoed()]
        if context.candidates is not None and not context.candidates:
            return [reference] if reference is not None else []
        started = time.perf_counter()
        proposals = self.planner.propose(*data, context=context)
        proposals = keep_away(space, proposals, vetoed, self.veto_radius, self.problem.seed + context.step)
        with self._guard:
            if self.state.space_view.version != version:  # (a person edited the space while the planner ran: propose from the new one)
                return self.propose(n, fidelities=fidelities, candidates=candidates)
            recommending, self._recommending_s = self._recommending_s, 0.0
        seconds = time.perf_counter() - started
        edited = {"space_version": version} if version else {}  # (the search space's version, after an edit)
        if recalibration is not None:
            edited["drift_recalibration"] = recalibration.reason()
        return [reference] * (reference is not None) + opened + [
            p.model_copy(update={"reason": {**p.reason, "proposal_seconds": seconds, "recommendation_seconds": recommending,
                                            "batch_size": len(proposals), **edited}})
            for p in proposals[:n]]

    @property
    def veto_radius(self) -> float:
        """How near a vetoed point no proposal comes: the one :meth:`keep_away_from_vetoed`
        set, else ``oversight.veto_radius`` of the campaign's config (default 0.1)."""
        if self._veto_radius is not None:
            return self._veto_radius
        oversight = (self.state.config or {}).get("oversight") or {}
        return float(oversight.get("veto_radius", 0.1))

    def keep_away_from_vetoed(self, radius: float) -> None:
        """Keep proposals ``radius`` (max-coordinate distance on the unit
        cube) away from vetoed points from now on, whatever the campaign's
        snapshot says: a :class:`~selflab.controller.runner.Runner` built from
        objects with ``oversight={"veto_radius": ...}`` sets it."""
        if not 0.0 < radius <= 0.5:
            raise StudyError(f"veto_radius must lie in (0, 0.5] (a distance on the unit cube, as oversight.veto_radius), got {radius}")
        self._veto_radius = float(radius)

    def proposed_events(self, proposals: Sequence[Proposal], first: int | None = None) -> list[NewEvent]:
        """``proposed`` events for ``proposals``, numbered from ``first`` (default: the next free id)."""
        first = self.state.next_experiment_id if first is None else first
        return [NewEvent(campaign=self.problem.name, kind="proposed", experiment_id=first + i, at=self.clock.now(), payload={
            "params": dict(p.params), "fidelity": p.fidelity,
            "planner": p.reason["strategy"] if p.reason.get("strategy") in (STRATEGY, EXPLORE_OPENED) else self.planner_kind,
            "reason": p.reason})
            for i, p in enumerate(proposals)]

    def tell(self, trial_id: int, outcomes: Mapping[str, Any]) -> Trial:
        """Record the result of trial ``trial_id``: a mapping with every
        objective and constrained outcome (real numbers, finite)."""
        with self._guard:
            exp = self._open_trial(trial_id)
            readings = self._readings(outcomes, f"trial {trial_id}")
            self._append([NewEvent(campaign=self.problem.name, kind="completed", experiment_id=trial_id, instrument=exp.instrument,
                                   payload={"outcomes": readings})])
            self.check_calibration()
            self.check_drift()
            return self.trial(trial_id)

    def fail(self, trial_id: int, reason: str) -> Trial:
        """Record that trial ``trial_id`` ran and failed (the failure is
        information: the planner avoids the point)."""
        with self._guard:
            exp = self._open_trial(trial_id)
            self._append([NewEvent(campaign=self.problem.name, kind="failed", experiment_id=trial_id, instrument=exp.instrument,
                                   payload={"error_kind": "error", "message": reason or "failed"})])
            return self.trial(trial_id)

    def abandon(self, trial_id: int, reason: str) -> Trial:
        """Record that trial ``trial_id`` will not run (or was stopped): no
        result, and no information for the planner."""
        with self._guard:
            exp = self._open_trial(trial_id)
            self._append([NewEvent(campaign=self.problem.name, kind="abandoned", experiment_id=trial_id, instrument=exp.instrument,
                                   payload={"reason": "withdrawn", "message": reason})])
            return self.trial(trial_id)

    def attach(self, params: Mapping[str, Any], outcomes: Mapping[str, Any] | None, *, fidelity: float = 1.0, by: str = "",
               message: str = "") -> Trial:
        """Record an experiment a person or another tool chose and ran; it
        counts as a completed trial from now on. ``outcomes=None``: not
        measured yet; it is pending until :meth:`tell` gives its result."""
        with self._guard:
            self.follow()
            point = dict(params)
            faults = self.space.violations(point)
            if faults:
                raise StudyError(f"cannot attach {brief(point)}: {'; '.join(faults)}")
            readings = self._readings(outcomes, "the attached experiment") if outcomes is not None else {}
            eid = self.state.next_experiment_id
            self._append([NewEvent(campaign=self.problem.name, kind="attached", experiment_id=eid, payload={
                "params": point, "outcomes": readings, "fidelity": fidelity, "by": by, "message": message,
                "pending": outcomes is None})])
            return self.trial(eid)

    # --- human oversight (the same rules as selflab.controller.oversight.OversightWriter) ----

    def approve(self, trial_id: int, *, by: str = "", reason: str = "") -> Trial:
        """Let a proposal awaiting approval be dispatched as proposed."""
        with self._guard:
            self.follow()
            self._append([approve_event(self.state, trial_id, by=by, reason=reason)])
            return self.trial(trial_id)

    def veto(self, trial_id: int, reason: str, *, by: str = "") -> Trial:
        """Refuse a proposal awaiting approval: never dispatched, and no later
        proposal comes near it (``oversight.veto_radius``)."""
        with self._guard:
            self.follow()
            self._append([veto_event(self.state, trial_id, reason, by=by)])
            return self.trial(trial_id)

    def edit(self, trial_id: int, params: Mapping[str, Any], reason: str, *, by: str = "") -> Trial:
        """Change a proposal awaiting approval (inside the space and some
        instrument's limits), which approves it; it is dispatched with the
        new params, and ``original_params`` keeps the planner's."""
        with self._guard:
            self.follow()
            self._append([edit_event(self.state, trial_id, params, reason, by=by)])
            return self.trial(trial_id)

    def pause(self, reason: str = "", *, by: str = "") -> None:
        """Hold dispatch (a runner sends nothing new; what runs finishes) until :meth:`resume`."""
        with self._guard:
            self.follow()
            if self.state.hold is not None:
                raise StudyError(f"campaign {self.problem.name!r} is paused already")
            self._append([NewEvent(campaign=self.problem.name, kind="pause_requested",
                                   payload={"by": by or default_actor(), "reason": reason, "origin": origin()})])

    def resume(self, reason: str = "", *, by: str = "") -> None:
        """Dispatch again after :meth:`pause`."""
        with self._guard:
            self.follow()
            if self.state.hold is None:
                raise StudyError(f"campaign {self.problem.name!r} is not paused")
            self._append([NewEvent(campaign=self.problem.name, kind="resume_requested",
                                   payload={"by": by or default_actor(), "reason": reason, "origin": origin()})])

    def note(self, text: str, *, by: str = "") -> None:
        """Write a remark into the campaign's ledger."""
        if not text.strip():
            raise StudyError("a note needs some text")
        with self._guard:
            self._append([NewEvent(campaign=self.problem.name, kind="note", payload={"text": text, "by": by})])

    # --- drift checks (selflab.controller.drift) -----------------------------------------

    @property
    def drift_check(self) -> DriftCheck | None:
        """The campaign's drift checks (``drift`` in its config; ``None``: off)."""
        return campaign_check(self.state.config)

    def drift_verdicts(self) -> list[DriftVerdict]:
        """The verdict of every completed drift check so far, in order."""
        with self._guard:
            checks = self.drift_check
            return checks.verdicts(self.state) if checks is not None else []

    def check_drift(self) -> list[DriftVerdict]:
        """Judge the completed drift checks and record a ``drift_suspected``
        event for each new suspicion (under ``policy: pause`` with a
        ``pause_requested`` by ``drift check``, in the same transaction);
        returns the new suspicions. The verdicts are a function of the
        ledger, so calling this again (or after a resume) records nothing twice."""
        with self._guard:
            checks = self.drift_check
            if checks is None or self._closed:
                return []
            found = checks.unrecorded(self.state)
            if not found:
                return []
            policy = checks.config.policy
            events = [NewEvent(campaign=self.problem.name, kind="drift_suspected", at=self.clock.now(), payload=v.payload(policy))
                      for v in found]
            for v in found:
                _log.warning("drift suspected (policy %s): %s", policy, v.line())
            if policy == "pause" and self.state.hold is None:
                last = found[-1]
                events.append(NewEvent(campaign=self.problem.name, kind="pause_requested", at=self.clock.now(), payload={
                    "by": PAUSED_BY, "origin": origin(), "reason": f"drift suspected at experiment {last.experiment_id} "
                    f"({last.outcome} {last.shift_sigma:+.1f} sigma from the reference's earlier readings); check the "
                    "instrument"}))
            self._append(events)
            return found

    def _refuse_while_drift_paused(self) -> None:
        hold = self.state.hold
        if hold is not None and hold.get("by") == PAUSED_BY:
            raise StudyError(f"campaign {self.problem.name!r} is paused by a drift check: {hold.get('reason', '')}; "
                             "resume it (study.resume() or selflab resume) to ask again")

    def recommend(self) -> Recommendation | None:
        """The point the study would bet on now, at the target fidelity: the
        planner's best predicted point when it can say, else the best feasible
        observation there (``None`` before any result; several objectives:
        ``None``, the Pareto set is the answer; ``objective: learn``: ``None``, no optimum)."""
        if len(self.problem.objectives) != 1 or self.problem.objectives[0].learn:
            return None
        with self._guard:
            self.follow()
        found = self.planner_recommendation()
        if found is not None:
            return found
        with self._guard:
            objective = self.problem.objectives[0]
            best = self.state.best(objective.name, objective.direction, self.problem.target_fidelity, self.problem.constraints)
            return None if best is None else Recommendation(params=best.params, fidelity=best.fidelity)

    def planner_recommendation(self, *, candidates: Sequence[Mapping[str, Any]] | None = None) -> Recommendation | None:
        """The planner's own best predicted point at the target fidelity
        (``None`` when it is no :class:`~selflab.planners.protocol.Recommender`
        or cannot say yet). ``candidates`` is the pool the planner proposes
        from; it is told the unmeasured ones, as when it proposes. The data
        are the projection as it stands (no new read of the ledger), read
        under the study's lock; the planner runs outside it, so a runner may
        call this in a worker thread. Raises what the planner raises."""
        if not isinstance(self.planner, Recommender):
            return None
        with self._guard:
            observations = self.observations()
            context = PlanContext(seed=self.problem.seed, step=self.state.next_experiment_id - 1,
                                  constraints=self.problem.constraints, target_fidelity=self.problem.target_fidelity)
            if candidates is not None:  # (a planner that scales inputs by the pool sees the same pool as in propose)
                measured = {point_key(o.params) for o in observations}
                context = context.model_copy(update={"candidates": tuple(dict(p) for p in candidates if point_key(p) not in measured)})
            context = evolved_context(self.state.space_view, context, observations, ())
            space = self.space
        started = time.perf_counter()
        try:
            return self.planner.recommend(space, self.problem.objectives, observations, context=context)
        finally:
            with self._guard:
                self._recommending_s += time.perf_counter() - started

    # --- reading the projection -----------------------------------------------------

    def trials(self) -> list[Trial]:
        """Every trial, in order."""
        with self._guard:
            self.follow()
            return [Trial.of(e) for e in self.state.experiments.values()]

    def trial(self, trial_id: int) -> Trial:
        exp = self.state.experiments.get(trial_id)
        if exp is None:
            raise StudyError(self._unknown(trial_id))
        return Trial.of(exp)

    def observations(self) -> list[Observation]:
        """Completed trials (attached ones included), in the order their results
        came; one whose proposal recorded a prediction carries it
        (:class:`~selflab.planners.calibration.ScoredObservation`), so the planner
        can score its own past predictions (``calibration: rescale``)."""
        with self._guard:
            for eid in self.state.completions[len(self._observations):]:  # (built once each: a campaign asks every step)
                exp = self.state.experiments[eid]
                self._observations.append(ScoredObservation.of(Observation.from_result(exp.params, exp.outcomes, exp.fidelity), exp.reason))
            view = self.state.space_view  # (after a parameter was added, earlier trials have its backfill)
            return [o.model_copy(update={"params": view.filled(o.params)}) for o in self._observations] if view.backfill \
                else list(self._observations)

    def pending(self) -> list[Pending]:
        """Trials asked for, or running, with no result yet."""
        fill = self.state.space_view.filled
        return [Pending(params=fill(e.params), fidelity=e.fidelity) for e in self.state.with_status("proposed", "dispatched")]

    def context(self, *, fidelities: Sequence[FidelityOption] | None = None,
                candidates: Sequence[Mapping[str, Any]] | None = None) -> PlanContext:
        """What the planner is told beyond the data: seed, ledger position,
        constraints, fidelities on offer, failed points (:func:`failures`), and a pool."""
        context = PlanContext(seed=self.problem.seed, step=self.state.next_experiment_id - 1, constraints=self.problem.constraints,
                              target_fidelity=self.problem.target_fidelity, failed=failures(self.state), warm_start=self.warm_start)
        if fidelities is not None:
            context = context.model_copy(update={"fidelities": tuple(fidelities)})
        if candidates is not None:
            used = {point_key(e.params) for e in self.state.with_status("completed", "proposed", "dispatched")}
            used |= {point_key(e.params) for e in self.state.avoided()}
            context = context.model_copy(update={"candidates": tuple(dict(p) for p in candidates if point_key(p) not in used)})
        return evolved_context(self.state.space_view, context, self.observations(), self.pending())

    # --- the search space ---------------------------------------------------------------

    @property
    def space(self) -> SearchSpace:
        """The current search space: the config's, as edited since (``space_changed``
        events; :mod:`selflab.controller.space_edits`)."""
        return self.state.space_view.space or self.problem.space

    def edit_space(self, op: str, parameter: str, *values: float | int | str, backfill: float | int | str | None = None,
                   kind: str | None = None, log: bool = False, explore: int = 0, by: str = "", reason: str = "") -> SearchSpace:
        """Edit the search space (``op``: ``widen``/``narrow`` ``LOW HIGH``, ``add``
        ``LOW HIGH`` or choices with a required ``backfill``, ``fix`` ``VALUE``,
        ``add_choice``/``remove_choice`` ``CHOICE``), checked against the
        instruments' limits (:attr:`limits`); records ``space_changed`` and returns
        the new space. Proposals come from it from now on; every observation
        stays in the model. ``explore`` (widen only): that many space-filling
        points of the opened range come first (:mod:`selflab.controller.space_explore`).
        Raises :class:`StudyError` (one line, nothing written)."""
        try:
            edit = SpaceEdit.model_validate({"op": op.replace("-", "_"), "parameter": parameter, "values": list(values),
                                             "backfill": backfill, "kind": kind, "log": log, "explore": explore})
        except ValidationError as exc:
            raise StudyError(f"{op} {parameter}: {exc.errors()[0]['msg']}; the edits are {', '.join(OPS)}") from None
        with self._guard:
            self.follow()
            try:
                payload = edit_payload(self.state.space_view, edit, self.limits,
                                       by=by or default_actor(), reason=reason, origin=origin())
            except EditRefused as exc:
                raise StudyError(str(exc)) from None
            self._append([NewEvent(campaign=self.problem.name, kind="space_changed", payload=payload)])
            _log.info("search space v%d: %s %s %s by %s", payload["version"], edit.op, parameter, " ".join(map(str, values)), payload["by"])
            return self.space

    def record(self, events: Sequence[NewEvent], work: Sequence[dict[str, Any]] = ()) -> list[Event]:
        """Append the runner's events (see :meth:`CampaignRecord.record`), then
        run the boundary check when they hold proposals."""
        written = super().record(events, work)
        if any(e.kind == "proposed" for e in written):
            self.check_boundaries()
        return written

    @property
    def limits(self) -> dict[str, dict[str, tuple[float, float]]]:
        """Instrument -> its limits, which space edits and the boundary check's
        suggestions stay inside: as given (a runner's stations': the config's
        narrowed by each driver's declared ones), else the config's."""
        return self._limits if self._limits is not None else instrument_limits(self.state.config)

    def check_boundaries(self) -> list[Event]:
        """Record a ``boundary_hit`` for each parameter bound that more than half
        of the recent proposals sit on (:func:`~selflab.controller.space_edits.boundary_hits`),
        once per bound until the space changes."""
        with self._guard:
            view, experiments = self.state.space_view, self.state.experiments
            recent: list[dict[str, Any]] = []
            for eid in range(self.state.next_experiment_id - 1, view.since - 1, -1):
                exp = experiments.get(eid)
                if exp is not None and not exp.attached and exp.reason.get("strategy") != "requeue":
                    recent.append(view.filled(exp.params))
                    if len(recent) == BOUNDARY_WINDOW:
                        break
            hits = boundary_hits(view, recent[::-1], self.limits)
            for hit in hits:
                advice = f"widen it: {hit['suggestion']}" if hit["suggestion"].startswith("selflab space") else hit["suggestion"]
                _log.warning("boundary_hit: %s sits on its %s bound %g in %d of the last %d proposals; %s", hit["parameter"],
                             hit["bound"], hit["value"], round(hit["fraction"] * hit["window"]), hit["window"], advice)
            return self._append([NewEvent(campaign=self.problem.name, kind="boundary_hit", payload=h) for h in hits]) if hits else []

    @property
    def planner_kind(self) -> str:
        """The planner's kind as the config names it, else its class name."""
        config = self.state.config or {}
        kind = (config.get("planner") or {}).get("kind") if isinstance(config.get("planner"), Mapping) else None
        return str(kind or type(self.planner).__name__)

    # --- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Record that the study was closed (``campaign_stopped``, reason
        ``closed``) and give the campaign's lease back. Trials without results
        stay open: reopen the study with ``resume=True`` to tell them."""
        if self._closed:
            return
        try:
            with self._guard:
                if self.stop_recorded:  # (a runner recorded why it stopped, and nothing happened since)
                    return
                open_trials = len(self.state.with_status("proposed", "dispatched"))
                self._append([NewEvent(campaign=self.problem.name, kind="campaign_stopped", payload={
                    "reason": "closed", "detail": f"study closed with {open_trials} trial(s) awaiting a result"})])
        finally:
            self.release()

    def __enter__(self) -> Study:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _open_trial(self, trial_id: int) -> ExperimentView:
        self.follow()
        exp = self.state.experiments.get(trial_id)
        if exp is None:
            raise StudyError(self._unknown(trial_id))
        if exp.terminal:
            raise StudyError(f"trial {trial_id} is already {exp.status}" + (f" ({exp.error})" if exp.error else "") +
                             "; its record cannot change")
        return exp

    def _unknown(self, trial_id: int) -> str:
        last = self.state.next_experiment_id - 1
        known = f"trials are 1..{last}" if last else "no trial has been asked yet"
        return f"campaign {self.problem.name!r} has no trial {trial_id!r}; {known}"

    def _readings(self, outcomes: Mapping[str, Any], source: str) -> dict[str, float]:
        try:
            return clean_readings(outcomes, self.problem.outcome_names, source, parameters=self.problem.space.names)
        except ReadingError as exc:
            raise StudyError(str(exc)) from None


def failures(state: CampaignState) -> tuple[Failure, ...]:
    """The points a planner is told to avoid, with why (:class:`~selflab.planners.protocol.Failure`):
    experiments that ran and failed, with the ledger's ``error_kind`` (a
    ``timeout`` or ``disconnected`` says nothing about the parameters, and a
    feasibility model leaves it out), those no instrument could price
    (``bad_cost``), then vetoed proposals (``vetoed``)."""
    return tuple(Failure(params=e.params, fidelity=e.fidelity, kind=e.failure_kind)
                 for e in [*state.avoided(), *state.vetoed()])


def problem_of(config: LabConfig) -> Problem:
    """The problem a campaign config states."""
    return Problem(name=config.name, space=config.space, objectives=tuple(config.objectives),
                   constraints=tuple(config.constraints), seed=config.seed, target_fidelity=config.target_fidelity)


def _clock(kind: str) -> str:
    if kind not in ("wall", "simulated"):
        raise StudyError(f"clock must be 'wall' or 'simulated' (got {kind!r})")
    return kind


__all__ = ["Problem", "Study", "StudyError", "Trial", "changed_problem", "failures", "package_version", "problem_of", "started_payload"]
