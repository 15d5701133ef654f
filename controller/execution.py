"""Running one experiment on one instrument: timeout, retries, checked readings.

Shared by the campaign loop (:mod:`controller.campaign`) and by workers
(:mod:`controller.worker`), so both apply the same per-instrument policy.
"""

from __future__ import annotations

import asyncio
import logging
import math
import numbers
from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import Any

import numpy as np

from controller.columns import EXPORT_COLUMNS, renamed_reading
from controller.fleet import Station
from instruments.errors import BadResponse, InstrumentError, InstrumentTimeout, OutOfLimits, failure_kind
from instruments.protocol import Stoppable

log = logging.getLogger("selflab")

STOP_TIMEOUT_S = 10.0
"""Seconds an instrument's ``stop()`` or ``close()`` may take before it is given up on."""


_warned: set[tuple[str, str]] = set()
"""(instrument, reading) pairs whose rename has been logged (once each)."""


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (int, float, numpy scalar or
    0-d array, Decimal, Fraction; not a bool), else ``None``."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, Decimal)):
        return None
    try:
        return float(value)
    except (ValueError, OverflowError):  # a signalling NaN; an int beyond float's range
        return math.nan


def check_outcomes(result: Any, required: list[str], instrument: str, *,
                   parameters: Collection[str] = (), recorded: bool = True) -> dict[str, float]:
    """Readings as finite floats, or :class:`BadResponse` naming what is wrong.

    With ``recorded`` (readings that become an experiment's outcomes), a
    reading named like an export column (:data:`EXPORT_COLUMNS`) or like one
    of the ``parameters`` is renamed ``reading_<name>``, with a warning once
    per instrument and name, so that no measurement is lost and the export
    keeps its columns.
    """
    if not isinstance(result, Mapping):
        raise BadResponse(f"{instrument} returned {type(result).__name__}, not a mapping of readings")
    out: dict[str, float] = {}
    names = [str(key) for key in result]
    for name, value in zip(names, result.values(), strict=True):
        number = _number(value)
        if number is None:
            raise BadResponse(f"{instrument} reading {name!r} is {value!r}, not a number")
        if not math.isfinite(number):
            raise BadResponse(f"{instrument} reading {name!r} is {value}, not finite")
        if recorded and (name in EXPORT_COLUMNS or name in parameters):
            new = renamed_reading(name, {*names, *out, *EXPORT_COLUMNS, *parameters})
            if (instrument, name) not in _warned:
                _warned.add((instrument, name))
                clash = "a selflab export column" if name in EXPORT_COLUMNS else "a parameter"
                log.warning("instrument %s reports a reading named %r, which is %s; it is recorded as %r", instrument, name, clash, new)
            name = new
        out[name] = number
    missing = [name for name in required if name not in out]
    if missing:
        raise BadResponse(f"{instrument} did not report {', '.join(missing)} (it reported {', '.join(out) or 'nothing'})")
    return out


async def stop_instrument(station: Station) -> None:
    """Ask the instrument to abort, if it can; never raises."""
    if isinstance(station.driver, Stoppable):
        try:
            await asyncio.wait_for(station.driver.stop(), timeout=STOP_TIMEOUT_S)
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
                result = await asyncio.wait_for(station.driver.run(dict(params)), timeout=policy.timeout)
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
            log.warning("experiment %d on %s: attempt %d of %d failed (%s: %s); retrying in %.3g s",
                        eid, station.name, attempt, attempts, failure_kind(exc), exc, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
