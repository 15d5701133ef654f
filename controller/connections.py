"""Connecting a run's instruments at its start and closing them at its end.

A driver that fails to connect takes its instrument offline (an
``instrument_offline`` event), never the campaign; one that connects again
after being offline at the last stop is back online. Remote instruments are
connected by their workers, on their own hosts.

Example::

    await connect_all(study, stations)
    ...
    await close_all(stations)
"""

from __future__ import annotations

import asyncio
import logging

from selflab.controller.execution import STOP_TIMEOUT_S
from selflab.controller.fleet import Station
from selflab.controller.ledger import NewEvent
from selflab.controller.study import Study
from selflab.instruments.errors import failure_kind

log = logging.getLogger("selflab")


async def connect_all(study: Study, stations: list[Station]) -> None:
    """Connect every local instrument (each within its timeout), recording the ones offline and the ones back."""
    name, events = study.problem.name, []
    for station in stations:
        if station.config.remote:
            continue  # its worker connects it, on its own host
        try:
            async with asyncio.timeout(station.config.timeout):
                await station.driver.connect()
        except Exception as exc:  # any driver failure takes that instrument offline, not the campaign
            station.offline_reason = f"connect failed: {failure_kind(exc)}: {exc}"
            log.error("instrument %s is offline: %s", station.name, station.offline_reason)
            events.append(NewEvent(campaign=name, kind="instrument_offline", instrument=station.name,
                                   at=study.clock.now(), payload={"reason": station.offline_reason}))
            continue
        previous = study.state.instruments.get(station.name)
        if previous is not None and previous.offline_reason is not None:
            log.info("instrument %s is back online (was: %s)", station.name, previous.offline_reason)
            events.append(NewEvent(campaign=name, kind="instrument_online", instrument=station.name,
                                   at=study.clock.now(), payload={"reason": "connected on resume"}))
    study.record(events)


async def close_all(stations: list[Station]) -> None:
    """Close every local instrument; one that does not close cleanly is logged."""
    for station in stations:
        if station.config.remote:
            continue
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await station.driver.close()
        except Exception as exc:
            log.warning("instrument %s did not close cleanly: %s", station.name, exc)


__all__ = ["close_all", "connect_all"]
