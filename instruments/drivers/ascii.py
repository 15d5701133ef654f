"""The line protocol shared by the bundled devices, and input checks.

Every command gets exactly one reply line: ``OK``, a value, or
``ERR <code> <text>``. Codes: ``1`` unknown command, ``2`` value out of
range, ``3`` busy, ``5`` not a number. A refusal with code 2 becomes
:class:`~selflab.instruments.errors.OutOfLimits` (the device's own limits are
narrower than the driver's); any other refusal, and any reply that is not
what the command calls for (``NaN``, ``12.3.4``, ``OKAY``), becomes
:class:`~selflab.instruments.errors.BadResponse`.

Example::

    client = AsciiClient(transport, "hotplate")
    await client.ok("SETP 80")                          # 'OK' or raises
    celsius = await client.number("TEMP?")              # finite float or raises
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

from selflab.instruments.errors import BadResponse, InstrumentError, OutOfLimits
from selflab.instruments.protocol import Limits, limit_violations
from selflab.instruments.transports import Transport

__all__ = ["AsciiClient", "parse_number", "parse_ok", "read_inputs"]

log = logging.getLogger("selflab.drivers")


def _refused(reply: str) -> None:
    """Raise the mapped error if ``reply`` is an ``ERR`` line."""
    if reply.startswith("ERR"):
        if reply.split()[1:2] == ["2"]:
            raise OutOfLimits("the device refused a value outside its range")
        raise BadResponse("the device refused the command")


def parse_ok(reply: str) -> str:
    """``reply`` if it is ``OK``; otherwise the mapped error.

    >>> parse_ok("OK")
    'OK'
    """
    _refused(reply)
    if reply != "OK":
        raise BadResponse("expected 'OK'")
    return reply


def parse_number(reply: str) -> float:
    """``reply`` as a finite float; ``NaN`` and ``inf`` are bad responses.

    >>> parse_number("85.20")
    85.2
    """
    _refused(reply)
    value = float(reply)
    if not math.isfinite(value):
        raise BadResponse("the reading is not finite")
    return value


def read_inputs(params: Mapping[str, Any], limits: Limits) -> dict[str, float]:
    """The inputs named in ``limits`` as floats, checked before anything is sent.

    Raises:
        BadResponse: an input is missing or not a number.
        OutOfLimits: an input lies outside ``limits``.

    >>> read_inputs({"temperature": 80}, {"temperature": (20.0, 250.0)})
    {'temperature': 80.0}
    """
    for name in limits:
        if name not in params:
            raise BadResponse(f"missing input {name!r}")
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, Real):
            raise BadResponse(f"input {name}={value!r} is not a number")
    faults = limit_violations(params, limits)
    if faults:
        raise OutOfLimits("; ".join(faults) + " (nothing was sent)")
    return {name: float(params[name]) for name in limits}


class AsciiClient:
    """Commands of the shared protocol over one transport.

    Args:
        transport: the open link to the device.
        label: device name used in messages (``"pump"``).
    """

    def __init__(self, transport: Transport, label: str) -> None:
        self.transport = transport
        self.label = label

    async def ok(self, command: str, *, idempotent: bool = False) -> None:
        """Send a command that answers ``OK``."""
        await self.transport.query(command, parse=parse_ok, idempotent=idempotent)

    async def number(self, command: str) -> float:
        """Ask an idempotent query that answers a finite number."""
        return await self.transport.query(command, parse=parse_number, idempotent=True)

    async def text(self, command: str) -> str:
        """Ask an idempotent query that answers text (an ``ERR`` reply raises)."""

        def parse(reply: str) -> str:
            _refused(reply)
            return reply

        return await self.transport.query(command, parse=parse, idempotent=True)

    async def safe(self, command: str) -> None:
        """Send a safety command (``STOP``, ``OFF``: idempotent, answers ``OK``),
        logging rather than raising if the device cannot be reached."""
        try:
            await self.ok(command, idempotent=True)
        except InstrumentError as exc:
            log.error("%s: could not send %s: %s", self.label, command, exc)

    async def identify(self) -> str:
        """The ``*IDN?`` reply (maker, model, serial, firmware)."""
        return await self.text("*IDN?")
