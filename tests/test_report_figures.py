"""The data behind ``selflab report``'s and ``selflab bench --plot``'s figures.

Campaigns here are real ledgers written through :class:`selflab.controller.study.Study`
(results from the bundled simulators, attached by hand so that each test
chooses its points), and the models are the planners' own botorch GPs.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from botorch.utils.multi_objective.hypervolume import Hypervolume
from matplotlib.figure import Figure

from selflab.controller import plots
from selflab.controller.bench import get_problem, hypervolume_curve, run_bench
from selflab.controller.bench_cmd import bench_plot
from selflab.controller.ledger import Ledger
from selflab.controller.projection import CampaignState
from selflab.controller.report_cmd import (
    calibration_of,
    completed,
    config_of,
    front_of,
    model_of,
    model_view,
    observations_of,
    plan_context,
    recommended,
    results_of,
    slice_point,
    slices_of,
    write_report,
)
from selflab.controller.reports import load_state
from selflab.controller.study import Study
from selflab.planners.bo import BOPlanner
from selflab.planners.mf import MFPlanner
from selflab.planners.protocol import PlanContext, Predictor, interval_coverage
from selflab.simulators.multifidelity import AugmentedBraninInstrument

BRANIN = [{"name": "x1", "type": "float", "low": -5, "high": 10, "unit": "mm"},
          {"name": "x2", "type": "float", "low": 0, "high": 15, "unit": "s"}]


def config(name: str, *, planner: dict[str, Any], fidelities: tuple[float, ...] = (1.0,), **extra: Any) -> dict[str, Any]:
    """A campaign on the bundled augmented Branin, one instrument per fidelity."""
    return {
        "name": name, "seed": 0, "parameters": BRANIN,
        "objectives": [{"name": "y", "direction": "minimize", "unit": "J"}],
        "instruments": [{"name": f"branin-{f:g}", "driver": "augmented_branin", "options": {"fidelity": f}, "fidelity": f,
                         "cost": f} for f in fidelities],
        "planner": planner, "stop": {"max_experiments": 50}, **extra,
    }


def branin(points: list[tuple[dict[str, float], float]]) -> list[tuple[dict[str, float], dict[str, float], float]]:
    """``(params, outputs, fidelity)`` of each ``(params, fidelity)`` from the bundled simulator."""
    async def run() -> list[tuple[dict[str, float], dict[str, float], float]]:
        out = []
        for params, fidelity in points:
            instrument = AugmentedBraninInstrument(fidelity=fidelity)
            await instrument.connect()
            out.append((params, await instrument.run(params), fidelity))
        return out
    return asyncio.run(run())


def ledger_with(tmp_path: Path, cfg: dict[str, Any], results: list[tuple[dict[str, Any], dict[str, float], float]]) -> CampaignState:
    """A real ledger holding ``cfg``'s campaign with ``results`` attached, read back."""
    url = f"sqlite:///{tmp_path / (cfg['name'] + '.sqlite')}"
    with Study.open(cfg, url) as study:
        for params, outcomes, fidelity in results:
            study.attach(params, outcomes, fidelity=fidelity)
    ledger = Ledger(url, create=False)
    try:
        return load_state(ledger, cfg["name"])
    finally:
        ledger.close()


def sobol(n: int, seed: int) -> list[dict[str, float]]:
    u = torch.quasirandom.SobolEngine(2, scramble=True, seed=seed).draw(n, dtype=torch.float64)
    return [{"x1": -5 + 15 * float(a), "x2": 15 * float(b)} for a, b in u]


# --- GP slices: the planner's own model --------------------------------------------------


def test_mf_slices_are_the_mf_posterior_at_the_target_fidelity(tmp_path: Path) -> None:
    """The slices of an mf campaign come from the GP over every fidelity, through
    the recommended point: equal to mf's own prediction there, and not the
    target-only fit the report used to draw (a flat mean, a band of -3 .. 4)."""
    cheap, full = sobol(10, 1), sobol(3, 2)
    cfg = config("mf-report", planner={"kind": "mf", "options": {"num_restarts": 2, "raw_samples": 32}}, fidelities=(0.5, 1.0))
    state = ledger_with(tmp_path, cfg, branin([(p, 0.5) for p in cheap] + [(p, 1.0) for p in full]))
    lab = config_of(state)
    model = model_view(state, lab)
    assert model is not None and model.own and "mf" in model.named
    planner = model.planner
    assert isinstance(planner, MFPlanner) and isinstance(planner, Predictor)
    observations, context = observations_of(state), plan_context(state, lab)
    assert model.observations == observations and model.context == context
    recommendation = planner.recommend(lab.space, lab.objectives, observations, context=context)
    assert recommendation is not None and model.recommendation == recommendation
    point, where = slice_point(model, state, lab, lab.objectives[0])
    assert point == recommendation.params and where == "the recommended point"
    slices, _ = slices_of(planner, lab, observations, context, point, "y")
    assert [s.parameter for s in slices] == ["x1", "x2"] and [s.unit for s in slices] == ["mm", "s"]
    for s in slices:
        at = s.x.index(s.at)
        assert s.mean[at] == pytest.approx(recommendation.predicted["y"]["mean"], rel=1e-6, abs=1e-9)
        assert np.all(s.lower <= s.mean) and np.all(s.mean <= s.upper)
        assert len(s.observed_x) == 13 and sorted(set(s.observed_fidelity.tolist())) == [0.5, 1.0]
    target_only = BOPlanner().predict(lab.space, lab.objectives, [o for o in observations if o.fidelity == 1.0], [point],
                                      context=context)["y"]
    assert abs(float(target_only.mean[0]) - recommendation.predicted["y"]["mean"]) > 1.0


