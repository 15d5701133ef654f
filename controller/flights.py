"""The experiments in flight, and the executors that run them.

:class:`Flights` is the runner's "submit and await": it takes a slot and the
record of a dispatch from the station's executor
(:mod:`selflab.controller.executors`: local, or remote through the work queue),
launches the experiment once the ledger holds its dispatch, hands back the
flights that finish next (:meth:`Flights.next_done`, on the simulated clock
every one due at the same instant), builds the event that ends each, and
aborts them. Which executor runs a station's experiments is decided in one
place, :meth:`Flights.executor`.

Example::

    event, row, slot = flights.dispatch_record(eid, station, params, fidelity, now)
    ...                                   # the ledger records event / row
    flights.launch(eid, station, slot, params, expected_duration_s)
    for flight in await flights.next_done(control.armed(), time_left):
        study.record([flights.end_event(flight, state)])
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from selflab.controller.clock import Clock, SimClock
from selflab.controller.executors import Executor, Flight, LocalExecutor, RemoteExecutor
from selflab.controller.fleet import Station
from selflab.controller.ledger import NewEvent
from selflab.controller.projection import CampaignState


class Flights:
    """The experiments in flight, by experiment id, and their executors."""

    def __init__(self, clock: Clock, local: LocalExecutor, remote: RemoteExecutor | None) -> None:
        self.clock, self.local, self.remote = clock, local, remote
        self.active: dict[int, Flight] = {}

    def __len__(self) -> int:
        return len(self.active)

    def __iter__(self) -> Iterator[Flight]:
        return iter(list(self.active.values()))

    def executor(self, station: Station) -> Executor:
        """The executor of ``station``'s experiments: remote for an instrument
        that a ``selflab worker`` runs, else local."""
        if station.config.remote:
            assert self.remote is not None, "a remote instrument needs the remote executor"
            return self.remote
        return self.local

    def dispatch_record(self, eid: int, station: Station, params: dict[str, Any], fidelity: float,
                        at: datetime) -> tuple[NewEvent | None, dict[str, Any] | None, int]:
        """Take a slot on ``station``: the ``dispatched`` event for the ledger
        (or, for a remote station, the work row for its worker, which records
        the dispatch when it claims it), and the slot."""
        slot = station.take_slot()
        event, row = self.executor(station).dispatch_record(eid, station, slot, params, fidelity, at)
        return event, row, slot

    def launch(self, eid: int, station: Station, slot: int, params: dict[str, Any], expected_duration_s: float | None) -> None:
        """Start the experiment whose dispatch the ledger now holds (due at
        its declared duration on the simulated clock)."""
        clock = self.clock
        due = clock.at(expected_duration_s or 0.0) if isinstance(clock, SimClock) and not station.config.remote else None
        self.active[eid] = self.executor(station).launch(eid, station, slot, params, due)

    def await_worker(self, eid: int, station: Station, params: dict[str, Any]) -> None:
        """Wait again for a remote experiment a worker may still be running
        (dispatched before the controller's last stop)."""
        self.active[eid] = self.executor(station).launch(eid, station, station.take_slot(), params, None)

    async def next_done(self, wake: asyncio.Future[None], time_left: float | None) -> list[Flight]:
        """The flights that finish next, in experiment order, taken out of
        flight: on the simulated clock the first one due and every other one
        due at that same instant (already done), in real time every one done
        by now; empty when ``wake`` (a signal, an interlock) or ``time_left``
        seconds (a time limit) come first.

        All results of one instant are recorded before the planner is asked
        again, as a controller watching the lab would see them: with 4 slots
        of equal duration the planner proposes 4 points knowing all 4 results,
        not one point with 3 finished experiments still taken for pending.
        """
        clock = self.clock
        if isinstance(clock, SimClock):
            flight = min(self.active.values(), key=lambda f: (f.due or clock.now(), f.experiment_id))
            if not flight.task.done():
                first: set[asyncio.Future[Any]] = {flight.task, wake}
                await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if not flight.task.done():
                return []
            if flight.due is None:
                return [self.active.pop(flight.experiment_id)]
            clock.advance_to(flight.due)
            same = [f for f in self.active.values() if f is flight or (f.due == flight.due and f.task.done())]
        else:
            tasks: dict[asyncio.Future[Any], Flight] = {f.task: f for f in self.active.values()}
            done, _ = await asyncio.wait({*tasks, wake}, timeout=time_left, return_when=asyncio.FIRST_COMPLETED)
            same = [tasks[t] for t in done if t in tasks]
        return [self.active.pop(f.experiment_id) for f in sorted(same, key=lambda f: f.experiment_id)]

    def end_event(self, flight: Flight, state: CampaignState) -> NewEvent | None:
        """Free the flight's slot; the terminal event to record for it
        (``None`` for a remote one: its worker recorded it)."""
        flight.station.busy.discard(flight.slot)
        if flight.due is not None and isinstance(self.clock, SimClock):
            started = state.experiments[flight.experiment_id].started_at
            assert started is not None
            took = (flight.due - started).total_seconds()
        else:
            took = time.monotonic() - flight.started
        return self.executor(flight.station).end(flight, self.clock.now(), took)

    async def abort(self) -> list[Flight]:
        """Take every flight out of flight and abort it through its executor
        (cancel, ``stop()`` its instrument); returns those to be recorded
        ``abandoned`` (a remote one's worker records its own end)."""
        flights = list(self.active.values())
        self.active.clear()
        for flight in flights:
            flight.station.busy.discard(flight.slot)
        aborted: list[Flight] = []
        for executor in (self.local, self.remote):
            mine = [f for f in flights if self.executor(f.station) is executor]
            if executor is not None and mine:
                aborted += await executor.abort(mine)
        return aborted

    async def fence_off(self) -> int:
        """Another controller owns the campaign now: abort every local
        experiment in flight through ``stop()`` and forget every flight,
        recording nothing; returns how many local ones were aborted."""
        local = [f for f in self.active.values() if not f.remote]
        if local:
            await self.local.abort(local)
        self.active.clear()
        return len(local)

    def has_remote(self) -> bool:
        return any(f.remote for f in self.active.values())


__all__ = ["Flights"]
