"""The campaign loop: plan, route, dispatch, record, until a stop rule holds.

One asyncio task per experiment in flight; the loop itself is the only writer
of the ledger. Every experiment is recorded ``proposed`` and ``dispatched``
(one transaction) *before* its instrument is asked, and its result is recorded
before anything else happens, so a crash at any moment leaves a ledger that
:meth:`Campaign.run` with ``resume=True`` can carry on from: experiments that
were in flight become ``stale`` and their slots are reused; experiments that
were proposed but never sent become ``abandoned``.

Example::

    config = load_config("lab_configs/reactor_demo.yaml")
    ledger = Ledger(config.ledger_url)
    stop = asyncio.run(Campaign(config, ledger).run())
    print(stop.reason)  # "max_experiments"
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from selflab.controller import lease, workqueue
from selflab.controller.clock import Clock, SimClock, WallClock
from selflab.controller.config import Interlock, LabConfig, build_planner
from selflab.controller.events import TERMINAL_KINDS
from selflab.controller.execution import STOP_TIMEOUT_S, check_outcomes, stop_instrument
from selflab.controller.executors import Executor, Flight, LocalExecutor, RemoteExecutor, waiting_for_workers
from selflab.controller.fleet import Station, build_fleet, judged_fidelity
from selflab.controller.interlocks import InterlockState
from selflab.controller.progress import ShowsActivity
from selflab.controller.ledger import Event, LeaseLost, Ledger, NewEvent
from selflab.controller.projection import CampaignState
from selflab.controller.scheduler import (
    Progress,
    Route,
    StopInfo,
    affordable,
    allowance,
    fidelities_on_offer,
    pick_station,
    queued_for,
    route_proposal,
    stop_rule,
    usable_stations,
)
from selflab.controller.study import Problem, Study, StudyError
from selflab.instruments.errors import failure_kind
from selflab.instruments.protocol import Pooled, Remembering, Timed
from selflab.planners.protocol import PlanContext, Planner, Proposal, Recommendation, Recommender
from selflab.planners.space import point_key

log = logging.getLogger("selflab")

MAX_CONSECUTIVE_REFUSALS = 100
"""Proposals in a row that end without being dispatched (refused by limits,
no instrument, a cost that cannot be computed or paid) before the campaign
gives up, rather than fill the ledger with proposals that never run."""


CampaignError = StudyError
"""The campaign cannot start or go on; the message says what to do (a
:class:`selflab.controller.study.StudyError`: one error for both doors)."""


class Display(Protocol):
    """What the loop tells a live progress view (see :mod:`selflab.controller.progress`)."""

    def update(self, state: CampaignState, stations: list[Station], note: str = "") -> None: ...


class _NoDisplay:
    def update(self, state: CampaignState, stations: list[Station], note: str = "") -> None:
        return None


class Campaign:
    """One campaign run (or resumed) against one ledger."""

    def __init__(
        self,
        config: LabConfig,
        ledger: Ledger,
        *,
        resume: bool = False,
        planner: Planner | None = None,
        display: Display | None = None,
        stations: list[Station] | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.resume = resume
        self.planner = planner or build_planner(config)
        self.display: Display = display or _NoDisplay()
        self.stations = stations if stations is not None else build_fleet(config)
        self.state = CampaignState(config.name)
        self.flights: dict[int, Flight] = {}
        self.clock: Clock = WallClock()
        self._stop: StopInfo | None = None
        self._abort = False
        self._wake: asyncio.Future[None] | None = None
        self._refusals = 0
        self._queue: dict[int, tuple[Proposal, list[Station]]] = {}
        """Proposed experiments waiting for a busy instrument that accepts them."""
        self._run_started = time.monotonic()
        self._pool = pool_of(self.stations)
        self.interlocks = InterlockState(self.config.interlocks)
        """Latest readings (read() polls and results) and the interlock pausing dispatch."""
        self._remote = any(s.config.remote for s in self.stations)
        self._local: LocalExecutor | None = None  # (made at the start, once the clock is known)
        self._workers = RemoteExecutor(ledger, config.name, config.stale_policy == "requeue")
        self._last_refusal = ""
        self.study: Study | None = None
        self._fallback_signals: dict[int, Any] = {}
        """Signals handled with ``signal.signal`` where the loop cannot (number -> the handler it replaced)."""
        """The campaign's record (ask/tell over the ledger), open while it runs."""

    # --- the public entry point ---------------------------------------------------

    async def run(self, lease_ttl_s: float = lease.LEASE_TTL_S) -> StopInfo:
        """Run until a stop rule holds, the user interrupts, or nothing can run.

        Raises :class:`selflab.controller.ledger.LedgerError` when another controller
        runs the campaign. Returns ``StopInfo("lease_lost")``, having aborted
        its experiments without recording anything more, when another
        controller takes the campaign over (see :mod:`selflab.controller.lease`).
        """
        study = self._open_study(lease_ttl_s)
        try:
            return await self._run_locked()
        finally:
            study.release()

    async def _run_locked(self) -> StopInfo:
        self._install_signals()
        try:
            await self._connect_all()
            await self._reconcile()
            watchers = [asyncio.create_task(self._watch(lock)) for lock in self.config.interlocks]
            watchers.append(asyncio.create_task(self._follow_ledger()))
            try:
                await self._loop()
            finally:
                for watcher in watchers:
                    watcher.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)
            if self._abort:
                assert self._stop is not None
                self._doing(f"aborting {len(self.flights)} experiment(s) in flight")
                await self._abort_flights(reason=self._stop.reason, message=self._stop.detail,
                                          every_instrument=self._stop.reason == "emergency_stop")
            self._drop_queue()
        except LeaseLost as exc:
            await self._fence_off()
            self._stop = StopInfo("lease_lost", f"another controller took campaign {self.config.name!r} over ({exc}); "
                                  "this one stopped dispatching and recorded nothing more")
            log.error("campaign %s: %s", self.config.name, self._stop.detail)
            return self._stop
        except BaseException as exc:
            await self._abort_flights(reason="error", message=f"controller error: {exc!r}")
            self._drop_queue()
            self._stop = StopInfo("error", f"{type(exc).__name__}: {exc}")
            self._safe_record_stop()
            raise
        finally:
            self._remove_signals()
            await self._close_all()
        assert self._stop is not None
        try:
            self._append([NewEvent(campaign=self.config.name, kind="campaign_stopped",
                                   at=self.clock.now(), payload={"reason": self._stop.reason, "detail": self._stop.detail})])
        except LeaseLost as exc:
            self._stop = StopInfo("lease_lost", f"another controller took campaign {self.config.name!r} over ({exc}); "
                                  "this one recorded nothing more")
            log.error("campaign %s: %s", self.config.name, self._stop.detail)
            return self._stop
        self.display.update(self.state, self.stations)
        log.debug("campaign %s stopped: %s", self.config.name, self._stop.detail or self._stop.reason)  # (the CLI says it once)
        return self._stop

    # --- start and resume -----------------------------------------------------------

    def _open_study(self, lease_ttl_s: float) -> Study:
        """Open the campaign's :class:`Study`: take its lease, replay the ledger
        and record the start in one transaction (see :meth:`Study._start`),
        abandoning what the previous controller proposed and never sent."""
        config = self.config
        problem = Problem(name=config.name, space=config.space, objectives=tuple(config.objectives),
                          constraints=tuple(config.constraints), seed=config.seed, target_fidelity=config.target_fidelity)
        clock_kind = self._clock_kind()
        self.study = Study(problem, self.ledger, self.planner, snapshot=config.model_dump(mode="json"), resume=self.resume,
                           lease_ttl_s=lease_ttl_s, clock=clock_kind, on_start=self._settle_unsent,
                           resume_hint="run with --resume to carry on, or give the campaign another name")
        self.state, self.clock = self.study.state, self.study.clock
        self._local = LocalExecutor(config.name, config.outcome_names, config.space.names, simulated=clock_kind == "simulated")
        if self.state.starts > 1:
            log.info("resuming campaign %s: %d completed so far", config.name, self.state.counts()["completed"])
        else:
            log.info("campaign %s started on the %s clock; ledger %s", config.name, clock_kind, self.ledger.display_url)
        return self.study

    def _settle_unsent(self, conn: Any, state: CampaignState, now: datetime) -> list[Event]:
        """Inside the start's transaction: withdraw the previous run's work no
        worker claimed (so none can claim it now), and abandon what it proposed
        and never sent."""
        name = self.config.name
        written: list[Event] = []
        if self._remote:
            written += workqueue.settle_in(conn, self.ledger, name, "open", "cancelled", lambda eid, inst: NewEvent(
                campaign=name, kind="abandoned", experiment_id=eid, instrument=inst, at=now,
                payload={"reason": "not_dispatched", "message": "queued for a worker but not claimed before the controller stopped"}))
        withdrawn = {e.experiment_id for e in written}
        written += self.ledger.insert_events(conn, [
            NewEvent(campaign=name, kind="abandoned", experiment_id=exp.experiment_id, at=now,
                     payload={"reason": "not_dispatched", "message": "proposed but not sent before the controller stopped"})
            for exp in state.with_status("proposed") if exp.experiment_id not in withdrawn])
        return written

    async def _reconcile(self) -> None:
        """Settle experiments that were in flight when the controller stopped.

        An instrument that remembers the outcome (optional ``outcome_of(params)``)
        has it adopted as ``completed`` (``recovered``); every other one becomes
        ``stale``, and with ``stale_policy: requeue`` its params are owed a new
        run, recorded in the stale event (:meth:`CampaignState.requeues_owed`).
        """
        name, now = self.config.name, self.clock.now()
        stations = {s.name: s for s in self.stations}
        events: list[NewEvent] = []
        for exp in self.state.with_status("dispatched"):
            station = stations.get(exp.instrument or "")
            if station is not None and station.config.remote:  # its worker may still be at it: wait for it again
                self.flights[exp.experiment_id] = self._workers.launch(exp.experiment_id, station, station.take_slot(), exp.params, None)
                continue
            outcomes = await self._recovered_outcome(station, exp.params) if station is not None else None
            if outcomes is not None:
                events.append(NewEvent(campaign=name, kind="completed", experiment_id=exp.experiment_id, instrument=exp.instrument,
                                       at=now, payload={"outcomes": outcomes, "recovered": True}))
                log.info("experiment %d: %s reported the outcome it finished while the controller was down: %s",
                         exp.experiment_id, exp.instrument, _fmt(outcomes))
                continue
            events.append(NewEvent(campaign=name, kind="stale", experiment_id=exp.experiment_id, instrument=exp.instrument,
                                   at=now, payload={"message": "in flight when the controller stopped; its result is unknown",
                                                    "requeue": self.config.stale_policy == "requeue"}))
        written = self._append(events)
        stale = [self.state.experiments[e.experiment_id or 0] for e in written if e.kind == "stale"]
        requeue = self.config.stale_policy == "requeue"
        if stale:
            log.warning("%d experiment(s) in flight at the last stop are stale%s", len(stale), "; requeued as new experiments" if requeue else "")
        owed = self.state.requeues_owed()
        if len(owed) > len(stale):
            log.info("%d stale experiment(s) of earlier stops are still owed a new run; requeued first", len(owed) - len(stale))

    async def _recovered_outcome(self, station: Station, params: dict[str, Any]) -> dict[str, float] | None:
        if not isinstance(station.driver, Remembering) or not station.online:
            return None
        try:
            result = await asyncio.wait_for(station.driver.outcome_of(dict(params)), timeout=station.config.timeout)
            return None if result is None else check_outcomes(result, self.config.outcome_names, station.name,
                                                              parameters=self.config.space.names)
        except Exception as exc:  # an unreadable memory is no outcome: the experiment goes stale
            log.warning("instrument %s could not report a past outcome: %s: %s", station.name, failure_kind(exc), exc)
            return None

    def _clock_kind(self) -> str:
        if self.config.clock != "auto":
            return self.config.clock
        timed = all(isinstance(s.driver, Timed) and not s.config.remote for s in self.stations)
        return "simulated" if timed else "wall"

    # --- instruments ------------------------------------------------------------------

    def _doing(self, text: str) -> None:
        """Tell a live display what the controller is doing now."""
        if isinstance(self.display, ShowsActivity):
            self.display.activity(text)

    async def _connect_all(self) -> None:
        self._doing(f"connecting to {sum(not s.config.remote for s in self.stations)} instrument(s)")
        events = []
        for station in self.stations:
            if station.config.remote:
                continue  # its worker connects it, on its own host
            try:
                await asyncio.wait_for(station.driver.connect(), timeout=station.config.timeout)
            except Exception as exc:  # any driver failure takes that instrument offline, not the campaign
                station.offline_reason = f"connect failed: {failure_kind(exc)}: {exc}"
                log.error("instrument %s is offline: %s", station.name, station.offline_reason)
                events.append(NewEvent(campaign=self.config.name, kind="instrument_offline", instrument=station.name,
                                       at=self.clock.now(), payload={"reason": station.offline_reason}))
                continue
            previous = self.state.instruments.get(station.name)
            if previous is not None and previous.offline_reason is not None:
                log.info("instrument %s is back online (was: %s)", station.name, previous.offline_reason)
                events.append(NewEvent(campaign=self.config.name, kind="instrument_online", instrument=station.name,
                                       at=self.clock.now(), payload={"reason": "connected on resume"}))
        self._append(events)

    async def _close_all(self) -> None:
        for station in self.stations:
            if station.config.remote:
                continue
            try:
                await asyncio.wait_for(station.driver.close(), timeout=STOP_TIMEOUT_S)
            except Exception as exc:
                log.warning("instrument %s did not close cleanly: %s", station.name, exc)

    # --- the loop -------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._abort:
            if self.study is not None and self.study.lease_lost:
                raise LeaseLost("the lease heartbeat found it held by another controller")
            if self._stop is None:
                self._stop = self._stop_rule()
            if self._stop is None and self.interlocks.paused_by is None:
                await self._fill_slots()
            if not self.flights and self.interlocks.paused_by is not None and self._stop is None:
                self._doing(f"paused by interlock: {self.interlocks.paused_by.pause_when}")
                await self._wait_for_wake(self.interlocks.paused_by.poll)
                continue
            if self._stop is not None and any(f.remote for f in self.flights.values()):
                self._withdraw_open_work("the campaign stopped before a worker claimed it")
            if not self.flights:
                if self._stop is not None or self._abort:
                    break
                if not any(s.online for s in self.stations):
                    self._stop = StopInfo("no_instruments", "every instrument is offline; see instrument_offline events")
                    break
                if self._refusals >= MAX_CONSECUTIVE_REFUSALS:
                    self._stop = StopInfo("refusals", f"{self._refusals} proposals in a row could not be dispatched; "
                                          f"the last: {self._last_refusal}")
                    break
                continue
            self._doing(self._waiting_note())
            finished = await self._next_done()
            for flight in finished:
                self._record(flight)
            if any(not f.task.cancelled() and f.task.exception() is None for f in finished):
                await self._recommend()

    def _stop_rule(self) -> StopInfo | None:
        rules = self.config.stop
        target = None
        best = None
        if rules.target is not None:
            objective = next(o for o in self.config.objectives if o.name == (rules.target.objective or self.config.objectives[0].name))
            target = (objective.name, objective.direction)
            found = self.state.best(objective.name, objective.direction, self._judged_fidelity(), self.config.constraints)
            best = (found.outcomes[objective.name], found.experiment_id) if found is not None else None
        progress = Progress(completed=self.state.counts()["completed"], cost_spent=self.state.cost_spent, in_flight=len(self.flights),
                            elapsed_s=self.clock.elapsed_s(), wall_s=time.monotonic() - self._run_started, clock=self._clock_kind(),
                            target_best=best)
        return stop_rule(rules, progress, self._usable(), target)

    def _usable(self) -> list[Station]:
        return usable_stations(self.stations, bool(getattr(self.planner, "multi_fidelity", False)), self.config.target_fidelity)

    def _allowance(self, launching: int = 0, committed: float = 0.0) -> int:
        """How many more experiments the budget allows to be proposed now,
        counting ``launching`` experiments (costing ``committed``) dispatched
        in this round but not yet in flight."""
        return allowance(self._usable(), self.config.stop, completed=self.state.counts()["completed"],
                         in_flight=len(self.flights) + launching, queued=len(self._queue),
                         cost_spent=self.state.cost_spent + committed)

    def _budget_left(self) -> float:
        if self.config.stop.max_cost is None:
            return math.inf
        return self.config.stop.max_cost - self.state.cost_spent

    async def _fill_slots(self) -> None:
        """Dispatch queued proposals whose instrument is free, then ask for more."""
        name, now = self.config.name, self.clock.now()
        events: list[NewEvent] = []
        launches: list[tuple[int, Station, int, dict[str, Any]]] = []
        work: list[dict[str, Any]] = []
        budget_left = self._budget_left()
        for eid, (proposal, accepting) in list(self._queue.items()):
            station = pick_station(accepting, budget_left, proposal.params)
            online = [s for s in accepting if s.online]
            if station is None and affordable(accepting, budget_left, proposal.params):
                continue  # still waiting for one of its instruments
            del self._queue[eid]
            if station is None:
                why = "its instruments went offline" if not online else "the budget left cannot pay for it"
                events.append(NewEvent(campaign=name, kind="abandoned", experiment_id=eid, at=now,
                                       payload={"reason": "no_instrument", "message": f"queued, but {why}"}))
                self._refused(f"queued, but {why}")
                continue
            self._refusals = 0
            budget_left -= station.cost_of(proposal.params)
            event, slot = self._dispatch_event(eid, station, proposal, now, work)
            events += [event] if event else []
            launches.append((eid, station, slot, dict(proposal.params)))

        n = self._allowance(len(launches), self._budget_left() - budget_left if math.isfinite(budget_left) else 0.0)
        proposals = [Proposal(params=e.params, fidelity=e.fidelity, reason={"strategy": "requeue", "requeue_of": e.experiment_id})
                     for e in self.state.requeues_owed()[:n]]
        if n > len(proposals):
            proposals += await self._propose(n - len(proposals))
        assert self.study is not None
        if n > 0 and not proposals and not self.flights and not self._queue and self._stop is None:
            self._stop = StopInfo("planner_exhausted", f"planner {self.config.planner.kind} had nothing more to propose")
        first_id = self.state.next_experiment_id
        for i, proposal in enumerate(proposals[:n]):
            eid = first_id + i
            params = dict(proposal.params)
            events += self.study.proposed_events([proposal], first=eid)
            route = self._accepting(proposal)
            accepting = list(route.accepting)
            station = pick_station(accepting, budget_left, params)
            if station is not None:
                self._refusals = 0
                budget_left -= station.cost_of(params)
                event, slot = self._dispatch_event(eid, station, proposal, now, work)
                events += [event] if event else []
                launches.append((eid, station, slot, params))
            elif accepting and queued_for(accepting, [a for _, a in self._queue.values()]) < sum(s.capacity for s in accepting):
                self._queue[eid] = (proposal, accepting)  # an accepting instrument is busy: wait for it
            else:
                reason, message = (route.reason, route.message) if not accepting else (
                    "no_instrument", "every instrument that accepts it is busy with a queue")
                events.append(NewEvent(campaign=name, kind="abandoned", experiment_id=eid, at=now,
                                       payload={"reason": reason, "message": message}))
                log.warning("experiment %d refused: %s", eid, message)
                self._refused(message)
        self._append(events, work)
        for eid, station, slot, params in launches:
            self._launch(eid, station, slot, params)
        if launches:
            self.display.update(self.state, self.stations)

    def _waiting_note(self) -> str:
        n = len(self.flights)
        if self._stop is not None:
            return f"stopping ({self._stop.reason}): waiting for {n} experiment(s) in flight"
        if self.interlocks.paused_by is not None:
            return f"paused by interlock: {self.interlocks.paused_by.pause_when}; waiting for {n} in flight"
        return f"waiting for {n} experiment(s) in flight"

    def _refused(self, message: str) -> None:
        """Count a proposal that ended without being dispatched (reset by a dispatch)."""
        self._refusals += 1
        self._last_refusal = message

    def _executor(self, station: Station) -> Executor:
        if station.config.remote:
            return self._workers
        assert self._local is not None
        return self._local

    def _dispatch_event(self, eid: int, station: Station, proposal: Proposal, now: datetime,
                        work: list[dict[str, Any]]) -> tuple[NewEvent | None, int]:
        """Take a slot on ``station``; the dispatch event for the ledger (a
        remote station's experiment goes into ``work`` for its worker
        instead, which records the dispatch when it claims it), and the slot."""
        slot = station.take_slot()
        event, row = self._executor(station).dispatch_record(eid, station, slot, dict(proposal.params), proposal.fidelity, now)
        if row is not None:
            work.append(row)
        return event, slot

    def _launch(self, eid: int, station: Station, slot: int, params: dict[str, Any]) -> None:
        """Start the experiment whose dispatch the ledger now holds."""
        duration = self.state.experiments[eid].expected_duration_s
        due = self.clock.at(duration or 0.0) if isinstance(self.clock, SimClock) and not station.config.remote else None
        self.flights[eid] = self._executor(station).launch(eid, station, slot, params, due)

    async def _propose(self, n: int) -> list[Proposal]:
        """The planner's next ``n`` proposals for the fidelities on offer (and
        the pool's unmeasured points), fitted off the event loop."""
        assert self.study is not None
        fidelities = fidelities_on_offer(self.stations, [a for _, a in self._queue.values()])
        self._doing(f"proposing {n} (fitting {self.config.planner.kind})")
        try:
            if getattr(self.planner, "blocking", True):  # fit models off the loop: instruments keep running
                return await asyncio.to_thread(self.study.propose, n, fidelities=fidelities, candidates=self._pool)
            return self.study.propose(n, fidelities=fidelities, candidates=self._pool)
        except Exception as exc:
            log.exception("planner %s failed", self.config.planner.kind)
            self._stop = StopInfo("planner_error", f"planner {self.config.planner.kind} failed: {type(exc).__name__}: {exc}")
            return []

    def _accepting(self, proposal: Proposal) -> Route:
        return route_proposal(proposal.params, proposal.fidelity, self.config.space, self.stations)

    async def _next_done(self) -> list[Flight]:
        """The flights that finish next, in experiment order: on the simulated
        clock the first one due and every other one due at that same instant
        (already done), in real time every one done by now; empty when woken by
        a signal or a time limit first.

        All results of one instant are recorded before the planner is asked
        again, as a controller watching the lab would see them: with 4 slots
        of equal duration the planner proposes 4 points knowing all 4 results,
        not one point with 3 finished experiments still taken for pending.
        """
        if self._wake is None or self._wake.done():
            self._wake = asyncio.get_running_loop().create_future()
        if isinstance(self.clock, SimClock):
            flight = min(self.flights.values(), key=lambda f: (f.due or self.clock.now(), f.experiment_id))
            if not flight.task.done():
                await asyncio.wait({flight.task, self._wake}, return_when=asyncio.FIRST_COMPLETED)
            if not flight.task.done():
                return []
            if flight.due is None:
                return [self.flights.pop(flight.experiment_id)]
            self.clock.advance_to(flight.due)
            same = [f for f in self.flights.values() if f is flight or (f.due == flight.due and f.task.done())]
        else:
            tasks = {f.task: f for f in self.flights.values()}
            done, _ = await asyncio.wait(set(tasks) | {self._wake}, timeout=self._time_left(), return_when=asyncio.FIRST_COMPLETED)
            same = [tasks[t] for t in done if t in tasks]
        return [self.flights.pop(f.experiment_id) for f in sorted(same, key=lambda f: f.experiment_id)]

    def _wake_up(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _time_left(self) -> float | None:
        rules, left = self.config.stop, []
        if rules.max_time is not None:
            left.append(rules.max_time - self.clock.elapsed_s())
        if rules.max_wall_time is not None:
            left.append(rules.max_wall_time - (time.monotonic() - self._run_started))
        return max(min(left), 0.0) + 0.01 if left else None

    def _record(self, flight: Flight) -> None:
        """Record how a flight ended (a remote one's end is in the ledger already), then its consequences."""
        flight.station.busy.discard(flight.slot)
        if flight.due is not None and isinstance(self.clock, SimClock):
            took = (flight.due - self.state.experiments[flight.experiment_id].started_at).total_seconds()  # type: ignore[operator]
        else:
            took = time.monotonic() - flight.started
        event = self._executor(flight.station).end(flight, self.clock.now(), took)
        if event is not None:
            self._append([event])
        self._after_end(flight)

    def _after_end(self, flight: Flight) -> None:
        """What an ended experiment means, wherever it ran: a result resets its
        instrument's failure count and feeds the interlocks; a failure counts
        towards taking the instrument offline, and the planner avoids its point."""
        station, eid = flight.station, flight.experiment_id
        exp = self.state.experiments[eid]
        where = f"{station.name} (worker)" if flight.remote else station.name
        if exp.status == "completed":
            station.consecutive_failures = 0
            self._update_readings(station.name, exp.outcomes)
            log.info("experiment %d completed on %s: %s%s", eid, where, _fmt(exp.outcomes), self._best_note())
        elif exp.status == "failed":
            station.consecutive_failures += 1
            log.warning("experiment %d failed on %s: %s", eid, where, exp.error)
            limit = station.config.max_consecutive_failures
            if station.consecutive_failures >= limit and station.online:
                station.offline_reason = f"{limit} consecutive failures, the last: {exp.error}"
                self._append([NewEvent(campaign=self.config.name, kind="instrument_offline", instrument=station.name,
                                       at=self.clock.now(), payload={"reason": station.offline_reason})])
                log.error("instrument %s taken offline after %d consecutive failures; the campaign goes on with the others", station.name, limit)
        self.display.update(self.state, self.stations)

    async def _recommend(self) -> None:
        """Record the campaign's recommendation when it changes (one objective).

        A planner with ``recommend()`` gives its best predicted point at the
        target fidelity; otherwise it is the best feasible observation there.
        """
        if len(self.config.objectives) != 1:
            return  # several objectives: the Pareto set is the answer
        objective = self.config.objectives[0]
        recommendation: Recommendation | None = None
        if isinstance(self.planner, Recommender):
            context = PlanContext(seed=self.config.seed, step=self.state.next_experiment_id - 1,
                                  constraints=tuple(self.config.constraints), target_fidelity=self.config.target_fidelity)
            observations = self.study.observations() if self.study is not None else []
            if self._pool is not None:  # (a planner that scales inputs by the pool sees the same pool as in propose)
                measured = {point_key(o.params) for o in observations}
                context = context.model_copy(update={"candidates": tuple(p for p in self._pool if point_key(p) not in measured)})
            args = (self.config.space, self.config.objectives, observations)
            try:
                if getattr(self.planner, "blocking", True):
                    self._doing(f"recommending (fitting {self.config.planner.kind})")
                    recommendation = await asyncio.to_thread(self.planner.recommend, *args, context=context)
                else:
                    recommendation = self.planner.recommend(*args, context=context)
            except Exception as exc:  # a recommendation is advice: never stop the campaign for it
                log.warning("planner %s could not recommend: %s: %s", self.config.planner.kind, type(exc).__name__, exc)
        payload: dict[str, Any]
        if recommendation is not None:
            payload = {"params": recommendation.params, "fidelity": recommendation.fidelity,
                       "predicted": recommendation.predicted, "basis": recommendation.basis}
        else:
            best = self.state.best(objective.name, objective.direction, self.config.target_fidelity, self.config.constraints)
            if best is None:
                return
            payload = {"params": best.params, "fidelity": best.fidelity, "observed": best.outcomes,
                       "basis": "best_observed", "experiment_id": best.experiment_id}
        previous = self.state.recommendation
        if previous is not None and previous.get("params") == payload["params"] and previous.get("basis") == payload["basis"]:
            return
        self._append([NewEvent(campaign=self.config.name, kind="recommended", at=self.clock.now(), payload=payload)])

    def _judged_fidelity(self) -> float | None:
        return judged_fidelity(self.stations, self.config.target_fidelity)

    def _best_note(self) -> str:
        objective = self.config.objectives[0]
        best = self.state.best(objective.name, objective.direction, self._judged_fidelity(), self.config.constraints)
        if best is None:
            return ""
        return f" | best {objective.name}={best.outcomes[objective.name]:.4g} (experiment {best.experiment_id})"

    # --- what others write: stop requests, and remote instruments (selflab worker) -----------

    async def _follow_ledger(self, every_s: float = 0.25) -> None:
        """Follow what others write to the ledger (a person's stop request,
        workers' claims and results), and expire dead workers' leases."""
        assert self.study is not None
        idle_since = time.monotonic()
        while True:
            for event in self.study.follow():
                if event.kind == "stop_requested":
                    self._on_stop_requested(event.payload)
                    continue
                self._settle_remote(event)
                idle_since = time.monotonic()
            if not self._remote:
                await asyncio.sleep(every_s)
                continue
            expired = self.study.adopt(self._workers.expire(self.clock.now))
            for event in expired:
                log.warning("experiment %d on %s is stale: its worker's lease ran out", event.experiment_id, event.instrument)
                self._settle_remote(event)
            waiting = waiting_for_workers(self.flights.values(), lambda eid: self.state.experiments[eid].status == "proposed")
            if waiting and time.monotonic() - idle_since > 30:
                log.warning("waiting for a worker to claim experiments for %s: start one on their host with "
                            "selflab worker CONFIG --ledger URL --instruments %s", ", ".join(waiting), ",".join(waiting))
                idle_since = time.monotonic()
            await asyncio.sleep(every_s)

    def _settle_remote(self, event: Event) -> None:
        """Take in a worker's record: an instrument it took offline, or the end of a flight."""
        if event.kind == "instrument_offline" and event.instrument:
            for station in self.stations:
                if station.name == event.instrument and station.online:
                    station.offline_reason = event.payload.get("reason", "")
            return
        RemoteExecutor.settle(event, self.flights, lambda eid: self.state.experiments[eid].error)

    def _withdraw_open_work(self, why: str) -> None:
        """Take back experiments no worker has claimed yet (abandoned, atomically)."""
        if not self._remote:
            return
        assert self.study is not None
        for event in self.study.adopt(self._workers.withdraw(why, self.clock.now())):
            self._settle_remote(event)

    # --- interlocks ---------------------------------------------------------------------

    async def _watch(self, lock: Interlock) -> None:
        """Poll the watched instrument's ``read()`` every ``lock.poll`` seconds."""
        station = next(s for s in self.stations if s.name == lock.pause_when.instrument)
        while True:
            try:
                readings = await asyncio.wait_for(station.driver.read(), timeout=min(lock.poll * 4, station.config.timeout))
                self._update_readings(station.name, check_outcomes(readings, [], station.name, recorded=False))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed poll is logged; the interlock keeps its last state
                log.warning("interlock on %s: read() failed: %s: %s", station.name, failure_kind(exc), exc)
            await asyncio.sleep(lock.poll)

    def _update_readings(self, instrument: str, readings: Mapping[str, float]) -> None:
        for change in self.interlocks.update(instrument, readings):
            if change.kind == "paused":
                log.warning("interlock: %s (%s = %g): dispatch paused; %d experiment(s) in flight will finish",
                            change.rule, change.reading, change.value, len(self.flights))
            else:
                log.warning("interlock: %s = %g: dispatch resumed", change.reading, change.value)
            self._append([NewEvent(campaign=self.config.name, kind=change.kind, instrument=change.instrument,
                                   at=self.clock.now(), payload=change.payload)])
            if change.kind == "paused":
                self.display.update(self.state, self.stations, note=f"paused by interlock: {change.rule}")
            else:
                self._wake_up()

    async def _wait_for_wake(self, timeout: float) -> None:
        if self._wake is None or self._wake.done():
            self._wake = asyncio.get_running_loop().create_future()
        await asyncio.wait({self._wake}, timeout=timeout)

    # --- stopping -----------------------------------------------------------------------

    def _signals(self) -> list[tuple[int, Any]]:
        """The signals the loop handles where the platform has them (SIGUSR1 is
        POSIX only: the emergency stop also comes through the ledger)."""
        handlers = [(signal.SIGINT, self._on_interrupt), (signal.SIGTERM, self._on_terminate)]
        usr1 = getattr(signal, "SIGUSR1", None)
        return handlers + ([(usr1, self._on_emergency_stop)] if usr1 is not None else [])

    def _install_signals(self) -> None:
        """Handle Ctrl-C, SIGTERM (and SIGUSR1) on the loop. Where the loop
        cannot (Windows' proactor loop), plain ``signal.signal`` handlers hand
        the signal to the loop, so Ctrl-C still stops gracefully; off the main
        thread there are no signals at all (stop requests still come through
        the ledger)."""
        loop = asyncio.get_running_loop()
        for number, handler in self._signals():
            try:
                loop.add_signal_handler(number, handler)
            except NotImplementedError:
                try:
                    self._fallback_signals[number] = signal.signal(
                        number, lambda _n, _f, handler=handler: loop.call_soon_threadsafe(handler))
                except ValueError:  # not the main thread
                    return
            except (RuntimeError, ValueError):  # not the main thread, or no such signal here
                return

    def _remove_signals(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            for number, _ in self._signals():
                if number in self._fallback_signals:
                    signal.signal(number, self._fallback_signals[number])
                else:
                    loop.remove_signal_handler(number)
        except (NotImplementedError, RuntimeError, ValueError):
            pass

    def _on_interrupt(self) -> None:
        if self._stop is not None and self._stop.reason == "interrupted":
            log.warning("second Ctrl-C: aborting %d experiment(s) in flight", len(self.flights))
            self._abort = True
        else:
            self._stop = StopInfo("interrupted", "stopped by Ctrl-C (SIGINT)")
            if self.flights:
                log.warning("Ctrl-C: no new experiments; waiting for %d in flight (Ctrl-C again to abort them)", len(self.flights))
        self._wake_up()

    def _on_terminate(self) -> None:
        log.warning("SIGTERM: aborting %d experiment(s) in flight", len(self.flights))
        self._stop = StopInfo("terminated", "stopped by SIGTERM")
        self._abort = True
        self._wake_up()

    def _on_emergency_stop(self) -> None:
        log.error("EMERGENCY STOP (selflab stop): aborting %d experiment(s) in flight through stop()", len(self.flights))
        self._stop = StopInfo("emergency_stop", "emergency stop requested with selflab stop")
        self._abort = True
        self._wake_up()

    def _on_stop_requested(self, request: Mapping[str, Any]) -> None:
        """A ``stop_requested`` event read from the ledger (``selflab stop``, any host)."""
        who = f" with {request['by']}" if request.get("by") else ""
        why = f": {request['reason']}" if request.get("reason") else ""
        where = f" ({request['origin']})" if request.get("origin") else ""
        if request.get("emergency", True):
            log.error("EMERGENCY STOP requested%s%s%s: aborting %d experiment(s) in flight through stop()", who, where, why, len(self.flights))
            self._stop = StopInfo("emergency_stop", f"emergency stop requested{who}{why}")
            self._abort = True
        elif self._stop is None:
            log.warning("stop requested%s%s: no new experiments; waiting for %d in flight", who, why, len(self.flights))
            self._stop = StopInfo("stop_requested", f"stop requested{who}{why}")
        self._wake_up()

    async def _abort_flights(self, reason: str = "interrupted", message: str = "aborted when the campaign was stopped",
                             every_instrument: bool = False) -> None:
        """Cancel every experiment in flight, ``stop()`` its instrument (or, for an
        emergency stop, every instrument) and record them as abandoned."""
        if every_instrument:
            for station in self.stations:
                if station.online and not station.busy:
                    await stop_instrument(station)
        self._withdraw_open_work("the campaign was stopped")
        flights = list(self.flights.values())
        self.flights.clear()
        for flight in flights:
            flight.station.busy.discard(flight.slot)
        aborted: list[Flight] = []
        for executor in (self._local, self._workers):
            mine = [f for f in flights if self._executor(f.station) is executor]
            if executor is not None and mine:
                aborted += await executor.abort(mine)
        if not aborted:
            return
        now = self.clock.now()
        events = [NewEvent(campaign=self.config.name, kind="abandoned", experiment_id=f.experiment_id,
                           instrument=f.station.name, at=now, payload={"reason": reason, "message": message})
                  for f in aborted]
        try:
            self._append(events)
        except Exception as exc:  # the ledger itself may be what failed; resume will mark them stale
            log.error("could not record aborted experiments: %s", exc)

    async def _fence_off(self) -> None:
        """Another controller owns the campaign now: abort every local experiment
        in flight through ``stop()`` and forget them, writing nothing (the new
        controller marks them stale)."""
        local = [f for f in self.flights.values() if not f.remote]
        if local and self._local is not None:
            await self._local.abort(local)
            log.error("aborted %d experiment(s) in flight: the campaign's new controller records them as stale", len(local))
        self.flights.clear()
        self._queue.clear()

    def _drop_queue(self) -> None:
        """Record queued proposals that will not run now as abandoned."""
        if not self._queue:
            return
        now = self.clock.now()
        events = [NewEvent(campaign=self.config.name, kind="abandoned", experiment_id=eid, at=now,
                           payload={"reason": "not_dispatched", "message": "queued for a busy instrument when the campaign stopped"})
                  for eid in self._queue]
        self._queue.clear()
        try:
            self._append(events)
        except Exception as exc:  # resume will mark them abandoned
            log.error("could not record queued experiments: %s", exc)

    def _safe_record_stop(self) -> None:
        try:
            assert self._stop is not None
            self._append([NewEvent(campaign=self.config.name, kind="campaign_stopped", at=self.clock.now(),
                                   payload={"reason": self._stop.reason, "detail": self._stop.detail})])
        except Exception as exc:
            log.error("could not record the stop: %s", exc)

    # --- the ledger ---------------------------------------------------------------------

    def _append(self, events: list[NewEvent], work: list[dict[str, Any]] | None = None) -> list[Event]:
        """Record through the campaign's study (fenced, folded into the projection)."""
        assert self.study is not None, "the campaign has not started"
        return self.study.record(events, work or ())


def pool_of(stations: list[Station]) -> list[dict[str, Any]] | None:
    """The measurable points of pool instruments (``candidates()``), or ``None``
    when no instrument restricts its inputs to a pool."""
    pools = [s.driver.candidates() for s in stations if isinstance(s.driver, Pooled)]
    if not pools:
        return None
    seen: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
    for pool in pools:
        for point in pool:
            seen.setdefault(point_key(point), dict(point))
    return list(seen.values())


def _fmt(outcomes: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in outcomes.items())


__all__ = ["Campaign", "CampaignError", "StopInfo", "TERMINAL_KINDS", "check_outcomes"]
