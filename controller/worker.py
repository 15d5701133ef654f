"""``selflab worker``: run a campaign's remote instruments on their own host.

A worker builds and connects only the instruments it hosts (``remote: true``
in the config, chosen with ``--instruments``), claims their queued
experiments from the shared Postgres ledger (:mod:`selflab.controller.workqueue`),
runs them through the same local executor as ``selflab run``
(:class:`selflab.controller.executors.LocalExecutor`: the instrument's timeout and
retry policy, the same failure classification), renews its leases with heartbeats, and records
each end in the same transaction that marks its claim done. It exits when the
campaign has stopped and it has nothing left in hand. Kill it at any moment:
its leases run out, the planner marks its experiments stale and requeues them.

Example (one terminal per host)::

    selflab run lab.yaml --ledger postgresql://lab@db/selflab          # plans
    selflab worker lab.yaml --ledger postgresql://lab@db/selflab --instruments hplc
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from datetime import UTC, datetime

from selflab.controller import workqueue
from selflab.controller.config import ConfigError, ConfigFault, LabConfig
from selflab.controller.execution import stop_instrument
from selflab.controller.executors import Flight, LocalExecutor
from selflab.controller.fleet import Station, build_fleet
from selflab.controller.ledger import Ledger, NewEvent
from selflab.controller.stopping import SignalHandlers

log = logging.getLogger("selflab")


class Worker:
    """Claims and runs the queued experiments of some remote instruments."""

    def __init__(self, config: LabConfig, ledger: Ledger, instruments: list[str] | None = None,
                 name: str | None = None, lease_s: float = 30.0, poll_s: float = 0.25) -> None:
        remote = [inst.name for inst in config.instruments if inst.remote]
        chosen = instruments or remote
        unknown = [n for n in chosen if n not in remote]
        if unknown or not chosen:
            raise ConfigError([ConfigFault(loc="--instruments", message=(
                f"{', '.join(unknown) or 'nothing'} is not a remote instrument of campaign {config.name!r}; "
                f"remote ones: {', '.join(remote) or 'none (mark instruments remote: true)'}"))])
        self.config, self.ledger = config, ledger
        self.stations: list[Station] = [s for s in build_fleet(config) if s.name in chosen]
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.lease_s, self.poll_s = lease_s, poll_s
        self.executor = LocalExecutor(config.name, config.outcome_names, config.space.names, simulated=False)
        self.tasks: dict[int, Flight] = {}
        """The experiments this worker runs, by experiment id."""
        self._signals = SignalHandlers([(signal.SIGINT, self._on_signal), (signal.SIGTERM, self._on_signal)])
        self._stopping = False
        self._position = 0
        self._planner_stopped = False

    async def run(self) -> int:
        """Work until the campaign stops; returns how many experiments this worker ran."""
        for station in self.stations:
            async with asyncio.timeout(station.config.timeout):
                await station.driver.connect()
        self._signals.install()  # (where the loop cannot handle signals, Ctrl-C still reaches it)
        heartbeat = asyncio.create_task(self._heartbeat())
        self._follow()
        ran = 0
        log.info("worker %s serving %s for campaign %s", self.name, ", ".join(s.name for s in self.stations), self.config.name)
        try:
            while True:
                if not self._stopping:
                    self._claim()
                if self.tasks:
                    done, _ = await asyncio.wait([f.task for f in self.tasks.values()], timeout=self.poll_s,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    for eid in [eid for eid, f in self.tasks.items() if f.task in done]:
                        self._finish(eid)
                        ran += 1
                    continue
                if self._stopping or self._follow():
                    break
                await asyncio.sleep(self.poll_s)
        finally:
            heartbeat.cancel()
            self._signals.remove()
            for station in self.stations:
                try:
                    async with asyncio.timeout(10):
                        await station.driver.close()
                except Exception as exc:
                    log.warning("instrument %s did not close cleanly: %s", station.name, exc)
        log.info("worker %s done: ran %d experiment(s)", self.name, ran)
        return ran

    def _claim(self) -> None:
        # (the k-th experiment claimed on a station takes its k-th free slot; nothing is marked busy
        # until the claim has landed, since a claim whose session was cut is run again)
        slots = {s.name: [i for i in range(s.capacity) if i not in s.busy] for s in self.stations}
        free = {name: len(ids) for name, ids in slots.items()}
        if not any(free.values()):
            return
        by_name = {s.name: s for s in self.stations}

        def dispatched(claim: workqueue.Claim) -> NewEvent:
            return NewEvent(campaign=self.config.name, kind="dispatched", experiment_id=claim.experiment_id,
                            instrument=claim.instrument, payload={"cost": claim.cost, "slot": slots[claim.instrument][claim.rank]})

        for claim in workqueue.claim(self.ledger, self.config.name, free, self.name, self.lease_s, dispatched):
            station, slot = by_name[claim.instrument], slots[claim.instrument][claim.rank]
            station.busy.add(slot)
            self.tasks[claim.experiment_id] = self.executor.launch(claim.experiment_id, station, slot, claim.params, None)
            log.info("worker %s claimed experiment %d on %s: %s", self.name, claim.experiment_id, station.name, claim.params)

    def _finish(self, eid: int) -> None:
        flight = self.tasks.pop(eid)
        station = flight.station
        station.busy.discard(flight.slot)
        if flight.task.cancelled():
            event: NewEvent | None = NewEvent(campaign=self.config.name, kind="abandoned", experiment_id=eid, instrument=station.name,
                                              payload={"reason": "interrupted", "message": f"worker {self.name} was stopped"})
        else:
            event = self.executor.end(flight, datetime.now(UTC), time.monotonic() - flight.started)
        assert event is not None
        if workqueue.finish(self.ledger, self.config.name, eid, self.name, [event]) is None:
            log.error("experiment %d on %s: its lease ran out before it finished, so the planner made it stale; "
                      "this result is not recorded (is the worker's clock or network stalling?)", eid, station.name)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await asyncio.to_thread(workqueue.renew, self.ledger, self.config.name, self.name, self.lease_s)
            except Exception as exc:  # the next beat tries again; the lease covers two misses
                log.warning("worker %s: heartbeat failed: %s", self.name, exc)

    def _follow(self) -> bool:
        """Read the campaign's new events; whether its planner has stopped."""
        for event in self.ledger.events(self.config.name, after=self._position):
            self._position = event.id
            if event.kind in ("campaign_started", "campaign_stopped"):
                self._planner_stopped = event.kind == "campaign_stopped"
        return self._planner_stopped

    def _on_signal(self) -> None:
        if self._stopping:
            log.warning("worker %s: aborting %d experiment(s)", self.name, len(self.tasks))
            for flight in self.tasks.values():
                flight.task.cancel()
                asyncio.get_running_loop().create_task(stop_instrument(flight.station))
        else:
            log.warning("worker %s: claiming nothing more; finishing %d experiment(s) (again to abort)", self.name, len(self.tasks))
        self._stopping = True


def run_worker(config: LabConfig, ledger_url: str, instruments: list[str] | None, lease_s: float) -> int:
    """Entry point of ``selflab worker``."""
    ledger = Ledger(ledger_url)
    try:
        worker = Worker(config, ledger, instruments, lease_s=lease_s)
        asyncio.run(worker.run())
    finally:
        ledger.close()
    return 0


__all__ = ["Worker", "run_worker"]
