"""Trust the model (issue 18), planner side: extrapolation flags, prequential
scores and the calibrated band, rescaling, the feasibility classifier. Real
botorch models on small problems."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from selflab.planners.bo import BOPlanner
from selflab.planners.calibration import (
    EVIDENCE_PER_BIN,
    SEQUENTIAL_BAND,
    CalibrationBand,
    CalibrationStats,
    LooStats,
    PredictedOutcome,
    ScoredObservation,
    overconfidence_evidence,
    prequential_z,
    raw_scores,
    rescale_factor,
    rolling,
)
from selflab.planners.encoding import Encoding
from selflab.planners.extrapolation import extrapolation_flags, is_extrapolating
from selflab.planners.acquisition import build_acquisition
from selflab.planners.feasibility import FeasibilityWeighted, fit_feasibility
from selflab.planners.protocol import Failure, Observation, OptionsError, Pending, PlanContext, counts
from selflab.planners.space import FloatParameter, Objective, SearchSpace
from selflab.planners.surrogate import fit_surrogate, numerics

SPACE = SearchSpace(parameters=[FloatParameter(name="x1", low=0, high=1), FloatParameter(name="x2", low=0, high=1)])
Y = Objective(name="y", direction="minimize")


def f(x1: float, x2: float) -> float:
    return math.sin(6 * x1) + math.cos(4 * x2) + x1 * x2


def sobol(n: int, seed: int, x1_max: float = 1.0) -> list[dict[str, float]]:
    U = torch.quasirandom.SobolEngine(2, scramble=True, seed=seed).draw(n, dtype=torch.float64)
    return [{"x1": float(a) * x1_max, "x2": float(b)} for a, b in U]


def observe(points: list[dict[str, float]]) -> list[Observation]:
    return [Observation(params=p, outcomes={"y": f(p["x1"], p["x2"])}) for p in points]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_point_beyond_the_data_is_flagged_and_one_among_them_is_not(seed: int) -> None:
    """All data in x1 < 0.5: a planted point at x1 = 0.95 is extrapolating, one at x1 = 0.25 is not."""
    surrogate = fit_surrogate(SPACE, [Y], observe(sobol(12, seed, x1_max=0.5)))
    X = surrogate.encoding.encode([{"x1": 0.95, "x2": 0.5}, {"x1": 0.25, "x2": 0.5}])
    far, near = extrapolation_flags(surrogate, X)
    assert far["extrapolating"] and far["outside_range"] == ["x1"] and far["distance_ratio"] > 2
    assert not near["extrapolating"] and near["outside_range"] == [] and near["distance_ratio"] < 2
    assert far["sigma_ratio"]["y"] > 2 * near["sigma_ratio"]["y"]
    assert is_extrapolating({"extrapolation": far}) and not is_extrapolating({"extrapolation": near}) and not is_extrapolating({})


def test_bo_reasons_carry_flags_predictions_and_leave_one_out() -> None:
    observations = observe(sobol(8, 3))
    planner = BOPlanner(num_restarts=2, raw_samples=64, mc_samples=32)
    (proposal,) = planner.propose(SPACE, [Y], observations, [], 1, context=PlanContext(step=8))
    reason = proposal.reason
    json.dumps(reason, allow_nan=False)
    assert set(reason["predicted"]["y"]) == {"mean", "std"} and reason["predicted"]["y"]["std"] > 0 and reason["noise_std"]["y"] >= 0
    assert set(reason["extrapolation"]) == {"sigma_ratio", "nearest", "spacing", "distance_ratio", "outside_range", "extrapolating"}
    assert 0 < reason["extrapolation"]["sigma_ratio"]["y"] <= 1
    assert reason["calibration"]["mode"] == "none" and reason["feasibility"]["mode"] == "learn"  # (the default; no failure yet)
    assert reason["refit"] == "full" and reason["loo"]["y"]["n"] == 8
    assert -1 <= reason["loo"]["y"]["rank_correlation"] <= 1


def test_a_proposal_after_the_recommendation_still_carries_leave_one_out() -> None:
    """A campaign asks for a recommendation after each result, which fits the
    model; the proposal that follows finds that fit cached (``refit:
    cached``) and must still report the leave-one-out figures of the full fit
    it uses (before: ``loo`` was never recorded in a real campaign)."""
    observations = observe(sobol(8, 3))
    planner = BOPlanner(num_restarts=2, raw_samples=64, mc_samples=32)
    context = PlanContext(step=8)
    assert planner.recommend(SPACE, [Y], observations, context=context) is not None
    (proposal,) = planner.propose(SPACE, [Y], observations, [], 1, context=context)
    assert proposal.reason["refit"] == "cached" and proposal.reason["fitted_by"] == "full" and proposal.reason["loo"]["y"]["n"] == 8
    (again,) = planner.propose(SPACE, [Y], observations[:7] + observations[7:], [], 1, context=PlanContext(step=9))
    assert again.reason["loo"] == proposal.reason["loo"]  # the same fit, the same figures


def test_prequential_z_uses_noise_and_the_scale_applied() -> None:
    reason = {"predicted": {"y": {"mean": 1.0, "std": 0.3}}, "noise_std": {"y": 0.4}}
    assert prequential_z(2.0, reason, "y") == pytest.approx(2.0)  # 1 / sqrt(0.09 + 0.16)
    assert prequential_z(2.0, reason, "y", noise_std=0.0) == pytest.approx(1 / 0.3)  # the reading's own noise wins
    scaled = {"predicted": {"y": {"mean": 1.0, "std": 0.6}}, "noise_std": {"y": 0.8}, "calibration": {"std_scale": {"y": 2.0}}}
    assert prequential_z(2.0, scaled, "y") == pytest.approx(1.0) and prequential_z(2.0, scaled, "y", raw=True) == pytest.approx(2.0)
    assert prequential_z(2.0, {"predicted": {"y": {"mean": 1.0, "std": 0.0}}}, "y") is None
    assert prequential_z(2.0, {"predicted": {}}, "y") is None and prequential_z(2.0, {"predicted": {"y": {"mean": None, "std": None}}}, "y") is None
    assert PredictedOutcome.from_reason({"predicted": {"y": {"mean": 1.0, "std": 0.2}}, "noise_std": {}, "calibration": None}, "y") == \
        PredictedOutcome(mean=1.0, std=0.2)  # model-free keys (empty, None) read as defaults


def test_the_band_is_quiet_for_calibrated_scores_and_fires_for_overconfident_ones() -> None:
    """Over many windows: N(0, 1) scores leave the band rarely, scores 2.3x too wide almost always."""
    band = CalibrationBand()
    rng = np.random.default_rng(0)
    calibrated = rng.standard_normal((4000, band.window))
    alarms = np.mean([band.miscalibrated(CalibrationStats.of(w)) for w in calibrated])
    hits = np.mean([band.miscalibrated(CalibrationStats.of(2.3 * w)) for w in calibrated[:1000]])
    assert alarms < 0.025 and hits > 0.85, (alarms, hits)
    assert not band.miscalibrated(CalibrationStats.of([5.0] * (band.window - 1)))  # too few to judge
    assert not band.miscalibrated(CalibrationStats.of([0.01] * band.window))  # underconfident: no bound by default...
    assert CalibrationBand(spread_low=0.5).miscalibrated(CalibrationStats.of([0.01] * band.window))  # ...unless asked
    assert CalibrationBand(spread_high=1.5).miscalibrated(CalibrationStats.of([0.0] * (band.window - 1) + [20.0]))


def first_flag(z: np.ndarray, band: CalibrationBand) -> int | None:
    """The number of scores after which ``band`` first marks ``z`` miscalibrated, judged after each score."""
    return next((k for k in range(1, len(z) + 1) if band.miscalibrated(rolling(z[:k].tolist(), band.window))), None)


def test_the_evidence_of_overconfidence_accumulates_by_bin_and_is_bounded_per_score() -> None:
    """Each score adds its bin's log-likelihood ratio (1.5x too narrow against calibrated); the best run counts."""
    assert EVIDENCE_PER_BIN.tolist() == pytest.approx([-0.3652, -0.0510, 1.0037], abs=1e-4)
    assert overconfidence_evidence([]) == 0.0 and overconfidence_evidence([0.1, -0.3, 0.5]) == 0.0
    assert overconfidence_evidence([2.0, -3.0, 1e6]) == pytest.approx(3 * 1.00368, abs=1e-4)  # a huge miss adds as much as any miss
    run = [0.1] * 10 + [2.0, 0.1, -2.0, 1.0, 2.5] + [0.1] * 10  # the run in the middle, not the sum of everything
    assert overconfidence_evidence(run) == pytest.approx(3 * 1.00368 - 0.36516 - 0.05096, abs=1e-4)
    assert CalibrationStats.of([0.5, -1.0, 2.0, 40.0]).robust_spread == pytest.approx(1.4826 * 1.5)


