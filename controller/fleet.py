"""The campaign's instruments, built from the config, with their slots and health.

A :class:`Station` is one configured instrument: the live driver plus what
the campaign may do with it (capacity, fidelity, cost, effective limits) and
how it is doing (busy slots, consecutive failures, online or not).
Config values override the driver's declared ``capacity``, ``fidelity`` and
``cost``; config ``limits`` intersect with the driver's declared ones and can
only narrow them.

A cost expression is checked when the fleet is built
(:mod:`selflab.controller.cost_checks`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from selflab.controller.config import ConfigError, ConfigFault, InstrumentConfig, LabConfig, build_planner, check_config
from selflab.controller.cost_checks import check_costs, finite
from selflab.controller.expressions import Expression, ExpressionError, format_point
from selflab.instruments.protocol import (
    Describable,
    HasCapacity,
    HasCost,
    HasFidelity,
    Limits,
    Pooled,
    Readable,
    Timed,
    declared_inputs,
    declared_limits,
    limit_violations,
)
from selflab.instruments.ray_task import RayUnavailable, ray_task_instrument
from selflab.instruments.registry import DriverError, build_driver
from selflab.planners.protocol import Planner
from selflab.planners.registry import planner_kinds
from selflab.planners.space import CategoricalParameter, brief, point_key


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
        """Cost units of the experiment with ``params`` on this instrument.

        Raises :class:`~selflab.controller.expressions.ExpressionError` (a
        ``ValueError``) when the cost expression cannot be computed for
        ``params`` (division by zero, log of a negative number, a missing or
        non-numeric parameter), is not finite, or is negative. The fleet
        checks the expression where the planners look first, but not
        everywhere: a caller fails that one experiment, not the campaign.
        """
        if self.cost_expression is None:
            return self.cost
        value = self.cost_expression.evaluate(params)
        if value < 0:
            raise ExpressionError(f"{brief(self.cost_expression.text)} gives a negative cost ({value:g}) at {format_point(params)}")
        return value

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
    """The driver's declared limits narrowed by the configured ones.

    Fails closed: a configured range that is not two finite numbers never
    replaces or widens a declared one (alone, it is kept, and refuses every
    value), and a declared bound that is NaN is kept as it is.
    """
    out = dict(declared)
    for name, (low, high) in configured.items():
        if not (finite(low) and finite(high)):
            out.setdefault(name, (low, high))
            continue
        if name in out:
            d_low, d_high = out[name]
            if math.isnan(d_low) or math.isnan(d_high):
                continue
            low, high = max(low, d_low), min(high, d_high)
        out[name] = (low, high)
    return out


def check_campaign(data: Any) -> tuple[LabConfig, list[Station], Planner]:
    """The config, fleet and planner of already-parsed config ``data``, or
    :class:`ConfigError` with every fault found in one pass: the fields
    (:func:`~selflab.controller.config.check_config`), then the fleet
    (:func:`build_fleet`) and the planner's options, checked on whatever part
    of the config validated. What ``selflab validate`` and ``selflab run``
    check before anything touches the ledger."""
    found = check_config(data)
    stations: list[Station] = []
    planner: Planner | None = None
    if found.config is not None:
        try:
            stations = build_fleet(found.config)
        except ConfigError as exc:
            found.add(exc.faults)
        if found.config.planner.kind in planner_kinds():  # (else a fault of its own)
            try:
                planner = build_planner(found.config)
            except ConfigError as exc:
                found.add(exc.faults)
    if found.faults or found.config is None or planner is None:
        raise ConfigError(found.faults)
    return found.config, stations, planner


def build_fleet(config: LabConfig, drivers: Mapping[str, Any] | None = None) -> list[Station]:
    """Build every instrument of ``config`` (or take its live object from
    ``drivers``, by instrument name: a :class:`~selflab.controller.runner.Runner`
    built from Python objects). Raises :class:`ConfigError` naming the field
    of each instrument that cannot be built, and each input a driver declares
    (``inputs``) that is not a parameter."""
    faults: list[ConfigFault] = []
    stations: list[Station] = []
    params = {p.name: p for p in config.parameters}
    for i, inst in enumerate(config.instruments):
        if drivers is not None:
            driver = drivers[inst.name]
        else:
            try:
                driver = build_driver(inst.driver, inst.options)
                if inst.executor == "ray":  # its run() as Ray tasks (capacity: the cluster's, unless configured)
                    driver = ray_task_instrument(driver, inst.driver, inst.options, num_cpus=inst.num_cpus, num_gpus=inst.num_gpus,
                                                 capacity=inst.capacity)
            except DriverError as exc:
                where = "executor" if isinstance(exc, RayUnavailable) else "options" if str(exc).startswith("bad options") else "driver"
                faults.append(ConfigFault(loc=f"instruments[{i}].{where}", message=str(exc)))
                continue
        for name in inst.limits:
            if name not in params:
                faults.append(ConfigFault(loc=f"instruments[{i}].limits.{name}", message=f"{brief(name)} is not a parameter"))
        missing = [name for name in declared_inputs(driver) or () if name not in params]
        if missing:
            faults.append(ConfigFault(loc=f"instruments[{i}].driver", message=(
                f"{brief(inst.driver)} reads the input{'s' if len(missing) > 1 else ''} {', '.join(missing)}, "
                f"{'which are not parameters' if len(missing) > 1 else 'which is not a parameter'} (parameters: {', '.join(params)}); "
                "name the parameters after the driver's inputs")))
        limits = _intersect(declared_limits(driver), inst.limits)
        for name, (low, high) in limits.items():
            p = params.get(name)
            if p is None or isinstance(p, CategoricalParameter):
                continue
            if not (finite(low) and finite(high)):
                faults.append(
                    ConfigFault(
                        loc=f"instruments[{i}].limits.{name}",
                        message=f"the instrument's limit on {name} is [{low:g}, {high:g}], not two finite numbers, so every "
                        f"experiment would be refused; give a finite range here (it narrows an infinite bound) or fix the driver's limits",
                    )
                )
            elif low > high or p.high < low or p.low > high:
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
                capacity=inst.capacity or declared_capacity(driver),
                fidelity=inst.fidelity if inst.fidelity is not None else declared_fidelity(driver),
                cost=float(inst.cost) if isinstance(inst.cost, (int, float)) else declared_cost(driver),
                limits=limits,
                cost_expression=inst.cost_expression(),
            )
        )
        stations[-1].min_cost = stations[-1].cost
    faults += check_costs(config, stations, pool_of(stations))
    faults += _space_beyond_limits(config, stations)
    by_name = {s.name: s for s in stations}
    for i, lock in enumerate(config.interlocks):
        station = by_name.get(lock.pause_when.instrument)
        if station is not None and not isinstance(station.driver, Readable):
            faults.append(ConfigFault(loc=f"interlocks[{i}].pause_when",
                                      message=f"instrument {brief(station.name)} has no read() method, so its readings cannot be watched while dispatch is paused"
                                      + (" (it runs its experiments as Ray tasks, executor: ray, so nothing here has live readings)"
                                         if station.config.executor == "ray" else "")))
    outputs: set[str] = set()
    described = True
    for station in stations:
        if not isinstance(station.driver, Describable):
            described = False
            break
        outputs |= set(station.driver.describe())
    if described and stations:
        for i, objective in enumerate(config.objectives):
            if objective.name not in outputs:
                faults.append(
                    ConfigFault(
                        loc=f"objectives[{i}].name",
                        message=f"no instrument reports {brief(objective.name)}; they report {', '.join(sorted(outputs))}",
                    )
                )
        for i, constraint in enumerate(config.constraints):
            if constraint.outcome not in outputs:
                faults.append(
                    ConfigFault(
                        loc=f"constraints[{i}]",
                        message=f"no instrument reports {brief(constraint.outcome)}; they report {', '.join(sorted(outputs))}",
                    )
                )
    if faults:
        raise ConfigError(faults)
    return stations


def declared_capacity(driver: object) -> int:
    """The slots the driver declares (:class:`HasCapacity`), else 1."""
    return int(driver.capacity or 1) if isinstance(driver, HasCapacity) else 1


def declared_fidelity(driver: object) -> float:
    """The fidelity the driver declares (:class:`HasFidelity`), else 1 (the target)."""
    return float(driver.fidelity) if isinstance(driver, HasFidelity) else 1.0


def declared_cost(driver: object) -> float:
    """The cost per experiment the driver declares (:class:`HasCost`), else 1."""
    return float(driver.cost) if isinstance(driver, HasCost) else 1.0


def clock_of(config: LabConfig, stations: list[Station]) -> str:
    """The campaign clock: the config's, or for ``clock: auto`` simulated when
    every instrument declares its durations (:class:`Timed`) and runs here,
    in this process.

    An instrument run as Ray tasks (``executor: ray``) makes it the wall
    clock: such a simulator is there for its real computation, and on the
    simulated clock a result finished on a worker would wait for its
    simulated due time (a furnace cycle of hours) while that worker idles,
    since the next decision belongs to that later instant. Set ``clock:
    simulated`` to keep simulated time with Ray."""
    if config.clock != "auto":
        return config.clock
    timed = all(isinstance(s.driver, Timed) and not s.config.remote and s.config.executor == "local" for s in stations)
    return "simulated" if timed else "wall"


def pool_of(stations: list[Station]) -> list[dict[str, Any]] | None:
    """The measurable points of pool instruments (``candidates()``), each
    once, or ``None`` when no instrument restricts its inputs to a pool."""
    pools = [s.driver.candidates() for s in stations if isinstance(s.driver, Pooled)]
    if not pools:
        return None
    seen: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
    for pool in pools:
        for point in pool:
            seen.setdefault(point_key(point), dict(point))
    return list(seen.values())


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
        if any(limit is None or not (finite(limit[0]) and finite(limit[1])) for _, limit in limits):
            continue  # (a limit that is not finite is a fault of its own)
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
