"""Running one experiment on one instrument: timeout, retries, checked readings.

Shared by the runner and by workers (:mod:`selflab.controller.worker`), both
through :class:`selflab.controller.executors.LocalExecutor`, so both apply the
same per-instrument policy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

from selflab.controller.fleet import Station
from selflab.controller.readings import ReadingError, clean_readings
from selflab.instruments.errors import BadResponse, InstrumentError, InstrumentTimeout, OutOfLimits, failure_kind
from selflab.instruments.protocol import Stoppable

log = logging.getLogger("selflab")

STOP_TIMEOUT_S = 10.0
"""Seconds an instrument's ``stop()`` or ``close()`` may take before it is given up on."""


def check_outcomes(result: Any, required: list[str], instrument: str, *,
                   parameters: Collection[str] = (), recorded: bool = True) -> dict[str, float]:
    """An instrument's readings checked by :func:`selflab.controller.readings.clean_readings`;
    a fault is :class:`BadResponse`."""
    try:
        return clean_readings(result, required, instrument, parameters=parameters, recorded=recorded)
    except ReadingError as exc:
        raise BadResponse(str(exc)) from None


async def stop_instrument(station: Station) -> None:
    """Ask the instrument to abort, if it can; never raises."""
    if isinstance(station.driver, Stoppable):
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await station.driver.stop()
        except Exception as exc:
            log.error("instrument %s did not stop cleanly: %s", station.name, exc)


async def run_experiment(station: Station, params: dict[str, Any], eid: int, required: list[str], *,
                         parameters: Collection[str], retry_pause: bool = True) -> dict[str, float]:
    """Run experiment ``eid`` with the station's timeout and retry policy.

    Returns checked readings (see :func:`check_outcomes`; ``parameters`` are
    the campaign's parameter names), or raises the last attempt's failure
    (annotated with the number of attempts). ``retry_pause=False`` skips the
    backoff sleeps (simulated clock).
    """
    policy = station.config
    attempts = policy.retries + 1
    for attempt in range(1, attempts + 1):
        try:
            try:
                async with asyncio.timeout(policy.timeout):
                    result = await station.driver.run(dict(params))
            except TimeoutError:
                await stop_instrument(station)
                raise InstrumentTimeout(f"no result within {policy.timeout:g} s") from None
            return check_outcomes(result, required, station.name, parameters=parameters)
        except InstrumentError as exc:
            if isinstance(exc, OutOfLimits) or attempt == attempts:
                if attempts > 1:
                    exc.args = (f"{exc} (after {attempt} attempts)",)
                raise
            delay = policy.retry_backoff * 2 ** (attempt - 1) if retry_pause else 0.0
            log.info("experiment %d on %s: attempt %d of %d failed (%s: %s); retrying in %.3g s",
                        eid, station.name, attempt, attempts, failure_kind(exc), exc, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