def test_the_sequential_band_fires_on_overconfident_scores_and_rarely_on_calibrated_ones() -> None:
    """Simulated campaigns (fixed seed): N(0, 2^2) scores (intervals half as wide as they should
    be) are flagged within 24 scores almost always, calibrated N(0, 1) scores within 60 rarely."""
    band = SEQUENTIAL_BAND
    rng = np.random.default_rng(3)
    calibrated = rng.standard_normal((200, 60))
    alarms = np.mean([first_flag(z, band) is not None for z in calibrated])
    hits = np.mean([(first_flag(2.0 * z[:24], band) or 99) <= 24 for z in calibrated[:100]])
    assert alarms < 0.06 and hits > 0.85, (alarms, hits)
    assert first_flag(np.full(band.min_scored - 1, 5.0), band) is None  # too few to judge
    assert first_flag(np.full(band.min_scored, 5.0), band) == band.min_scored
    # An underconfident bulk with huge misses (the GP scoring random Branin points): quiet, though its spread is huge.
    tails = np.array([1000.0 if i % 8 == 0 else 0.2 * z for i, z in enumerate(rng.standard_normal(100))])
    assert first_flag(tails, band) is None and CalibrationStats.of(tails).z_spread > 100
    assert first_flag(tails, CalibrationBand(spread_high=3.0)) is not None  # the spread rule would fire
    with pytest.raises(ValueError, match="min_scored"):
        CalibrationBand(window=10, min_scored=12)


