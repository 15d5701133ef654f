"""Warm starts from earlier campaigns (multi-task GP, guard against negative
transfer) and the surrogate-building mode ``objective: learn`` (issue 19).

Real SQLite ledgers, real botorch models; tiny 2-D problems and a cheap
optimizer so that the whole file stays within a few tens of seconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import quadratic_config
from selflab.controller.cli import main
from selflab.controller.ledger import Ledger
from selflab.controller.study import Study, StudyError
from selflab.controller.warm_sources import WarmStartError
from selflab.planners.baselines import SobolPlanner
from selflab.planners.bo import BOPlanner
from selflab.planners.space import FloatParameter, Objective

SPACE = [FloatParameter(name="x", low=0, high=1), FloatParameter(name="z", low=0, high=1)]
CHEAP = {"num_restarts": 2, "raw_samples": 32, "maxiter": 20, "mc_samples": 16, "n_init": 4}


def target(p: dict[str, Any]) -> float:
    return math.sin(6 * p["x"]) + math.cos(4 * p["z"])


def related(p: dict[str, Any]) -> float:
    """The target's system, measured on another scale with an offset."""
    return 3.0 * target(p) + 10.0


def swapped(p: dict[str, Any]) -> float:
    """An unrelated source that misleads: as smooth as the target, on another scale, but with the roles of x and z
    swapped, so that any correlation the multi-task model learns from it predicts the target worse."""
    return 5 * math.sin(6 * p["z"]) + 5 * math.cos(4 * p["x"])


def run_source(ledger: Ledger | str, name: str, f: Any, n: int = 12, space: list[Any] = SPACE) -> None:
    with Study.create(name, space, [Objective(name="y")], ledger=ledger, planner=SobolPlanner(), seed=3) as study:
        for trial in study.ask(n):
            study.tell(trial.trial_id, {"y": f(trial.params)})


