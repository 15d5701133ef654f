"""Pool inputs on their rank scale (``selflab.planners.pool_scale``) and the ``bo`` planner on pools."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import numpy as np
import pytest

from selflab.controller.bench import bench_config
from selflab.controller.campaign import Campaign
from selflab.controller.ledger import Ledger
from selflab.controller.projection import CampaignState
from selflab.planners.bo import BOPlanner
from selflab.planners.pool_scale import RankScale
from selflab.planners.protocol import Observation, Pending, PlanContext
from selflab.planners.space import CategoricalParameter, FloatParameter, IntParameter, Objective, SearchSpace
from selflab.simulators.problems import get_problem

FAST = {"num_restarts": 2, "raw_samples": 32, "mc_samples": 32, "maxiter": 30, "n_init": 4}

SPACE = SearchSpace(parameters=[
    FloatParameter(name="dopant", low=0, high=60),
    IntParameter(name="layers", low=1, high=9),
    CategoricalParameter(name="solvent", choices=["water", "ethanol"]),
])


def crowded_pool() -> list[dict[str, float | int | str]]:
    """Twenty rows: most of the dopant values crowd below 2 % on a 0-60 % axis."""
    dopants = [0.0, 0.0, 0.04, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.5, 1.7, 1.9, 5.0, 12.0, 25.0, 40.0, 60.0]
    return [{"dopant": d, "layers": 1 + i % 9, "solvent": "water" if i % 3 else "ethanol"} for i, d in enumerate(dopants)]


def test_rank_scale_spreads_crowded_values_evenly_and_shares_ties() -> None:
    pool = crowded_pool()
    scale = RankScale.of(SPACE, pool)
    ranked = [scale.forward(p)["dopant"] for p in pool]
    assert ranked[0] == ranked[1] == pytest.approx(0.5 / 19)  # the two zeros share their mid rank
    assert ranked[-1] == 1.0 and all(a < b for a, b in zip(ranked[1:], ranked[2:]))
    # on the raw axis 15 of 20 rows sit in the first 3 % of the range; on the rank scale they fill 3/4 of it
    assert ranked[14] == pytest.approx(14 / 19)
    assert scale.space.parameters[0] == FloatParameter(name="dopant", low=0.0, high=1.0, unit="rank")
    assert isinstance(scale.space.parameters[1], FloatParameter)  # integers are ranked too (pool rows are valid as they are)
    assert scale.space.parameters[2] == SPACE.parameters[2]  # categoricals are kept
    assert [scale.forward(p)["solvent"] for p in pool] == [p["solvent"] for p in pool]


def test_rank_scale_round_trips_every_pool_point_exactly() -> None:
    pool = crowded_pool()
    scale = RankScale.of(SPACE, pool)
    for point in pool[1:]:  # (rows 0 and 1 differ only in layers and solvent)
        back = scale.original(scale.forward(point))
        assert back == point and type(back["layers"]) is int
    wobbly = {k: (v + 1e-15 if isinstance(v, float) else v) for k, v in scale.forward(pool[7]).items()}
    assert scale.original(wobbly) == pool[7]  # a decoded float that is off in its last bits still maps back
    with pytest.raises(KeyError):
        scale.original({"dopant": 0.123456, "layers": 0.5, "solvent": "water"})


def test_a_point_between_pool_values_is_interpolated() -> None:
    scale = RankScale.of(SPACE, crowded_pool())
    between = scale.forward({"dopant": 8.5, "layers": 3, "solvent": "water"})["dopant"]
    assert scale.forward({"dopant": 5.0, "layers": 3, "solvent": "water"})["dopant"] < between
    assert between == pytest.approx(np.mean([15 / 19, 16 / 19]))
    assert scale.forward({"dopant": -3.0, "layers": 3, "solvent": "water"})["dopant"] == pytest.approx(0.5 / 19)  # clamped


def test_rank_scale_needs_points() -> None:
    with pytest.raises(ValueError, match="at least one pool point"):
        RankScale.of(SPACE, [])


def objective_of(point: dict[str, float | int | str]) -> float:
    """Best at about 1 % dopant, 5 layers, in ethanol."""
    return -((float(point["dopant"]) - 1.0) ** 2) - 0.05 * (int(point["layers"]) - 5) ** 2 - (0.0 if point["solvent"] == "ethanol" else 0.3)


@pytest.mark.parametrize("pool_scale", ["rank", "linear"])
def test_bo_on_a_pool_proposes_original_pool_rows_with_reasons(pool_scale: str) -> None:
    pool = crowded_pool()
    measured = pool[:6]
    observations = [Observation(params=p, outcomes={"y": objective_of(p)}) for p in measured]
    pending = [Pending(params=pool[6])]
    failed = (Pending(params=pool[7]),)
    candidates = tuple(pool[8:])
    planner = BOPlanner(**FAST, pool_scale=pool_scale)
    batch = planner.propose(SPACE, [Objective(name="y")], observations, pending, 3,
                            context=PlanContext(step=8, candidates=candidates, failed=failed))
    assert len(batch) == 3 and all(b.reason["strategy"] == "bo" for b in batch)
    keys = {tuple(sorted(b.params.items())) for b in batch}
    assert len(keys) == 3 and keys <= {tuple(sorted(c.items())) for c in candidates}  # raw values, not ranks
    assert all(set(b.reason["predicted"]["y"]) == {"mean", "std"} for b in batch)
    rec = planner.recommend(SPACE, [Objective(name="y")], observations, context=PlanContext(candidates=candidates))
    assert rec is not None and rec.params in measured
    best = max(measured, key=objective_of)
    assert rec.params == best  # a smooth, noise-free objective: the best posterior mean is the best reading


def test_pool_scale_auto_takes_the_scale_whose_fit_is_more_likely_and_records_it() -> None:
    """Forty rows, thirty of them crowded below x = 0.1: a response linear in
    ``x`` is smooth on the linear scale and kinked on the rank scale, one that
    oscillates with the rank the other way round. ``auto`` picks by the fitted
    marginal likelihood, says so in each reason, and proposes pool rows;
    ``recommend`` models on the same scale; ``rank`` records no choice."""
    space = SearchSpace(parameters=[FloatParameter(name="x", low=0, high=1), FloatParameter(name="z", low=0, high=1)])
    xs = [*np.linspace(0.0, 0.1, 30), *np.linspace(0.19, 1.0, 10)]
    pool = [{"x": float(x), "z": float((7 * i % 40) / 40)} for i, x in enumerate(xs)]
    rank = {i: r for r, i in enumerate(sorted(range(40), key=lambda i: xs[i]))}
    responses = {"linear": lambda i: 3 * xs[i] + 0.1 * pool[i]["z"], "rank": lambda i: float(np.sin(2 * np.pi * rank[i] / 20))}
    for expected, f in responses.items():
        measured = list(range(0, 40, 2))  # (every other row: both ends of the crowd and of the spread)
        observations = [Observation(params=pool[i], outcomes={"y": f(i)}) for i in measured]
        candidates = tuple(pool[i] for i in range(40) if i not in measured)
        planner = BOPlanner(**FAST, pool_scale="auto")
        batch = planner.propose(space, [Objective(name="y")], observations, [], 2, context=PlanContext(step=20, candidates=candidates))
        choices = [b.reason["pool_scale"] for b in batch]
        assert all(c["chosen"] == expected for c in choices), (expected, choices)
        scores = choices[0]["log_likelihood_per_point"]
        assert scores[expected] > scores["linear" if expected == "rank" else "rank"]
        assert all(b.params in candidates for b in batch)
        rec = planner.recommend(space, [Objective(name="y")], observations, context=PlanContext(step=20, candidates=candidates))
        assert rec is not None and rec.params in [o.params for o in observations]
    fixed = BOPlanner(**FAST, pool_scale="rank").propose(space, [Objective(name="y")], observations, [], 1,
                                                         context=PlanContext(step=20, candidates=candidates))
    assert "pool_scale" not in fixed[0].reason
    assert BOPlanner().options.pool_scale == "auto"
    first = BOPlanner(**FAST).propose(space, [Objective(name="y")], observations[:2], [], 1, context=PlanContext(step=2, candidates=candidates))
    assert first[0].reason["strategy"] == "sobol_init" and "pool_scale" not in first[0].reason  # (no model, no choice)


def test_pool_scale_option_is_validated() -> None:
    with pytest.raises(ValueError, match="pool_scale"):
        BOPlanner(pool_scale="quantile")


def test_bo_pool_campaign_measures_pool_rows_and_recommends_one(tmp_path: Path) -> None:
    path = tmp_path / "crowded.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Dopant (%)", "Layers", "Score"])
        for p in crowded_pool():
            writer.writerow([p["dopant"], p["layers"], round(objective_of({**p, "solvent": "ethanol"}), 6)])
    problem = get_problem(f"pool:{path}", objective="Score", direction="maximize")
    config = bench_config(problem, "bo", 9, 2, 1, f"sqlite:///{tmp_path / 'l.sqlite'}", options=FAST)
    ledger = Ledger(config.ledger)
    try:
        asyncio.run(Campaign(config, ledger).run())
        events = ledger.events(config.name)
    finally:
        ledger.close()
    state = CampaignState.replay(config.name, events)
    done = state.with_status("completed")
    rows = {(float(p["dopant"]), float(p["layers"])) for p in crowded_pool()}
    measured = [(e.params["Dopant"], e.params["Layers"]) for e in done]
    assert len(done) == 9 and len(set(measured)) == 9 and set(measured) <= rows
    proposed = [e for e in events if e.kind == "proposed"]
    assert sum(e.payload["reason"]["strategy"] == "bo" for e in proposed) == 5  # after a 4-row initial design
    recommended = [e for e in events if e.kind == "recommended"]
    assert recommended and all((e.payload["params"]["Dopant"], e.payload["params"]["Layers"]) in set(measured) for e in recommended)
