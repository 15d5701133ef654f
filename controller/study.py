"""The ask/tell API: a campaign as a synchronous Python object over the ledger.

A :class:`Study` is how a notebook, a robot script or a person drives a
campaign: ``ask`` for experiments, run them however you like, ``tell`` (or
``fail``, or ``abandon``) what happened. Every action is an event in the
ledger, appended at once, and what the study knows is the projection of
those events (:mod:`selflab.controller.projection`): close the notebook, reopen the
study with ``resume=True`` and it carries on where the ledger says. A study
holds its campaign's lease (:mod:`selflab.controller.lease`) while it is open, so no
other controller (``selflab run``, another notebook) drives the campaign at
the same time. No asyncio and no instruments here.

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

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel, ConfigDict

import sqlalchemy as sa

from selflab.controller import lease
from selflab.controller.clock import Clock, SimClock, WallClock
from selflab.controller.config import LabConfig, build_planner, load_config, parse_config
from selflab.controller.identity import process_started
from selflab.controller.ledger import Event, Ledger, NewEvent
from selflab.controller.projection import CampaignState, ExperimentView
from selflab.controller.readings import ReadingError, clean_readings
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


StartHook = Callable[[sa.Connection, CampaignState, datetime], list[Event]]
"""Called inside a start's transaction: ``(connection, projection, now) -> events written``."""


class StudyError(ValueError):
    """An action the study refuses (an unknown trial, a result told twice, a
    reading that is not a number); nothing was written. The message says why."""


class Trial(BaseModel):
    """One experiment of a study, as the ledger tells it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    trial_id: int
    params: dict[str, float | int | str]
    fidelity: float = 1.0
    status: str
    """``proposed`` (asked, no result yet), ``dispatched``, ``completed``, ``failed``, ``abandoned`` or ``stale``."""
    reason: dict[str, Any] = {}
    """Why the planner proposed it (strategy, acquisition value, predicted mean and std, ...)."""
    outcomes: dict[str, float] = {}
    error: str = ""

    @classmethod
    def of(cls, exp: ExperimentView) -> Trial:
        return cls(trial_id=exp.experiment_id, params=exp.params, fidelity=exp.fidelity, status=exp.status,
                   reason=exp.reason, outcomes=exp.outcomes, error=exp.error)


@dataclass(frozen=True)
class Problem:
    """What a study optimizes: its name, space, objectives and constraints."""

    name: str
    space: SearchSpace
    objectives: tuple[Objective, ...]
    constraints: tuple[OutcomeConstraint, ...] = ()
    seed: int = 0
    target_fidelity: float = 1.0

    @property
    def outcome_names(self) -> list[str]:
        """Objectives, then constrained outcomes, each once: what a result must report."""
        names = [o.name for o in self.objectives]
        return names + [c.outcome for c in self.constraints if c.outcome not in names]

    def snapshot(self) -> dict[str, Any]:
        """The problem as ``campaign_started`` records it (the keys of a config)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "parameters": [p.model_dump(mode="json") for p in self.space.parameters],
            "objectives": [o.model_dump(mode="json") for o in self.objectives],
            "constraints": [c.model_dump(mode="json") for c in self.constraints],
            "target_fidelity": self.target_fidelity,
        }


