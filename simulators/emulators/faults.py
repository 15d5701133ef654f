"""Seeded fault injection for the device emulators.

A :class:`FaultPlan` says which replies may go wrong and how; a
:class:`FaultInjector` (one per emulated device, seeded from the emulator's
seed and the device name) draws the faults. The draw depends only on the
seed and on the sequence of commands the device receives, so a driver that
sends the same commands meets the same faults.

Fault kinds and what a correct driver raises:

============  ===================================================  ===========================
kind          what the emulator does                               driver raises
============  ===================================================  ===========================
hang          drops the command and stays silent for ``hang_s``     ``InstrumentTimeout``
disconnect    closes the pty (cable pulled); the port comes back    ``InstrumentDisconnected``
              after ``replug_s``, device state kept
reboot        closes the pty, resets the device (setpoints lost);   ``InstrumentDisconnected``
              the port comes back after ``reboot_s``
garble        answers with bytes outside ASCII in the reply         ``BadResponse``
partial       sends the first half of the reply, no terminator      ``BadResponse``
nan           answers ``NaN`` instead of the value                  ``BadResponse``
============  ===================================================  ===========================

``drift_per_min`` is not drawn: it is a slow, steady drift of the device's
main reading (degC per emulated minute on the hotplate, absorbance units per
emulated minute on the spectrometer). It starts ``drift_after_min`` emulated
minutes after the emulator starts (default: at once), when the reading also
jumps by ``drift_step`` (same units; default 0): a lamp that ages from some
day on, or a probe knocked out of place
(:meth:`~selflab.simulators.emulators.devices.Device.drift`).

Example::

    plan = FaultPlan(rate=0.25, kinds=["garble", "hang"], commands=["ACQ?"])
    injector = FaultInjector(plan, seed=3, device="spectrometer")
    injector.draw("ACQ?")  # None, "garble" or "hang"
"""

from __future__ import annotations

import random
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FAULT_KINDS", "FaultInjector", "FaultKind", "FaultPlan"]

FaultKind = Literal["hang", "disconnect", "reboot", "garble", "partial", "nan"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)


class FaultPlan(BaseModel):
    """Which replies may fail, how often, and how.

    Attributes:
        rate: probability that a reply to a matching command is faulted, in [0, 1].
        kinds: the fault kinds to choose from (uniformly).
        commands: command words (first word, e.g. ``"RUN"``, ``"TEMP?"``)
            whose replies may be faulted; empty means every command.
        skip: the first ``skip`` matching commands are never faulted.
        max_faults: stop injecting after this many faults (``None``: no cap).
        hang_s: real seconds a hung device stays silent.
        replug_s: real seconds the port is absent after a disconnect.
        reboot_s: real seconds the port is absent during a reboot.
        drift_per_min: steady drift of the main reading per emulated minute.
        drift_after_min: emulated minutes before the drift starts.
        drift_step: jump of the main reading when the drift starts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(default=0.0, ge=0.0, le=1.0)
    kinds: list[FaultKind] = Field(default_factory=lambda: list(FAULT_KINDS), min_length=1)
    commands: list[str] = Field(default_factory=list)
    skip: int = Field(default=0, ge=0)
    max_faults: int | None = Field(default=None, ge=0)
    hang_s: float = Field(default=2.0, ge=0)
    replug_s: float = Field(default=0.2, ge=0)
    reboot_s: float = Field(default=0.5, ge=0)
    drift_per_min: float = 0.0
    drift_after_min: float = Field(default=0.0, ge=0)
    drift_step: float = 0.0


class FaultInjector:
    """Draws the faults of one device from a seeded generator."""

    def __init__(self, plan: FaultPlan, *, seed: int, device: str) -> None:
        self.plan = plan
        self._rng = random.Random(f"faults:{seed}:{device}")
        self._commands = {c.upper() for c in plan.commands}
        self.matched = 0
        """Commands seen that may be faulted."""
        self.fired = 0
        """Faults injected so far."""

    def draw(self, command: str) -> FaultKind | None:
        """The fault to inject into the reply to ``command``, or ``None``."""
        plan = self.plan
        if plan.rate <= 0.0:
            return None
        word = command.split()[0].upper() if command.split() else ""
        if self._commands and word not in self._commands:
            return None
        self.matched += 1
        if self.matched <= plan.skip or (plan.max_faults is not None and self.fired >= plan.max_faults):
            return None
        if self._rng.random() >= plan.rate:
            return None
        self.fired += 1
        return self._rng.choice(plan.kinds)

    def garble(self, data: bytes) -> bytes:
        """``data`` with about a quarter of its bytes replaced by non-ASCII ones."""
        damaged = bytearray(data or b"?")
        for _ in range(max(1, len(damaged) // 4)):
            damaged[self._rng.randrange(len(damaged))] = self._rng.randrange(0x80, 0xFF)
        return bytes(damaged)
