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

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from selflab.controller import lease
from selflab.controller.config import LabConfig, build_planner, load_config, parse_config
from selflab.controller.ledger import Ledger, NewEvent
from selflab.controller.oversight import check_awaiting, check_edit, default_actor, keep_away, need_text, origin
from selflab.controller.projection import ExperimentView
from selflab.controller.readings import ReadingError, clean_readings
from selflab.controller.record import (
    CampaignRecord,
    Problem,
    StartHook,
    StudyError,
    changed_problem,
    package_version,
    started_payload,
)
from selflab.planners.protocol import (
    FidelityOption,
    Observation,
    Pending,
    PlanContext,
    Planner,
    Proposal,
    Recommendation,
    Recommender,
)
from selflab.planners.space import Objective, OutcomeConstraint, Parameter, SearchSpace, brief, point_key

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
                 on_start: StartHook | None = None, resume_hint: str = "open it with resume=True to carry on") -> None:
        """Take the campaign's lease and record its start (see
        :class:`selflab.controller.record.CampaignRecord`)."""
        self.planner = planner
        self._observations: list[Observation] = []
        """The completed trials as the planner sees them, built once each, in order (see :meth:`observations`)."""
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
               clock: ClockKind = "wall") -> Study:
        """A study from Python objects alone: no YAML, no import strings.
        ``clock="simulated"`` stamps its events on simulated time, for a
        :class:`~selflab.controller.runner.Runner` on simulators that declare
        their durations."""
        if not isinstance(space, SearchSpace):
            space = SearchSpace(parameters=list(space))
        problem = Problem(name=name, space=space, objectives=tuple(objectives), constraints=tuple(constraints), seed=seed,
                          target_fidelity=target_fidelity)
        return cls(problem, ledger if isinstance(ledger, Ledger) else Ledger(ledger), planner, resume=resume,
                   lease_ttl_s=lease_ttl_s, clock=_clock(clock))

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
            proposals = self.propose(n, fidelities=fidelities, candidates=candidates)
            events = self.proposed_events(proposals)
            self._append(events)
            return [Trial.of(self.state.experiments[e.experiment_id or 0]) for e in events]

    def propose(self, n: int, *, fidelities: Sequence[FidelityOption] | None = None,
                candidates: Sequence[Mapping[str, Any]] | None = None) -> list[Proposal]:
        """The planner's next ``n`` proposals, written nowhere (the runner
        records each with its dispatch; :meth:`ask` records them alone).
        The data is read under the study's lock and the planner runs outside
        it, so a model fit in a worker thread never holds up a result."""
        with self._guard:
            context = self.context(fidelities=fidelities, candidates=candidates)
            data = (self.problem.space, self.problem.objectives, self.observations(), self.pending(), n)
            vetoed = [e.params for e in self.state.vetoed()]
        if context.candidates is not None and not context.candidates:
            return []
        started = time.perf_counter()
        proposals = self.planner.propose(*data, context=context)
        proposals = keep_away(self.problem.space, proposals, vetoed, self.veto_radius, self.problem.seed + context.step)
        seconds = time.perf_counter() - started
        return [p.model_copy(update={"reason": {**p.reason, "proposal_seconds": seconds, "batch_size": len(proposals)}})
                for p in proposals[:n]]

    @property
    def veto_radius(self) -> float:
        """``oversight.veto_radius`` of the campaign's config (default 0.1)."""
        oversight = (self.state.config or {}).get("oversight") or {}
        return float(oversight.get("veto_radius", 0.1))

    def proposed_events(self, proposals: Sequence[Proposal], first: int | None = None) -> list[NewEvent]:
        """``proposed`` events for ``proposals``, numbered from ``first`` (default: the next free id)."""
        first = self.state.next_experiment_id if first is None else first
        return [NewEvent(campaign=self.problem.name, kind="proposed", experiment_id=first + i, at=self.clock.now(), payload={
            "params": dict(p.params), "fidelity": p.fidelity, "planner": self.planner_kind, "reason": p.reason})
            for i, p in enumerate(proposals)]

    def tell(self, trial_id: int, outcomes: Mapping[str, Any]) -> Trial:
        """Record the result of trial ``trial_id``: a mapping with every
        objective and constrained outcome (real numbers, finite)."""
        with self._guard:
            exp = self._open_trial(trial_id)
            readings = self._readings(outcomes, f"trial {trial_id}")
            self._append([NewEvent(campaign=self.problem.name, kind="completed", experiment_id=trial_id, instrument=exp.instrument,
                                   payload={"outcomes": readings})])
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
            faults = self.problem.space.violations(point)
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
            check_awaiting(self.state, trial_id, "approve")
            self._append([NewEvent(campaign=self.problem.name, kind="approved", experiment_id=trial_id,
                                   payload={"by": by or default_actor(), "reason": reason, "origin": origin()})])
            return self.trial(trial_id)

    def veto(self, trial_id: int, reason: str, *, by: str = "") -> Trial:
        """Refuse a proposal awaiting approval: never dispatched, and no later
        proposal comes near it (``oversight.veto_radius``)."""
        with self._guard:
            self.follow()
            check_awaiting(self.state, trial_id, "veto")
            why = need_text(reason, "a reason", "a veto")
            self._append([NewEvent(campaign=self.problem.name, kind="vetoed", experiment_id=trial_id,
                                   payload={"by": by or default_actor(), "reason": why, "origin": origin()})])
            return self.trial(trial_id)

    def edit(self, trial_id: int, params: Mapping[str, Any], reason: str, *, by: str = "") -> Trial:
        """Change a proposal awaiting approval (inside the space and some
        instrument's limits), which approves it; it is dispatched with the
        new params, and ``original_params`` keeps the planner's."""
        with self._guard:
            self.follow()
            exp = check_awaiting(self.state, trial_id, "edit")
            why = need_text(reason, "a reason", "an edit")
            point = check_edit(self.state, exp, params)
            self._append([NewEvent(campaign=self.problem.name, kind="edited", experiment_id=trial_id, payload={
                "params": point, "original": dict(exp.params), "by": by or default_actor(), "reason": why, "origin": origin()})])
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

    def recommend(self) -> Recommendation | None:
        """The point the study would bet on now, at the target fidelity: the
        planner's best predicted point when it can say, else the best feasible
        observation there (``None`` before any result; several objectives:
        ``None``, the Pareto set is the answer)."""
        if len(self.problem.objectives) != 1:
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
        return self.planner.recommend(self.problem.space, self.problem.objectives, observations, context=context)

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
        """Completed trials (attached ones included), in the order their results came."""
        with self._guard:
            for eid in self.state.completions[len(self._observations):]:  # (built once each: a campaign asks every step)
                exp = self.state.experiments[eid]
                self._observations.append(Observation.from_result(exp.params, exp.outcomes, exp.fidelity))
            return list(self._observations)

    def pending(self) -> list[Pending]:
        """Trials asked for, or running, with no result yet."""
        return [Pending(params=e.params, fidelity=e.fidelity) for e in self.state.with_status("proposed", "dispatched")]

    def context(self, *, fidelities: Sequence[FidelityOption] | None = None,
                candidates: Sequence[Mapping[str, Any]] | None = None) -> PlanContext:
        """What the planner is told beyond the data: seed, ledger position,
        constraints, fidelities on offer, failed points, and a pool."""
        context = PlanContext(seed=self.problem.seed, step=self.state.next_experiment_id - 1, constraints=self.problem.constraints,
                              target_fidelity=self.problem.target_fidelity,
                              failed=tuple(Pending(params=e.params, fidelity=e.fidelity)
                                           for e in [*self.state.avoided(), *self.state.vetoed()]))
        if fidelities is not None:
            context = context.model_copy(update={"fidelities": tuple(fidelities)})
        if candidates is not None:
            used = {point_key(e.params) for e in self.state.with_status("completed", "proposed", "dispatched")}
            used |= {point_key(e.params) for e in self.state.avoided()}
            context = context.model_copy(update={"candidates": tuple(dict(p) for p in candidates if point_key(p) not in used)})
        return context

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


def problem_of(config: LabConfig) -> Problem:
    """The problem a campaign config states."""
    return Problem(name=config.name, space=config.space, objectives=tuple(config.objectives),
                   constraints=tuple(config.constraints), seed=config.seed, target_fidelity=config.target_fidelity)


def _clock(kind: str) -> str:
    if kind not in ("wall", "simulated"):
        raise StudyError(f"clock must be 'wall' or 'simulated' (got {kind!r})")
    return kind


__all__ = ["Problem", "Study", "StudyError", "Trial", "changed_problem", "package_version", "problem_of", "started_payload"]
