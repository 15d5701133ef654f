"""Instruments: the protocol, the failure hierarchy and the driver registry."""

from selflab.instruments.errors import (
    BadResponse,
    InstrumentDisconnected,
    InstrumentError,
    InstrumentTimeout,
    OutOfLimits,
)
from selflab.instruments.protocol import Instrument, Limits, declared_limits, limit_violations

__all__ = [
    "BadResponse",
    "Instrument",
    "InstrumentDisconnected",
    "InstrumentError",
    "InstrumentTimeout",
    "Limits",
    "OutOfLimits",
    "declared_limits",
    "limit_violations",
]
