"""A syringe pump on a serial line: set flow rate and volume, dispense, stop.

Protocol (ASCII, 9600 8N1, commands end in CR LF, replies end in CR LF;
every command gets one reply):

===============  ===================  =========================================
command          reply                meaning
===============  ===================  =========================================
``*IDN?``        ``SELFLAB,SP-20,..`` maker, model, serial number, firmware
``RATE <x>``     ``OK``               flow rate, mL/min, device range [0.001, 20]
``RATE?``        ``0.5000``           flow rate, mL/min
``VOL <x>``      ``OK``               volume to dispense, mL, range [0.001, 50]
``VOL?``         ``2.0000``           volume to dispense, mL
``RUN``          ``OK``               start dispensing ``VOL`` at ``RATE``
``STATUS?``      ``RUN 0.4100``       dispensing, mL so far; or ``IDLE 2.0000``
``STOP``         ``OK``               stop now (safe to send at any time)
===============  ===================  =========================================

Error replies: ``ERR 1 unknown command 'X'``, ``ERR 2 RATE 99 out of range
[0.001, 20]``, ``ERR 3 RATE: busy dispensing; send STOP first``, ``ERR 5 RATE:
'x' is not a number``. ``RATE``, ``VOL`` and ``RUN`` are refused while
dispensing. After a power cycle the pump is idle with rate 1 mL/min, volume 0.

Example::

    pump = SyringePump("/dev/ttyUSB0", timeout_s=0.5)
    await pump.connect()
    await pump.run({"flow_rate": 0.5, "volume": 2.0})   # {'dispensed': 2.0}
    await pump.close()
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from selflab.instruments.drivers.ascii import AsciiClient, read_inputs
from selflab.instruments.drivers.connection import Connection, NonNegative, Positive, driver_options
from selflab.instruments.errors import InstrumentDisconnected, InstrumentError, InstrumentTimeout
from selflab.instruments.protocol import Limits

__all__ = ["PumpClient", "SyringePump"]

log = logging.getLogger("selflab.drivers")


class PumpClient(AsciiClient):
    """The pump's commands (see the module docstring)."""

    async def dispense(self, rate_ml_min: float, volume_ml: float, *, poll_s: float, timeout_s: float) -> float:
        """Dispense ``volume_ml`` at ``rate_ml_min`` and wait until done; mL dispensed.

        If anything fails or the call is cancelled, the pump is sent ``STOP``
        before the error propagates: a garbled reply to ``RUN`` may hide a
        running pump, and reagent must never keep flowing unattended.

        Raises:
            InstrumentTimeout: not done within ``timeout_s`` seconds.
            InstrumentError: the pump went idle early (stopped or rebooted).
        """
        deadline = time.monotonic() + timeout_s
        try:
            await self.ok(f"RATE {rate_ml_min:.4f}")
            await self.ok(f"VOL {volume_ml:.4f}")
            await self.ok("RUN")
            log.debug("%s: dispensing %.3f mL at %.3f mL/min", self.label, volume_ml, rate_ml_min)
            while True:
                state, dispensed = await self.status()
                if state == "IDLE":
                    break
                if time.monotonic() > deadline:
                    raise InstrumentTimeout(f"{self.label}: dispensed {dispensed:.3f} of {volume_ml:.3f} mL "
                                            f"in {timeout_s:g} s; stopped")
                await asyncio.sleep(poll_s)
        except BaseException:  # a lost reply to RUN may hide a running pump: stop it whatever went wrong
            await asyncio.shield(self.safe("STOP"))
            raise
        if dispensed < volume_ml - 1e-3:
            raise InstrumentError(f"{self.label}: went idle after {dispensed:.3f} of {volume_ml:.3f} mL "
                                  "(stopped, stalled or power-cycled)")
        return dispensed

    async def status(self) -> tuple[str, float]:
        """``("RUN" | "IDLE", mL dispensed so far)``."""

        def parse(reply: str) -> tuple[str, float]:
            state, amount = reply.split()
            if state not in ("RUN", "IDLE"):
                raise ValueError(f"unknown state {state!r}")
            return state, float(amount)

        return await self.transport.query("STATUS?", parse=parse, idempotent=True)

    async def stop(self) -> None:
        """Send ``STOP`` (idempotent, so it is retried)."""
        await self.ok("STOP", idempotent=True)


class SyringePump:
    """A syringe pump as an instrument: ``run`` dispenses one volume.

    Inputs: ``flow_rate`` (mL/min, limits [0.01, 10]) and ``volume`` (mL,
    [0.05, 10]). Output: ``dispensed`` (mL). ``stop()`` sends ``STOP``.

    Options (YAML ``options:``): ``port``, the link options of
    :mod:`selflab.instruments.drivers.connection`, ``poll_s`` (seconds between status
    polls) and ``dispense_timeout_s`` (default: 1.5 x volume / rate + 60 s).
    """

    limits: ClassVar[Limits] = {"flow_rate": (0.01, 10.0), "volume": (0.05, 10.0)}
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
        poll_s: Positive = 0.5,
        dispense_timeout_s: Positive | None = None,
    ) -> None:
        self.connection = Connection({"pump": port}, baudrate=baudrate, timeout_s=timeout_s, retries=retries,
                                     backoff_s=backoff_s, visa_library=visa_library, emulate=emulate, emulator=emulator)
        self.poll_s = poll_s
        self.dispense_timeout_s = dispense_timeout_s
        self.client: PumpClient | None = None
        self.identity = ""

    async def connect(self) -> None:
        """Open the port (or start the emulator) and read ``*IDN?``."""
        links = await self.connection.open()
        self.client = PumpClient(links["pump"], "pump")
        self.identity = await self.client.identify()
        log.info("pump: connected to %s on %s", self.identity, links["pump"].name)

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Dispense ``volume`` mL at ``flow_rate`` mL/min; ``{"dispensed": mL}``."""
        x = read_inputs(params, self.limits)
        if self.client is None:
            raise InstrumentDisconnected("pump is not connected: call connect() first")
        timeout = self.dispense_timeout_s or 1.5 * 60.0 * x["volume"] / x["flow_rate"] + 60.0
        dispensed = await self.client.dispense(x["flow_rate"], x["volume"], poll_s=self.poll_s, timeout_s=timeout)
        return {"dispensed": dispensed}

    async def stop(self) -> None:
        """Stop dispensing now (no-op when not connected)."""
        if self.client is not None:
            await self.client.stop()

    async def close(self) -> None:
        """Stop the pump (best effort), close the port and the emulator; safe to call twice."""
        client, self.client = self.client, None
        if client is not None:
            await client.safe("STOP")
        await self.connection.close()

    @staticmethod
    def describe() -> dict[str, str]:
        """Output name -> unit (the same for every instance)."""
        return {"dispensed": "mL"}