def test_bo_slices_and_calibration_are_the_bo_model(tmp_path: Path) -> None:
    """A bo campaign's slices equal bo's own posterior (with its Box-Cox warp)
    through its recommendation; the calibration figure's data are bo's
    leave-one-out predictions, each point left out."""
    points = sobol(12, 3)
    cfg = config("bo-report", planner={"kind": "bo", "options": {"num_restarts": 2, "raw_samples": 32}})
    state = ledger_with(tmp_path, cfg, branin([(p, 1.0) for p in points]))
    lab = config_of(state)
    planner, own, _ = model_of(lab)
    assert own and isinstance(planner, BOPlanner)
    observations, context = observations_of(state), plan_context(state, lab)
    recommendation = planner.recommend(lab.space, lab.objectives, observations, context=context)
    assert recommendation is not None
    model = model_view(state, lab)
    assert model is not None and model.recommendation == recommendation
    point, _ = slice_point(model, state, lab, lab.objectives[0])
    assert results_of(state, lab, "y", recommended=recommended(state, model, "y")).recommended == (
        recommendation.predicted["y"]["mean"], recommendation.predicted["y"]["std"])
    slices, median = slices_of(planner, lab, observations, context, point, "y")
    assert median  # (twelve positive readings of a minimized objective: modelled on a Box-Cox scale)
    for s in slices:
        assert s.mean[s.x.index(s.at)] == pytest.approx(recommendation.predicted["y"]["mean"], rel=1e-6)
        assert np.all(s.lower > 0)  # (the band is transformed back from the warped scale: a positive quantity stays positive)

    calibration = calibration_of(planner, lab, observations, context)["y"]
    assert calibration.observed.tolist() == pytest.approx([o.outcomes["y"] for o in observations])
    inside = (calibration.observed >= calibration.lower) & (calibration.observed <= calibration.upper)
    assert calibration.coverage == pytest.approx(inside.mean())
    fitted = planner.predict(lab.space, lab.objectives, observations, [o.params for o in observations], context=context)["y"]
    assert np.all(calibration.upper - calibration.lower > fitted.upper - fitted.lower)  # (left out: wider than in-sample)
    assert not np.allclose(calibration.mean, fitted.mean, rtol=1e-3)


def test_a_model_free_planner_is_shown_the_bo_model_and_no_calibration(tmp_path: Path) -> None:
    cfg = config("sobol-report", planner={"kind": "sobol"})
    state = ledger_with(tmp_path, cfg, branin([(p, 1.0) for p in sobol(6, 4)]))
    notes: list[str] = []
    names = sorted(p.name for p in write_report(state, tmp_path / "fig", note=notes.append))
    assert names == ["actions.csv", "best_so_far.png", "cost_y.png", "gp_slices_y.png"]  # (every result was attached by a person)
    assert any("sobol planner has no model of its own" in n for n in notes)
    planner, own, named = model_of(config_of(state))
    assert not own and isinstance(planner, BOPlanner) and "the sobol planner has none" in named


def test_a_mf_report_writes_every_figure(tmp_path: Path) -> None:
    cfg = config("mf-files", planner={"kind": "mf", "options": {"num_restarts": 2, "raw_samples": 32}}, fidelities=(0.5, 1.0))
    state = ledger_with(tmp_path, cfg, branin([(p, 0.5) for p in sobol(6, 5)] + [(p, 1.0) for p in sobol(2, 6)]))
    names = sorted(p.name for p in write_report(state, tmp_path / "fig", note=lambda _: None))
    assert names == ["actions.csv", "best_so_far.png", "calibration_y.png", "cost_y.png", "gp_slices_y.png"]  # (results attached)


