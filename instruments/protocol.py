"""The ``Instrument`` protocol: what the controller needs from a device.

Any plain class with these three async methods is an instrument; no base class
is required::

    class Scale:
        async def connect(self) -> None: ...
        async def run(self, params: dict) -> dict[str, float]:
            return {"mass_g": 1.25}
        async def close(self) -> None: ...

Optional members (most are small Protocols below, checked with ``isinstance``):

``limits``  ``dict[str, tuple[float, float]]``: declared safe ranges of
            numeric inputs, inclusive. A proposal outside them is refused
            before dispatch and never sent.
``capacity`` ``int``: concurrent experiment slots (default 1).
``fidelity`` ``float`` in (0, 1]: the level of trust it serves (1 = target).
``cost``    ``float``: cost units per experiment.
``describe()`` -> ``dict[str, str]``: output name -> unit.
``inputs``  ``tuple[str, ...]``: the names ``run(params)`` reads from
            ``params`` (:class:`DeclaresInputs`). A config must have a
            parameter of each name; ``selflab validate`` says so otherwise.
``stop()``  async: abort whatever is running (emergency stop, timeout).
``duration(params)`` -> ``float``: seconds the experiment takes on the
            instrument's own clock. Simulators declare it so that offline
            campaigns run on a simulated clock.
``candidates()`` -> ``list[dict]``: the only inputs the instrument can
            measure (a pool, e.g. the rows of a dataset). The planner then
            chooses among those not yet measured.

Values set in the config (``capacity``, ``fidelity``, ``cost``, ``limits``)
take precedence over, or intersect with, the declared ones.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

Limits = dict[str, tuple[float, float]]
"""Input name -> inclusive ``(low, high)`` safe range."""


@runtime_checkable
class Instrument(Protocol):
    """The three methods every instrument has."""

    async def connect(self) -> None:
        """Open the link. Raise :class:`InstrumentDisconnected` if it cannot."""

    async def run(self, params: Mapping[str, Any]) -> Mapping[str, float]:
        """Run one experiment and return its readings, e.g. ``{"yield": 0.71}``."""

    async def close(self) -> None:
        """Release the link. Must be safe to call twice."""


@runtime_checkable
class Stoppable(Protocol):
    """An instrument that can abort what it is doing."""

    async def stop(self) -> None:
        """Abort the running experiment(s) as fast as is safe."""


@runtime_checkable
class Describable(Protocol):
    """An instrument that names its outputs and their units."""

    def describe(self) -> Mapping[str, str]:
        """Output name -> unit, e.g. ``{"yield": "1", "sty": "kg/m^3/h"}``."""


@runtime_checkable
class DeclaresInputs(Protocol):
    """An instrument that names the inputs ``run(params)`` needs in ``params``."""

    @property
    def inputs(self) -> Sequence[str]:
        """Input names, e.g. ``("temperature", "flow_rate")``."""
        ...


def declared_inputs(instrument: object) -> tuple[str, ...] | None:
    """The inputs the instrument declares (:class:`DeclaresInputs`), or
    ``None`` when it declares none."""
    if not isinstance(instrument, DeclaresInputs):
        return None
    names = instrument.inputs
    return (names,) if isinstance(names, str) else tuple(str(name) for name in names)


@runtime_checkable
class Readable(Protocol):
    """An instrument whose readings can be polled between experiments (interlocks watch them)."""

    async def read(self) -> Mapping[str, float]:
        """The current readings, e.g. ``{"temperature": 81.2}``."""


@runtime_checkable
class Pooled(Protocol):
    """An instrument that can only measure the points of a fixed pool (a dataset's rows)."""

    def candidates(self) -> Sequence[Mapping[str, Any]]:
        """Every point it can measure."""


@runtime_checkable
class Remembering(Protocol):
    """An instrument that remembers outcomes, so that after a controller crash
    an experiment it finished is recovered instead of going stale."""

    async def outcome_of(self, params: Mapping[str, Any]) -> Mapping[str, float] | None:
        """The outcome it measured for ``params``, or ``None`` when it has none."""


@runtime_checkable
class HasCapacity(Protocol):
    """An instrument that declares how many experiments it runs at once (default 1)."""

    capacity: int


@runtime_checkable
class HasFidelity(Protocol):
    """An instrument that declares the fidelity it serves, in (0, 1] (default 1, the target)."""

    fidelity: float


@runtime_checkable
class HasCost(Protocol):
    """An instrument that declares its cost units per experiment (default 1)."""

    cost: float


@runtime_checkable
class Timed(Protocol):
    """An instrument that declares how long an experiment takes (seconds)."""

    def duration(self, params: Mapping[str, Any]) -> float:
        """Seconds the experiment with ``params`` takes on the instrument."""


def declared_limits(instrument: object) -> Limits:
    """The instrument's declared limits, or ``{}`` when it declares none.

    A bound that is not a number is kept as NaN, so that
    :func:`limit_violations` refuses every value of that input (fail closed).
    """
    limits = getattr(instrument, "limits", None) or {}
    return {str(k): _declared_range(v) for k, v in dict(limits).items()}


def _declared_range(bounds: Any) -> tuple[float, float]:
    try:
        low, high = bounds
        return _as_float(low), _as_float(high)
    except (TypeError, ValueError):
        return math.nan, math.nan


def _as_float(x: Any) -> float:
    """``x`` as a float when it is a real number (not a bool), else NaN."""
    if isinstance(x, bool) or not isinstance(x, (numbers.Real, Decimal)):
        return math.nan
    try:
        return float(x)
    except (ValueError, OverflowError):  # e.g. a signalling Decimal NaN
        return math.nan


def limit_violations(params: Mapping[str, Any], limits: Limits) -> list[str]:
    """Human-readable violations of ``limits`` by ``params``; empty when safe.

    Fails closed: a value is refused whenever it cannot be compared with its
    limit, i.e. when it is not a real number (``bool`` is not one; numpy
    numbers and ``Decimal`` are), is NaN or infinite, or when the limit is not
    two finite numbers with ``low <= high``.

    >>> limit_violations({"T": 300.0}, {"T": (20.0, 250.0)})
    ['T=300 is above the limit 250']
    >>> limit_violations({"T": 30.0}, {"T": (float("nan"), 250.0)})
    ['T: its limit (nan, 250.0) is not two finite numbers low <= high, so no value can be checked against it']
    """
    faults: list[str] = []
    for name, bounds in limits.items():
        if name not in params:
            continue
        value = params[name]
        low, high = _declared_range(bounds)
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            faults.append(f"{name}: its limit {_short(bounds)} is not two finite numbers low <= high, so no value can be checked against it")
            continue
        number = _as_float(value)
        if math.isnan(number) and not (isinstance(value, float) and math.isnan(value)):
            faults.append(f"{name}={_short(value)} is not a number but the instrument limits it to [{low:g}, {high:g}]")
        elif not math.isfinite(number):
            faults.append(f"{name}={_short(value)} is not a finite number; the instrument limits it to [{low:g}, {high:g}]")
        elif number < low:
            faults.append(f"{name}={number:g} is below the limit {low:g}")
        elif number > high:
            faults.append(f"{name}={number:g} is above the limit {high:g}")
    return faults


_values = reprlib.Repr()
_values.maxstring = _values.maxother = 60


def _short(value: Any) -> str:
    """``repr(value)``, cut short: a refused value may be anything."""
    return _values.repr(value)
