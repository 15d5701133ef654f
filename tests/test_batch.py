"""Batches and plates of the ``bo`` planner (selflab.planners.batch) and the plain baseline (issue 22).

Real botorch GPs on tiny problems; the quality figures are in benchmarks/RESULTS.md
("Batches and plates (issue 22)").
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from selflab.controller.bench_cmd import BENCH_PLANNERS
from selflab.planners.batch import resolve
from selflab.planners.bo import BOPlanner
from selflab.planners.plain import MODEL_NAME, PlainPlanner
from selflab.planners.protocol import Observation, Pending, PlanContext
from selflab.planners.registry import make_planner
from selflab.planners.space import FloatParameter, Objective, SearchSpace

SPACE = SearchSpace(parameters=[FloatParameter(name="a", low=0.2, high=0.7), FloatParameter(name="b", low=-3.0, high=5.0)])
FAST = {"num_restarts": 2, "raw_samples": 64, "maxiter": 20, "mc_samples": 32}


def _bumpy(u: np.ndarray) -> float:
    """A two-hump function of a unit-cube point (maximize)."""
    return float(np.exp(-12 * ((u - 0.3) ** 2).sum()) + 0.6 * np.exp(-20 * ((u - np.array([0.8, 0.7])) ** 2).sum()))


def _observations(n: int, seed: int = 0, f=_bumpy) -> list[Observation]:
    rng = np.random.default_rng(seed)
    out = []
    for u in rng.random((n, SPACE.dim)):
        out.append(Observation(params=SPACE.from_unit(u), outcomes={"y": f(u)}))
    return out


def _unit(points: list[dict]) -> np.ndarray:
    return np.array([SPACE.to_unit(p) for p in points])


def _min_gap(U: np.ndarray) -> float:
    return min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(U, 2))


def test_plain_is_registered_for_bench_and_says_what_it_is() -> None:
    assert "plain" in BENCH_PLANNERS
    planner = make_planner("plain", {})
    assert isinstance(planner, PlainPlanner)
    objectives = [Objective(name="y", direction="maximize")]
    first = planner.propose(SPACE, objectives, [], [], 2, context=PlanContext(seed=1, step=0))
    assert [p.reason["strategy"] for p in first] == ["plain_random"] * 2
    observations = _observations(8)
    [proposal] = planner.propose(SPACE, objectives, observations, [], 1, context=PlanContext(seed=1, step=8))
    reason = proposal.reason
    assert reason["strategy"] == "plain" and reason["model"] == MODEL_NAME == "SingleTaskGP (botorch defaults)"
    assert reason["acquisition"] == "ucb" and reason["beta"] == 4.0 and reason["n_observations"] == 8
    predicted = reason["predicted"]["y"]
    # UCB with beta = 4 is the posterior mean plus two standard deviations
    assert reason["acquisition_value"] == pytest.approx(predicted["mean"] + 2 * predicted["std"], rel=1e-6)
    assert 0.2 <= proposal.params["a"] <= 0.7 and -3.0 <= proposal.params["b"] <= 5.0
    with pytest.raises(ValueError, match="plain planner: one objective"):
        planner.propose(SPACE, objectives * 2, observations, [], 1, context=PlanContext(step=8))


def test_plain_batch_keeps_off_pending_and_picks_pool_rows() -> None:
    planner = PlainPlanner()
    objectives = [Objective(name="y", direction="minimize")]
    observations = _observations(6)
    pending = [Pending(params=SPACE.from_unit([0.5, 0.5]))]
    batch = planner.propose(SPACE, objectives, observations, pending, 3, context=PlanContext(seed=2, step=7))
    assert [p.reason["acquisition"] for p in batch] == ["qucb"] * 3 and [p.reason["batch_rank"] for p in batch] == [0, 1, 2]
    assert _min_gap(np.vstack([_unit([p.params for p in batch]), [[0.5, 0.5]]])) > 1e-3
    pool = tuple(SPACE.from_unit(u) for u in np.random.default_rng(3).random((30, 2)))
    picks = planner.propose(SPACE, objectives, observations, [], 4, context=PlanContext(seed=2, step=6, candidates=pool))
    assert len({tuple(p.params.values()) for p in picks}) == 4 and all(p.params in pool for p in picks)


def test_a_plate_of_24_is_distinct_spread_and_inside_the_space() -> None:
    planner = BOPlanner(n_init=5, **FAST)
    observations = _observations(10)
    pending = [Pending(params=observations[0].params | {"a": 0.45})]
    plate = planner.propose(SPACE, [Objective(name="y")], observations, pending, 24, context=PlanContext(seed=4, step=11))
    assert len(plate) == 24
    U = _unit([p.params for p in plate])
    assert len({tuple(row) for row in U}) == 24
    assert _min_gap(np.vstack([U, _unit([pending[0].params])])) >= 1e-3
    assert all(0.2 <= p.params["a"] <= 0.7 and -3.0 <= p.params["b"] <= 5.0 for p in plate)
    labels = [p.reason["batch"]["strategy"] for p in plate]
    assert labels[:4] == ["greedy"] * 4 and set(labels[4:]) <= {"thompson", "near_duplicate_replaced"} and "thompson" in labels
    assert [p.reason["batch"]["rank"] for p in plate] == list(range(24)) and {p.reason["batch"]["size"] for p in plate} == {24}
    assert {p.reason["acquisition"] for p, label in zip(plate, labels) if label == "thompson"} == {"pathwise_ts"}
    assert {p.reason["acquisition"] for p in plate[:4]} == {"qlognei"}


def test_a_plate_where_every_sample_path_agrees_is_kept_apart() -> None:
    """A clear linear trend: every posterior path peaks at the same corner, so
    Thompson sampling alone would propose one point 24 times; the guard keeps
    every pair at least 1e-3 apart and says which rows it replaced."""
    planner = BOPlanner(n_init=5, batch_strategy="thompson", **FAST)
    observations = _observations(12, f=lambda u: float(5 * u.sum()))
    plate = planner.propose(SPACE, [Objective(name="y")], observations, [], 24, context=PlanContext(seed=5, step=12))
    U = _unit([p.params for p in plate])
    assert _min_gap(U) >= 1e-3
    labels = [p.reason["batch"]["strategy"] for p in plate]
    assert "near_duplicate_replaced" in labels and "thompson" in labels
    assert all(math.isfinite(p.reason["acquisition_value"]) for p in plate)


def test_a_batch_of_4_is_diverse_and_named() -> None:
    observations = _observations(10, seed=1)
    for strategy, expected in (("auto", "greedy"), ("thompson", "thompson")):
        planner = BOPlanner(n_init=5, batch_strategy=strategy, **FAST)
        batch = planner.propose(SPACE, [Objective(name="y")], observations, [], 4, context=PlanContext(seed=6, step=10))
        U = _unit([p.params for p in batch])
        assert len({tuple(row) for row in U}) == 4 and _min_gap(U) >= 1e-3
        assert [p.reason["batch"] for p in batch] == [{"strategy": expected, "rank": i, "size": 4} for i in range(4)]
    [single] = BOPlanner(n_init=5, **FAST).propose(SPACE, [Objective(name="y")], observations, [], 1, context=PlanContext(seed=6, step=10))
    assert "batch" not in single.reason and single.reason["acquisition"] == "qlognei"


def test_auto_strategy_by_batch_size_and_where_thompson_applies() -> None:
    from selflab.planners.encoding import Encoding
    from selflab.planners.surrogate import SurrogateFitter, TrainingData

    enc = Encoding(SPACE)
    surrogate = SurrogateFitter().fit(enc, ["y"], TrainingData.from_observations(enc, ["y"], _observations(6)))
    kw = {"plate_from": 8, "surrogate": surrogate, "learn_failures": False}
    assert [resolve("auto", q, pool=False, **kw) for q in (1, 4, 7, 8, 96)] == ["greedy"] * 3 + ["hybrid"] * 2
    assert resolve("thompson", 24, pool=True, **kw) == "greedy"  # a pool is scored as a discrete set
    assert resolve("thompson", 1, pool=False, **kw) == "greedy"
    assert resolve("hybrid", 24, pool=False, plate_from=8, surrogate=surrogate, learn_failures=True) == "greedy"
