"""Executors: how one experiment runs once it is dispatched, behind one interface.

* :class:`LocalExecutor` runs it here, on the instrument's driver, with the
  instrument's timeout and retry policy (:func:`selflab.controller.execution.run_experiment`),
  due at its declared duration on a simulated clock; its end is recorded by the
  runner, or by a ``selflab worker`` for the experiments it claimed
  (:meth:`Executor.end`, one failure classification:
  :mod:`selflab.controller.failures`).
* :class:`RemoteExecutor` queues it in the ledger's work queue for a
  ``selflab worker`` on the instrument's host (:mod:`selflab.controller.workqueue`),
  which records its dispatch and its end; the runner learns of them by
  following the ledger (:class:`selflab.controller.following.LedgerFollower`),
  and marks stale the experiments of workers whose leases ran out.

Either way an experiment in flight is a :class:`Flight` whose ``task`` ends
with the readings or with the failure, and the runner treats both alike
(:class:`selflab.controller.flights.Flights` picks a station's executor).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from selflab.controller import workqueue
from selflab.controller.events import TERMINAL_KINDS
from selflab.controller.execution import run_experiment, stop_instrument
from selflab.controller.failures import failed_payload
from selflab.controller.fleet import Station
from selflab.controller.ledger import Event, Ledger, NewEvent

log = logging.getLogger("selflab")


@dataclass
class Flight:
    """An experiment in flight on one slot of a station."""

    experiment_id: int
    station: Station
    slot: int
    params: dict[str, Any]
    task: asyncio.Future[dict[str, float]]
    """The local task running it, or, for a remote instrument, a future
    resolved when its worker's record of the end is read from the ledger."""
    due: datetime | None
    """When it ends on the simulated clock (``None``: whenever it does)."""
    started: float = field(default_factory=time.monotonic)
    remote: bool = False


class RemoteEnd(Exception):
    """How a remote experiment ended without readings: ``kind`` is the terminal
    event kind (``failed``, ``abandoned``, ``stale``) already in the ledger."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Executor(Protocol):
    """Runs the dispatched experiments of some stations."""

    def dispatch_record(self, eid: int, station: Station, slot: int, params: dict[str, Any], fidelity: float,
                        at: datetime) -> tuple[NewEvent | None, dict[str, Any] | None]:
        """What the ledger records, in the same transaction as the proposal,
        when ``eid`` goes to ``station``: a ``dispatched`` event, or a work row."""
        ...

    def launch(self, eid: int, station: Station, slot: int, params: dict[str, Any], due: datetime | None) -> Flight:
        """Start the experiment whose dispatch the ledger now holds."""
        ...

    def end(self, flight: Flight, at: datetime, took_s: float) -> NewEvent | None:
        """The terminal event to record for a finished flight (``None`` when it is in the ledger already)."""
        ...

    async def abort(self, flights: list[Flight]) -> list[Flight]:
        """Abort ``flights`` (cancel, ``stop()`` their instruments); those
        returned are to be recorded ``abandoned`` by the loop."""
        ...


class LocalExecutor:
    """Runs experiments here, on the drivers, with each instrument's policy."""

    def __init__(self, campaign: str, required: list[str], parameters: list[str], *, simulated: bool) -> None:
        self.campaign, self.required, self.parameters, self.simulated = campaign, required, parameters, simulated

    def dispatch_record(self, eid: int, station: Station, slot: int, params: dict[str, Any], fidelity: float,
                        at: datetime) -> tuple[NewEvent | None, dict[str, Any] | None]:
        return NewEvent(campaign=self.campaign, kind="dispatched", experiment_id=eid, instrument=station.name, at=at,
                        payload={"cost": station.cost_of(params), "slot": slot, "expected_duration_s": station.duration(params)}), None

    def launch(self, eid: int, station: Station, slot: int, params: dict[str, Any], due: datetime | None) -> Flight:
        task = asyncio.create_task(run_experiment(station, params, eid, self.required, parameters=self.parameters,
                                                  retry_pause=not self.simulated), name=f"experiment-{eid}")
        log.debug("experiment %d dispatched to %s slot %d: %s", eid, station.name, slot, params)
        return Flight(eid, station, slot, params, task, due)

    def end(self, flight: Flight, at: datetime, took_s: float) -> NewEvent | None:
        station, eid = flight.station, flight.experiment_id
        exc = flight.task.exception() if not flight.task.cancelled() else asyncio.CancelledError()
        if exc is None:
            return NewEvent(campaign=self.campaign, kind="completed", experiment_id=eid, instrument=station.name, at=at,
                            payload={"outcomes": flight.task.result(), "duration_s": took_s})
        return NewEvent(campaign=self.campaign, kind="failed", experiment_id=eid, instrument=station.name, at=at,
                        payload=failed_payload(exc))

    async def abort(self, flights: list[Flight]) -> list[Flight]:
        for flight in flights:
            flight.task.cancel()
        for station in {f.station.name: f.station for f in flights}.values():
            await stop_instrument(station)
        await asyncio.gather(*(f.task for f in flights), return_exceptions=True)
        return flights


