"""The emulated devices: each turns one command line into one reply line.

They speak the protocols documented in :mod:`selflab.instruments.drivers.syringe_pump`,
:mod:`selflab.instruments.drivers.hotplate` and :mod:`selflab.instruments.drivers.spectrometer`
(every command gets exactly one reply: ``OK``, a value, or
``ERR <code> <text>``), and act on a shared :class:`FlowWorld`. They know
nothing of ports or faults (see :mod:`selflab.simulators.emulators.server`).

Error codes: ``1`` unknown command, ``2`` value out of range, ``3`` busy,
``5`` not a number.

Example::

    world = FlowWorld(time_scale=600.0)
    pump = PumpDevice(world, seed=0)
    pump.handle("RATE 0.5")   # 'OK'
    pump.handle("RATE 99")    # 'ERR 2 RATE 99 out of range [0.001, 20]'
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from selflab.simulators.emulators.physics import FlowWorld, absorbance_at

__all__ = ["DEVICES", "Device", "HotplateDevice", "LineDevice", "PumpDevice", "SpectrometerDevice"]


@runtime_checkable
class LineDevice(Protocol):
    """What :class:`~selflab.simulators.emulators.server.DeviceServer` serves: the
    bundled devices here, and devices described in a file
    (:class:`~selflab.simulators.emulators.filedevice.FileDevice`)."""

    name: str
    """Names the port."""

    def handle(self, line: str) -> str | None:
        """The reply to one command line (without terminators); ``None``: no reply."""

    def reset(self) -> None:
        """Power-on state (after a reboot)."""


class _Refusal(Exception):
    """An ``ERR`` reply."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"ERR {code} {text}")


