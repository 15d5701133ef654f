"""Serve emulated devices on pseudo-terminals, with seeded fault injection.

:func:`serve` opens one :class:`PtyPort` per device, answers every command
line the driver sends, and applies the :class:`FaultPlan`. It runs until its
``stop`` event is set. Run it in its own process: ``python -m
selflab.simulators.emulators '<EmulatorConfig as JSON>'`` prints one JSON line,
``{"ports": {"pump": "/tmp/selflab-emu-.../pump", ...}}``, once the ports are
up, and stops when its standard input closes (so it never outlives the driver
that started it) or on SIGTERM. ``selflab emulate`` runs it in the foreground.

Every fault is logged at WARNING on ``selflab.emulator`` (``pump: fault
'garble' in the reply to 'RUN' (fault 2)``), every command at DEBUG.

Example::

    config = EmulatorConfig(devices=["pump", "hotplate"], seed=1, time_scale=600)
    asyncio.run(serve(config, on_ready=print, stop=asyncio.Event()))
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from selflab.simulators.emulators.devices import DEVICES, LineDevice
from selflab.simulators.emulators.filedevice import load_device_file
from selflab.simulators.emulators.faults import FaultInjector, FaultKind, FaultPlan
from selflab.simulators.emulators.physics import FlowWorld
from selflab.simulators.emulators.ptyport import PtyPort

__all__ = ["DeviceServer", "EmulatorConfig", "serve"]

log = logging.getLogger("selflab.emulator")

DeviceName = Literal["pump", "hotplate", "spectrometer"]


class EmulatorConfig(BaseModel):
    """One emulator process: which devices, how fast, which faults.

    Attributes:
        devices: devices to serve; they share one :class:`FlowWorld`.
        device_file: instead of ``devices``, serve the serial devices of this
            pyvisa-sim device file (:mod:`~selflab.simulators.emulators.filedevice`);
            ``time_scale`` and ``noise`` do not apply to them.
        seed: seeds sensor noise and fault draws (per device).
        time_scale: emulated seconds per real second (600: a minute takes 0.1 s).
        faults: the fault plan, applied to every device.
        noise: add sensor noise to readings.
        reply_termination: ends every reply line.
        link_dir: directory for the port links (default: a new temporary one,
            removed on exit).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: list[DeviceName] = Field(default_factory=list)
    device_file: str | None = Field(default=None, min_length=1)
    seed: int = Field(default=0, ge=0)
    time_scale: float = Field(default=1.0, gt=0)
    faults: FaultPlan = Field(default_factory=FaultPlan)
    noise: bool = True
    reply_termination: Literal["\r\n", "\n", "\r"] = "\r\n"
    link_dir: str | None = None

    @field_validator("devices")
    @classmethod
    def _unique(cls, devices: list[str]) -> list[str]:
        if len(set(devices)) != len(devices):
            raise ValueError(f"devices must be unique, got {devices}")
        return devices

    @model_validator(mode="after")
    def _one_source(self) -> EmulatorConfig:
        if bool(self.devices) == (self.device_file is not None):
            raise ValueError("give either devices (at least one) or device_file")
        return self