def test_slices_hold_a_positive_band_above_zero() -> None:
    x = np.linspace(0, 1, 5)
    s = plots.Slice(parameter="t", x=x.tolist(), mean=np.array([0.1, 0.5, 0.9, 0.5, -0.1]), lower=np.full(5, -3.0),
                    upper=np.full(5, 4.0), at=0.5, unit="min")
    fig = plots.slices_figure([s], "yield", unit="1", title="t", floor=0.0)
    ax = fig.axes[0]
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == 0.0 and min(ax.lines[0].get_ydata()) == 0.0
    assert ax.get_xlabel() == "t [min]" and ax.get_ylabel() == "yield [1]"
    assert "95 % interval (± 1.96 σ)" in [t.get_text() for t in fig.legends[0].get_texts()]
    unclipped = plots.slices_figure([s], "energy", unit=None, title="t", floor=None)
    assert unclipped.axes[0].collections[0].get_paths()[0].vertices[:, 1].min() == -3.0


# --- best so far, infeasible points, fidelities -----------------------------------------------


def test_best_so_far_counts_feasible_target_results_only(tmp_path: Path) -> None:
    cfg = config("feasible", planner={"kind": "sobol"}, fidelities=(0.5, 1.0), constraints=["c >= 0.5"])
    results = [({"x1": 0.0, "x2": 1.0}, {"y": 9.0, "c": 1.0}, 1.0),
               ({"x1": 1.0, "x2": 1.0}, {"y": 1.0, "c": 0.0}, 1.0),   # best y, infeasible
               ({"x1": 2.0, "x2": 1.0}, {"y": 0.5, "c": 1.0}, 0.5),   # best y of all, feasible, but cheap fidelity
               ({"x1": 3.0, "x2": 1.0}, {"y": 4.0, "c": 0.9}, 1.0)]
    state = ledger_with(tmp_path, cfg, results)
    r = results_of(state, config_of(state), "y")
    assert r.best == [9.0, 9.0, 9.0, 4.0]
    assert r.feasible.tolist() == [True, False, True, True] and r.counted.tolist() == [True, False, False, True]
    fig = plots.results_figure([r], title="t")
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_label() == "best so far (counted results)"]
    assert min(line.get_ydata()) == 4.0  # (the infeasible 1.0 and the cheap 0.5 are not below the line)
    crosses = [c for c in ax.collections if c.get_label() == "infeasible (not counted)"]
    assert len(crosses) == 1 and crosses[0].get_offsets().tolist() == [[2.0, 1.0]]
    assert [c.get_label() for c in ax.collections if "fidelity 0.5" in c.get_label()] == ["fidelity 0.5 (not counted)"]


def test_one_target_result_still_draws_its_best_so_far(tmp_path: Path) -> None:
    """Few target-fidelity results (the mf report's empty best_so_far.png): the line still shows."""
    cfg = config("few-target", planner={"kind": "sobol"}, fidelities=(0.5, 1.0))
    state = ledger_with(tmp_path, cfg, branin([(p, 0.5) for p in sobol(5, 7)] + [(sobol(1, 8)[0], 1.0)]))
    r = results_of(state, config_of(state), "y")
    for fig in (plots.results_figure([r], title="t"), plots.cost_figure(r, title="t")):
        (line,) = [ln for ln in fig.axes[0].lines if ln.get_label().startswith("best so far")]
        y = np.asarray(line.get_ydata(), dtype=float)
        assert np.isfinite(y).sum() >= 2 and np.unique(y[np.isfinite(y)]).tolist() == [r.values[-1]]


def _has_colour_bar(fig: Figure) -> bool:
    return any(ax.get_label() == "<colorbar>" for ax in fig.axes)


def test_fidelity_colour_bar_only_with_several_fidelities(tmp_path: Path) -> None:
    single = ledger_with(tmp_path, config("one-fidelity", planner={"kind": "sobol"}), branin([(p, 1.0) for p in sobol(4, 9)]))
    fig = plots.cost_figure(results_of(single, config_of(single), "y"), title="t")
    assert len(fig.axes) == 1 and not _has_colour_bar(fig)
    multi = ledger_with(tmp_path, config("two-fidelities", planner={"kind": "sobol"}, fidelities=(0.5, 1.0)),
                        branin([(p, 0.5) for p in sobol(3, 9)] + [(p, 1.0) for p in sobol(2, 10)]))
    assert _has_colour_bar(plots.cost_figure(results_of(multi, config_of(multi), "y"), title="t"))


# --- several objectives: hypervolume and Pareto front -------------------------------------


