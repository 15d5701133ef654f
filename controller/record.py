"""A campaign's record in the ledger: its lease, its start, and every append.

:class:`CampaignRecord` is the plumbing under :class:`selflab.controller.study.Study`
(the public ask/tell API) and so under the runner: it takes the campaign's
lease (:mod:`selflab.controller.lease`), replays the ledger into the
projection (:class:`selflab.controller.projection.CampaignState`) and records
the start, in one transaction; then it appends events (fenced by the lease),
folds in what others wrote (:meth:`CampaignRecord.follow`), and gives the
lease back. The projection it keeps is the only bookkeeping there is. No
asyncio and no instruments here.

Example::

    record = CampaignRecord(problem, Ledger("sqlite:///runs/demo.sqlite"), resume=True)
    record.record([NewEvent(campaign=problem.name, kind="note", payload={"text": "hello", "by": ""})])
    record.release()
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from selflab.controller import lease
from selflab.controller.clock import Clock, SimClock, WallClock
from selflab.controller.identity import process_started
from selflab.controller.ledger import Event, Ledger, NewEvent
from selflab.controller.ledger_errors import LedgerBusy
from selflab.controller.model_health import CalibrationMonitor, verdict_line
from selflab.controller.projection import CampaignState
from selflab.planners.space import Objective, OutcomeConstraint, SearchSpace

log = logging.getLogger("selflab")


def attach_events(state: CampaignState, campaign: str, at: datetime) -> list[NewEvent]:
    """``attached`` events for a person's open attach requests (see :func:`selflab.controller.oversight.fulfil_attach_requests`)."""
    from selflab.controller.oversight import fulfil_attach_requests  # (oversight builds on this module's StudyError)

    return fulfil_attach_requests(state, campaign, at)


StartHook = Callable[[sa.Connection, CampaignState, datetime], list[Event]]
"""Called inside a start's transaction: ``(connection, projection, now) -> events written``."""


