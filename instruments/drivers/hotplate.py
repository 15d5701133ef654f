"""A hotplate with a temperature probe on a serial line: setpoint, ramp, read.

Protocol (ASCII, 9600 8N1, commands and replies end in CR LF; every command
gets one reply):

===============  ===================  =========================================
command          reply                meaning
===============  ===================  =========================================
``*IDN?``        ``SELFLAB,HP-350,..`` maker, model, serial number, firmware
``SETP <c>``     ``OK``               heat to ``c`` degC, device range [0, 350]
``SETP?``        ``80.00`` or ``OFF`` the setpoint, degC
``RAMP <r>``     ``OK``               heating rate limit, degC/min, [0.1, 100]
``RAMP?``        ``10.00``            the ramp rate, degC/min
``TEMP?``        ``79.96``            probe temperature, degC
``OFF``          ``OK``               heater off (safe to send at any time)
===============  ===================  =========================================

Error replies: ``ERR 1 unknown command 'X'``, ``ERR 2 SETP 400 out of range
[0, 350]``, ``ERR 5 SETP: 'x' is not a number``. After a power cycle the
heater is off and the ramp is 10 degC/min.

*Settled* means ``settle_samples`` readings in a row, ``poll_s`` apart, within
``tolerance_c`` of the setpoint.

Example::

    plate = Hotplate("/dev/ttyUSB1", tolerance_c=0.5)
    await plate.connect()
    await plate.run({"temperature": 80})   # {'temperature': 80.02} once settled
    await plate.close()
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from selflab.instruments.drivers.ascii import AsciiClient, read_inputs
from selflab.instruments.drivers.connection import Connection, NonNegative, Positive, driver_options
from selflab.instruments.errors import InstrumentDisconnected, InstrumentTimeout
from selflab.instruments.protocol import Limits

__all__ = ["Hotplate", "HotplateClient"]

log = logging.getLogger("selflab.drivers")


class HotplateClient(AsciiClient):
    """The hotplate's commands (see the module docstring)."""

    async def heat(self, setpoint_c: float, ramp_c_per_min: float) -> None:
        """Set the ramp rate, then the setpoint (the heater turns on)."""
        await self.ok(f"RAMP {ramp_c_per_min:.2f}", idempotent=True)
        await self.ok(f"SETP {setpoint_c:.2f}", idempotent=True)

    async def settle(self, setpoint_c: float, *, tolerance_c: float, samples: int, poll_s: float, timeout_s: float) -> float:
        """Wait until settled at ``setpoint_c``; the mean of the settled readings, degC.

        Raises:
            InstrumentTimeout: not settled within ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        window: list[float] = []
        while True:
            reading = await self.number("TEMP?")
            window = [*window, reading][-samples:] if abs(reading - setpoint_c) <= tolerance_c else []
            if len(window) == samples:
                return sum(window) / samples
            if time.monotonic() > deadline:
                raise InstrumentTimeout(f"{self.label}: not within {tolerance_c:g} degC of {setpoint_c:g} degC "
                                        f"after {timeout_s:g} s (last reading {reading:g} degC)")
            await asyncio.sleep(poll_s)

    async def off(self) -> None:
        """Heater off (idempotent, so it is retried)."""
        await self.ok("OFF", idempotent=True)


class Hotplate:
    """A hotplate as an instrument: ``run`` heats to a temperature and waits to settle.

    Input: ``temperature`` (degC, limits [20, 250]). Output: ``temperature``
    (degC, the mean of the settled readings). ``stop()`` turns the heater off.

    Options (YAML ``options:``): ``port``, the link options of
    :mod:`selflab.instruments.drivers.connection`, ``ramp_c_per_min``,
    ``tolerance_c``, ``settle_samples``, ``poll_s`` (seconds between readings)
    and ``settle_timeout_s``.
    """

    limits: ClassVar[Limits] = {"temperature": (20.0, 250.0)}
    inputs: ClassVar[tuple[str, ...]] = tuple(limits)
    """What ``run(params)`` reads: each limited input (see :class:`~selflab.instruments.protocol.DeclaresInputs`)."""
    capacity: ClassVar[int] = 1

    @driver_options
    def __init__(
        self,
        port: str = "",
        *,
        baudrate: int = 9600,
        timeout_s: Positive = 1.0,
        retries: int = 2,
        backoff_s: NonNegative = 0.1,
        visa_library: str = "",
        emulate: bool = False,
        emulator: dict[str, Any] | None = None,
        ramp_c_per_min: Positive = 10.0,
        tolerance_c: Positive = 1.0,
        settle_samples: int = 3,
        poll_s: Positive = 0.5,
        settle_timeout_s: Positive = 1800.0,
    ) -> None:
        if settle_samples < 1:
            raise ValueError(f"settle_samples must be >= 1, got {settle_samples}")
        self.connection = Connection({"hotplate": port}, baudrate=baudrate, timeout_s=timeout_s, retries=retries,
                                     backoff_s=backoff_s, visa_library=visa_library, emulate=emulate, emulator=emulator)
        self.ramp_c_per_min, self.tolerance_c, self.settle_samples = ramp_c_per_min, tolerance_c, settle_samples
        self.poll_s, self.settle_timeout_s = poll_s, settle_timeout_s
        self.client: HotplateClient | None = None
        self.identity = ""

    async def connect(self) -> None:
        """Open the port (or start the emulator) and read ``*IDN?``."""
        links = await self.connection.open()
        self.client = HotplateClient(links["hotplate"], "hotplate")
        self.identity = await self.client.identify()
        log.info("hotplate: connected to %s on %s", self.identity, links["hotplate"].name)

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Heat to ``temperature`` degC and wait to settle; ``{"temperature": degC}``."""
        x = read_inputs(params, self.limits)
        if self.client is None:
            raise InstrumentDisconnected("hotplate is not connected: call connect() first")
        await self.client.heat(x["temperature"], self.ramp_c_per_min)
        reading = await self.client.settle(x["temperature"], tolerance_c=self.tolerance_c, samples=self.settle_samples,
                                           poll_s=self.poll_s, timeout_s=self.settle_timeout_s)
        return {"temperature": reading}

    async def stop(self) -> None:
        """Heater off (no-op when not connected)."""
        if self.client is not None:
            await self.client.off()

    async def close(self) -> None:
        """Heater off (best effort), close the port and the emulator; safe to call twice."""
        client, self.client = self.client, None
        if client is not None:
            await client.safe("OFF")
        await self.connection.close()

    @staticmethod
    def describe() -> dict[str, str]:
        """Output name -> unit (the same for every instance)."""
        return {"temperature": "degC"}