def test_hypervolume_curve_is_botorchs_on_a_hand_checked_front() -> None:
    points = [[1.0, 3.0], [10.0, 10.0], [2.0, 2.0], [1.5, 1.5], [3.0, 1.0]]
    feasible = [True, False, True, True, True]      # (10, 10) would dominate everything, but is infeasible
    curve = hypervolume_curve(points, feasible, ["maximize", "maximize"], [0.0, 0.0])
    assert curve == pytest.approx([3.0, 3.0, 5.0, 5.0, 6.0])   # 1*3, + (2-1)*2, + (3-2)*1; (1.5, 1.5) is dominated
    assert all(b >= a for a, b in zip(curve, curve[1:]))
    kept = torch.tensor([p for p, ok in zip(points, feasible) if ok], dtype=torch.float64)
    assert curve[-1] == pytest.approx(Hypervolume(ref_point=torch.zeros(2, dtype=torch.float64)).compute(kept))
    negated = hypervolume_curve([[-a, -b] for a, b in points], feasible, ["minimize", "minimize"], [0.0, 0.0])
    assert negated == pytest.approx(curve)


def test_pareto_figure_shows_the_reference_point_and_the_order(tmp_path: Path) -> None:
    cfg = config("pareto", planner={"kind": "sobol"})
    cfg["objectives"] = [{"name": "y", "direction": "minimize", "reference_point": 300.0},
                         {"name": "z", "direction": "maximize"}]
    results = [({"x1": float(i), "x2": 1.0}, {"y": y, "z": z}, 1.0) for i, (y, z) in enumerate([(5.0, 1.0), (3.0, 0.5), (8.0, 2.0), (9.0, 0.1)])]
    state = ledger_with(tmp_path, cfg, results)
    front = front_of(state, config_of(state))
    assert front.pareto.tolist() == [True, True, True, False]
    assert front.reference[0] == 300.0 and front.reference_given == [True, False]
    assert front.reference[1] < 0.5  # (inferred: worse than the front's worst z)
    fig = plots.pareto_figure(front, title="t")
    ax = fig.axes[0]
    (ref,) = [ln for ln in ax.lines if ln.get_label().startswith("reference point")]
    assert list(ref.get_xydata()[0]) == pytest.approx(front.reference.tolist())
    dots = ax.collections[0]
    assert dots.get_array().tolist() == [1, 2, 3, 4] and _has_colour_bar(fig)
    curve = hypervolume_curve(front.points, front.feasible, ["minimize", "maximize"], front.reference)
    assert all(b >= a for a, b in zip(curve, curve[1:])) and curve[-1] > 0


# --- calibration ------------------------------------------------------------------------


def test_coverage_fraction_on_a_small_set() -> None:
    observed = np.array([0.0, 1.0, 2.0, 5.0])
    lower, upper = np.array([-1.0, 1.0, 2.5, 0.0]), np.array([1.0, 2.0, 3.0, 5.0])
    assert interval_coverage(observed, lower, upper) == 0.75   # bounds count as inside; 2.0 < 2.5 does not
    assert math.isnan(interval_coverage(np.zeros(0), np.zeros(0), np.zeros(0)))
    c = plots.Calibration(name="y", unit="J", observed=observed, mean=(lower + upper) / 2, lower=lower, upper=upper,
                          fidelity=np.ones(4), coverage=0.75)
    texts = [t.get_text() for t in plots.calibration_figure(c, title="t").legends[0].get_texts()]
    assert "3 of 4 inside their 95 % interval" in texts and "coverage 75% (95 % expected)" in texts
    assert "predicted = observed" in texts


# --- the bench plot ---------------------------------------------------------------------


def test_bench_plot_draws_regret_on_a_log_axis() -> None:
    problem = get_problem("branin")
    result = run_bench(problem, "random", budget=4, seeds=2)
    fig = bench_plot(problem, [result])
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "regret" in ax.get_ylabel()
    (line,) = [ln for ln in ax.lines if ln.get_label() == "random"]
    regrets = np.array([[abs(v - problem.optimum) for v in run.trace] for run in result.runs])
    assert np.asarray(line.get_ydata()) == pytest.approx(np.median(regrets, axis=0))


def test_model_figures_use_the_campaigns_context(tmp_path: Path) -> None:
    """The context the report gives the planner is the campaign's: seed, ledger position, target fidelity."""
    cfg = config("ctx", planner={"kind": "sobol"}, fidelities=(0.5, 1.0), target_fidelity=1.0, seed=5)
    state = ledger_with(tmp_path, cfg, branin([(p, 0.5) for p in sobol(2, 11)]))
    context = plan_context(state, config_of(state))
    assert context == PlanContext(seed=5, step=2, target_fidelity=1.0)
    observations = observations_of(state)
    assert [o.fidelity for o in observations] == [0.5, 0.5]
    assert [o.params for o in observations] == [e.params for e in completed(state)]
