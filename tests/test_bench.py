"""``selflab bench``, benchmark problems and the pool instrument: real campaigns
on real SQLite ledgers, botorch test functions, the bundled Liang et al. data."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from selflab.controller.bench import bench_config, best_so_far, run_bench, summarize
from selflab.controller.campaign import Campaign
from selflab.controller.cli import main
from selflab.controller.ledger import Ledger
from selflab.controller.projection import CampaignState
from selflab.instruments.errors import BadResponse, OutOfLimits
from selflab.simulators.pool import PoolInstrument
from selflab.simulators.problems import ProblemError, get_problem

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG
    assert len(data) > 5_000


def write_pool(path: Path) -> Path:
    """Six rows, two of them replicates of one input; a constant column; odd header names."""
    rows = [
        ["Temp (C)", "Ratio %", "batch", "Yield (%)"],
        [10, 0.1, 1, 5.0],
        [20, 0.2, 1, 7.0],
        [20, 0.2, 1, 9.0],  # replicate of the row above: averaged to 8.0
        [30, 0.3, 1, 2.0],
        [40, 0.1, 1, 6.0],
        [50, 0.5, 1, 1.0],
    ]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def run_campaign(problem: Any, planner: str, budget: int, seed: int, url: str) -> list[Any]:
    config = bench_config(problem, planner, budget, seed, 1, url)
    ledger = Ledger(url)
    try:
        asyncio.run(Campaign(config, ledger).run())
        return ledger.events(config.name)
    finally:
        ledger.close()


# --- the pool instrument and the problems ----------------------------------------------


def test_pool_instrument_averages_replicates_and_measures_only_rows(tmp_path: Path) -> None:
    pool = PoolInstrument(csv=str(write_pool(tmp_path / "p.csv")), objective="Yield (%)", direction="minimize")
    assert pool.inputs == ("Temp_C", "Ratio")  # the constant column is dropped
    assert pool.columns["Yield"] == "Yield (%)"
    assert len(pool.candidates()) == 5
    assert pool.table[(20.0, 0.2)] == pytest.approx(8.0) and pool.replicates[(20.0, 0.2)] == 2
    assert pool.optimum == 1.0 and pool.limits == {"Temp_C": (10.0, 50.0), "Ratio": (0.1, 0.5)}
    asyncio.run(pool.connect())
    assert asyncio.run(pool.run({"Temp_C": 20.0, "Ratio": 0.2})) == {"Yield": 8.0}
    with pytest.raises(BadResponse, match="no row"):
        asyncio.run(pool.run({"Temp_C": 20.0, "Ratio": 0.3}))
    with pytest.raises(OutOfLimits):
        asyncio.run(pool.run({"Temp_C": 60.0, "Ratio": 0.2}))
    with pytest.raises(ValueError, match="no column 'Yeld'"):
        PoolInstrument(csv=str(tmp_path / "p.csv"), objective="Yeld")


@pytest.mark.parametrize(("name", "rows", "top", "direction"), [("p3ht", 178, 9, "maximize"), ("perovskite", 94, 5, "minimize"), ("autoam", 100, 5, "maximize")])
def test_liang_pools(name: str, rows: int, top: int, direction: str) -> None:
    problem = get_problem(name)
    pool = PoolInstrument(**problem.options)
    assert len(pool.candidates()) == rows
    assert problem.direction == direction and problem.objectives[0].direction == direction
    values = list(pool.table.values())
    assert problem.optimum == (max(values) if direction == "maximize" else min(values))
    assert problem.top is not None and len(problem.top) == top
    assert {p.name for p in problem.parameters} == set(pool.inputs)


def test_problem_registry_and_errors(tmp_path: Path) -> None:
    from selflab.simulators.reactor import PlugFlowReactor

    assert get_problem("reactor").optimum == pytest.approx(PlugFlowReactor().optimum)
    assert get_problem("hartmann6").optimum == pytest.approx(-3.32237)
    with pytest.raises(ProblemError, match="unknown problem"):
        get_problem("rosenbrock")
    with pytest.raises(ProblemError, match="pool:PATH.csv problems only"):
        get_problem("branin", objective="y")
    with pytest.raises(ProblemError, match="--objective"):
        get_problem(f"pool:{tmp_path / 'p.csv'}")


# --- campaigns read back from the ledger -------------------------------------------------


def test_pool_campaign_measures_each_row_once_until_exhausted(tmp_path: Path) -> None:
    problem = get_problem(f"pool:{write_pool(tmp_path / 'p.csv')}", objective="Yield (%)", direction="minimize")
    events = run_campaign(problem, "random", 20, 3, f"sqlite:///{tmp_path / 'l.sqlite'}")
    state = CampaignState.replay(events[0].campaign, events)
    done = state.with_status("completed")
    keys = [tuple(sorted(e.params.items())) for e in done]
    assert len(keys) == len(set(keys)) == 5  # every unique row once, then the pool is exhausted
    assert state.stopped is not None and state.stopped[0] == "planner_exhausted"
    replicate = next(e for e in done if e.params == {"Temp_C": 20.0, "Ratio": 0.2})
    assert replicate.outcomes["Yield"] == pytest.approx(8.0)
    record = summarize(problem, 3, events)
    assert record.best == 1.0 and record.regret == 0.0
    assert problem.top == [{"Temp_C": 50.0, "Ratio": 0.5}]
    order = [e.params for e in sorted(done, key=lambda e: e.finished_at)]
    assert record.evaluations_to_80pct_top5 == order.index({"Temp_C": 50.0, "Ratio": 0.5}) + 1
    assert record.top5_trace == [0.0] * (record.evaluations_to_80pct_top5 - 1) + [1.0] * (6 - record.evaluations_to_80pct_top5)


def test_constrained_problem_counts_only_feasible_results(tmp_path: Path) -> None:
    problem = get_problem("gramacy")
    events = run_campaign(problem, "sobol", 12, 0, f"sqlite:///{tmp_path / 'l.sqlite'}")
    record = summarize(problem, 0, events)
    done = [e for e in CampaignState.replay(events[0].campaign, events).experiments.values() if e.status == "completed"]
    feasible = [e.outcomes["y"] for e in done if e.outcomes["c1"] >= 0 and e.outcomes["c2"] >= 0]
    assert 0 < len(feasible) < len(done)  # the test needs both kinds
    assert record.best == min(feasible) and record.best >= 0.5998 - 1e-6
    assert record.regret == pytest.approx(abs(record.best - 0.5998))


def test_branin_currin_hypervolume_matches_a_hand_sweep() -> None:
    problem = get_problem("branin_currin")
    result = run_bench(problem, "sobol", budget=10, seeds=1)
    run = result.runs[0]
    assert result.direction == "maximize" and result.metric == "hypervolume"
    assert all(a <= b + 1e-12 for a, b in zip(run.trace, run.trace[1:]))
    ref = (18.0, 6.0)
    inside = sorted((f1, f2) for f1, f2 in run.values if f1 < ref[0] and f2 < ref[1])  # type: ignore[misc]
    area, ceiling = 0.0, ref[1]
    for i, (f1, f2) in enumerate(inside):  # minimisation: sweep along f1
        ceiling = min(ceiling, f2)
        right = inside[i + 1][0] if i + 1 < len(inside) else ref[0]
        area += (right - f1) * (ref[1] - ceiling)
    assert run.best == pytest.approx(area)
    assert run.regret == pytest.approx(problem.optimum - area)


def test_batch_makespan_is_shorter_than_sequential() -> None:
    problem = get_problem("branin")
    sequential = run_bench(problem, "random", budget=8, seeds=1, batch=1)
    batched = run_bench(problem, "random", budget=8, seeds=1, batch=4)
    assert sequential.median_makespan_seconds == pytest.approx(8 * 60)
    assert batched.median_makespan_seconds == pytest.approx(2 * 60)
    assert batched.runs[0].evaluations == sequential.runs[0].evaluations == 8


# --- the command line ---------------------------------------------------------------------


def test_cli_writes_json_contract_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    code = main(["bench", "--problem", "branin", "--planner", "random,sobol", "--budget", "8", "--seeds", "3",
                 "--json", str(out), "--plot", str(png)])
    assert code == 0
    data = json.loads(out.read_text())
    assert [d["planner"] for d in data] == ["random", "sobol"]
    for d in data:
        assert {"problem", "planner", "budget", "seeds", "direction", "optimum", "runs", "median_best", "median_regret",
                "median_proposal_seconds"} <= set(d)
        assert (d["problem"], d["budget"], d["seeds"], d["direction"], d["optimum"]) == ("branin", 8, 3, "minimize", 0.397887)
        assert [r["seed"] for r in d["runs"]] == [0, 1, 2]
        for r in d["runs"]:
            assert {"seed", "best", "trace", "values", "proposal_seconds"} <= set(r)
            assert len(r["trace"]) == len(r["values"]) == len(r["proposal_seconds"]) == 8
            assert r["trace"] == best_so_far(r["values"], "minimize")
            assert all(b <= a for a, b in zip(r["trace"], r["trace"][1:]))
            assert r["best"] == min(r["values"]) and r["regret"] == pytest.approx(abs(r["best"] - 0.397887))
        assert d["median_best"] == statistics.median(r["best"] for r in d["runs"])
        assert d["median_regret"] == pytest.approx(abs(d["median_best"] - 0.397887))
    assert data[0]["runs"][0]["values"] != data[1]["runs"][0]["values"]
    assert_png(png)
    assert capsys.readouterr().out.count("branin ") == 2  # one summary line per planner


def test_cli_user_csv_pool(tmp_path: Path) -> None:
    out = tmp_path / "pool.json"
    code = main(["bench", "--problem", f"pool:{write_pool(tmp_path / 'p.csv')}", "--objective", "Yield (%)",
                 "--direction", "minimize", "--planner", "random", "--budget", "5", "--seeds", "2", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["direction"] == "minimize" and data["optimum"] == 1.0
    for run in data["runs"]:
        assert sorted(run["values"]) == [1.0, 2.0, 5.0, 6.0, 8.0]  # all five unique rows, replicates averaged
        assert run["evaluations_to_80pct_top5"] == run["values"].index(1.0) + 1
    assert data["evaluations_to_80pct_top5"] is not None


def test_cli_options_reach_the_planner_and_the_json(tmp_path: Path) -> None:
    fast = {"num_restarts": 2, "raw_samples": 32, "mc_samples": 16}
    values = {}
    for name, options in (("default", fast), ("early", {**fast, "n_init": 3, "kernel": "rbf"})):
        out = tmp_path / f"{name}.json"
        args = ["bench", "--problem", "branin", "--planner", "bo", "--budget", "5", "--seeds", "1", "--json", str(out)]
        assert main([*args, "--options", json.dumps(options)]) == 0
        data = json.loads(out.read_text())
        assert data["options"] == options
        values[name] = data["runs"][0]["values"]
        run = data["runs"][0]
        assert len(run["recommendation_seconds"]) == len(run["proposal_seconds"]) == 5
        steps = sorted(p + r for p, r in zip(run["proposal_seconds"], run["recommendation_seconds"], strict=True))
        assert data["median_step_seconds"] == pytest.approx(steps[2]) and data["median_step_seconds"] >= data["median_proposal_seconds"]
    assert values["early"][:3] == values["default"][:3]  # the same centre and Sobol points
    assert values["early"][3] != values["default"][3]  # the 4th: from the GP with n_init 3, Sobol with the default 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--problem", "nope"], "unknown problem 'nope'"),
        (["--problem", "branin", "--planner", "cmaes"], "unknown planner 'cmaes'"),
        (["--problem", "branin", "--objective", "y"], "pool:PATH.csv problems only"),
        (["--problem", "pool:{csv}", "--objective", "Yeld"], "has no column 'Yeld'"),
        (["--problem", "pool:{tmp}/missing.csv", "--objective", "y"], "cannot read"),
        (["--problem", "branin", "--planner", "bo", "--options", "{{kernel: rbf}}"], "--options is not JSON"),
        (["--problem", "branin", "--planner", "bo", "--options", "[1]"], "--options must be a JSON object"),
        (["--problem", "branin", "--planner", "bo,sobol", "--options", "{{}}"], "--options applies to one planner"),
        (["--problem", "branin", "--planner", "bo", "--options", '{{"kernel": "periodic"}}'], "--options: bo planner option 'kernel'"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    csv_path = write_pool(tmp_path / "p.csv")
    args = [a.format(csv=csv_path, tmp=tmp_path) for a in args]
    if "--planner" not in args:
        args += ["--planner", "random"]
    assert main(["bench", *args, "--budget", "3", "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_ax_bench_runs_a_real_campaign(tmp_path: Path) -> None:
    """One small Ax campaign: 5 Sobol points, then one from Ax's GP."""
    pytest.importorskip("ax")
    result = run_bench(get_problem("branin"), "ax", budget=6, seeds=1)
    run = result.runs[0]
    assert run.evaluations == 6 and len(run.proposal_seconds) == 6
    assert run.trace == best_so_far(run.values, "minimize")  # type: ignore[arg-type]
    assert math.isfinite(run.best or math.nan) and run.regret == pytest.approx(abs(run.best - 0.397887))  # type: ignore[operator]
