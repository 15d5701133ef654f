"""``mf`` with a biased cheap fidelity (issue 22): the discrepancy model, the
cheap-or-target rule and the recommendation, on a small 2-D problem whose
cheap optimum is displaced; and the ``reactor_biased`` benchmark problem."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from selflab.planners.encoding import Encoding
from selflab.planners.mf import MFPlanner
from selflab.planners.mf_discrepancy import DiscrepancyFitters, cheap_pays, fit_discrepancy
from selflab.planners.protocol import FidelityOption, Observation, Pending, PlanContext
from selflab.planners.space import FloatParameter, Objective, Point, SearchSpace
from selflab.planners.surrogate import TrainingData
from selflab.simulators.problems import BIASED_EA2_J_PER_MOL, ProblemError, get_problem
from selflab.simulators.reactor import REACTOR_LIMITS, Kinetics, best_yield

FAST = {"num_restarts": 2, "raw_samples": 32, "maxiter": 20, "candidate_set_size": 128, "num_fantasies": 4}
SPACE = SearchSpace(parameters=[FloatParameter(name="x1", low=0, high=1), FloatParameter(name="x2", low=0, high=1)])
Y = [Objective(name="y", direction="maximize")]
TWO = (FidelityOption(fidelity=0.5, cost=0.05), FidelityOption(fidelity=1.0, cost=1.0))
TARGET_OPT, CHEAP_OPT = np.array([0.75, 0.6]), np.array([0.3, 0.4])


def truth(point: Point, fidelity: float) -> float:
    """A smooth bump at ``TARGET_OPT`` (fidelity 1); the cheap level's bump sits at ``CHEAP_OPT``, a bit lower."""
    x = np.array([float(point["x1"]), float(point["x2"])])
    centre, height = (TARGET_OPT, 1.0) if fidelity == 1.0 else (CHEAP_OPT, 0.9)
    return float(height * math.exp(-float(((x - centre) ** 2).sum()) / 0.08))


def biased_data(n_cheap: int = 30, target: tuple[tuple[float, float], ...] = ((0.5, 0.5), (0.7, 0.55), (0.8, 0.7), (0.35, 0.45))
                ) -> list[Observation]:
    """``n_cheap`` Sobol-spread cheap points and a few target points, one of them near the target optimum."""
    U = torch.quasirandom.SobolEngine(2, scramble=True, seed=0).draw(n_cheap, dtype=torch.float64).numpy()
    points = [SPACE.from_unit(u) for u in U]
    data = [Observation(params=p, outcomes={"y": truth(p, 0.5)}, fidelity=0.5) for p in points]
    for x1, x2 in target:
        p = {"x1": x1, "x2": x2}
        data.append(Observation(params=p, outcomes={"y": truth(p, 1.0)}, fidelity=1.0))
    return data


def planner(**options: Any) -> MFPlanner:
    return MFPlanner(**{**FAST, "target_model": "discrepancy", **options})


def distance(point: Point, centre: np.ndarray) -> float:
    return float(np.linalg.norm(np.array([float(point["x1"]), float(point["x2"])]) - centre))


def test_discrepancy_model_reproduces_target_data_and_follows_the_cheap_shape_elsewhere() -> None:
    data = biased_data()
    enc = Encoding(SPACE)
    training = TrainingData.from_observations(enc, ["y"], data, with_fidelity=True)
    fitters = DiscrepancyFitters.create(refit_growth=0.1, warm_maxiter=30, fit_max_points=500)
    model = fit_discrepancy(fitters, enc, "y", training, 1.0)
    assert model is not None and model.low_fidelity is None  # one cheap level: a single-fidelity low model
    at_target = training.X[training.X[:, -1] == 1.0]
    mean, std = model.stats(at_target)
    assert torch.allclose(mean, training.Y[training.X[:, -1] == 1.0, 0], atol=0.03)  # target data trusted where they exist
    low, delta = model.mean_split(at_target)
    assert torch.allclose(low + delta, mean, atol=1e-6)
    v_low, v_delta = model.variance_split(at_target)
    assert bool((v_low >= 0).all()) and bool((v_delta >= 0).all())
    assert fit_discrepancy(fitters, enc, "y", TrainingData.from_observations(enc, ["y"], data[:31], with_fidelity=True), 1.0) is None