class StudyError(ValueError):
    """An action the study refuses (an unknown trial, a result told twice, a
    reading that is not a number); nothing was written. The message says why."""


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
    controller: ``run`` (``selflab run``) or ``study`` (Python ask/tell), and
    its process (host, pid and the process's start time, so that nobody
    signals a process that merely reuses the pid)."""
    return {"config": snapshot, "version": package_version(), "seed": seed, "clock": clock, "resumed": resumed,
            "host": socket.gethostname(), "pid": os.getpid(), "process_started": process_started(os.getpid()) or 0.0,
            "epoch": epoch, "controller": controller}


class CampaignRecord:
    """A campaign's lease, projection and appends (see the module docs)."""

    def __init__(self, problem: Problem, ledger: Ledger, *, snapshot: dict[str, Any] | None = None, resume: bool = False,
                 lease_ttl_s: float = lease.LEASE_TTL_S, clock: str = "wall", on_start: StartHook | None = None,
                 resume_hint: str = "open it with resume=True to carry on") -> None:
        """Take the campaign's lease and record its start (see :meth:`_start`).

        ``clock`` is the campaign clock its events are stamped with (``wall``,
        or ``simulated`` for instruments that declare their durations).
        ``on_start`` is called inside the start's transaction, after
        ``campaign_started``, to settle what the previous controller left
        (``selflab run`` abandons proposals it never sent); it returns the
        events it wrote. Its presence marks the controller as ``run``.
        """
        self.problem, self.ledger = problem, ledger
        self._guard = threading.RLock()
        self._snapshot = snapshot if snapshot is not None else problem.snapshot()
        self.state = CampaignState(problem.name)
        self.clock: Clock = WallClock()
        self._followed = 0
        """Ledger position :meth:`follow` has read up to."""
        self._own: set[int] = set()
        """Ids of events this record wrote that :meth:`follow` has not passed yet."""
        self._stop_recorded = False
        """Whether the last event this record wrote is a ``campaign_stopped``."""
        self._calibration = CalibrationMonitor(problem.outcome_names)
        """Scores results for the model-health verdict (:meth:`check_calibration`)."""
        self._closed = True
        self.epoch = self._start(resume, lease_ttl_s, clock, on_start, resume_hint)
        self._heartbeat = lease.Heartbeat(ledger, problem.name, self.epoch, lease_ttl_s).__enter__()
        self._closed = False

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
        try:
            return self._start_in_transaction(name, resume, lease_ttl_s, clock, on_start, resume_hint)
        except LedgerBusy as busy:  # (a second controller never waits for ever on the first's locks)
            raise lease.refuse_busy(self.ledger, name, busy) from None

    def _start_in_transaction(self, name: str, resume: bool, lease_ttl_s: float, clock: str, on_start: StartHook | None,
                              resume_hint: str) -> int:
        """The start's one transaction, through :meth:`Ledger.write`: a database
        session cut meanwhile runs it again, or, when the cut commit landed,
        keeps what landed (the lease, ``campaign_started``), instead of failing
        the start. So everything it does is done again from the replay."""
        epoch = 0

        def body(conn: sa.Connection) -> list[Event]:
            nonlocal epoch
            epoch = lease.acquire(conn, name, lease_ttl_s)
            self.ledger.fence(name, epoch)
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
            written = self.ledger.insert_events(conn, [started])
            for event in written:
                self.state.apply(event)
            for event in on_start(conn, self.state, self.clock.now()) if on_start is not None else []:
                self.state.apply(event)
                written.append(event)
            for event in self.ledger.insert_events(conn, attach_events(self.state, name, self.clock.now())):
                self.state.apply(event)
                written.append(event)
            return written

        try:
            self.ledger.write(body, lock_wait_s=lease.START_LOCK_WAIT_S)
        except BaseException:
            self.ledger.fence(name, None)
            raise
        self._followed = self.state.last_position
        return epoch

    # --- appending and following ------------------------------------------------------

    def record(self, events: Sequence[NewEvent], work: Sequence[dict[str, Any]] = ()) -> list[Event]:
        """Append events the runner built (dispatches, results, instrument and
        interlock events, its stop), and ``work`` rows for workers, in one
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
        claims and results, a person's actions); returns them, in order. As
        the lease holder, it records a person's open attach requests as
        ``attached`` experiments (:mod:`selflab.controller.oversight`)."""
        with self._guard:
            foreign = []
            for event in self.ledger.events(self.problem.name, after=self._followed):
                self._followed = max(self._followed, event.id)
                if event.id in self._own:
                    self._own.discard(event.id)
                    continue
                self.state.apply(event)
                foreign.append(event)
            if self.state.attach_requests and not self._closed:
                self._append(attach_events(self.state, self.problem.name, self.clock.now()))
            return foreign

    def check_calibration(self) -> list[Event]:
        """After a result: record ``miscalibrated`` / ``calibration_restored``
        when the verdict on the planner's model of an outcome changed against
        what the ledger says (:class:`selflab.controller.model_health.CalibrationMonitor`),
        with one log line each; returns the events written (usually none)."""
        with self._guard:
            events = self._calibration.events(self.state, self.problem.name)
            written = self._append(events) if events else []
        for event in written:
            (log.warning if event.kind == "miscalibrated" else log.info)("%s", verdict_line(event.kind, event.payload))
        return written

    def release(self) -> None:
        """Give the campaign's lease back without recording anything (the
        runner records its own stop)."""
        if self._closed:
            return
        self._closed = True
        self._heartbeat.__exit__(None, None, None)
        self.ledger.fence(self.problem.name, None)

    @property
    def closed(self) -> bool:
        """Whether the lease was given back (nothing more can be recorded)."""
        return self._closed

    @property
    def lease_lost(self) -> bool:
        """Whether the heartbeat found the lease taken over by another controller."""
        return self._heartbeat.lost.is_set()

    @property
    def stop_recorded(self) -> bool:
        """Whether the last event recorded here stopped the campaign (a runner's stop)."""
        return self._stop_recorded

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
        if written:
            self._stop_recorded = written[-1].kind == "campaign_stopped"
        return written


__all__ = ["CampaignRecord", "Problem", "StartHook", "StudyError", "changed_problem", "package_version", "started_payload"]