class DeviceServer:
    """One device on one pty: framing, replies and faults."""

    def __init__(self, device: LineDevice, port: PtyPort, injector: FaultInjector, termination: bytes) -> None:
        self.device, self.port, self.injector = device, port, injector
        self._termination = termination
        self._buffer = bytearray()
        self._silent_until = 0.0
        self._loop = asyncio.get_running_loop()
        self._replug: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Open the port and answer commands."""
        tty_name = self.port.open()
        self._buffer.clear()
        self._loop.add_reader(self.port.master, self._on_readable)
        log.info("%s: serving on %s (%s)", self.device.name, self.port.link, tty_name)

    def close(self) -> None:
        """Stop answering and remove the port for good."""
        if self._replug is not None:
            self._replug.cancel()
        self._remove_port()

    def _remove_port(self) -> None:
        if self.port.is_open:
            self._loop.remove_reader(self.port.master)
        self.port.close()

    def _on_readable(self) -> None:
        try:
            data = os.read(self.port.master, 4096)
        except OSError:  # nothing there after all (EAGAIN), or the pty is going away
            return
        self._buffer += data
        while True:
            ends = [i for i in (self._buffer.find(b"\r"), self._buffer.find(b"\n")) if i >= 0]
            if not ends:
                return
            line = bytes(self._buffer[: min(ends)]).decode("latin-1").strip()
            del self._buffer[: min(ends) + 1]
            if line:
                self._answer(line)
                if not self.port.is_open:
                    return

    def _answer(self, line: str) -> None:
        name = self.device.name
        if time.monotonic() < self._silent_until:
            log.debug("%s: hung, ignoring %r", name, line)
            return
        fault = self.injector.draw(line)
        if fault is not None:
            log.warning("%s: fault %r in the reply to %r (fault %d)", name, fault, line, self.injector.fired)
        plan = self.injector.plan
        if fault == "hang":
            self._silent_until = time.monotonic() + plan.hang_s
            return
        if fault in ("disconnect", "reboot"):
            self._unplug(fault)
            return
        reply = self.device.handle(line)
        log.debug("%s: %r -> %r", name, line, reply)
        if reply is None:  # a command the device never answers
            return
        self.port.write(_damage(reply, fault, self._termination, self.injector))

    def _unplug(self, fault: FaultKind) -> None:
        self._remove_port()
        if fault == "reboot":
            self.device.reset()
        delay = self.injector.plan.reboot_s if fault == "reboot" else self.injector.plan.replug_s
        self._replug = self._loop.call_later(delay, self.start)


def _damage(reply: str, fault: FaultKind | None, termination: bytes, injector: FaultInjector) -> bytes:
    """The bytes to send for ``reply`` under ``fault`` (garble, partial, nan or none)."""
    if fault == "nan":
        return b"NaN" + termination
    data = reply.encode("ascii")
    if fault == "garble":
        return injector.garble(data) + termination
    if fault == "partial":
        return data[: max(1, len(data) // 2)]
    return data + termination


async def serve(
    config: EmulatorConfig,
    *,
    on_ready: Callable[[dict[str, str]], None],
    stop: asyncio.Event,
) -> None:
    """Serve ``config.devices`` until ``stop`` is set.

    ``on_ready`` receives device name -> port link path once every port is up.

    Raises:
        DeviceFileError: ``config.device_file`` cannot be served.
        PtyUnavailable: the platform has no pseudo-terminals (Windows).
    """
    devices = _devices(config)
    made_dir = config.link_dir is None
    link_dir = Path(tempfile.mkdtemp(prefix="selflab-emu-")) if made_dir else Path(config.link_dir or "")
    link_dir.mkdir(parents=True, exist_ok=True)
    servers: list[DeviceServer] = []
    try:
        for device, termination in devices:
            injector = FaultInjector(config.faults, seed=config.seed, device=device.name)
            server = DeviceServer(device, PtyPort(link_dir / device.name), injector, termination)
            server.start()
            servers.append(server)
        on_ready({s.device.name: str(s.port.link) for s in servers})
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        if made_dir:
            shutil.rmtree(link_dir, ignore_errors=True)
        log.info("emulator stopped; %d fault(s) injected", sum(s.injector.fired for s in servers))


def _devices(config: EmulatorConfig) -> list[tuple[LineDevice, bytes]]:
    """The devices to serve, each with the line ending of its replies."""
    if config.device_file is not None:
        return [(device, device.termination) for device in load_device_file(config.device_file)]
    world = FlowWorld(time_scale=config.time_scale)
    termination = config.reply_termination.encode()
    plan = config.faults
    return [(DEVICES[name](world, seed=config.seed, drift_per_min=plan.drift_per_min, drift_after_min=plan.drift_after_min,
                           drift_step=plan.drift_step, noise=config.noise), termination)
            for name in config.devices]