def _number(word: str, args: list[str], low: float, high: float) -> float:
    if len(args) != 1:
        raise _Refusal(5, f"{word} takes one number")
    try:
        value = float(args[0])
    except ValueError:
        raise _Refusal(5, f"{word}: {args[0]!r} is not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise _Refusal(2, f"{word} {args[0]} out of range [{low:g}, {high:g}]")
    return value


class Device:
    """Shared dispatch: ``handle`` splits the line and calls ``cmd_<word>``."""

    name = "device"
    idn = "SELFLAB,DEVICE,EMU0000,1.0"

    def __init__(self, world: FlowWorld, *, seed: int, drift_per_min: float = 0.0, noise: bool = True,
                 drift_after_min: float = 0.0, drift_step: float = 0.0) -> None:
        self.world = world
        self.drift_per_min, self.drift_after_min, self.drift_step = drift_per_min, drift_after_min, drift_step
        self.noise = noise
        self._rng = random.Random(f"noise:{seed}:{self.name}")
        self.reset()

    def reset(self) -> None:
        """Power-on state (after a reboot)."""

    def drift(self) -> float:
        """The drift of the main reading now: none for ``drift_after_min``
        emulated minutes, then ``drift_step`` plus ``drift_per_min`` per minute since.

        >>> world = FlowWorld(time_scale=1.0)
        >>> HotplateDevice(world, seed=0, drift_per_min=0.5, drift_after_min=1e6, drift_step=3.0).drift()
        0.0
        """
        since = self.world.now_min() - self.drift_after_min
        return 0.0 if since < 0 else self.drift_step + self.drift_per_min * since

    def _gauss(self, std: float) -> float:
        return self._rng.gauss(0.0, std) if self.noise else 0.0

    def handle(self, line: str) -> str:
        """The reply to one command line (without terminators)."""
        word, *args = line.split()
        self.world.advance()
        method: Callable[[list[str]], str] | None = getattr(self, "cmd_" + _method_name(word), None)
        if word == "*IDN?":
            return self.idn
        if method is None:
            return f"ERR 1 unknown command {word!r}"
        try:
            return method(args)
        except _Refusal as refusal:
            return str(refusal)


def _method_name(word: str) -> str:
    return word.upper().replace("?", "_q").lower() if word.replace("?", "").isalpha() else "-"


class PumpDevice(Device):
    """A syringe pump (protocol: :mod:`selflab.instruments.drivers.syringe_pump`)."""

    name = "pump"
    idn = "SELFLAB,SP-20,EMU0001,1.0"

    def reset(self) -> None:
        self.world.pumping = False
        self.world.rate_ml_min, self.world.target_ml, self.world.pumped_ml = 1.0, 0.0, 0.0

    def _idle(self, word: str) -> None:
        if self.world.pumping:
            raise _Refusal(3, f"{word}: busy dispensing; send STOP first")

    def cmd_rate(self, args: list[str]) -> str:
        self._idle("RATE")
        self.world.rate_ml_min = _number("RATE", args, 0.001, 20.0)
        return "OK"

    def cmd_rate_q(self, args: list[str]) -> str:
        return f"{self.world.rate_ml_min:.4f}"

    def cmd_vol(self, args: list[str]) -> str:
        self._idle("VOL")
        self.world.target_ml = _number("VOL", args, 0.001, 50.0)
        return "OK"

    def cmd_vol_q(self, args: list[str]) -> str:
        return f"{self.world.target_ml:.4f}"

    def cmd_run(self, args: list[str]) -> str:
        self._idle("RUN")
        if self.world.target_ml <= 0:
            raise _Refusal(2, "RUN: set VOL first")
        self.world.start_pump()
        return "OK"

    def cmd_status_q(self, args: list[str]) -> str:
        return f"{'RUN' if self.world.pumping else 'IDLE'} {self.world.pumped_ml:.4f}"

    def cmd_stop(self, args: list[str]) -> str:
        self.world.pumping = False
        return "OK"


class HotplateDevice(Device):
    """A hotplate with a temperature probe (protocol: :mod:`selflab.instruments.drivers.hotplate`)."""

    name = "hotplate"
    idn = "SELFLAB,HP-350,EMU0002,1.0"

    def reset(self) -> None:
        self.world.setpoint_c, self.world.ramp_c_per_min = None, 10.0

    def cmd_setp(self, args: list[str]) -> str:
        self.world.setpoint_c = _number("SETP", args, 0.0, 350.0)
        return "OK"

    def cmd_setp_q(self, args: list[str]) -> str:
        return "OFF" if self.world.setpoint_c is None else f"{self.world.setpoint_c:.2f}"

    def cmd_ramp(self, args: list[str]) -> str:
        self.world.ramp_c_per_min = _number("RAMP", args, 0.1, 100.0)
        return "OK"

    def cmd_ramp_q(self, args: list[str]) -> str:
        return f"{self.world.ramp_c_per_min:.2f}"

    def cmd_temp_q(self, args: list[str]) -> str:
        return f"{self.world.plate_c + self.drift() + self._gauss(0.05):.2f}"

    def cmd_off(self, args: list[str]) -> str:
        self.world.setpoint_c = None
        return "OK"


class SpectrometerDevice(Device):
    """A UV-Vis flow-cell spectrometer (protocol: :mod:`selflab.instruments.drivers.spectrometer`)."""

    name = "spectrometer"
    idn = "SELFLAB,UV-1100,EMU0003,1.0"

    def reset(self) -> None:
        self.wavelength_nm = 500.0

    def cmd_wl(self, args: list[str]) -> str:
        self.wavelength_nm = _number("WL", args, 190.0, 1100.0)
        return "OK"

    def cmd_wl_q(self, args: list[str]) -> str:
        return f"{self.wavelength_nm:.1f}"

    def cmd_acq_q(self, args: list[str]) -> str:
        w = self.world
        value = absorbance_at(self.wavelength_nm, w.cell_p, w.cell_a)
        value += self.drift() + self._gauss(0.002)
        return f"{value:.4f}"


DEVICES: dict[str, type[Device]] = {d.name: d for d in (PumpDevice, HotplateDevice, SpectrometerDevice)}
"""Device name -> class."""
