"""The ``mf`` planner with real botorch models on small problems (AugmentedBranin, n <= 30)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from botorch.test_functions.multi_fidelity import AugmentedBranin

from selflab.planners.encoding import Encoding
from selflab.planners.mf import MFPlanner
from selflab.planners.optimize import too_close
from selflab.planners.protocol import FidelityOption, Observation, Pending, PlanContext
from selflab.planners.registry import make_planner
from selflab.planners.space import FloatParameter, Objective, Point, SearchSpace

FAST = {"num_restarts": 2, "raw_samples": 32, "maxiter": 20, "candidate_set_size": 128, "num_fantasies": 4}
"""Small optimizer settings: these tests check behaviour, not optimizer quality."""

SPACE = SearchSpace(parameters=[FloatParameter(name="x1", low=-5, high=10), FloatParameter(name="x2", low=0, high=15)])
Y = [Objective(name="y", direction="minimize")]
TWO = (FidelityOption(fidelity=0.5, cost=0.1), FidelityOption(fidelity=1.0, cost=1.0))
THREE = (FidelityOption(fidelity=0.5, cost=0.1), FidelityOption(fidelity=0.75, cost=0.3), FidelityOption(fidelity=1.0, cost=1.0))
REASON_KEYS = {
    "strategy", "acquisition", "acquisition_value", "cost_aware_value", "fidelity", "cost", "candidates_by_fidelity",
    "predicted", "fit_seconds", "n_observations", "device", "device_reason", "refit", "target_share_rule",
}


def planner(**options: Any) -> MFPlanner:
    return MFPlanner(**{**FAST, **options})


def branin(point: Point, fidelity: float) -> float:
    return float(AugmentedBranin()(torch.tensor([[float(point["x1"]), float(point["x2"]), fidelity]])))


def observations(n: int, fidelities: list[float], seed: int = 0) -> list[Observation]:
    """``n`` uniform random points, the ``i``-th at ``fidelities[i % len(fidelities)]``."""
    points = [SPACE.from_unit(u) for u in np.random.default_rng(seed).random((n, 2))]
    return [
        Observation(params=p, outcomes={"y": branin(p, fidelities[i % len(fidelities)])}, fidelity=fidelities[i % len(fidelities)])
        for i, p in enumerate(points)
    ]


def context(step: int, fidelities: tuple[FidelityOption, ...] = TWO, **kw: Any) -> PlanContext:
    return PlanContext(seed=1, step=step, fidelities=fidelities, **kw)


def test_proposals_are_at_offered_fidelities_with_complete_reasons() -> None:
    data = observations(20, [0.5, 0.5, 0.75, 1.0])  # 0.75 was measured once but is not on offer now
    batch = planner().propose(SPACE, Y, data, [], 2, context=context(20))
    assert len(batch) == 2
    for b in batch:
        assert b.fidelity in {0.5, 1.0} and SPACE.violations(b.params) == []
        reason = b.reason
        assert REASON_KEYS <= set(reason) and reason["strategy"] == "mf" and reason["acquisition"] == "mfmes"
        assert reason["fidelity"] == b.fidelity and reason["cost"] == {0.5: 0.1, 1.0: 1.0}[b.fidelity]
        assert set(reason["candidates_by_fidelity"]) <= {"0.5", "1"} and reason["n_observations"] == 20
        assert math.isclose(reason["acquisition_value"], reason["cost_aware_value"] * reason["cost"], rel_tol=1e-6, abs_tol=1e-12)
        json.dumps(reason, allow_nan=False)


def test_initial_design_is_sobol_spread_over_fidelities_and_deterministic() -> None:
    p = planner(n_init=8)
    first = p.propose(SPACE, Y, [], [], 8, context=context(0, THREE))
    again = [p.propose(SPACE, Y, [], [], 1, context=context(k, THREE))[0] for k in range(8)]
    assert [b.params for b in first] == [b.params for b in again] and [b.fidelity for b in first] == [b.fidelity for b in again]
    assert [b.fidelity for b in first] == [0.5, 0.75, 0.5, 1.0, 0.75, 0.5, 0.75, 1.0]
    assert {b.reason["strategy"] for b in first} == {"sobol_init"}


def test_a_closed_loop_uses_the_cheap_fidelity_and_the_target() -> None:
    """AugmentedBranin at 0.75 is cheap (0.1) and correlated 0.98 with the target: cheap
    points first, then information per unit cost moves up to the target by itself."""
    p = planner(n_init=6)
    fidelities = (FidelityOption(fidelity=0.75, cost=0.1), FidelityOption(fidelity=1.0, cost=1.0))
    data: list[Observation] = []
    chosen: list[float] = []
    for step in range(22):
        b = p.propose(SPACE, Y, data, [], 1, context=context(step, fidelities))[0]
        data.append(Observation(params=b.params, outcomes={"y": branin(b.params, b.fidelity)}, fidelity=b.fidelity))
        if step >= 6:
            chosen.append(b.fidelity)
    assert set(chosen) == {0.75, 1.0}, chosen


def test_target_share_rule_forces_the_target_when_cheap_ones_dominate() -> None:
    data = observations(24, [0.5])
    batch = planner(min_target_share=0.2).propose(SPACE, Y, data, [], 1, context=context(24))
    assert batch[0].fidelity == 1.0 and batch[0].reason["target_share_rule"] is True
    assert set(batch[0].reason["candidates_by_fidelity"]) == {"1"}


def test_batch_is_distinct_and_keeps_away_from_pending_and_failed() -> None:
    data = observations(16, [0.5, 1.0], seed=2)
    pending = [Pending(params={"x1": 3.14, "x2": 2.27}, fidelity=0.5), Pending(params={"x1": -3.1, "x2": 12.2}, fidelity=1.0)]
    failed = (Pending(params={"x1": 9.4, "x2": 2.5}, fidelity=0.5),)
    batch = planner().propose(SPACE, Y, data, pending, 3, context=context(18, failed=failed))
    enc = Encoding(SPACE)
    X = enc.encode([b.params for b in batch])
    avoid = enc.encode([p.params for p in (*pending, *failed)])
    assert not too_close(enc, X, avoid).any()
    assert all(not too_close(enc, X[i : i + 1], X[:i]).any() for i in range(1, 3))
    assert all(b.fidelity in {0.5, 1.0} for b in batch)


def test_recommendation_is_the_best_predicted_point_at_the_target() -> None:
    data = observations(24, [0.5, 0.5, 0.5, 1.0], seed=3)
    rec = planner().recommend(SPACE, Y, data, context=PlanContext(target_fidelity=1.0))
    assert rec is not None and rec.basis == "best_predicted" and rec.fidelity == 1.0
    assert SPACE.violations(rec.params) == [] and set(rec.predicted["y"]) == {"mean", "std"}
    observed = min(o.outcomes["y"] for o in data if o.fidelity == 1.0)
    assert branin(rec.params, 1.0) < observed  # better than the best measured at the target
    only = planner(recommend_over="observed").recommend(SPACE, Y, data, context=PlanContext())
    assert only is not None and only.params in [o.params for o in data]


def test_near_duplicate_cheap_pile_up_does_not_crash() -> None:
    here = {"x1": 2.0, "x2": 3.0}
    data = [Observation(params={"x1": 2.0 + 1e-9 * i, "x2": 3.0}, outcomes={"y": 5.0 + 1e-9 * i}, fidelity=0.5) for i in range(25)]
    data += [Observation(params={"x1": 2.0, "x2": 3.0}, outcomes={"y": 5.1}, fidelity=1.0)] * 3
    batch = planner().propose(SPACE, Y, data, [Pending(params=here, fidelity=0.5)], 2, context=context(30))
    assert len(batch) == 2 and all(SPACE.violations(b.params) == [] and b.fidelity in {0.5, 1.0} for b in batch)
    assert {b.reason["strategy"] for b in batch} <= {"mf", "fallback_sobol"}
    planner().recommend(SPACE, Y, data, context=PlanContext())  # advice may be withheld (None), never raised


def test_a_fit_that_always_fails_falls_back_to_sobol_at_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise torch.linalg.LinAlgError("cholesky failed")

    monkeypatch.setattr("selflab.planners.surrogate.build_model", broken)
    batch = planner().propose(SPACE, Y, observations(12, [0.5, 1.0]), [], 2, context=context(12, THREE))
    assert [(b.reason["strategy"], b.fidelity) for b in batch] == [("fallback_sobol", 1.0)] * 2
    assert "cholesky failed" in batch[0].reason["error"]
    assert planner().recommend(SPACE, Y, observations(12, [0.5, 1.0]), context=PlanContext()) is None


def test_many_offered_fidelities_use_a_continuous_column_snapped_to_offered_levels() -> None:
    levels = tuple(FidelityOption(fidelity=f, cost=0.05 + f**2) for f in (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0))
    data = observations(16, [0.4, 0.7, 1.0], seed=4)
    batch = planner(max_discrete_fidelities=3).propose(SPACE, Y, data, [], 2, context=context(16, levels))
    assert all(b.fidelity in {f.fidelity for f in levels} and len(b.reason["candidates_by_fidelity"]) == 1 for b in batch)


def test_mfkg_proposes_at_offered_fidelities() -> None:
    batch = planner(acquisition="mfkg", num_fantasies=2).propose(SPACE, Y, observations(10, [0.5, 1.0], seed=5), [], 1, context=context(10))
    assert batch[0].fidelity in {0.5, 1.0} and batch[0].reason["acquisition"] == "mfkg"
    assert math.isfinite(batch[0].reason["cost_aware_value"])


def test_one_fidelity_or_constraints_delegate_to_bo() -> None:
    data = observations(10, [1.0])
    batch = planner().propose(SPACE, Y, data, [], 1, context=PlanContext(step=10))
    assert batch[0].reason["strategy"] == "bo" and batch[0].fidelity == 1.0


def test_bad_options_raise() -> None:
    for bad, name in [({"acquisition": "ei"}, "acquisition"), ({"min_target_share": 1.0}, "min_target_share"),
                      ({"num_fantasies": 0}, "num_fantasies"), ({"restarts": 3}, "restarts")]:
        with pytest.raises(ValueError, match=name):
            make_planner("mf", bad)
    assert make_planner("mf", {}).multi_fidelity is True


def test_a_campaign_routes_proposals_to_the_instrument_of_their_fidelity(tmp_path: Path) -> None:
    from selflab.controller.campaign import Campaign
    from selflab.controller.config import parse_config
    from selflab.controller.ledger import Ledger
    from selflab.controller.projection import CampaignState

    config = parse_config({
        "name": "mf-branin",
        "seed": 2,
        "parameters": [{"name": "x1", "type": "float", "low": -5, "high": 10}, {"name": "x2", "type": "float", "low": 0, "high": 15}],
        "objectives": [{"name": "y", "direction": "minimize"}],
        "instruments": [
            {"name": "cheap", "driver": "augmented_branin", "options": {"fidelity": 0.5}, "capacity": 2},
            {"name": "full", "driver": "augmented_branin", "options": {"fidelity": 1.0}},
        ],
        "target_fidelity": 1.0,
        "planner": {"kind": "mf", "options": {**FAST, "n_init": 4}},
        "stop": {"max_experiments": 10},
        "ledger": f"sqlite:///{tmp_path / 'l.sqlite'}",
    })
    ledger = Ledger(config.ledger_url)
    try:
        stop = asyncio.run(Campaign(config, ledger).run())
        events = list(ledger.events(config.name))
        state = CampaignState.replay(config.name, events)
    finally:
        ledger.close()
    assert stop.reason == "max_experiments"
    served = {"cheap": 0.5, "full": 1.0}
    proposed = {e.experiment_id: e.payload["fidelity"] for e in events if e.kind == "proposed"}
    dispatched = [e for e in events if e.kind == "dispatched"]
    assert dispatched and all(served[e.instrument] == proposed[e.experiment_id] for e in dispatched)
    done = state.with_status("completed")
    assert {e.reason["strategy"] for e in done} <= {"sobol_init", "mf"} and any(e.reason["strategy"] == "mf" for e in done)
    recs = [e.payload for e in events if e.kind == "recommended"]
    assert recs and recs[-1]["basis"] == "best_predicted" and recs[-1]["fidelity"] == 1.0
