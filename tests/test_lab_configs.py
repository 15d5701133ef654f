"""Every shipped config in lab_configs/ runs as shipped, to its budget."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from test_cli import selflab

pytestmark = pytest.mark.e2e

CONFIGS = sorted((REPO / "lab_configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_runs_to_its_budget(path: Path, tmp_path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    out = selflab("run", str(path), "--quiet", "--ledger", ledger, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    status = json.loads(selflab("status", "--ledger", ledger, "--json", cwd=tmp_path).stdout)
    assert status["state"] == "stopped"
    stop = spec["stop"]
    if "target" in stop and status["stop_reason"] == "target":
        best = status["best"][0]["value"]
        assert (best <= stop["target"]["value"]) if spec["objectives"][0].get("direction") == "minimize" else (best >= stop["target"]["value"])
    elif "max_experiments" in stop:
        assert status["counts"]["completed"] == stop["max_experiments"]
    else:
        assert status["stop_reason"] in ("max_cost", "max_time", "max_wall_time")
    assert status["counts"]["dispatched"] == 0 and status["counts"]["proposed"] == 0
    if len(spec["objectives"]) > 1:
        assert status["pareto"], "a multi-objective campaign reports its Pareto set"
    served = {i.get("fidelity", i.get("options", {}).get("fidelity", 1.0)) for i in spec["instruments"]}
    if len(served) > 1:  # multi-fidelity: the budget is spent at several fidelities, the recommendation is at the target
        assert len(status["cost_by_fidelity"]) > 1 and sum(status["cost_by_fidelity"].values()) == pytest.approx(status["cost_spent"])
        assert status["recommendation"]["fidelity"] == spec.get("target_fidelity", 1.0)
    if spec.get("constraints"):
        assert status["best"][0]["value"] is not None, "a feasible point was found"
    if spec.get("planner", {}).get("kind") == "bo":  # the reasons of a BO campaign's proposals are in the ledger
        with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
            reasons = [json.loads(p)["reason"] for (p,) in conn.execute("SELECT payload FROM selflab_events WHERE kind = 'proposed'")]
        model_based = [r for r in reasons if r["strategy"] == "bo"]
        assert model_based, "after the initial design, proposals come from the model"
        for reason in model_based:
            assert {"acquisition", "acquisition_value", "predicted", "fit_seconds", "n_observations", "proposal_seconds"} <= set(reason)
            for outcome in spec["objectives"]:
                assert set(reason["predicted"][outcome["name"]]) == {"mean", "std"}
