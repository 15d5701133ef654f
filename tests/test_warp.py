"""Output warping (selflab.planners.warp) and its use by the bo planner."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from selflab.planners.bo import BOPlanner
from selflab.planners.encoding import Encoding
from selflab.planners.protocol import Observation, PlanContext
from selflab.planners.space import FloatParameter, Objective, SearchSpace
from selflab.planners.surrogate import SurrogateFitter, TrainingData
from selflab.planners.warp import BoxCox, YeoJohnson, fit_warp

SPACE = SearchSpace(parameters=[FloatParameter(name="x", low=0, high=1), FloatParameter(name="z", low=0, high=1)])


def lognormal(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).lognormal(mean=12.0, sigma=1.0, size=n))


def test_heavy_tailed_positive_values_get_a_log_like_warp_when_minimized() -> None:
    warp = fit_warp(lognormal(40), "minimize")
    assert warp is not None and 0.0 <= warp.lam < 0.3


def test_a_mostly_zero_yield_that_is_maximized_is_not_warped() -> None:
    """The misfire of a plain log: yields near zero with a few good ones stay on their own scale."""
    yields = torch.from_numpy(np.concatenate([np.full(30, 1e-3), np.linspace(0.01, 0.9, 10)]))
    assert fit_warp(yields, "maximize") is None


@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0], [-1.0, 0.0, 5.0], [5.0] * 10, [-2.0] * 10])
def test_no_warp_for_too_few_or_constant_values(values: list[float]) -> None:
    assert fit_warp(torch.tensor(values, dtype=torch.float64), "minimize") is None


def test_negative_values_to_minimize_get_a_yeo_johnson_warp_that_compresses_the_bad_end() -> None:
    """Hartmann-like, late in a campaign: most readings near the optimum -3.3, a few bad ones up near 0."""
    y = torch.tensor([-3.32, -3.3, -3.28, -3.25, -3.2, -3.1, -3.0, -2.8, -2.0, -0.5, -0.1, -0.01], dtype=torch.float64)
    warp = fit_warp(y, "minimize")
    assert isinstance(warp, YeoJohnson) and 0.0 <= warp.lam < 1.0
    z = warp.forward(y)
    # the bad end is pulled in relative to the good end
    assert (z[-1] - z[-4]) / (z[1] - z[0]) < (y[-1] - y[-4]) / (y[1] - y[0])
    assert fit_warp(-y.flip(0) - 3.4, "minimize") is None  # mirrored (few good, most bad): no warp that would stretch the bad end


def test_a_maximized_score_with_failed_runs_at_zero_gets_yeo_johnson_above_one() -> None:
    scores = torch.tensor([0.0] * 6 + [0.3, 0.5, 0.6, 0.62, 0.65, 0.7, 0.72, 0.8, 0.85, 0.9], dtype=torch.float64)
    warp = fit_warp(scores, "maximize")
    assert isinstance(warp, YeoJohnson) and 1.0 < warp.lam <= 2.0
    assert fit_warp(scores, "minimize") is None or fit_warp(scores, "minimize").lam < 1.0  # type: ignore[union-attr]


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 1.7, 2.0])
def test_yeo_johnson_round_trips_and_is_increasing_on_both_sides_of_zero(lam: float) -> None:
    warp = YeoJohnson(lam, loc=-1.0, scale=0.7)
    y = torch.linspace(-6, 4, 401, dtype=torch.float64)
    z = warp.forward(y)
    assert torch.all(z[1:] > z[:-1])
    assert warp.forward(torch.tensor([-1.0], dtype=torch.float64)).item() == 0.0  # the centre stays put
    assert torch.allclose(warp.inverse(z), y, atol=1e-9)
    mean, std = warp.untransform(z, torch.full_like(z, 1e-6))
    assert torch.allclose(mean, y, atol=1e-9)
    assert torch.allclose(std, (warp.inverse(z + 1e-6) - warp.inverse(z - 1e-6)) / 2, rtol=1e-4)
    assert torch.allclose(warp.slope(y), (warp.forward(y + 1e-6) - warp.forward(y - 1e-6)) / 2e-6, rtol=1e-4)


@pytest.mark.parametrize("lam", [0.0, 0.4, 1.6])
def test_box_cox_round_trips_and_is_increasing(lam: float) -> None:
    warp = BoxCox(lam)
    y = torch.linspace(0.05, 50, 200, dtype=torch.float64)
    z = warp.forward(y)
    assert torch.all(z[1:] > z[:-1])
    assert torch.allclose(warp.inverse(z), y, rtol=1e-9)
    # the delta-method std matches a finite difference of the inverse
    mean, std = warp.untransform(z, torch.full_like(z, 1e-6))
    assert torch.allclose(mean, y, rtol=1e-9)
    assert torch.allclose(std, (warp.inverse(z + 1e-6) - warp.inverse(z - 1e-6)) / 2, rtol=1e-4)


def test_warped_surrogate_predicts_in_original_units() -> None:
    g = np.random.default_rng(1)
    points = [{"x": float(a), "z": float(b)} for a, b in g.random((24, 2))]
    y = [math.exp(8 + 4 * p["x"] + p["z"]) for p in points]  # spans two decades, to minimize
    encoding = Encoding(SPACE)
    data = TrainingData.from_observations(encoding, ["y"], [Observation(params=p, outcomes={"y": v}) for p, v in zip(points, y)])
    warp = fit_warp(data.Y[:, 0], "minimize")
    assert warp is not None
    surrogate = SurrogateFitter().fit(encoding, ["y"], data, [warp])
    assert surrogate.warps == (warp,) and not torch.allclose(surrogate.data.Y, data.Y)
    mean, std = surrogate.predict(points[:5])["y"]
    assert np.allclose(mean, y[:5], rtol=0.05) and (std >= 0).all()


def test_bo_records_the_warp_in_the_reason_and_can_be_told_not_to() -> None:
    g = np.random.default_rng(2)
    observations = [Observation(params={"x": float(a), "z": float(b)}, outcomes={"y": math.exp(10 * float(a))}) for a, b in g.random((12, 2))]
    minimize = [Objective(name="y", direction="minimize")]
    fast = {"n_init": 2, "num_restarts": 2, "raw_samples": 32}
    context = PlanContext(seed=0, step=12)
    warped = BOPlanner(**fast).propose(SPACE, minimize, observations, [], 1, context=context)[0]
    plain = BOPlanner(**fast, outcome_warp="none").propose(SPACE, minimize, observations, [], 1, context=context)[0]
    assert 0 <= warped.reason["box_cox"]["y"] < 1
    assert "box_cox" not in plain.reason
    # predicted in original units; on the warped scale a positive quantity stays positive
    assert 0 < warped.reason["predicted"]["y"]["mean"] < math.exp(10)


def test_no_warp_when_a_constraint_reads_the_objective() -> None:
    """A threshold on the objective is in original units: the objective stays unwarped then."""
    from selflab.planners.space import OutcomeConstraint

    g = np.random.default_rng(3)
    observations = [Observation(params={"x": float(a), "z": float(b)}, outcomes={"y": math.exp(10 * float(a))}) for a, b in g.random((12, 2))]
    minimize = [Objective(name="y", direction="minimize")]
    fast = {"n_init": 2, "num_restarts": 2, "raw_samples": 32}
    bounded = PlanContext(seed=0, step=12, constraints=(OutcomeConstraint(outcome="y", op=">=", value=5.0),))
    [proposal] = BOPlanner(**fast).propose(SPACE, minimize, observations, [], 1, context=bounded)
    assert "box_cox" not in proposal.reason and proposal.reason["strategy"] == "bo"
    [free] = BOPlanner(**fast).propose(SPACE, minimize, observations, [], 1, context=PlanContext(seed=0, step=12))
    assert "box_cox" in free.reason  # the same data without the constraint are warped
