"""What others write to a running campaign's ledger, taken in by its runner.

A person's stop request (``selflab stop`` on any host writes
``stop_requested``), a person's search-space edits (``space_changed``: the
projection holds the new space, which the next proposals come from), a person's approvals, vetoes, edits, pauses and resumes
and attach requests (:mod:`selflab.controller.oversight`: the projection
folds them in, and the runner is woken), and, for remote instruments, the records of
``selflab worker`` processes: their claims, the ends of the experiments they
ran, the instruments they took offline. :class:`LedgerFollower` reads them
every quarter second, resolves the flights they end, expires the claims of
workers whose leases ran out (``stale``) and withdraws work no worker has
claimed when the run stops.

Example::

    follower = LedgerFollower(study, stations, flights, control)
    task = asyncio.create_task(follower.run())
"""

from __future__ import annotations

import asyncio
import logging
import time

from selflab.controller.executors import RemoteExecutor, waiting_for_workers
from selflab.controller.fleet import Station
from selflab.controller.flights import Flights
from selflab.controller.ledger import Event
from selflab.controller.stopping import StopControl
from selflab.controller.study import Study

log = logging.getLogger("selflab")

HUMAN_ACTIONS = frozenset({"approved", "vetoed", "edited", "pause_requested", "resume_requested", "attach_requested", "note"})
"""Kinds a person writes that the runner wakes up for (the projection already holds them)."""


class LedgerFollower:
    """Takes in what others write to the campaign's ledger (see the module docs)."""

    def __init__(self, study: Study, stations: list[Station], flights: Flights, control: StopControl) -> None:
        self.study, self.stations, self.flights, self.control = study, stations, flights, control

    async def run(self, every_s: float = 0.25) -> None:
        """Follow the ledger until cancelled."""
        idle_since = time.monotonic()
        state = self.study.state
        while True:
            for event in self.study.follow():
                if event.kind == "stop_requested":
                    self.control.on_stop_requested(event.payload)
                    continue
                if event.kind == "space_changed":  # a person edited the search space: propose from the new one now
                    edit = event.payload["edit"]
                    log.info("search space v%d: %s %s %s by %s", event.payload["version"], edit["op"], edit["parameter"],
                             " ".join(map(str, edit.get("values", []))), event.payload.get("by", ""))
                    self.control.wake_up()
                    continue
                if event.kind in HUMAN_ACTIONS:  # a person approved, vetoed, edited, paused or resumed: act now
                    log.info("%s by %s%s", event.kind, event.payload.get("by", ""),
                             f" on experiment {event.experiment_id}" if event.experiment_id is not None else "")
                    self.control.wake_up()
                    continue
                self.settle(event)
                idle_since = time.monotonic()
            remote = self.flights.remote
            if remote is None:
                await asyncio.sleep(every_s)
                continue
            for event in self.study.adopt(remote.expire(self.study.clock.now)):
                log.warning("experiment %d on %s is stale: its worker's lease ran out", event.experiment_id, event.instrument)
                self.settle(event)
            waiting = waiting_for_workers(self.flights, lambda eid: state.experiments[eid].status == "proposed")
            if waiting and time.monotonic() - idle_since > 30:
                log.warning("waiting for a worker to claim experiments for %s: start one on their host with "
                            "selflab worker CONFIG --ledger URL --instruments %s", ", ".join(waiting), ",".join(waiting))
                idle_since = time.monotonic()
            await asyncio.sleep(every_s)

    def settle(self, event: Event) -> None:
        """Take in a worker's record: an instrument it took offline, or the end of a flight."""
        if event.kind == "instrument_offline" and event.instrument:
            for station in self.stations:
                if station.name == event.instrument and station.online:
                    station.offline_reason = event.payload.get("reason", "")
            return
        RemoteExecutor.settle(event, self.flights.active, lambda eid: self.study.state.experiments[eid].error)

    def withdraw_open_work(self, why: str) -> None:
        """Take back experiments no worker has claimed yet (abandoned, atomically)."""
        if self.flights.remote is None:
            return
        for event in self.study.adopt(self.flights.remote.withdraw(why, self.study.clock.now())):
            self.settle(event)


__all__ = ["LedgerFollower"]
