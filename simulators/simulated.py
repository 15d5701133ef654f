"""What every simulator shares: input checks, seeded noise and output checks.

A simulator *owns* a :class:`Simulation` (composition, not inheritance) and
delegates the chores of the :class:`~selflab.instruments.protocol.Instrument` protocol
to it:

* the connected / closed state (``run()`` before ``connect()`` raises
  :class:`~selflab.instruments.errors.InstrumentDisconnected`);
* reading the inputs from ``params``: a missing or non-numeric input raises
  :class:`~selflab.instruments.errors.BadResponse`, an input outside the declared
  ``limits`` raises :class:`~selflab.instruments.errors.OutOfLimits` (defence in
  depth: the controller checks limits before dispatch);
* Gaussian measurement noise from a seeded generator, so the same seed and the
  same sequence of calls give the same readings;
* refusing non-finite readings (:class:`~selflab.instruments.errors.BadResponse`,
  never a silent NaN).

The ``check_*`` helpers validate constructor options, which are the driver
``options:`` a user writes in YAML, and raise :class:`ValueError` naming the
option.

Example::

    sim = Simulation(limits={"x": (0.0, 1.0)}, outputs={"y": "1"}, noise_std=0.1, seed=3)
    sim.connect()
    x = sim.read_inputs({"x": 0.5})["x"]
    readings = sim.finish({"y": sim.noisy(x ** 2)})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

import numpy as np

from selflab.instruments.errors import BadResponse, InstrumentDisconnected, OutOfLimits
from selflab.instruments.protocol import Limits

__all__ = [
    "Simulation",
    "check_non_negative",
    "check_positive",
    "check_seed",
]


def _as_number(name: str, value: object) -> float:
    """``value`` as a float, or :class:`ValueError` naming the option."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def check_non_negative(name: str, value: object) -> float:
    """Option ``name`` as a finite float ``>= 0``.

    >>> check_non_negative("noise_std", 0)
    0.0
    >>> check_non_negative("noise_std", -1)
    Traceback (most recent call last):
    ...
    ValueError: noise_std must be >= 0, got -1
    """
    number = _as_number(name, value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return number


def check_positive(name: str, value: object) -> float:
    """Option ``name`` as a finite float ``> 0``."""
    number = _as_number(name, value)
    if number <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


def check_seed(name: str, value: object) -> int:
    """Option ``name`` as a non-negative integer seed."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return int(value)


class Simulation:
    """The shared state and checks of one simulated instrument.

    Args:
        limits: input name -> inclusive ``(low, high)`` safe range. Every
            input the simulator needs must be listed; ``read_inputs`` reads
            exactly these names and ignores any other key in ``params``.
        outputs: output name -> unit, as returned by ``describe()``.
        noise_std: standard deviation of the Gaussian noise that
            :meth:`noisy` adds, in the units of the value it is given. Must be
            ``>= 0``; ``0`` means exact, deterministic readings.
        seed: seed of the noise generator (``numpy.random.default_rng``).
    """

    def __init__(
        self,
        *,
        limits: Mapping[str, tuple[float, float]],
        outputs: Mapping[str, str],
        noise_std: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.limits: Limits = {str(k): (float(lo), float(hi)) for k, (lo, hi) in limits.items()}
        for name, (low, high) in self.limits.items():
            if not low <= high:
                raise ValueError(f"limits of {name} are empty: [{low:g}, {high:g}]")
        self.outputs: dict[str, str] = dict(outputs)
        self.noise_std: float = check_non_negative("noise_std", noise_std)
        self.seed: int = check_seed("seed", seed)
        self._rng = np.random.default_rng(self.seed)
        self.connected: bool = False

    def connect(self) -> None:
        """Mark the simulator connected."""
        self.connected = True

    def close(self) -> None:
        """Mark the simulator closed; safe to call any number of times."""
        self.connected = False

    def read_inputs(self, params: Mapping[str, Any], names: tuple[str, ...] | None = None) -> dict[str, float]:
        """The inputs ``names`` (default: every limited input) of ``params`` as floats.

        Raises:
            InstrumentDisconnected: the simulator is not connected.
            BadResponse: an input is missing, not a real number, or NaN.
            OutOfLimits: an input lies outside its declared limits.
        """
        if not self.connected:
            raise InstrumentDisconnected("simulator is not connected: call connect() first")
        return self.parse(params, names, check_limits=True)

    def parse(
        self,
        params: Mapping[str, Any],
        names: tuple[str, ...] | None = None,
        *,
        check_limits: bool = False,
    ) -> dict[str, float]:
        """Like :meth:`read_inputs`, but works when disconnected and, by
        default, does not check limits (used by ``duration()``)."""
        values: dict[str, float] = {}
        faults: list[str] = []
        for name in self.limits if names is None else names:
            if name not in params:
                raise BadResponse(f"missing input {name!r}")
            raw = params[name]
            if isinstance(raw, bool) or not isinstance(raw, Real):
                raise BadResponse(f"input {name}={raw!r} is not a number")
            value = float(raw)
            if math.isnan(value):
                raise BadResponse(f"input {name} is NaN")
            if check_limits:
                low, high = self.limits[name]
                if value < low:
                    faults.append(f"{name}={value:g} is below the limit {low:g}")
                elif value > high:
                    faults.append(f"{name}={value:g} is above the limit {high:g}")
            values[name] = value
        if faults:
            raise OutOfLimits("; ".join(faults))
        return values

    def noisy(self, value: float, *, low: float = -math.inf, high: float = math.inf) -> float:
        """``value`` plus ``N(0, noise_std)`` noise, clipped to ``[low, high]``.

        With ``noise_std == 0`` the value is returned unchanged and no random
        number is drawn.
        """
        if self.noise_std > 0:
            value = value + self.noise_std * float(self._rng.standard_normal())
        return min(max(value, low), high)

    def finish(self, readings: Mapping[str, float]) -> dict[str, float]:
        """``readings`` as plain floats; :class:`BadResponse` if any is not finite."""
        result: dict[str, float] = {}
        for name, value in readings.items():
            number = float(value)
            if not math.isfinite(number):
                raise BadResponse(f"simulated output {name} is not finite ({number!r})")
            result[name] = number
        return result
