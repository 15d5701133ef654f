"""A flow synthesis rig as one instrument: hotplate, syringe pump, UV-Vis.

One experiment (``run``):

1. refuse inputs outside :attr:`FlowSynthesis.limits` (nothing is sent);
2. heat the coil's hotplate to ``temperature`` and wait until it settles
   within ``tolerance_c`` (:class:`~selflab.instruments.drivers.hotplate.HotplateClient`);
3. set the spectrometer to ``wavelength_nm``;
4. pump ``volume`` mL of feed through the heated coil at ``flow_rate``
   mL/min (residence time = coil volume / flow rate);
5. read the absorbance of the outlet in the flow cell, and convert it to a
   yield with Beer-Lambert: ``yield = A / (epsilon * path * feed)``.

Outputs: ``yield`` (1), ``absorbance`` (AU), ``plate_temperature`` (degC,
the settled reading) and ``dispensed`` (mL).

``stop()`` stops the pump first, then turns the heater off (both are tried
even if the first fails). A cancelled or failed ``run()`` stops the pump
itself before it returns, so nothing flows unattended, and the next ``run()``
starts from scratch. ``close()`` stops the pump and turns the heater off
(best effort) before it closes the ports.

With ``emulate: true`` the three devices are emulated in one child process
that shares the rig's physics (:mod:`selflab.simulators.emulators.physics`), so the
yield depends on temperature and flow rate as the kinetics say.

Example (YAML)::

    instruments:
      - name: rig
        driver: flow_synthesis
        options: {pump_port: /dev/ttyUSB0, hotplate_port: /dev/ttyUSB1,
                  spectrometer_port: /dev/ttyUSB2, tolerance_c: 0.5}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from selflab.instruments.drivers.ascii import read_inputs
from selflab.instruments.drivers.connection import Connection, NonNegative, Positive, driver_options
from selflab.instruments.drivers.hotplate import HotplateClient
from selflab.instruments.drivers.spectrometer import SpectrometerClient
from selflab.instruments.drivers.syringe_pump import PumpClient
from selflab.instruments.errors import InstrumentDisconnected, InstrumentError
from selflab.instruments.protocol import Limits

__all__ = ["FlowSynthesis"]

log = logging.getLogger("selflab.drivers")


class FlowSynthesis:
    """Heat, pump, measure: one flow-synthesis experiment per ``run``.

    Inputs: ``temperature`` (degC, [25, 150]), ``flow_rate`` (mL/min,
    [0.1, 2]), ``volume`` (mL, [1.5, 5]).

    Options (YAML ``options:``):
        pump_port, hotplate_port, spectrometer_port: the three devices.
        baudrate, timeout_s, retries, backoff_s, visa_library, emulate,
            emulator: see :mod:`selflab.instruments.drivers.connection`.
        ramp_c_per_min: hotplate heating rate, degC/min.
        tolerance_c, settle_samples, settle_timeout_s: when the plate
            counts as settled, and how long to wait for it (s).
        poll_s: seconds between status and temperature polls.
        dispense_timeout_s: seconds a dispense may take (default 1.5 x
            volume / rate + 60 s).
        wavelength_nm: analysis wavelength (P absorbs at 420 nm).
        epsilon_l_per_mol_cm, path_cm, feed_mol_l: Beer-Lambert calibration
            (molar absorptivity of P at ``wavelength_nm``, cell path, feed
            concentration).
    """

    limits: ClassVar[Limits] = {"temperature": (25.0, 150.0), "flow_rate": (0.1, 2.0), "volume": (1.5, 5.0)}
    inputs: ClassVar[tuple[str, ...]] = tuple(limits)
    """What ``run(params)`` reads: each limited input (see :class:`~selflab.instruments.protocol.DeclaresInputs`)."""
    capacity: ClassVar[int] = 1

    @driver_options
    def __init__(
        self,
        pump_port: str = "",
        hotplate_port: str = "",
        spectrometer_port: str = "",
        *,
        baudrate: int = 9600,
        timeout_s: Positive = 1.0,
        retries: int = 2,
        backoff_s: NonNegative = 0.1,
        visa_library: str = "",
        emulate: bool = False,
        emulator: dict[str, Any] | None = None,
        ramp_c_per_min: Positive = 20.0,
        tolerance_c: Positive = 1.0,
        settle_samples: int = 3,
        settle_timeout_s: Positive = 1800.0,
        poll_s: Positive = 0.5,
        dispense_timeout_s: Positive | None = None,
        wavelength_nm: Positive = 420.0,
        epsilon_l_per_mol_cm: Positive = 8000.0,
        path_cm: Positive = 1.0,
        feed_mol_l: Positive = 1e-4,
    ) -> None:
        if settle_samples < 1:
            raise ValueError(f"settle_samples must be >= 1, got {settle_samples}")
        ports = {"hotplate": hotplate_port, "pump": pump_port, "spectrometer": spectrometer_port}
        self.connection = Connection(ports, baudrate=baudrate, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
                                     visa_library=visa_library, emulate=emulate, emulator=emulator)
        self.ramp_c_per_min, self.tolerance_c, self.settle_samples = ramp_c_per_min, tolerance_c, settle_samples
        self.settle_timeout_s, self.poll_s, self.dispense_timeout_s = settle_timeout_s, poll_s, dispense_timeout_s
        self.wavelength_nm = wavelength_nm
        self.full_scale_au = epsilon_l_per_mol_cm * path_cm * feed_mol_l
        """Absorbance of a 100 % yield."""
        self._devices: tuple[HotplateClient, PumpClient, SpectrometerClient] | None = None

    async def connect(self) -> None:
        """Open the three links (or start the emulator) and identify each device."""
        links = await self.connection.open()
        devices = (HotplateClient(links["hotplate"], "hotplate"), PumpClient(links["pump"], "pump"),
                   SpectrometerClient(links["spectrometer"], "spectrometer"))
        for device in devices:
            log.info("%s: connected to %s on %s", device.label, await device.identify(), device.transport.name)
        self._devices = devices

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        """One experiment (see the module docstring).

        Raises:
            OutOfLimits, BadResponse: bad inputs (nothing is sent).
            InstrumentTimeout: no reply, or the plate did not settle, or the
                dispense overran.
            InstrumentDisconnected: a device vanished and did not come back.
            BadResponse: a garbled, partial, NaN or refused reply.
        """
        x = read_inputs(params, self.limits)
        if self._devices is None:
            raise InstrumentDisconnected("flow rig is not connected: call connect() first")
        plate, pump, uv = self._devices
        await plate.heat(x["temperature"], self.ramp_c_per_min)
        settled = await plate.settle(x["temperature"], tolerance_c=self.tolerance_c, samples=self.settle_samples,
                                     poll_s=self.poll_s, timeout_s=self.settle_timeout_s)
        timeout = self.dispense_timeout_s or 1.5 * 60.0 * x["volume"] / x["flow_rate"] + 60.0
        dispensed = await pump.dispense(x["flow_rate"], x["volume"], poll_s=self.poll_s, timeout_s=timeout)
        absorbance = await uv.absorbance(self.wavelength_nm)
        return {"yield": absorbance / self.full_scale_au, "absorbance": absorbance,
                "plate_temperature": settled, "dispensed": dispensed}

    async def stop(self) -> None:
        """Pump ``STOP``, then heater ``OFF``; raises the first failure after trying both."""
        if self._devices is None:
            return
        plate, pump, _ = self._devices
        failures: list[InstrumentError] = []
        for action in (pump.stop, plate.off):
            try:
                await action()
            except InstrumentError as exc:
                failures.append(exc)
        if failures:
            raise failures[0]

    async def close(self) -> None:
        """Pump ``STOP`` and heater ``OFF`` (best effort), then close the links
        and the emulator; safe to call twice."""
        devices, self._devices = self._devices, None
        if devices is not None:
            plate, pump, _ = devices
            await pump.safe("STOP")
            await plate.safe("OFF")
        await self.connection.close()

    @staticmethod
    def describe() -> dict[str, str]:
        """Output name -> unit (the same for every instance)."""
        return {"yield": "1", "absorbance": "AU", "plate_temperature": "degC", "dispensed": "mL"}
