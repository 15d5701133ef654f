"""The runner's decisions, as pure functions: which stop rule holds,
how many experiments to ask for, which instrument takes a proposal (or why
none may), and the fidelities on offer.

No I/O and no clocks: everything they look at is an argument, so each
decision can be tested alone and replayed. The runner
(:mod:`selflab.controller.runner`, :mod:`selflab.controller.dispatch`) calls
them with the live stations and the ledger's projection.

Example::

    route = route_proposal({"x": 0.2}, 1.0, space, stations)
    if route.accepting:
        station = pick_station(route.accepting, budget_left=10.0, params={"x": 0.2})
    else:
        print(route.reason, route.message)   # e.g. out_of_limits: outside the declared limits of ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from selflab.controller.config import StopRules
from selflab.controller.expressions import ExpressionError
from selflab.controller.fleet import Station
from selflab.planners.protocol import FidelityOption
from selflab.planners.space import SearchSpace

COST_SLACK = 1e-12
"""Budget comparisons allow this much rounding."""


@dataclass(frozen=True)
class StopInfo:
    """Why a campaign stopped: a short code and a sentence."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Progress:
    """Where the campaign stands, as the stop rules see it."""

    completed: int
    cost_spent: float
    in_flight: int
    elapsed_s: float
    """Seconds on the campaign clock (simulated or wall)."""
    wall_s: float
    """Real seconds since this controller started."""
    clock: str = "wall"
    target_best: tuple[float, int] | None = None
    """The best value of the target rule's objective (at the judged fidelity,
    feasible) and its experiment id, when there is one."""


def stop_rule(rules: StopRules, progress: Progress, usable: Sequence[Station], target_objective: tuple[str, str] | None = None) -> StopInfo | None:
    """The first stop rule that holds, or ``None``.

    ``target_objective`` is ``(name, direction)`` of the target rule's
    objective. ``max_cost`` also holds when nothing is in flight and not even
    the cheapest experiment of a ``usable`` station fits in what is left.
    """
    if rules.max_experiments is not None and progress.completed >= rules.max_experiments:
        return StopInfo("max_experiments", f"{progress.completed} experiments completed")
    if rules.max_cost is not None:
        cheapest = min((s.min_cost for s in usable), default=0.0)
        if progress.cost_spent >= rules.max_cost or (not progress.in_flight and progress.cost_spent + cheapest > rules.max_cost):
            return StopInfo("max_cost", f"cost spent {progress.cost_spent:g} of {rules.max_cost:g}")
    if rules.max_time is not None and progress.elapsed_s >= rules.max_time:
        return StopInfo("max_time", f"{progress.elapsed_s:.0f} s elapsed on the {progress.clock} clock")
    if rules.max_wall_time is not None and progress.wall_s >= rules.max_wall_time:
        return StopInfo("max_wall_time", f"{rules.max_wall_time:g} s of real time used")
    if rules.target is not None and target_objective is not None and progress.target_best is not None:
        name, direction = target_objective
        value, experiment = progress.target_best
        if (value >= rules.target.value) if direction == "maximize" else (value <= rules.target.value):
            return StopInfo("target", f"{name} = {value:g} reached the target {rules.target.value:g} (experiment {experiment})")
    return None


def usable_stations(stations: Sequence[Station], multi_fidelity: bool, target_fidelity: float) -> list[Station]:
    """Online stations the planner can send work to: all of them for a
    multi-fidelity planner, else those serving the one fidelity it proposes
    at (the target when served, else the highest)."""
    online = [s for s in stations if s.online]
    if multi_fidelity or not online:
        return online
    served = {s.fidelity for s in online}
    fidelity = target_fidelity if target_fidelity in served else max(served)
    return [s for s in online if s.fidelity == fidelity]


def allowance(usable: Sequence[Station], rules: StopRules, *, completed: int, in_flight: int, queued: int, cost_spent: float,
              priced: int = 0, priced_cost: float = 0.0) -> int:
    """How many more experiments to ask the planner for now: the free slots
    (less the proposals already waiting for one), within what the experiment
    and cost budgets leave. Of the ``queued`` proposals, ``priced`` hold
    ``priced_cost`` of the budget (their :func:`reservation`) and each other
    one the cheapest usable cost."""
    free = sum(s.free for s in usable) - queued
    if rules.max_experiments is not None:
        free = min(free, rules.max_experiments - completed - in_flight - queued)
    if rules.max_cost is not None:
        cheapest = min((s.min_cost for s in usable), default=0.0)
        if cheapest > 0:
            left = rules.max_cost - cost_spent - priced_cost - cheapest * (queued - priced)
            free = min(free, int(math.floor(left / cheapest + 1e-9)))
    return max(free, 0)


