"""Checking readings: every real number type a driver or a person may give
(int, float, numpy scalars, Decimal, Fraction; not bool), finite, with the
outcomes that are required, and never named like an export column or a
parameter. No asyncio and no instruments: :mod:`selflab.controller.study` uses it for
``tell`` and ``attach``, :mod:`selflab.controller.execution` for instruments' results.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import Any

import numpy as np

from selflab.controller.columns import EXPORT_COLUMNS, renamed_reading

log = logging.getLogger("selflab")


class ReadingError(ValueError):
    """Readings that cannot be recorded; the message names the source and the reading."""


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


def clean_readings(result: Any, required: list[str], source: str, *,
                   parameters: Collection[str] = (), recorded: bool = True) -> dict[str, float]:
    """Readings as finite floats, or :class:`ReadingError` naming what is wrong.

    With ``recorded`` (readings that become an experiment's outcomes), a
    reading named like an export column (:data:`EXPORT_COLUMNS`) or like one
    of the ``parameters`` is renamed ``reading_<name>``, with a warning once
    per instrument and name, so that no measurement is lost and the export
    keeps its columns.
    """
    if not isinstance(result, Mapping):
        raise ReadingError(f"{source} returned {type(result).__name__}, not a mapping of readings")
    out: dict[str, float] = {}
    names = [str(key) for key in result]
    for name, value in zip(names, result.values(), strict=True):
        number = _number(value)
        if number is None:
            raise ReadingError(f"{source} reading {name!r} is {value!r}, not a number")
        if not math.isfinite(number):
            raise ReadingError(f"{source} reading {name!r} is {value}, not finite")
        if recorded and (name in EXPORT_COLUMNS or name in parameters):
            new = renamed_reading(name, {*names, *out, *EXPORT_COLUMNS, *parameters})
            if (source, name) not in _warned:
                _warned.add((source, name))
                clash = "a selflab export column" if name in EXPORT_COLUMNS else "a parameter"
                log.warning("%s reports a reading named %r, which is %s; it is recorded as %r", source, name, clash, new)
            name = new
        out[name] = number
    missing = [name for name in required if name not in out]
    if missing:
        raise ReadingError(f"{source} did not report {', '.join(missing)} (it reported {', '.join(out) or 'nothing'})")
    return out
