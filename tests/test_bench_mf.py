"""selflab bench on multi-fidelity problems: cost budgets, cost and recommendation traces, the regret-vs-cost plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from selflab.controller.bench import RunRecord, cost_to_regret, run_bench, true_values
from selflab.controller.cli import main
from selflab.simulators.problems import get_problem
from test_bench import assert_png

FAST_MF = {"n_init": 4, "num_restarts": 1, "raw_samples": 16, "maxiter": 10, "candidate_set_size": 64, "num_fantasies": 4}


@pytest.mark.parametrize("name", ["augmented_hartmann", "augmented_branin", "reactor_multifidelity"])
def test_multifidelity_problems_have_levels_and_a_noise_free_truth(name: str) -> None:
    problem = get_problem(name)
    assert problem.multi_fidelity and problem.levels is not None
    assert max(level.fidelity for level in problem.levels) == 1.0
    costs = {level.fidelity: level.cost for level in problem.levels}
    assert all(costs[f] < costs[1.0] for f in costs if f < 1.0)
    assert not get_problem("hartmann6").multi_fidelity


def test_augmented_hartmann_truth_is_hartmann6_at_the_optimum() -> None:
    x = {"x1": 0.20169, "x2": 0.150011, "x3": 0.476874, "x4": 0.275332, "x5": 0.311652, "x6": 0.6573}
    problem = get_problem("augmented_hartmann")
    assert true_values(problem, [x]) == [pytest.approx(problem.optimum, abs=1e-4)]


def test_single_fidelity_planner_spends_only_on_the_target_and_stops_at_the_cost_budget() -> None:
    result = run_bench(get_problem("augmented_branin"), "sobol", budget=None, seeds=2, cost_budget=3.5)
    for run in result.runs:
        assert run.stop_reason == "max_cost"
        assert run.fidelity_trace == [1.0, 1.0, 1.0]
        assert run.cost_trace == [1.0, 2.0, 3.0]
        # noise-free and measured at the target: the recommendation is the best observed value so far
        assert run.recommendation_trace == run.trace
        assert run.recommendation_regret == pytest.approx(abs(run.trace[-1] - 0.397887))  # type: ignore[operator]
    assert result.cost_budget == 3.5 and result.median_cost == 3.0 and result.budget is None


def test_mf_bench_mixes_fidelities_and_judges_recommendations_by_the_truth(tmp_path: Path) -> None:
    problem = get_problem("augmented_branin")
    result = run_bench(problem, "mf", budget=None, seeds=1, cost_budget=1.6, options=FAST_MF)
    run = result.runs[0]
    assert run.stop_reason == "max_cost"
    assert set(run.fidelity_trace) > {1.0}, "the cheap fidelities were used"
    costs = {level.fidelity: level.cost for level in problem.levels or []}
    assert run.cost_trace == pytest.approx(list(_cumsum([costs[f] for f in run.fidelity_trace])))
    assert run.cost_trace[-1] <= 1.6 + 1e-9
    assert len(run.recommendation_trace or []) == run.evaluations
    # trace and best count only fidelity-1 results
    target_values = [v for v, f in zip(run.values, run.fidelity_trace) if f == 1.0]
    assert run.best == (min(target_values) if target_values else None)  # type: ignore[type-var]
    present = [v for v in run.recommendation_trace or [] if v is not None]
    assert present, "mf recommends once it has a model"
    assert all(math.isfinite(v) and v >= 0.397887 - 1e-6 for v in present)  # true Branin values: never below the optimum


def test_cost_to_regret_takes_the_median_over_runs() -> None:
    def run(costs: list[float], values: list[float | None]) -> RunRecord:
        return RunRecord(seed=0, best=None, trace=[], values=[], proposal_seconds=[], regret=None, makespan_seconds=0,
                         evaluations=len(costs), stop_reason="max_cost", cost_trace=costs, recommendation_trace=values)

    runs = [run([1, 2, 3], [None, 0.5, 0.05]),     # regret <= 0.1 from cost 3
            run([0.5, 1.0, 4.0], [0.3, 0.08, 0.08]),  # from cost 1
            run([2, 6], [0.9, 0.01])]                 # from cost 6
    assert cost_to_regret(runs, optimum=0.0, threshold=0.1) == 3
    assert cost_to_regret(runs, optimum=0.0, threshold=0.001) is None
    assert cost_to_regret(runs, optimum=0.0, threshold=1.0) == 2  # at cost 2 every run has a recommendation within 1


def test_cli_cost_budget_writes_cost_and_recommendation_traces_and_a_regret_plot(tmp_path: Path) -> None:
    out, png = tmp_path / "mf.json", tmp_path / "mf.png"
    code = main(["bench", "--problem", "augmented_branin", "--planner", "random,sobol", "--cost-budget", "4",
                 "--seeds", "3", "--json", str(out), "--plot", str(png)])
    assert code == 0
    data = json.loads(out.read_text())
    for d in data:
        assert d["cost_budget"] == 4 and d["budget"] is None
        for r in d["runs"]:
            assert r["cost_trace"] == [1.0, 2.0, 3.0, 4.0]
            assert len(r["recommendation_trace"]) == len(r["values"]) == 4
    assert_png(png)


def test_cli_needs_some_budget(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--problem", "branin", "--planner", "random", "--seeds", "1"]) == 2
    assert "--cost-budget" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--problem", "branin", "--planner", "random", "--seeds", "1", "--cost-budget", "-1"])


def _cumsum(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for v in values:
        total += v
        out.append(total)
    return out


def test_mf_cost_benchmark_script_reads_bench_files(tmp_path: Path) -> None:
    import subprocess
    import sys

    files = []
    for planner in ("sobol", "random"):
        result = run_bench(get_problem("augmented_branin"), planner, budget=None, seeds=3, cost_budget=6)
        files.append(tmp_path / f"{planner}.json")
        files[-1].write_text(result.model_dump_json(), encoding="utf-8")
    png = tmp_path / "cost.png"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "mf_cost.py"), *map(str, files), "--threshold", "20",
                          "--plot", str(png)], capture_output=True, text=True, check=True, cwd=root)
    data = json.loads(out.stdout)
    sobol = data["planners"]["sobol"]
    expected = cost_to_regret(run_bench(get_problem("augmented_branin"), "sobol", budget=None, seeds=3, cost_budget=6).runs, 0.397887, 20)
    assert expected is not None and sobol["cost_to_threshold"] == pytest.approx(expected) and sobol["median_cost_share_by_fidelity"] == {"1": 1.0}
    assert set(data["ratio_to_random"]) == {"sobol"}
    assert_png(png)
