"""The scheduler's pure decisions, one at a time, on real stations."""

from __future__ import annotations

from typing import Any

from conftest import quadratic_config

from selflab.controller.config import StopRules, parse_config
from selflab.controller.fleet import Station, build_fleet
from selflab.controller.scheduler import (
    Progress,
    allowance,
    fidelities_on_offer,
    pick_station,
    reservation,
    route_proposal,
    stop_rule,
    usable_stations,
)


def _fleet(**overrides: Any) -> tuple[Any, list[Station]]:
    config = parse_config(quadratic_config(**overrides))
    return config, build_fleet(config)


def test_routes_refuse_with_the_reason_and_accept_where_limits_allow() -> None:
    config, stations = _fleet(instruments=[
        {"name": "lo", "driver": "labdrivers:Quadratic", "limits": {"x": [0.0, 0.5]}, "fidelity": 1.0},
        {"name": "hi", "driver": "labdrivers:Quadratic", "limits": {"x": [0.5, 1.0]}, "cost": "1 / abs(x - 0.75)", "fidelity": 1.0},
        {"name": "cheap", "driver": "labdrivers:Quadratic", "fidelity": 0.5},
    ], target_fidelity=1.0)
    space = config.space
    assert [s.name for s in route_proposal({"x": 0.2, "z": 0.1}, 1.0, space, stations).accepting] == ["lo"]
    assert [s.name for s in route_proposal({"x": 0.5, "z": 0.1}, 1.0, space, stations).accepting] == ["lo", "hi"]
    outside = route_proposal({"x": 1.5, "z": 0.1}, 1.0, space, stations)
    assert (outside.accepting, outside.reason) == ((), "outside_space")
    assert route_proposal({"x": 0.2, "z": 0.1}, 0.25, space, stations).reason == "no_instrument"
    unpriced = route_proposal({"x": 0.75, "z": 0.1}, 1.0, space, stations)
    assert unpriced.reason == "out_of_limits" and "lo: x=0.75 is above the limit 0.5" in unpriced.message and "hi: " in unpriced.message
    stations[0].offline_reason = "unplugged"
    assert route_proposal({"x": 0.75, "z": 0.1}, 1.0, space, stations).reason == "bad_cost"


def test_the_station_with_most_free_slots_then_cheapest_that_the_budget_pays_for() -> None:
    _, stations = _fleet(instruments=[
        {"name": "a", "driver": "labdrivers:Quadratic", "capacity": 2, "cost": 3.0},
        {"name": "b", "driver": "labdrivers:Quadratic", "capacity": 2, "cost": 1.0},
    ])
    params = {"x": 0.1, "z": 0.1}
    assert pick_station(stations, 10.0, params).name == "b"  # type: ignore[union-attr]
    stations[1].take_slot()
    assert pick_station(stations, 10.0, params).name == "a"  # type: ignore[union-attr]
    assert pick_station(stations, 2.0, params).name == "b"  # type: ignore[union-attr]
    assert pick_station(stations, 0.5, params) is None


def test_allowance_is_the_free_slots_within_both_budgets() -> None:
    _, stations = _fleet(instruments=[{"name": "a", "driver": "labdrivers:Quadratic", "capacity": 4, "cost": 2.0}])
    experiments = StopRules(max_experiments=10)
    assert allowance(stations, experiments, completed=0, in_flight=0, queued=0, cost_spent=0) == 4
    assert allowance(stations, experiments, completed=7, in_flight=1, queued=1, cost_spent=0) == 1
    money = StopRules(max_cost=5.0)
    assert allowance(stations, money, completed=0, in_flight=0, queued=0, cost_spent=0) == 2
    assert allowance(stations, money, completed=0, in_flight=0, queued=1, cost_spent=2.0) == 0


def test_a_waiting_proposal_holds_its_own_cost_on_the_cheapest_station_the_budget_pays_for() -> None:
    _, stations = _fleet(instruments=[
        {"name": "robot", "driver": "labdrivers:Quadratic", "cost": "1 + x"},
        {"name": "spare", "driver": "labdrivers:Quadratic", "cost": 3.0},
        {"name": "sim", "driver": "labdrivers:Quadratic", "capacity": 4, "cost": 0.1},
    ])
    robot, spare, sim = stations
    params = {"x": 0.5, "z": 0.1}
    assert reservation([robot, spare], 10.0, params) == 1.5
    assert reservation([robot, spare], 1.0, params) == 0.0  # nothing it could run on: it will be abandoned
    robot.offline_reason = "unplugged"
    assert reservation([robot, spare], 10.0, params) == 3.0
    # One robot experiment waits, holding 1.5, and one approval is pending (held at the cheapest cost, 0.1): of
    # the 1.75 left, 0.15 is the simulator's, one experiment; priced at the cheapest cost, the robot's would leave it 15.
    money = StopRules(max_cost=1.75)
    assert allowance([sim], money, completed=0, in_flight=0, queued=2, cost_spent=0.0, priced=1, priced_cost=1.5) == 1
    assert allowance([sim], money, completed=0, in_flight=0, queued=2, cost_spent=0.0) == 2  # (then the free slots bind)


def test_stop_rules_in_order() -> None:
    _, stations = _fleet(instruments=[{"name": "a", "driver": "labdrivers:Quadratic", "cost": 2.0}])
    quiet = Progress(completed=3, cost_spent=1.0, in_flight=1, elapsed_s=10.0, wall_s=1.0)
    assert stop_rule(StopRules(max_experiments=3), quiet, stations).reason == "max_experiments"  # type: ignore[union-attr]
    assert stop_rule(StopRules(max_experiments=4), quiet, stations) is None
    assert stop_rule(StopRules(max_cost=2.5), quiet, stations) is None  # one is in flight
    idle = Progress(completed=3, cost_spent=1.0, in_flight=0, elapsed_s=10.0, wall_s=1.0)
    assert stop_rule(StopRules(max_cost=2.5), idle, stations).reason == "max_cost"  # type: ignore[union-attr]
    assert stop_rule(StopRules(max_time=10), idle, stations).reason == "max_time"  # type: ignore[union-attr]
    assert stop_rule(StopRules(max_wall_time=1), idle, stations).reason == "max_wall_time"  # type: ignore[union-attr]
    target = StopRules.model_validate({"max_experiments": 99, "target": {"value": 0.5}})
    best = Progress(completed=3, cost_spent=0, in_flight=0, elapsed_s=0, wall_s=0, target_best=(0.4, 2))
    assert stop_rule(target, best, stations, ("y", "minimize")).detail == "y = 0.4 reached the target 0.5 (experiment 2)"  # type: ignore[union-attr]
    assert stop_rule(target, best, stations, ("y", "maximize")) is None


def test_single_fidelity_planners_see_only_the_target_and_fidelities_count_queued_slots() -> None:
    _, stations = _fleet(instruments=[
        {"name": "sim", "driver": "labdrivers:Quadratic", "fidelity": 0.3, "cost": 0.1, "capacity": 3},
        {"name": "lab", "driver": "labdrivers:Quadratic", "fidelity": 1.0, "cost": 5.0},
    ])
    assert [s.name for s in usable_stations(stations, False, 1.0)] == ["lab"]
    assert [s.name for s in usable_stations(stations, True, 1.0)] == ["sim", "lab"]
    offer = fidelities_on_offer(stations, [[stations[0]]])
    assert [(o.fidelity, o.cost, o.free) for o in offer] == [(0.3, 0.1, 2), (1.0, 5.0, 1)]