@dataclass(frozen=True)
class Route:
    """Where a proposal may go: the stations that accept it (busy or not),
    or, when none does, the ``abandoned`` reason code and message."""

    accepting: tuple[Station, ...]
    reason: str = ""
    message: str = ""


def route_proposal(params: Mapping[str, Any], fidelity: float, space: SearchSpace, stations: Sequence[Station]) -> Route:
    """The online stations that serve ``fidelity``, whose limits accept
    ``params`` and that can price them; else why not (``outside_space``,
    ``no_instrument``, ``out_of_limits``, ``bad_cost``)."""
    outside = space.violations(params)
    if outside:
        return Route((), "outside_space", f"the planner proposed a point outside the search space: {'; '.join(outside)}")
    serving = [s for s in stations if s.online and s.fidelity == fidelity]
    if not serving:
        return Route((), "no_instrument", f"no online instrument serves fidelity {fidelity:g}")
    accepting, refusals, unpriced = [], [], []
    for s in serving:
        faults = s.violations(params)
        if faults:
            refusals.append(f"{s.name}: {'; '.join(faults)}")
            continue
        try:
            s.cost_of(params)
        except ExpressionError as exc:  # this experiment cannot be priced here; the campaign goes on
            unpriced.append(f"{s.name}: {exc}")
            continue
        accepting.append(s)
    if not accepting and unpriced and not refusals:
        return Route((), "bad_cost", "its cost cannot be computed on " + " | ".join(unpriced))
    if not accepting:
        return Route((), "out_of_limits", "outside the declared limits of " + " | ".join(refusals + unpriced))
    return Route(tuple(accepting))


def pick_station(accepting: Sequence[Station], budget_left: float, params: Mapping[str, Any]) -> Station | None:
    """The accepting station with the most free slots (then the cheapest)
    that the budget left can pay for, or ``None``."""
    candidates = [s for s in accepting if s.free > 0 and s.cost_of(params) <= budget_left + COST_SLACK]
    return max(candidates, key=lambda s: (s.free, -s.cost_of(params))) if candidates else None


def affordable(accepting: Sequence[Station], budget_left: float, params: Mapping[str, Any]) -> bool:
    """Whether some online accepting station could run ``params`` within the budget left, once free."""
    return any(s.online and s.cost_of(params) <= budget_left + COST_SLACK for s in accepting)


def reservation(accepting: Sequence[Station], budget_left: float, params: Mapping[str, Any]) -> float:
    """What a proposal that waits for one of ``accepting`` holds of the
    budget: its cost on the cheapest online station that the budget left can
    pay for (0 when none can: it will be abandoned). Holding it keeps later,
    cheaper proposals (a simulator's, beside a busy robot) from spending the
    budget that the waiting one was accepted with: with 2.5 left and a robot
    experiment (cost 1) queued behind the busy robot, later proposals see 1.5.
    """
    costs = [c for c in (s.cost_of(params) for s in accepting if s.online) if c <= budget_left + COST_SLACK]
    return min(costs, default=0.0)


def fidelities_on_offer(stations: Sequence[Station], queued: Sequence[Sequence[Station]]) -> tuple[FidelityOption, ...]:
    """Each fidelity an online station serves, with its cheapest cost and its
    free slots (less one for each queued proposal that will take one)."""
    offered: dict[float, float] = {}
    free: dict[float, int] = {}
    for s in stations:
        if s.online:
            offered[s.fidelity] = min(offered.get(s.fidelity, math.inf), s.cost)
            free[s.fidelity] = free.get(s.fidelity, 0) + s.free
    for accepting in queued:
        if accepting and free.get(accepting[0].fidelity, 0) > 0:
            free[accepting[0].fidelity] -= 1
    return tuple(FidelityOption(fidelity=f, cost=c, free=free[f]) for f, c in sorted(offered.items()))


def queued_for(stations: Sequence[Station], queued: Sequence[Sequence[Station]]) -> int:
    """How many queued proposals wait for one of ``stations``."""
    names = {s.name for s in stations}
    return sum(1 for accepting in queued if {s.name for s in accepting} & names)
