"""The runner: the thin async loop that drives a study with instruments.

Ask, route, submit, await, tell, until a stop rule holds. The runner is the
only module that knows the :class:`~selflab.controller.study.Study` (the
record, and the one door into the ledger), the scheduler's pure decisions
(:mod:`selflab.controller.scheduler`) and the executors (through
:class:`~selflab.controller.flights.Flights`). Beside the loop it runs the
interlock watchers and follows the ledger (a person's stop request, workers'
claims and results), and handles signals and aborts
(:class:`~selflab.controller.stopping.StopControl`).

Every experiment is recorded ``proposed`` and ``dispatched`` *before* its
instrument is asked, and its result before the planner is asked again, so a
crash at any moment leaves a ledger that a resumed runner carries on from.

Example, from Python objects (no YAML, no import strings)::

    study = Study.create("demo", space, [Objective(name="y", direction="minimize")],
                         ledger="sqlite:///runs/demo.sqlite", planner=SobolPlanner(), clock="simulated")
    stop = asyncio.run(Runner(study, instruments={"sim": BraninInstrument()},
                              stop={"max_experiments": 20}).run())
    print(stop.reason)  # "max_experiments"

and from a config, as ``selflab run`` does::

    stop = asyncio.run(Runner.from_config(load_config("lab.yaml"), Ledger(url)).run())
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from selflab.controller import lease
from selflab.controller.clock import SimClock
from selflab.controller.config import Interlock, LabConfig, StopRules, build_planner
from selflab.controller.config_models import OversightConfig
from selflab.controller.connections import close_all, connect_all
from selflab.controller.dispatch import Dispatcher
from selflab.controller.execution import check_outcomes, stop_instrument
from selflab.controller.executors import Flight, LocalExecutor, RemoteExecutor
from selflab.controller.fleet import Station, build_fleet, clock_of, judged_fidelity, pool_of
from selflab.controller.flights import Flights
from selflab.controller.following import LedgerFollower
from selflab.controller.instrument_settings import InstrumentSettings, objects_campaign
from selflab.controller.interlocks import InterlockState
from selflab.controller.ledger import LeaseLost, Ledger, NewEvent
from selflab.controller.progress import ShowsActivity
from selflab.controller.projection import CampaignState
from selflab.controller.recommending import best_note, record_recommendation
from selflab.controller.resume import fmt, reconcile, settle_unsent
from selflab.controller.scheduler import Progress, StopInfo, stop_rule
from selflab.controller.stopping import StopControl
from selflab.controller.study import Study, problem_of
from selflab.instruments.errors import failure_kind
from selflab.planners.protocol import Planner

log = logging.getLogger("selflab")

MAX_CONSECUTIVE_REFUSALS = 100
"""Proposals in a row that end without being dispatched (refused by limits,
no instrument, a cost that cannot be computed or paid) before the run gives
up, rather than fill the ledger with proposals that never run."""


class Display(Protocol):
    """What the runner tells a live progress view (see :mod:`selflab.controller.progress`)."""

    def update(self, state: CampaignState, stations: list[Station], note: str = "") -> None: ...


class _NoDisplay:
    def update(self, state: CampaignState, stations: list[Station], note: str = "") -> None:
        return None


class Runner:
    """Drives one study with instruments until a stop rule holds (see the module docs)."""

    def __init__(self, study: Study, instruments: Mapping[str, object], *,
                 settings: Mapping[str, InstrumentSettings | Mapping[str, Any]] | None = None,
                 stop: StopRules | Mapping[str, Any] | None = None, interlocks: Sequence[Interlock | Mapping[str, Any]] = (),
                 stale_policy: str = "requeue", oversight: OversightConfig | Mapping[str, Any] | None = None,
                 display: Display | None = None) -> None:
        """A runner for an open ``study`` on instrument objects (``name ->
        object``, each with async ``connect()``, ``run(params)`` and
        ``close()``). ``settings`` gives some of them an
        :class:`~selflab.controller.instrument_settings.InstrumentSettings` (or a
        dict of its fields: capacity, fidelity, cost, limits, timeout,
        retries, ...); ``stop`` the stop rules (a
        :class:`~selflab.controller.config.StopRules` or a dict such as
        ``{"max_experiments": 20}``; ``None``: until Ctrl-C or the planner has
        nothing more to propose); ``interlocks`` and ``stale_policy`` are as
        in a config; ``oversight`` is a config's ``oversight`` (an
        :class:`~selflab.controller.config_models.OversightConfig` or a dict
        such as ``{"approval": "all"}``: proposals then await a person's
        approval, given through :meth:`Study.approve` or ``selflab approve``).
        Raises :class:`~selflab.controller.config.ConfigError`
        naming each bad instrument or setting. The study stays open after
        :meth:`run`: close it (its ``with`` block) when done."""
        config, stations = objects_campaign(study, instruments, settings, stop=stop, interlocks=interlocks,
                                            stale_policy=stale_policy, oversight=oversight)
        if oversight is not None:  # (the study's snapshot, from Study.create, has no oversight section)
            study.keep_away_from_vetoed(config.oversight.veto_radius)
        self._setup(study, config, stations, display, owns_study=False)

    @classmethod
    def from_config(cls, config: LabConfig, ledger: Ledger, *, resume: bool = False, planner: Planner | None = None,
                    stations: list[Station] | None = None, display: Display | None = None,
                    lease_ttl_s: float = lease.LEASE_TTL_S) -> Runner:
        """The runner of ``selflab run``: opens the config's study (taking
        the campaign's lease, replaying the ledger and recording the start in
        one transaction, abandoning what a previous run proposed and never
        sent) on the config's clock, with its instruments (``stations``,
        built from the config unless given) and planner. :meth:`run` gives
        the lease back when it ends. Raises
        :class:`~selflab.controller.ledger.LedgerError` when another controller
        runs the campaign and :class:`~selflab.controller.study.StudyError` when
        it cannot be started or resumed."""
        stations = stations if stations is not None else build_fleet(config)
        clock = clock_of(config, stations)
        remote = any(s.config.remote for s in stations)
        study = Study(problem_of(config), ledger, planner or build_planner(config), snapshot=config.model_dump(mode="json"),
                      resume=resume, lease_ttl_s=lease_ttl_s, clock=clock, on_start=settle_unsent(ledger, config.name, remote),
                      resume_hint="run with --resume to carry on, or give the campaign another name",
                      limits={s.name: s.limits for s in stations})
        if study.state.starts > 1:
            log.info("resuming campaign %s: %d completed so far", config.name, study.state.counts()["completed"])
        else:
            log.info("campaign %s started on the %s clock; ledger %s", config.name, clock, ledger.display_url)
        runner = cls.__new__(cls)
        runner._setup(study, config, stations, display, owns_study=True)
        return runner

    def _setup(self, study: Study, config: LabConfig, stations: list[Station], display: Display | None, *, owns_study: bool) -> None:
        self.study, self.config, self.stations = study, config, stations
        self.display: Display = display or _NoDisplay()
        self._owns_study = owns_study
        self.control = StopControl(in_flight=lambda: len(self.flights))
        self.interlocks = InterlockState(config.interlocks)
        """Latest readings (read() polls and results) and the interlock pausing dispatch."""
        local = LocalExecutor(config.name, config.outcome_names, config.space.names, simulated=isinstance(study.clock, SimClock))
        remote = (RemoteExecutor(study.ledger, config.name, config.stale_policy == "requeue")
                  if any(s.config.remote for s in stations) else None)
        self.flights = Flights(study.clock, local, remote)
        self.pool = pool_of(stations)
        self.dispatcher = Dispatcher(study, config, stations, self.flights, self.control, self.pool, self._doing)
        self.follower = LedgerFollower(study, stations, self.flights, self.control)
        self._run_started = time.monotonic()

    @property
    def state(self) -> CampaignState:
        """The campaign's projection (the study's)."""
        return self.study.state

    @property
    def planner(self) -> Planner:
        return self.study.planner

    async def run(self) -> StopInfo:
        """Run until a stop rule holds, the user interrupts, or nothing can run.

        Returns why it stopped, having recorded it (``campaign_stopped``).
        Returns ``StopInfo("lease_lost")``, having aborted its experiments
        without recording anything more, when another controller takes the
        campaign over (see :mod:`selflab.controller.lease`).
        """
        self._run_started = time.monotonic()
        self.control.reset()
        try:
            return await self._run()
        finally:
            if self._owns_study:
                self.study.release()

    async def _run(self) -> StopInfo:
        control = self.control
        control.install_signals()
        try:
            await connect_all(self.study, self.stations)
            await reconcile(self.study, self.config, self.stations, self.flights)
            watchers = [asyncio.create_task(self._watch(lock)) for lock in self.config.interlocks]
            watchers.append(asyncio.create_task(self.follower.run()))
            try:
                await self._loop()
            finally:
                for watcher in watchers:
                    watcher.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)
            if control.abort:
                assert control.stop is not None
                self._doing(f"aborting {len(self.flights)} experiment(s) in flight")
                await self._abort_flights(reason=control.stop.reason, message=control.stop.detail,
                                          every_instrument=control.stop.reason == "emergency_stop")
            self._drop_queue()
        except LeaseLost as exc:
            return await self._lease_lost(exc, "stopped dispatching and recorded nothing more", fence=True)
        except BaseException as exc:
            await self._abort_flights(reason="error", message=f"controller error: {exc!r}")
            self._drop_queue()
            control.stop = StopInfo("error", f"{type(exc).__name__}: {exc}")
            self._safe_record_stop()
            raise
        finally:
            control.remove_signals()
            await close_all(self.stations)
        assert control.stop is not None
        try:
            self._record_stop()
        except LeaseLost as exc:
            return await self._lease_lost(exc, "recorded nothing more", fence=False)
        self.display.update(self.state, self.stations)
        log.debug("campaign %s stopped: %s", self.config.name, control.stop.detail or control.stop.reason)  # (the CLI says it once)
        return control.stop

    async def _lease_lost(self, exc: LeaseLost, what: str, *, fence: bool) -> StopInfo:
        """Another controller owns the campaign now: abort every local
        experiment in flight through ``stop()`` and forget them, writing
        nothing (the new controller marks them stale)."""
        if fence:
            aborted = await self.flights.fence_off()
            if aborted:
                log.error("aborted %d experiment(s) in flight: the campaign's new controller records them as stale", aborted)
            self.dispatcher.queue.clear()
        self.control.stop = StopInfo("lease_lost", f"another controller took campaign {self.config.name!r} over ({exc}); this one {what}")
        log.error("campaign %s: %s", self.config.name, self.control.stop.detail)
        return self.control.stop

    def _doing(self, text: str) -> None:
        """Tell a live display what the runner is doing now."""
        if isinstance(self.display, ShowsActivity):
            self.display.activity(text)

    # --- the loop -------------------------------------------------------------------------

    async def _loop(self) -> None:
        control = self.control
        while not control.abort:
            if self.study.lease_lost:
                raise LeaseLost("the lease heartbeat found it held by another controller")
            if control.stop is None:
                control.stop = self._stop_rule()
            if control.stop is None and self.interlocks.paused_by is None and self.state.hold is None:
                if await self.dispatcher.fill():
                    self.display.update(self.state, self.stations)
            if not self.flights and self.interlocks.paused_by is not None and control.stop is None:
                self._doing(f"paused by interlock: {self.interlocks.paused_by.pause_when}")
                await control.wait(self.interlocks.paused_by.poll)
                continue
            if control.stop is not None and self.flights.has_remote():
                self.follower.withdraw_open_work("the campaign stopped before a worker claimed it")
            if not self.flights:
                if control.stop is not None or control.abort:
                    break
                if not any(s.online for s in self.stations):
                    control.stop = StopInfo("no_instruments", "every instrument is offline; see instrument_offline events")
                    break
                if self.dispatcher.refusals >= MAX_CONSECUTIVE_REFUSALS:
                    control.stop = StopInfo("refusals", f"{self.dispatcher.refusals} proposals in a row could not be dispatched; "
                                            f"the last: {self.dispatcher.last_refusal}")
                    break
                if self.state.hold is not None or self.state.awaiting():  # a person's turn: the follower wakes us
                    self._doing("paused by " + str(self.state.hold.get("by", "a person")) if self.state.hold is not None
                                else f"{len(self.state.awaiting())} proposal(s) awaiting approval")
                    await control.wait(1.0)
                continue
            self._doing(self._waiting_note())
            finished = await self.flights.next_done(control.armed(), self._time_left())
            for flight in finished:
                self._record(flight)
            if any(not f.task.cancelled() and f.task.exception() is None for f in finished):
                await record_recommendation(self.study, self.config, self.pool, self._doing, blocking=self.dispatcher.blocking)

    def _stop_rule(self) -> StopInfo | None:
        config, rules = self.config, self.config.stop
        target = None
        best = None
        if rules.target is not None:
            objective = next(o for o in config.objectives if o.name == (rules.target.objective or config.objectives[0].name))
            target = (objective.name, objective.direction)
            found = self.state.best(objective.name, objective.direction, judged_fidelity(self.stations, config.target_fidelity),
                                    config.constraints)
            best = (found.outcomes[objective.name], found.experiment_id) if found is not None else None
        progress = Progress(completed=self.state.counts()["completed"], cost_spent=self.state.cost_spent, in_flight=len(self.flights),
                            elapsed_s=self.study.clock.elapsed_s(), wall_s=time.monotonic() - self._run_started,
                            clock="simulated" if isinstance(self.study.clock, SimClock) else "wall", target_best=best)
        return stop_rule(rules, progress, self.dispatcher.usable(), target)

    def _time_left(self) -> float | None:
        rules, left = self.config.stop, []
        if rules.max_time is not None:
            left.append(rules.max_time - self.study.clock.elapsed_s())
        if rules.max_wall_time is not None:
            left.append(rules.max_wall_time - (time.monotonic() - self._run_started))
        return max(min(left), 0.0) + 0.01 if left else None

    def _waiting_note(self) -> str:
        n, stop = len(self.flights), self.control.stop
        if stop is not None:
            return f"stopping ({stop.reason}): waiting for {n} experiment(s) in flight"
        if self.interlocks.paused_by is not None:
            return f"paused by interlock: {self.interlocks.paused_by.pause_when}; waiting for {n} in flight"
        return f"waiting for {n} experiment(s) in flight"

    # --- results ------------------------------------------------------------------------

    def _record(self, flight: Flight) -> None:
        """Record how a flight ended (a remote one's end is in the ledger already), then its consequences."""
        event = self.flights.end_event(flight, self.state)
        if event is not None:
            self.study.record([event])
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
            log.info("experiment %d completed on %s: %s%s", eid, where, fmt(exp.outcomes),
                     best_note(self.state, self.config, judged_fidelity(self.stations, self.config.target_fidelity)))
            self.study.check_calibration()
            self.study.check_drift()
        elif exp.status == "failed":
            station.consecutive_failures += 1
            log.warning("experiment %d failed on %s: %s", eid, where, exp.error)
            limit = station.config.max_consecutive_failures
            if station.consecutive_failures >= limit and station.online:
                station.offline_reason = f"{limit} consecutive failures, the last: {exp.error}"
                self.study.record([NewEvent(campaign=self.config.name, kind="instrument_offline", instrument=station.name,
                                            at=self.study.clock.now(), payload={"reason": station.offline_reason})])
                log.error("instrument %s taken offline after %d consecutive failures; the campaign goes on with the others", station.name, limit)
        self.display.update(self.state, self.stations)

    # --- interlocks ---------------------------------------------------------------------

    async def _watch(self, lock: Interlock) -> None:
        """Poll the watched instrument's ``read()`` every ``lock.poll`` seconds."""
        station = next(s for s in self.stations if s.name == lock.pause_when.instrument)
        while True:
            try:
                async with asyncio.timeout(min(lock.poll * 4, station.config.timeout)):
                    readings = await station.driver.read()
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
            self.study.record([NewEvent(campaign=self.config.name, kind=change.kind, instrument=change.instrument,
                                        at=self.study.clock.now(), payload=change.payload)])
            if change.kind == "paused":
                self.display.update(self.state, self.stations, note=f"paused by interlock: {change.rule}")
            else:
                self.control.wake_up()

    # --- stopping -----------------------------------------------------------------------

    async def _abort_flights(self, reason: str = "interrupted", message: str = "aborted when the campaign was stopped",
                             every_instrument: bool = False) -> None:
        """Cancel every experiment in flight, ``stop()`` its instrument (or, for an
        emergency stop, every instrument) and record them as abandoned."""
        if every_instrument:
            for station in self.stations:
                if station.online and not station.busy:
                    await stop_instrument(station)
        self.follower.withdraw_open_work("the campaign was stopped")
        aborted = await self.flights.abort()
        if not aborted:
            return
        now = self.study.clock.now()
        events = [NewEvent(campaign=self.config.name, kind="abandoned", experiment_id=f.experiment_id,
                           instrument=f.station.name, at=now, payload={"reason": reason, "message": message})
                  for f in aborted]
        try:
            self.study.record(events)
        except Exception as exc:  # the ledger itself may be what failed; resume will mark them stale
            log.error("could not record aborted experiments: %s", exc)

    def _drop_queue(self) -> None:
        """Record queued proposals that will not run now as abandoned."""
        events = self.dispatcher.drop_queue()
        if not events:
            return
        try:
            self.study.record(events)
        except Exception as exc:  # resume will mark them abandoned
            log.error("could not record queued experiments: %s", exc)

    def _record_stop(self) -> None:
        stop = self.control.stop
        assert stop is not None
        self.study.record([NewEvent(campaign=self.config.name, kind="campaign_stopped", at=self.study.clock.now(),
                                    payload={"reason": stop.reason, "detail": stop.detail})])

    def _safe_record_stop(self) -> None:
        try:
            self._record_stop()
        except Exception as exc:
            log.error("could not record the stop: %s", exc)


__all__ = ["MAX_CONSECUTIVE_REFUSALS", "Display", "InstrumentSettings", "Runner", "StopInfo"]
