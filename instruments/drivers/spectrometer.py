"""A UV-Vis flow-cell spectrometer on a serial line: absorbance at a wavelength.

Protocol (ASCII, 9600 8N1, commands and replies end in CR LF; every command
gets one reply):

===============  ===================  =========================================
command          reply                meaning
===============  ===================  =========================================
``*IDN?``        ``SELFLAB,UV-1100,..`` maker, model, serial number, firmware
``WL <nm>``      ``OK``               analysis wavelength, nm, range [190, 1100]
``WL?``          ``420.0``            the analysis wavelength, nm
``ACQ?``         ``0.6034``           acquire; absorbance at ``WL``, AU
===============  ===================  =========================================

Error replies: ``ERR 1 unknown command 'X'``, ``ERR 2 WL 50 out of range
[190, 1100]``, ``ERR 5 WL: 'x' is not a number``. After a power cycle the
wavelength is 500 nm, so the driver sets it before every acquisition.

Example::

    uv = Spectrometer("/dev/ttyUSB2")
    await uv.connect()
    await uv.run({"wavelength": 420})   # {'absorbance': 0.6034}
    await uv.close()
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from selflab.instruments.drivers.ascii import AsciiClient, read_inputs
from selflab.instruments.drivers.connection import Connection, NonNegative, Positive, driver_options
from selflab.instruments.errors import InstrumentDisconnected
from selflab.instruments.protocol import Limits

__all__ = ["Spectrometer", "SpectrometerClient"]

log = logging.getLogger("selflab.drivers")


class SpectrometerClient(AsciiClient):
    """The spectrometer's commands (see the module docstring)."""

    async def absorbance(self, wavelength_nm: float) -> float:
        """Set the wavelength and acquire; absorbance in AU."""
        await self.ok(f"WL {wavelength_nm:.1f}", idempotent=True)
        return await self.number("ACQ?")


class Spectrometer:
    """A UV-Vis spectrometer as an instrument: ``run`` reads one absorbance.

    Input: ``wavelength`` (nm, limits [200, 800]). Output: ``absorbance``
    (AU). Acquisitions are short, so ``stop()`` has nothing to abort.

    Options (YAML ``options:``): ``port`` and the link options of
    :mod:`selflab.instruments.drivers.connection`.
    """

    limits: ClassVar[Limits] = {"wavelength": (200.0, 800.0)}
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
    ) -> None:
        self.connection = Connection({"spectrometer": port}, baudrate=baudrate, timeout_s=timeout_s, retries=retries,
                                     backoff_s=backoff_s, visa_library=visa_library, emulate=emulate, emulator=emulator)
        self.client: SpectrometerClient | None = None
        self.identity = ""

    async def connect(self) -> None:
        """Open the port (or start the emulator) and read ``*IDN?``."""
        links = await self.connection.open()
        self.client = SpectrometerClient(links["spectrometer"], "spectrometer")
        self.identity = await self.client.identify()
        log.info("spectrometer: connected to %s on %s", self.identity, links["spectrometer"].name)

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Absorbance at ``wavelength`` nm; ``{"absorbance": AU}``."""
        x = read_inputs(params, self.limits)
        if self.client is None:
            raise InstrumentDisconnected("spectrometer is not connected: call connect() first")
        return {"absorbance": await self.client.absorbance(x["wavelength"])}

    async def stop(self) -> None:
        """Nothing to abort: an acquisition takes milliseconds."""

    async def close(self) -> None:
        """Close the port (and the emulator); safe to call twice."""
        self.client = None
        await self.connection.close()

    @staticmethod
    def describe() -> dict[str, str]:
        """Output name -> unit (the same for every instance)."""
        return {"absorbance": "AU"}