def test_a_sequential_flag_clears_once_a_window_passes_without_the_run() -> None:
    band = SEQUENTIAL_BAND
    z = [3.0] * 10 + [0.3] * band.window
    judged = [band.miscalibrated(rolling(z[:k], band.window)) for k in range(1, len(z) + 1)]
    # Flagged at the 10th score (10 misses: 10 nats), and until the window holds only 3 of the misses (3 nats):
    assert judged == [False] * 9 + [True] * (band.window - 3) + [False] * 4, judged
    assert "4 nats in the last 20" in band.describe() and CalibrationBand().describe() == "90 % intervals hold >= 70 % of the last 15"


def test_leave_one_out_figures() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    perfect = LooStats.of(y, y + 0.1, np.full(5, 1.0))
    assert perfect.r2 == pytest.approx(1 - 0.05 / 10) and perfect.rank_correlation == pytest.approx(1.0)
    assert perfect.coverage90 == 1.0 and perfect.z_mean == pytest.approx(-0.1)
    reversed_ = LooStats.of(y, y[::-1], np.full(5, 0.5))
    assert reversed_.rank_correlation == pytest.approx(-1.0) and reversed_.r2 < 0 and reversed_.coverage90 == pytest.approx(0.2)


def test_rescaled_surrogate_scales_the_std_and_keeps_the_mean() -> None:
    surrogate = fit_surrogate(SPACE, [Y], observe(sobol(10, 5)))
    X = surrogate.encoding.encode(sobol(7, 9))
    with numerics():
        mean, std = surrogate.stats(X)
        noise = surrogate.noise_std(X)
        wider = surrogate.rescaled([3.0])
        mean3, std3 = wider.stats(X)
        noise3 = wider.noise_std(X)
        again, std_again = surrogate.stats(X)
    assert torch.allclose(mean3, mean, atol=1e-8) and torch.allclose(std3, 3 * std, rtol=1e-5)
    assert torch.allclose(noise3, 3 * noise, rtol=1e-3, atol=1e-9)
    assert torch.equal(std_again, std)  # the original is untouched