def test_recommendation_lies_nearer_the_target_optimum_than_the_cheap_one() -> None:
    data = biased_data()
    rec = planner().recommend(SPACE, Y, data, context=PlanContext(target_fidelity=1.0, fidelities=TWO))
    assert rec is not None and rec.basis == "best_predicted" and rec.fidelity == 1.0
    assert distance(rec.params, TARGET_OPT) < 0.15 < 0.3 < distance(rec.params, CHEAP_OPT)
    assert set(rec.predicted["y"]) == {"mean", "std"}


def test_dense_cheap_data_move_the_proposal_to_the_target_and_the_reason_says_why() -> None:
    data = biased_data(n_cheap=40)
    [p] = planner().propose(SPACE, Y, data, [], 1, context=PlanContext(seed=1, step=50, fidelities=TWO))
    r = p.reason
    assert p.fidelity == 1.0 and r["strategy"] == "mf" and r["fidelity"] == 1.0
    assert r["target_point"] == "discrepancy_logei" and r["fidelity_rule"] in {"cheap_stops_paying", "target_share", "acquisition"}
    info = r["discrepancy"]
    assert set(info) >= {"low_share_of_variance", "cost_ratio", "cheap_pays", "log_ei", "low_fidelity_mean", "difference_mean"}
    assert info["cost_ratio"] == pytest.approx(0.05)
    if r["fidelity_rule"] == "cheap_stops_paying":
        assert info["cheap_pays"] is False and info["low_share_of_variance"] < 0.05 and r["cost_aware_value"] is None
    assert set(r["predicted"]["y"]) == {"mean", "std"}
    assert distance(p.params, TARGET_OPT) < distance(p.params, CHEAP_OPT)  # the model's log-EI choice, not the cheap optimum


def test_no_cheap_proposal_when_the_cheap_fidelity_stops_paying_and_the_target_is_busy() -> None:
    data = biased_data(n_cheap=40)
    busy = (FidelityOption(fidelity=0.5, cost=0.05, free=1), FidelityOption(fidelity=1.0, cost=1.0, free=0))
    pending = [Pending(params={"x1": 0.72, "x2": 0.62}, fidelity=1.0)]
    batch = planner().propose(SPACE, Y, data, pending, 1, context=PlanContext(seed=1, step=50, fidelities=busy))
    assert all(p.fidelity == 0.5 for p in batch)
    for p in batch:  # a cheap proposal only where the rule says a cheap experiment still pays
        assert p.reason["discrepancy"]["cheap_pays"] is True and p.reason["fidelity_rule"] == "acquisition"
    joint = planner(target_model="joint").propose(SPACE, Y, data, pending, 1, context=PlanContext(seed=1, step=50, fidelities=busy))
    assert len(joint) == 1 and joint[0].fidelity == 0.5 and "discrepancy" not in joint[0].reason  # before issue 22: always a cheap one


def test_cheap_pays_compares_the_variance_share_with_the_cost_ratio() -> None:
    assert cheap_pays(0.10, 0.05, 1.0) and not cheap_pays(0.04, 0.05, 1.0) and not cheap_pays(0.5, 1.0, 0.0)


def test_reactor_biased_displaces_the_cheap_optimum_at_several_cost_ratios() -> None:
    plant = get_problem("reactor_multifidelity")
    for name, cost in (("reactor_biased", 0.05), ("reactor_biased_c0.2", 0.2)):
        problem = get_problem(name)
        assert problem.optimum == plant.optimum and problem.direction == "maximize"
        assert problem.levels is not None and [lv.cost for lv in problem.levels] == [cost, 1.0]
        assert problem.levels[0].options["ea2_j_per_mol"] == BIASED_EA2_J_PER_MOL
    cheap, real = best_yield(Kinetics(ea2=BIASED_EA2_J_PER_MOL), REACTOR_LIMITS), best_yield(Kinetics(), REACTOR_LIMITS)
    assert cheap is not None and real is not None and real[1] - cheap[1] > 10  # degC: the cheap optimum is displaced
    for bad in ("reactor_biased_c1.5", "reactor_biased_cfoo"):
        with pytest.raises(ProblemError, match="reactor_biased_c"):
            get_problem(bad)