class RemoteExecutor:
    """Queues experiments for ``selflab worker`` processes and follows their
    records in the shared ledger."""

    def __init__(self, ledger: Ledger, campaign: str, stale_requeue: bool) -> None:
        self.ledger, self.campaign, self.stale_requeue = ledger, campaign, stale_requeue

    def dispatch_record(self, eid: int, station: Station, slot: int, params: dict[str, Any], fidelity: float,
                        at: datetime) -> tuple[NewEvent | None, dict[str, Any] | None]:
        return None, {"campaign": self.campaign, "experiment_id": eid, "instrument": station.name, "state": "open",
                      "params": params, "fidelity": fidelity, "cost": station.cost_of(params)}

    def launch(self, eid: int, station: Station, slot: int, params: dict[str, Any], due: datetime | None) -> Flight:
        future: asyncio.Future[dict[str, float]] = asyncio.get_running_loop().create_future()
        log.debug("experiment %d queued for a worker of %s: %s", eid, station.name, params)
        return Flight(eid, station, slot, params, future, None, remote=True)

    def end(self, flight: Flight, at: datetime, took_s: float) -> NewEvent | None:
        return None  # its worker recorded it

    async def abort(self, flights: list[Flight]) -> list[Flight]:
        return []  # claimed: each worker records the end of what it runs

    def expire(self, at: Callable[[], datetime]) -> list[Event]:
        """Mark stale, atomically, the experiments of workers whose leases ran out."""
        return workqueue.settle(self.ledger, self.campaign, "claimed", "expired", lambda eid, inst: NewEvent(
            campaign=self.campaign, kind="stale", experiment_id=eid, instrument=inst, at=at(),
            payload={"message": "its worker stopped renewing the lease (dead or cut off)", "requeue": self.stale_requeue}),
            expired_only=True)

    def withdraw(self, why: str, at: datetime) -> list[Event]:
        """Take back, atomically, the experiments no worker has claimed yet (``abandoned``)."""
        return workqueue.settle(self.ledger, self.campaign, "open", "cancelled", lambda eid, inst: NewEvent(
            campaign=self.campaign, kind="abandoned", experiment_id=eid, instrument=inst, at=at,
            payload={"reason": "not_dispatched", "message": why}))

    @staticmethod
    def settle(event: Event, flights: dict[int, Flight], error: Callable[[int], str]) -> None:
        """Resolve the flight that ``event`` (a worker's record) ended."""
        flight = flights.get(event.experiment_id or -1)
        if flight is None or not flight.remote or flight.task.done() or event.kind not in TERMINAL_KINDS:
            return
        if event.kind == "completed":
            flight.task.set_result(dict(event.payload["outcomes"]))
        else:
            flight.task.set_exception(RemoteEnd(event.kind, error(flight.experiment_id)))


def waiting_for_workers(flights: Iterable[Flight], unclaimed: Callable[[int], bool]) -> list[str]:
    """Names of remote instruments with queued experiments no worker has claimed."""
    return sorted({f.station.name for f in flights if f.remote and unclaimed(f.experiment_id)})