def warm_target(ledger: Ledger | str, sources: list[dict[str, Any]], *, n: int = 4, **options: Any) -> Study:
    study = Study.create("new", SPACE, [Objective(name="y")], ledger=ledger, planner=BOPlanner(**{**CHEAP, **options}),
                         warm_start=sources)
    for trial in study.ask(n):
        study.tell(trial.trial_id, {"y": target(trial.params)})
    return study


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_warm_start_from_a_campaign_in_the_same_ledger_proposes_with_the_multitask_model(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    run_source(ledger, "old", related)
    with warm_target(ledger, [{"campaign": "old"}]) as study:
        assert all(t.reason["strategy"] in ("center", "sobol_init") for t in study.trials())  # (its n_init: 4)
        (trial,) = study.ask()
    warm = trial.reason["warm_start"]
    source = f"old@{sqlite_url}"
    assert trial.reason["strategy"] == "bo"
    assert warm["sources"] == [source] and warm["source_rows"] == {source: 12} and warm["guard"] == "loo"
    assert warm["used"] is True, warm["decision"]
    assert warm["correlation"][source]["y"] > 0.8
    assert warm["loo_multitask"]["y"] > warm["loo_single_task"]["y"]
    started = [e for e in Ledger(sqlite_url).events("new") if e.kind == "campaign_started"][0]
    assert started.payload["config"]["warm_start"] == [{"ledger": None, "campaign": "old"}]
    assert [e.kind for e in Ledger(sqlite_url).events("old")].count("completed") == 12  # (the source is only read)


def test_status_says_where_a_warm_start_comes_from_and_whether_it_is_used(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = Ledger(sqlite_url)
    run_source(ledger, "old", related)
    with warm_target(ledger, [{"campaign": "old"}]) as study:
        for _ in range(2):
            (trial,) = study.ask()
            study.tell(trial.trial_id, {"y": target(trial.params)})
    source = f"old@{sqlite_url}"
    capsys.readouterr()
    assert main(["status", "--ledger", sqlite_url, "--campaign", "new"]) == 0
    [line] = [text for text in capsys.readouterr().out.splitlines() if text.startswith("warm start")]
    assert line.startswith(f"warm start from {source} (12 rows): transfer in 2 of 2 model proposals; experiment 6 uses the sources "
                           "(task correlation y +"), line
    assert main(["status", "--ledger", sqlite_url, "--campaign", "new", "--json"]) == 0
    warm = json.loads(capsys.readouterr().out)["warm_start"]
    assert warm["sources"] == {source: 12} and (warm["model_proposals"], warm["used"], warm["latest_used"]) == (2, 2, True)
    assert main(["status", "--ledger", sqlite_url, "--campaign", "old", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warm_start"] is None  # (a campaign without sources)


def test_warm_start_from_another_sqlite_file_reads_it_without_changing_a_byte(tmp_path: Path) -> None:
    other = tmp_path / "march.sqlite"
    source = Ledger(f"sqlite:///{other}")
    run_source(source, "march", related)
    source.engine.dispose()  # (the writer's last connection closes: SQLite folds its write-ahead log into the file now, not later)
    before = digest(other)
    with warm_target(f"sqlite:///{tmp_path / 'april.sqlite'}", [{"ledger": f"sqlite:///{other}", "campaign": "march"}]) as study:
        assert len(study.warm_start) == 1 and len(study.warm_start[0].observations) == 12
        (trial,) = study.ask()
    warm = trial.reason["warm_start"]
    assert warm["sources"] == [f"march@sqlite:///{other}"] and warm["used"] is True
    assert digest(other) == before


@pytest.mark.parametrize("source, message", [
    ({"campaign": "nope"}, "warm_start\\[0\\]: .* holds no campaign 'nope' \\(it holds: old\\)"),
    ({"ledger": "sqlite:///{tmp}/missing.sqlite", "campaign": "old"}, "warm_start\\[0\\]: no ledger at .*missing.sqlite"),
    ({"ledger": "sqlite:///{tmp}/narrow.sqlite", "campaign": "narrow"}, "warm_start\\[0\\]: campaign 'narrow' has no parameter 'z'"),
    ({"campaign": "new"}, "cannot warm-start from itself"),
])
def test_a_source_that_cannot_be_used_is_a_clear_error_and_nothing_is_written(
    tmp_path: Path, sqlite_url: str, source: dict[str, Any], message: str
) -> None:
    ledger = Ledger(sqlite_url)
    run_source(ledger, "old", related, n=2)
    run_source(f"sqlite:///{tmp_path / 'narrow.sqlite'}", "narrow", lambda p: p["x"], n=2, space=SPACE[:1])
    spec = {k: v.format(tmp=tmp_path) for k, v in source.items()}
    with pytest.raises(WarmStartError, match=message) as caught:
        Study.create("new", SPACE, [Objective(name="y")], ledger=ledger, planner=SobolPlanner(), warm_start=[spec])
    assert isinstance(caught.value, StudyError) and "\n" not in str(caught.value)
    assert ledger.campaigns() == ["old"]
    assert not (tmp_path / "missing.sqlite").exists()


def test_selflab_run_refuses_a_missing_source_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "lab.sqlite"
    config = quadratic_config(planner={"kind": "bo", "options": CHEAP}, warm_start=[{"campaign": "last-month"}])
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--quiet", "--ledger", f"sqlite:///{db}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("selflab: warm_start[0]:") and "last-month" in err and "\n" not in err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM selflab_events").fetchone() == (0,)


def test_the_guard_switches_transfer_off_for_a_source_that_does_not_help(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    run_source(ledger, "old", swapped, n=24)
    with warm_target(ledger, [{"campaign": "old"}], n=6) as study:
        space, objectives, observations = study.space, study.problem.objectives, study.observations()
        context = study.context()
    assert context.warm_start and len(context.warm_start[0].observations) == 24
    (guarded,) = BOPlanner(**CHEAP).propose(space, objectives, observations, [], 1, context=context)
    warm = guarded.reason["warm_start"]
    assert warm["used"] is False and warm["decision"].startswith("transfer switched off"), (warm["decision"], warm["correlation"])
    assert warm["loo_multitask"]["y"] < warm["loo_single_task"]["y"] - 2.0
    cold_context = context.model_copy(update={"warm_start": ()})
    (cold,) = BOPlanner(**CHEAP).propose(space, objectives, observations, [], 1, context=cold_context)
    assert guarded.params == cold.params and "warm_start" not in cold.reason  # (exactly the cold start's proposal)
    (forced,) = BOPlanner(**CHEAP, warm_start_guard="off").propose(space, objectives, observations, [], 1, context=context)
    assert forced.reason["warm_start"]["used"] is True and forced.reason["warm_start"]["decision"] == "guard off: multi-task model"


def test_source_parameters_are_matched_by_name_and_rows_outside_the_space_are_dropped(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    wide = [FloatParameter(name="x", low=0, high=2), FloatParameter(name="z", low=0, high=1), FloatParameter(name="w", low=5, high=6)]
    run_source(ledger, "wide", lambda p: p["x"] + p["w"], n=16, space=wide)
    rows = [e for e in ledger.events("wide") if e.kind == "proposed"]
    inside = sum(e.payload["params"]["x"] <= 1 for e in rows)
    assert 0 < inside < 16
    with Study.create("new", SPACE, [Objective(name="y")], ledger=ledger, planner=SobolPlanner(), warm_start=[{"campaign": "wide"}]) as study:
        (task,) = study.context().warm_start
    assert len(task.observations) == inside and task.dropped == 16 - inside
    assert all(set(o.params) == {"x", "z"} and o.params["x"] <= 1 for o in task.observations)  # (w, the source's own, dropped)
    assert task.name == f"wide@{sqlite_url}"


def test_objective_learn_runs_to_its_budget_with_qnipv_and_status_says_learning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "map.sqlite"
    config = quadratic_config(name="map", objectives=[{"name": "y", "objective": "learn"}],
                              planner={"kind": "bo", "options": CHEAP}, stop={"max_experiments": 6})
    path = tmp_path / "map.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--quiet", "--ledger", f"sqlite:///{db}"]) == 0
    events = Ledger(f"sqlite:///{db}").events("map")
    proposed = [e.payload["reason"] for e in events if e.kind == "proposed"]
    assert sum(e.kind == "completed" for e in events) == 6
    learnt = [r for r in proposed if r["strategy"] == "bo"]
    assert learnt and all(r["acquisition"] == "qnipv" and r["integration_points"] == 512 for r in learnt)
    assert all(r["acquisition_value"] <= 0 and r["integrated_variance"] > 0 for r in learnt)
    assert not any(e.kind == "recommended" for e in events)  # (no optimum to recommend)
    capsys.readouterr()
    assert main(["status", "--ledger", f"sqlite:///{db}"]) == 0
    said = capsys.readouterr().out
    assert "y: learning (no optimum)" in said
    first, last = learnt[0]["integrated_variance"], learnt[-1]["integrated_variance"]
    assert f"map        mean posterior variance {last:.3g} of the observed variance before experiment 6 ({first:.3g} before " in said
    assert main(["status", "--ledger", f"sqlite:///{db}", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["best"] == [{"objective": "y", "direction": "learn", "value": None, "experiment_id": None, "params": None, "instrument": None}]
    assert data["map"]["model_proposals"] == len(learnt) and data["map"]["integrated_variance"] == last


def test_learn_cannot_be_mixed_with_optimized_objectives_or_a_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = quadratic_config(objectives=[{"name": "y", "objective": "learn"}, {"name": "w"}], planner={"kind": "bo"},
                              stop={"max_experiments": 5, "target": {"objective": "y", "value": 1.0}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "objectives[0].objective" in err and "cannot be mixed" in err
    assert "stop.target" in err and "no optimum" in err
