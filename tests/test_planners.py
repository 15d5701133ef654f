"""The search space mapping and the random and Sobol baselines."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selflab.planners import (
    CategoricalParameter,
    FidelityOption,
    FloatParameter,
    IntParameter,
    Objective,
    Pending,
    PlanContext,
    Planner,
    SearchSpace,
    make_planner,
    planner_kinds,
)
from selflab.planners.registry import options_schemas

SPACE = SearchSpace(parameters=[
    FloatParameter(name="t", low=1, high=100, log=True),
    FloatParameter(name="c", low=-1, high=1),
    IntParameter(name="n", low=2, high=6),
    IntParameter(name="m", low=1, high=1000, log=True),
    CategoricalParameter(name="s", choices=["water", "ethanol", 3]),
])
OBJ = [Objective(name="y")]


def test_from_unit_corners_and_bins() -> None:
    low = SPACE.from_unit([0, 0, 0, 0, 0])
    high = SPACE.from_unit([1, 1, 1, 1, 1])
    assert low == {"t": 1, "c": -1, "n": 2, "m": 1, "s": "water"}
    assert high == {"t": pytest.approx(100), "c": 1, "n": 6, "m": 1000, "s": 3}
    assert SPACE.from_unit([0.5, 0.5, 0.5, 0.5, 0.5])["t"] == pytest.approx(10)  # log-scale midpoint
    ns = [SPACE.from_unit([0, 0, (i + 0.5) / 100, 0, 0])["n"] for i in range(100)]
    assert {v: ns.count(v) for v in set(ns)} == {2: 20, 3: 20, 4: 20, 5: 20, 6: 20}  # equal-width bins
    with pytest.raises(ValueError, match="expected 5 coordinates"):
        SPACE.from_unit([0.5])


@settings(max_examples=200, deadline=None)
@given(u=st.lists(st.floats(0, 1), min_size=5, max_size=5))
def test_property_from_unit_is_always_inside_and_round_trips(u: list[float]) -> None:
    point = SPACE.from_unit(u)
    assert SPACE.violations(point) == []
    assert isinstance(point["n"], int) and isinstance(point["m"], int)
    again = SPACE.from_unit(SPACE.to_unit(point))
    assert again["n"] == point["n"] and again["m"] == point["m"] and again["s"] == point["s"]
    assert again["t"] == pytest.approx(point["t"]) and again["c"] == pytest.approx(point["c"], abs=1e-12)


def test_violations_name_the_parameter() -> None:
    bad = {"t": 0.5, "c": "hot", "n": 2.5, "m": 10, "s": "acetone", "q": 1}
    assert SPACE.violations(bad) == [
        "t=0.5 is outside [1, 100]",
        "c='hot' is not a number",
        "n=2.5 is not an integer",
        "s='acetone' is not one of ['water', 'ethanol', 3]",
        "unknown parameters ['q']",
    ]


@pytest.mark.parametrize("kind", ["random", "sobol"])
def test_baselines_are_deterministic_by_seed_and_step(kind: str) -> None:
    planner = make_planner(kind, {})
    assert isinstance(planner, Planner)
    a = planner.propose(SPACE, OBJ, [], [], 4, context=PlanContext(seed=3, step=0))
    b = planner.propose(SPACE, OBJ, [], [], 4, context=PlanContext(seed=3, step=0))
    assert [p.params for p in a] == [p.params for p in b]
    # The same sequence whether asked for in one batch or in pieces (a resume).
    first = planner.propose(SPACE, OBJ, [], [], 2, context=PlanContext(seed=3, step=0))
    rest = planner.propose(SPACE, OBJ, [], [], 2, context=PlanContext(seed=3, step=2))
    assert [p.params for p in first + rest] == [p.params for p in a]
    other = planner.propose(SPACE, OBJ, [], [], 4, context=PlanContext(seed=4, step=0))
    assert [p.params for p in other] != [p.params for p in a]
    assert [p.reason["index"] for p in a] == [0, 1, 2, 3]
    assert all(p.reason["strategy"] == kind for p in a)


@pytest.mark.parametrize("kind", ["random", "sobol"])
def test_baselines_never_repeat_and_stay_inside(kind: str) -> None:
    space = SearchSpace(parameters=[FloatParameter(name="x", low=0, high=1), FloatParameter(name="z", low=0, high=1)])
    planner = make_planner(kind, {})
    pending = [Pending(params={"x": 0.5, "z": 0.5})]
    points = []
    for step in range(0, 64, 8):
        points += [p.params for p in planner.propose(space, OBJ, [], pending, 8, context=PlanContext(seed=1, step=step))]
    assert len({(p["x"], p["z"]) for p in points}) == 64
    assert all(space.violations(p) == [] for p in points)


def test_sobol_fills_space_better_than_random() -> None:
    """Sobol's point set has a lower discrepancy than random's for the same n."""
    from scipy.stats import qmc

    space = SearchSpace(parameters=[FloatParameter(name=f"x{i}", low=0, high=1) for i in range(3)])

    def disc(kind: str) -> float:
        props = make_planner(kind, {}).propose(space, OBJ, [], [], 64, context=PlanContext(seed=5))
        return float(qmc.discrepancy([[p.params[n] for n in space.names] for p in props]))

    assert disc("sobol") < disc("random")


def test_fidelity_defaults_to_the_target_when_offered() -> None:
    ctx = PlanContext(fidelities=(FidelityOption(fidelity=0.5, cost=0.1), FidelityOption(fidelity=1.0, cost=1.0)), target_fidelity=1.0)
    assert {p.fidelity for p in make_planner("random", {}).propose(SPACE, OBJ, [], [], 3, context=ctx)} == {1.0}
    ctx = PlanContext(fidelities=(FidelityOption(fidelity=0.5, cost=0.1),), target_fidelity=1.0)
    assert {p.fidelity for p in make_planner("sobol", {}).propose(SPACE, OBJ, [], [], 3, context=ctx)} == {0.5}


def test_registry_errors() -> None:
    assert planner_kinds() == ["ax", "bo", "mf", "plain", "random", "sobol"]
    with pytest.raises(KeyError, match="unknown planner kind 'gp'"):
        make_planner("gp", {})
    with pytest.raises(TypeError):
        make_planner("random", {"temperature": 3})
    for kind, options, field in (("bo", {"beta": -1}, "beta"), ("mf", {"kernel": "rbf"}, "kernel"), ("ax", {"initial_points": 0}, "initial_points")):
        with pytest.raises(ValueError) as caught:
            make_planner(kind, options)
        message = str(caught.value)
        assert message.startswith(f"{kind} planner option {field!r}: ") and "\n" not in message, message
    schemas = options_schemas()
    assert set(schemas) == set(planner_kinds()) and "beta" in schemas["bo"]["properties"]
    assert schemas["random"]["additionalProperties"] is False
    assert math.isfinite(SPACE.to_unit(SPACE.from_unit([0.3] * 5))[0])