def test_calibration_rescale_widens_the_std_by_the_measured_spread() -> None:
    points = sobol(12, 2)
    plain = observe(points)
    # The model that proposed each of the last 8 results was wrong by 3 sd (raw scores +-3):
    scored = plain[:4] + [ScoredObservation.of(o, {"predicted": {"y": {"mean": o.outcomes["y"] - 3 * (-1) ** i * 0.1, "std": 0.1}}})
                          for i, o in enumerate(plain[4:])]
    assert raw_scores(scored, "y") == pytest.approx([3.0, -3.0] * 4) and rescale_factor(raw_scores(scored, "y"), 10) == pytest.approx(3 * 1.4826)
    options = {"num_restarts": 2, "raw_samples": 64, "mc_samples": 32}
    context = PlanContext(step=12)
    (base,) = BOPlanner(**options).propose(SPACE, [Y], scored, [], 1, context=context)
    (wide,) = BOPlanner(calibration="rescale", **options).propose(SPACE, [Y], scored, [], 1, context=context)
    assert base.reason["calibration"]["std_scale"] is None
    assert wide.reason["calibration"] == {"mode": "rescale", "std_scale": {"y": pytest.approx(3 * 1.4826)}, "n_scored": {"y": 8}}
    p = wide.reason["predicted"]["y"]
    own = BOPlanner(**options).predict(SPACE, [Y], scored, [wide.params], context=context)["y"]  # the same model, unscaled
    assert p["std"] == pytest.approx(3 * 1.4826 * float(own.std[0]), rel=1e-3) and p["mean"] == pytest.approx(float(own.mean[0]), rel=1e-6)


def test_only_failures_about_the_parameters_count() -> None:
    assert counts(Failure(params={"x1": 0.1}, kind="clogged")) and counts(Failure(params={"x1": 0.1}, kind="bad_response"))
    assert counts(Pending(params={"x1": 0.1}))  # kind unknown: counts, as before kinds were passed
    assert not counts(Failure(params={"x1": 0.1}, kind="timeout")) and not counts(Failure(params={"x1": 0.1}, kind="disconnected"))
    with pytest.raises(OptionsError, match="failures"):
        BOPlanner(failures="learn", acquisition="ucb")
    # learn is the default: a UCB or Thompson planner gets avoid, and says why, rather than an error
    for acquisition in ("ucb", "ts"):
        assert BOPlanner(acquisition=acquisition).options.failure_mode(False) == ("avoid", f"acquisition: {acquisition} is not log-scale, "
                                                                                "so the probability of success cannot weight it")
    assert BOPlanner().options.failure_mode(True)[0] == "avoid" and BOPlanner().options.failure_mode(False) == ("learn", None)


def region(p: dict[str, float]) -> bool:
    """The planted failure region: the corner x1 > 0.6, x2 > 0.6."""
    return p["x1"] > 0.6 and p["x2"] > 0.6


def test_the_classifier_learns_the_failure_region() -> None:
    """On a space that is not the unit cube (the classifier works on normalized inputs)."""
    space = SearchSpace(parameters=[FloatParameter(name="x1", low=-5, high=10), FloatParameter(name="x2", low=1, high=100, log=True)])
    enc = Encoding(space)
    points = [space.from_unit([p["x1"], p["x2"]]) for p in sobol(40, 4)]
    inside = [region({"x1": space.to_unit(p)[0], "x2": space.to_unit(p)[1]}) for p in points]
    ok = enc.encode([p for p, bad in zip(points, inside) if not bad])
    bad = enc.encode([p for p, bad in zip(points, inside) if bad])
    with numerics():
        feasibility = fit_feasibility(enc, ok, bad)
    assert feasibility is not None and feasibility.n_failed == len(bad) > 3
    probe = enc.encode([space.from_unit([0.85, 0.85]), space.from_unit([0.2, 0.3])])
    p_in, p_out = feasibility.prob(probe).tolist()
    assert p_in < 0.3 < 0.7 < p_out, (p_in, p_out)
    assert fit_feasibility(enc, ok, enc.encode([])) is None