def changed_problem(recorded: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[str]:
    """Which of ``parameters`` and ``objectives`` differ between the snapshot a
    campaign was started with and the one it is resumed with (a changed
    problem is a new campaign)."""
    old = recorded or {}
    return [key for key in ("parameters", "objectives") if old.get(key) != now.get(key)]


def package_version() -> str:
    """The installed selflab's version, as ``campaign_started`` records it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("selflab")
    except PackageNotFoundError:
        return "unknown"


def started_payload(snapshot: dict[str, Any], seed: int, clock: str, resumed: bool, epoch: int, controller: str) -> dict[str, Any]:
    """What ``campaign_started`` says: the problem, the code, the seed and the
    controller: ``run`` (the campaign loop) or ``study`` (Python ask/tell), and
    its process (host, pid and the process's start time, so that nobody
    signals a process that merely reuses the pid)."""
    return {"config": snapshot, "version": package_version(), "seed": seed, "clock": clock, "resumed": resumed,
            "host": socket.gethostname(), "pid": os.getpid(), "process_started": process_started(os.getpid()) or 0.0,
            "epoch": epoch, "controller": controller}


class Study:
    """A campaign driven by ask/tell. Build one with :meth:`open` (from a
    config) or :meth:`create` (from Python objects); close it (or use it as a
    context manager) to give its lease back."""

    def __init__(self, problem: Problem, ledger: Ledger, planner: Planner, *, snapshot: dict[str, Any] | None = None,
                 resume: bool = False, lease_ttl_s: float = lease.LEASE_TTL_S, clock: str = "wall",
                 on_start: StartHook | None = None, resume_hint: str = "open it with resume=True to carry on") -> None:
        """Take the campaign's lease and record its start (see :meth:`_start`).

        ``clock`` is the campaign clock its events are stamped with (``wall``,
        or ``simulated`` for the campaign loop on simulators). ``on_start`` is
        called inside the start's transaction, after ``campaign_started``, to
        settle what the previous controller left (the campaign loop abandons
        proposals it never sent); it returns the events it wrote.
        """
        self.problem, self.ledger, self.planner = problem, ledger, planner
        self._guard = threading.RLock()
        self._snapshot = snapshot if snapshot is not None else problem.snapshot()
        self.state = CampaignState(problem.name)
        self.clock: Clock = WallClock()
        self._followed = 0
        """Ledger position :meth:`follow` has read up to."""
        self._own: set[int] = set()
        """Ids of events this study wrote that :meth:`follow` has not passed yet."""
        self._observations: list[Observation] = []
        """The completed trials as the planner sees them, built once each, in order (see :meth:`observations`)."""
        self._closed = True
        self.epoch = self._start(resume, lease_ttl_s, clock, on_start, resume_hint)
        self._heartbeat = lease.Heartbeat(ledger, problem.name, self.epoch, lease_ttl_s).__enter__()
        self._closed = False

    # --- building -----------------------------------------------------------------

    @classmethod
    def open(cls, config: LabConfig | Mapping[str, Any] | str | Path, ledger: Ledger | str | None = None, *,
             planner: Planner | None = None, resume: bool = False, lease_ttl_s: float = lease.LEASE_TTL_S) -> Study:
        """The study of a campaign config (a :class:`LabConfig`, its dict, or a
        YAML path). ``ledger`` defaults to the config's; ``planner`` to the
        config's planner. Raises :class:`selflab.controller.config.ConfigError` for a
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
        problem = Problem(name=config.name, space=config.space, objectives=tuple(config.objectives),
                          constraints=tuple(config.constraints), seed=config.seed, target_fidelity=config.target_fidelity)
        return cls(problem, ledger, planner or build_planner(config), snapshot=config.model_dump(mode="json"),
                   resume=resume, lease_ttl_s=lease_ttl_s)

    @classmethod
    def create(cls, name: str, space: SearchSpace | Sequence[Parameter], objectives: Sequence[Objective], *,
               ledger: Ledger | str, planner: Planner, constraints: Sequence[OutcomeConstraint] = (), seed: int = 0,
               target_fidelity: float = 1.0, resume: bool = False, lease_ttl_s: float = lease.LEASE_TTL_S) -> Study:
        """A study from Python objects alone: no YAML, no import strings."""
        if not isinstance(space, SearchSpace):
            space = SearchSpace(parameters=list(space))
        problem = Problem(name=name, space=space, objectives=tuple(objectives), constraints=tuple(constraints), seed=seed,
                          target_fidelity=target_fidelity)
        return cls(problem, ledger if isinstance(ledger, Ledger) else Ledger(ledger), planner, resume=resume, lease_ttl_s=lease_ttl_s)

    def _start(self, resume: bool, lease_ttl_s: float, clock: str, on_start: StartHook | None, resume_hint: str) -> int:
        """Take the lease, replay the ledger and record the start, all in one
        write transaction; returns the lease epoch.

        Nothing else can append in between (SQLite's write lock, Postgres's
        append lock, which workers' claims and results take too), so the
        replay sees every event committed before the start, and no worker can
        claim or finish work between the replay and ``campaign_started``.
        Trials asked before and not yet told stay open (their experiments may
        still be running in the lab) unless ``on_start`` settles them.
        Raises :class:`StudyError` (and takes nothing) when the campaign cannot
        start or resume, :class:`selflab.controller.ledger.LedgerError` when another
        controller runs it.
        """
        name = self.problem.name
        with self.ledger.transaction() as conn:
            epoch = lease.acquire(conn, name, lease_ttl_s)
            self.ledger.fence(name, epoch)
            try:
                self.state = CampaignState.replay(name, self.ledger.events(name))
                # A campaign that never proposed anything (its instruments never
                # connected, say) starts afresh, with the config as it is now.
                resumed = self.state.starts > 0 and bool(self.state.experiments)
                if resumed and not resume:
                    raise StudyError(f"the ledger {self.ledger.display_url} already holds campaign {name!r} "
                                     f"({self.state.counts()['completed']} completed experiments); {resume_hint}")
                changed = changed_problem(self.state.config, self._snapshot) if resumed else []
                if changed:
                    raise StudyError(f"the {' and '.join(changed)} differ from those campaign {name!r} was started with; "
                                     "a changed problem needs a new campaign name")
                if resumed and self.state.clock != clock:
                    raise StudyError(f"campaign {name!r} ran on the {self.state.clock} clock and cannot resume on the "
                                     f"{clock} clock; set clock: {self.state.clock}")
                if clock == "simulated":
                    self.clock = SimClock(started_at=self.state.started_at, now=self.state.last_at)
                else:
                    self.clock = WallClock(started_at=self.state.started_at)
                started = NewEvent(campaign=name, kind="campaign_started", at=self.clock.now(),
                                   payload=started_payload(self._snapshot, self.problem.seed, clock, resumed, epoch,
                                                           "study" if on_start is None else "run"))
                for event in self.ledger.insert_events(conn, [started]):
                    self.state.apply(event)
                for event in on_start(conn, self.state, self.clock.now()) if on_start is not None else []:
                    self.state.apply(event)
            except BaseException:
                self.ledger.fence(name, None)
                raise
        self._followed = self.state.last_position
        return epoch

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
        """The planner's next ``n`` proposals, written nowhere (the campaign
        loop records each with its dispatch; :meth:`ask` records them alone).
        The data is read under the study's lock and the planner runs outside
        it, so a model fit in a worker thread never holds up a result."""
        with self._guard:
            context = self.context(fidelities=fidelities, candidates=candidates)
            data = (self.problem.space, self.problem.objectives, self.observations(), self.pending(), n)
        if context.candidates is not None and not context.candidates:
            return []
        started = time.perf_counter()
        proposals = self.planner.propose(*data, context=context)
        seconds = time.perf_counter() - started
        return [p.model_copy(update={"reason": {**p.reason, "proposal_seconds": seconds, "batch_size": len(proposals)}})
                for p in proposals[:n]]

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

    def attach(self, params: Mapping[str, Any], outcomes: Mapping[str, Any], *, fidelity: float = 1.0, by: str = "",
               message: str = "") -> Trial:
        """Record an experiment a person or another tool chose and ran; it
        counts as a completed trial from now on."""
        with self._guard:
            self.follow()
            point = dict(params)
            faults = self.problem.space.violations(point)
            if faults:
                raise StudyError(f"cannot attach {brief(point)}: {'; '.join(faults)}")
            readings = self._readings(outcomes, "the attached experiment")
            eid = self.state.next_experiment_id
            self._append([NewEvent(campaign=self.problem.name, kind="attached", experiment_id=eid, payload={
                "params": point, "outcomes": readings, "fidelity": fidelity, "by": by, "message": message})])
            return self.trial(eid)

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
            if isinstance(self.planner, Recommender):
                context = PlanContext(seed=self.problem.seed, step=self.state.next_experiment_id - 1,
                                      constraints=self.problem.constraints, target_fidelity=self.problem.target_fidelity)
                found = self.planner.recommend(self.problem.space, self.problem.objectives, self.observations(), context=context)
                if found is not None:
                    return found
            objective = self.problem.objectives[0]
            best = self.state.best(objective.name, objective.direction, self.problem.target_fidelity, self.problem.constraints)
            return None if best is None else Recommendation(params=best.params, fidelity=best.fidelity)

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
                              failed=tuple(Pending(params=e.params, fidelity=e.fidelity) for e in self.state.avoided()))
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
                open_trials = len(self.state.with_status("proposed", "dispatched"))
                self._append([NewEvent(campaign=self.problem.name, kind="campaign_stopped", payload={
                    "reason": "closed", "detail": f"study closed with {open_trials} trial(s) awaiting a result"})])
        finally:
            self.release()

    def __enter__(self) -> Study:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # --- inside ----------------------------------------------------------------------------

    def record(self, events: Sequence[NewEvent], work: Sequence[dict[str, Any]] = ()) -> list[Event]:
        """Append events the campaign loop built (dispatches, results, instrument
        and interlock events, its stop), and ``work`` rows for workers, in one
        fenced transaction, and fold them into the projection."""
        with self._guard:
            return self._append(list(events), work)

    def adopt(self, written: Sequence[Event]) -> list[Event]:
        """Fold in events this controller wrote in a work-queue transaction of
        its own (withdrawing or expiring workers' claims, which must change a
        work row and append an event atomically)."""
        with self._guard:
            for event in written:
                self.state.apply(event)
                self._own.add(event.id)
            return list(written)

    def follow(self) -> list[Event]:
        """Fold in the events others wrote since the last call (workers'
        claims and results, say); returns them, in order."""
        with self._guard:
            foreign = []
            for event in self.ledger.events(self.problem.name, after=self._followed):
                self._followed = max(self._followed, event.id)
                if event.id in self._own:
                    self._own.discard(event.id)
                    continue
                self.state.apply(event)
                foreign.append(event)
            return foreign

    def release(self) -> None:
        """Give the campaign's lease back without recording anything (the
        campaign loop records its own stop)."""
        if self._closed:
            return
        self._closed = True
        self._heartbeat.__exit__(None, None, None)
        self.ledger.fence(self.problem.name, None)

    @property
    def lease_lost(self) -> bool:
        """Whether the heartbeat found the lease taken over by another controller."""
        return self._heartbeat.lost.is_set()

    def _append(self, events: list[NewEvent], work: Sequence[dict[str, Any]] = ()) -> list[Event]:
        if self._closed:
            raise StudyError(f"study {self.problem.name!r} is closed; open it again with resume=True")
        if not events and not work:
            return []
        now = self.clock.now()  # (events are stamped on the campaign clock)
        written = self.ledger.append([e if e.at is not None else e.model_copy(update={"at": now}) for e in events], work)
        for event in written:
            self.state.apply(event)
            self._own.add(event.id)
        return written

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


__all__ = ["Problem", "Study", "StudyError", "Trial", "changed_problem", "package_version", "started_payload"]
