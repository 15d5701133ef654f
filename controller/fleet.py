"""The campaign's instruments, built from the config, with their slots and health.

A :class:`Station` is one configured instrument: the live driver plus what
the campaign may do with it (capacity, fidelity, cost, effective limits) and
how it is doing (busy slots, consecutive failures, online or not).
Config values override the driver's declared ``capacity``, ``fidelity`` and
``cost``; config ``limits`` intersect with the driver's declared ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.config import ConfigError, ConfigFault, InstrumentConfig, LabConfig
from controller.expressions import Expression, ExpressionError
from instruments.protocol import Limits, Timed, declared_limits, limit_violations
from instruments.registry import DriverError, build_driver
from planners.space import CategoricalParameter


@dataclass
class Station:
    """One instrument of the campaign and its live state."""

    config: InstrumentConfig
    driver: Any
    capacity: int
    fidelity: float
    cost: float
    limits: Limits
    cost_expression: Expression | None = None
    """Cost as a function of the parameters; ``cost`` is then its mean over the space."""
    min_cost: float = 0.0
    """The least one experiment can cost here (``cost`` for a fixed cost)."""
    busy: set[int] = field(default_factory=set)
    """Slots in use."""
    consecutive_failures: int = 0
    offline_reason: str | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def online(self) -> bool:
        return self.offline_reason is None

    @property
    def free(self) -> int:
        return self.capacity - len(self.busy) if self.online else 0

    @property
    def state(self) -> str:
        if not self.online:
            return "offline"
        return f"busy {len(self.busy)}/{self.capacity}" if self.busy else "idle"

    def cost_of(self, params: Mapping[str, Any]) -> float:
        """Cost units of the experiment with ``params`` on this instrument."""
        return self.cost if self.cost_expression is None else max(self.cost_expression.evaluate(params), 0.0)

    def take_slot(self) -> int:
        slot = next(i for i in range(self.capacity) if i not in self.busy)
        self.busy.add(slot)
        return slot

    def violations(self, params: Mapping[str, Any]) -> list[str]:
        """Why this station must not run ``params``; empty when it may."""
        return limit_violations(params, self.limits)

    def duration(self, params: Mapping[str, Any]) -> float | None:
        """Declared seconds for ``params``, or ``None`` when undeclared."""
        if isinstance(self.driver, Timed):
            value = float(self.driver.duration(params))
            return value if math.isfinite(value) and value >= 0 else None
        return None


def judged_fidelity(stations: list[Station], target: float) -> float | None:
    """The fidelity at which results count towards "best" and a target stop
    rule: ``target`` when the stations serve several fidelities (a cheap
    model's optimum is not the campaign's), else ``None`` (all count)."""
    return target if len({s.fidelity for s in stations}) > 1 else None


def _intersect(declared: Limits, configured: Mapping[str, tuple[float, float]]) -> Limits:
    out = dict(declared)
    for name, (low, high) in configured.items():
        if name in out:
            low, high = max(low, out[name][0]), min(high, out[name][1])
        out[name] = (low, high)
    return out


def build_fleet(config: LabConfig) -> list[Station]:
    """Build every instrument of ``config``. Raises :class:`ConfigError`
    naming the field of each instrument that cannot be built."""
    faults: list[ConfigFault] = []
    stations: list[Station] = []
    params = {p.name: p for p in config.parameters}
    for i, inst in enumerate(config.instruments):
        try:
            driver = build_driver(inst.driver, inst.options)
        except DriverError as exc:
            where = "options" if str(exc).startswith("bad options") else "driver"
            faults.append(ConfigFault(loc=f"instruments[{i}].{where}", message=str(exc)))
            continue
        for name in inst.limits:
            if name not in params:
                faults.append(ConfigFault(loc=f"instruments[{i}].limits.{name}", message=f"{name!r} is not a parameter"))
        limits = _intersect(declared_limits(driver), inst.limits)
        for name, (low, high) in limits.items():
            p = params.get(name)
            if p is None or isinstance(p, CategoricalParameter):
                continue
            if low > high or p.high < low or p.low > high:
                faults.append(
                    ConfigFault(
                        loc=f"instruments[{i}].limits.{name}",
                        message=f"the instrument accepts {name} in [{low:g}, {high:g}] but parameters asks for "
                        f"[{p.low:g}, {p.high:g}]: no value is allowed; widen one of them",
                    )
                )
        stations.append(
            Station(
                config=inst,
                driver=driver,
                capacity=inst.capacity or int(getattr(driver, "capacity", 1) or 1),
                fidelity=inst.fidelity if inst.fidelity is not None else float(getattr(driver, "fidelity", 1.0)),
                cost=float(inst.cost) if isinstance(inst.cost, (int, float)) else float(getattr(driver, "cost", 1.0)),
                limits=limits,
                cost_expression=inst.cost_expression(),
            )
        )
        station = stations[-1]
        station.min_cost = station.cost
        if station.cost_expression is not None:
            try:
                costs = [station.cost_of(p) for p in _space_sample(config, limits)]
            except ExpressionError as exc:
                faults.append(ConfigFault(loc=f"instruments[{i}].cost", message=str(exc)))
            else:
                station.cost, station.min_cost = sum(costs) / len(costs), min(costs)
    faults += _space_beyond_limits(config, stations)
    by_name = {s.name: s for s in stations}
    for i, lock in enumerate(config.interlocks):
        station = by_name.get(lock.pause_when.instrument)
        if station is not None and not callable(getattr(station.driver, "read", None)):
            faults.append(ConfigFault(loc=f"interlocks[{i}].pause_when",
                                      message=f"instrument {station.name!r} has no read() method, so its readings cannot be watched while dispatch is paused"))
    outputs: set[str] = set()
    described = True
    for station in stations:
        describe = getattr(station.driver, "describe", None)
        if describe is None:
            described = False
            break
        outputs |= set(describe())
    if described and stations:
        for i, objective in enumerate(config.objectives):
            if objective.name not in outputs:
                faults.append(
                    ConfigFault(
                        loc=f"objectives[{i}].name",
                        message=f"no instrument reports {objective.name!r}; they report {', '.join(sorted(outputs))}",
                    )
                )
        for i, constraint in enumerate(config.constraints):
            if constraint.outcome not in outputs:
                faults.append(
                    ConfigFault(
                        loc=f"constraints[{i}]",
                        message=f"no instrument reports {constraint.outcome!r}; they report {', '.join(sorted(outputs))}",
                    )
                )
    if faults:
        raise ConfigError(faults)
    return stations


def _space_beyond_limits(config: LabConfig, stations: list[Station]) -> list[ConfigFault]:
    """Parameters whose range reaches beyond what every instrument accepts.

    An instrument without a limit on a parameter accepts all of it; where
    every instrument limits it, the space may not extend past the widest
    limit, or the planner would search where nothing may run.
    """
    faults: list[ConfigFault] = []
    if not stations:
        return faults
    for i, p in enumerate(config.parameters):
        if isinstance(p, CategoricalParameter):
            continue
        limits = [(s.name, s.limits.get(p.name)) for s in stations]
        if any(limit is None for _, limit in limits):
            continue
        low = min(limit[0] for _, limit in limits if limit is not None)
        high = max(limit[1] for _, limit in limits if limit is not None)
        if p.low < low or p.high > high:
            sides = ", ".join(f"{name} accepts [{lim[0]:g}, {lim[1]:g}]" for name, lim in limits if lim is not None)
            faults.append(
                ConfigFault(
                    loc=f"parameters[{i}]",
                    message=f"{p.name} asks for [{p.low:g}, {p.high:g}] but the instruments' limits allow only "
                    f"[{low:g}, {high:g}] ({sides}); narrow the parameter or widen a limit",
                )
            )
    return faults


def _space_sample(config: LabConfig, limits: Limits, n: int = 64) -> list[dict[str, Any]]:
    """``n`` points spread over the space (within ``limits``), corners included:
    where a cost expression is summarised (mean, least) and checked."""
    import itertools

    import numpy as np

    space = config.space
    rng = np.random.default_rng(0)
    units = [list(c) for c in itertools.product([0.0, 1.0], repeat=min(space.dim, 6))][:n // 2]
    units = [u + [0.5] * (space.dim - len(u)) for u in units] + rng.random((n - len(units), space.dim)).tolist()
    points = []
    for u in units:
        point = space.from_unit(u)
        for name, (low, high) in limits.items():
            if isinstance(point.get(name), (int, float)):
                point[name] = min(max(point[name], low), high)
        points.append(point)
    return points