@pytest.mark.parametrize("seed", [0, 1])
def test_failures_learn_steers_proposals_away_from_the_region(seed: int) -> None:
    """The objective's best (0.7, 0.7) lies just inside the failure region: ``learn``
    proposes where the classifier expects success more than ``avoid`` does."""
    points = sobol(20, seed)
    observations = [Observation(params=p, outcomes={"y": (p["x1"] - 0.7) ** 2 + (p["x2"] - 0.7) ** 2}) for p in points if not region(p)]
    failed = tuple(Failure(params=p, kind="clogged") for p in points if region(p))
    options = {"num_restarts": 4, "raw_samples": 128, "mc_samples": 32}
    context = PlanContext(step=20, failed=failed)
    (avoid,) = BOPlanner(failures="avoid", **options).propose(SPACE, [Y], observations, [], 1, context=context)
    (learn,) = BOPlanner(**options).propose(SPACE, [Y], observations, [], 1, context=context)  # (failures: learn, the default)
    assert avoid.reason["feasibility"] == {"mode": "avoid", "failures_counted": len(failed), "failures_ignored": 0, "p_success": None}
    enc = Encoding(SPACE)
    with numerics():
        feasibility = fit_feasibility(enc, enc.encode([o.params for o in observations]), enc.encode([f.params for f in failed]))
        p_avoid, p_learn = feasibility.prob(enc.encode([avoid.params, learn.params])).tolist()
    assert learn.reason["feasibility"]["p_success"] == pytest.approx(p_learn, abs=1e-3)
    assert p_learn > p_avoid + 0.1, (p_avoid, p_learn)


def test_timeouts_train_no_classifier() -> None:
    observations = observe(sobol(8, 2))
    timeouts = (Failure(params={"x1": 0.3, "x2": 0.3}, kind="timeout"), Failure(params={"x1": 0.6, "x2": 0.1}, kind="disconnected"))
    (proposal,) = BOPlanner(failures="learn", num_restarts=2, raw_samples=64, mc_samples=32).propose(
        SPACE, [Y], observations, [], 1, context=PlanContext(step=10, failed=timeouts))
    assert proposal.reason["feasibility"] == {"mode": "learn", "failures_counted": 0, "failures_ignored": 2, "p_success": None}


def test_the_weighted_acquisition_adds_the_log_probability_of_every_batch_point() -> None:
    enc = Encoding(SPACE)
    points = sobol(24, 1)
    observations = observe([p for p in points if not region(p)])
    with numerics():
        surrogate = fit_surrogate(SPACE, [Y], observations)
        feasibility = fit_feasibility(enc, enc.encode([o.params for o in observations]), enc.encode([p for p in points if region(p)]))
        acqf, _, _ = build_acquisition(surrogate, [Y], [], "qlognei", mc_samples=32)
        weighted = FeasibilityWeighted(acqf, feasibility)
        X = enc.encode(sobol(6, 7)).reshape(3, 2, 2)  # 3 batches of 2 points
        expected = acqf(X) + feasibility.log_prob(X).sum(dim=-1)
        assert torch.allclose(weighted(X), expected)
        before = acqf(X).clone()
        weighted.set_X_pending(X[0])  # handed to the wrapped acquisition (qLogNEI folds them into its baseline)
        assert not torch.allclose(acqf(X), before) and weighted.X_pending is acqf.X_pending
        assert torch.allclose(weighted(X), acqf(X) + feasibility.log_prob(X).sum(dim=-1))
