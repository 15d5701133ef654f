"""End-to-end: the ``selflab`` command in a subprocess, as a user runs it."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, quadratic_config

pytestmark = pytest.mark.e2e

SELFLAB = str(Path(sys.executable).with_name("selflab"))


def env(*first_on_path: Path) -> dict[str, str]:
    """The test environment: ``first_on_path`` then ``tests/`` ahead of any PYTHONPATH."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([*map(str, first_on_path), str(REPO / "tests"), e.get("PYTHONPATH", "")])
    return e


def selflab(*args: str, cwd: Path, timeout: float = 120, first_on_path: Sequence[Path] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SELFLAB, *args], cwd=cwd, env=env(*first_on_path), capture_output=True, text=True, timeout=timeout)


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([SELFLAB, *args], cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def write(tmp: Path, cfg: dict[str, Any], name: str = "lab.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def kinds(db: Path, campaign: str) -> list[tuple[str, int | None]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT kind, experiment_id FROM selflab_events WHERE campaign = ? ORDER BY id", (campaign,)))


def completed(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM selflab_events WHERE kind = 'completed'").fetchone()[0])
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def in_flight(db: Path, campaign: str) -> int:
    """Experiments dispatched and not yet ended (0 while the ledger is not there yet)."""
    try:
        events = kinds(db, campaign) if db.exists() else []
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    ended = {eid for kind, eid in events if kind in ("completed", "failed", "abandoned", "stale")}
    return sum(1 for kind, eid in events if kind == "dispatched" and eid not in ended)


def wait_for(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def assert_consistent(db: Path, campaign: str, budget: int) -> None:
    """No completed result lost or duplicated; every dispatched experiment ends exactly once."""
    events = kinds(db, campaign)
    terminal = Counter(eid for kind, eid in events if kind in ("completed", "failed", "abandoned", "stale"))
    dispatched = [eid for kind, eid in events if kind == "dispatched"]
    assert len(dispatched) == len(set(dispatched)), "an experiment was dispatched twice"
    assert all(terminal[eid] == 1 for eid in dispatched), "a dispatched experiment lacks, or has several, terminal events"
    done = [eid for kind, eid in events if kind == "completed"]
    assert len(done) == len(set(done)) == budget


def test_console_script_is_installed() -> None:
    assert Path(SELFLAB).exists(), "pip install -e '.[test]' installs the selflab command"
    out = subprocess.run([SELFLAB, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for command in ("validate", "schema", "run", "status", "export"):
        assert command in out.stdout


def test_demo_campaign_status_and_export(tmp_path: Path) -> None:
    config = shutil.copy(REPO / "lab_configs" / "reactor_demo.yaml", tmp_path / "demo.yaml")
    out = selflab("run", str(config), "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    db = tmp_path / "runs" / "reactor-demo.sqlite"
    assert db.exists()
    spec = yaml.safe_load(Path(config).read_text())
    assert completed(db) == spec["stop"]["max_experiments"]

    status = selflab("status", str(config), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "completed 40" in status.stdout and "best       yield = " in status.stdout
    assert "reactor-1" in status.stdout and "reactor-2" in status.stdout and "cost spent 40" in status.stdout
    data = json.loads(selflab("status", "--ledger", f"sqlite:///{db}", "--json", cwd=tmp_path).stdout)
    assert data["counts"]["completed"] == 40 and data["state"] == "stopped" and data["stop_reason"] == "max_experiments"
    assert data["clock"] == "simulated" and data["elapsed_s"] > 3600 * 5  # ~30 min experiments on 2 reactors
    assert 0 < data["best"][0]["value"] <= 1

    exported = selflab("export", str(config), "--format", "csv", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    header = exported.stdout.splitlines()[0].split(",")
    assert header == ["experiment_id", "status", "instrument", "fidelity", "cost",
                      "residence_time", "temperature", "equivalents", "concentration",
                      "yield", "space_time_yield", "proposed_at", "started_at", "finished_at", "error"]
    done = [r for r in rows if r["status"] == "completed"]
    assert len(done) == 40
    for row in done:
        assert 0 <= float(row["yield"]) <= 1 and row["error"] == ""
        assert datetime.fromisoformat(row["finished_at"]) > datetime.fromisoformat(row["started_at"])
        if row["instrument"] == "reactor-2":
            assert float(row["temperature"]) <= 140  # the config's limit for reactor-2
    for row in rows:
        if row["status"] == "abandoned":
            assert row["error"].startswith("out_of_limits") and row["instrument"] == ""

    out_file = tmp_path / "out" / "exp.jsonl"
    exported = selflab("export", "--ledger", f"sqlite:///{db}", "--format", "jsonl", "--out", str(out_file), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(lines) == len(rows)
    assert list(lines[0]) == header
    assert isinstance(lines[0]["yield"], float) and isinstance(lines[0]["experiment_id"], int)


def test_bad_config_gets_exit_2_and_one_line_per_fault(tmp_path: Path) -> None:
    cfg = quadratic_config(seed=-1)
    cfg["instruments"][0]["capacity"] = 0
    cfg["objectives"][0]["direction"] = "upward"
    path = write(tmp_path, cfg)
    expected = [
        "seed: must be >= 0 (got -1)",
        "objectives[0].direction: must be 'maximize' or 'minimize' (got 'upward')",
        "instruments[0].capacity: must be >= 1 (got 0)",
    ]
    for command in ("validate", "run"):
        out = selflab(command, str(path), cwd=tmp_path)
        assert out.returncode == 2
        assert out.stderr.splitlines() == expected
        assert out.stdout == ""
    assert not (tmp_path / "runs").exists(), "a bad config must not create a ledger"
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("name: [unclosed\n")
    out = selflab("validate", str(garbage), cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and "YAML syntax error" in out.stderr


def test_a_bad_planner_option_is_a_config_fault_before_any_ledger(tmp_path: Path) -> None:
    path = write(tmp_path, quadratic_config(planner={"kind": "bo", "options": {"acquisition": "qei", "pool_scal": "rank"}}))
    for command in ("validate", "run"):
        out = selflab(command, str(path), cwd=tmp_path)
        assert out.returncode == 2 and out.stdout == ""
        [line] = out.stderr.splitlines()
        assert line.startswith("planner.options: bo planner option 'acquisition'") and "selflab schema" in line
    assert not (tmp_path / "runs").exists(), "a bad planner option must not create a ledger"
    out = selflab("validate", str(write(tmp_path, quadratic_config(planner={"kind": "random", "options": {"seed": 3}}))), cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("planner.options: ") and "seed" in out.stderr


def test_ax_planner_without_ax_platform_says_what_to_install(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked" / "ax"  # fault injection: an ``ax`` that cannot be imported, as if not installed
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ax'\", name='ax')\n")
    path = write(tmp_path, quadratic_config(planner={"kind": "ax"}))
    for command in ("validate", "run"):
        out = selflab(command, str(path), cwd=tmp_path, first_on_path=[tmp_path / "blocked"])
        assert out.returncode == 2 and out.stdout == ""
        [line] = out.stderr.splitlines()
        assert line.startswith("planner.kind: planner kind 'ax' needs ax-platform") and "pip install 'selflab[ax]'" in line
    assert not (tmp_path / "runs").exists()


def test_validate_ok_and_schema_and_drivers(tmp_path: Path) -> None:
    out = selflab("validate", str(REPO / "lab_configs" / "reactor_demo.yaml"), cwd=tmp_path)
    assert out.returncode == 0 and "ok" in out.stdout
    schema = json.loads(selflab("schema", cwd=tmp_path).stdout)
    assert schema["title"] == "LabConfig" and "instruments" in schema["properties"]
    options = schema["planner_options"]  # what the planner.options error message points to
    assert {"acquisition", "pool_scale", "outcome_warp"} <= set(options["bo"]["properties"]) and "properties" in options["mf"]
    assert options["random"]["additionalProperties"] is False
    drivers = selflab("drivers", cwd=tmp_path).stdout
    for name in ("reactor", "branin", "hartmann6"):
        assert name in drivers


def test_second_run_needs_resume_and_status_needs_a_ledger(tmp_path: Path) -> None:
    path = write(tmp_path, quadratic_config(stop={"max_experiments": 3}))
    assert selflab("run", str(path), "--quiet", cwd=tmp_path).returncode == 0
    again = selflab("run", str(path), "--quiet", cwd=tmp_path)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    missing = selflab("status", "--ledger", f"sqlite:///{tmp_path / 'nothing.sqlite'}", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("selflab: no ledger at")


def _slow_config(budget: int, delay_s: float = 0.03) -> dict[str, Any]:
    return quadratic_config(
        name="slow",
        instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "options": {"delay_s": delay_s}, "capacity": 2},
                     {"name": "q2", "driver": "labdrivers:Quadratic", "options": {"delay_s": delay_s * 1.5}}],
        stop={"max_experiments": budget},
    )


def test_sigkill_midway_then_resume_ends_with_exactly_the_budget(tmp_path: Path) -> None:
    budget = 60
    path = write(tmp_path, _slow_config(budget))
    db = tmp_path / "runs" / "slow.sqlite"
    kills = 0
    for threshold in (8, 25):
        args = ["run", str(path), "--quiet"] + (["--resume"] if kills else [])
        proc = start(*args, cwd=tmp_path)
        # (kill with work in flight: on a loaded machine the controller can sit between experiments for a while)
        wait_for(lambda: (completed(db) >= threshold and in_flight(db, "slow") > 0) or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
    stale_before = sum(1 for kind, _ in kinds(db, "slow") if kind == "stale")
    out = selflab("run", str(path), "--quiet", "--resume", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert_consistent(db, "slow", budget)
    events = kinds(db, "slow")
    assert sum(1 for kind, _ in events if kind == "stale") > stale_before  # the second kill left work in flight
    assert sum(1 for kind, _ in events if kind == "campaign_started") == 3
    status = json.loads(selflab("status", str(path), "--json", cwd=tmp_path).stdout)
    assert status["counts"]["completed"] == budget and status["counts"]["dispatched"] == 0


def test_ctrl_c_stops_gracefully_records_why_and_resumes(tmp_path: Path) -> None:
    budget = 60
    path = write(tmp_path, _slow_config(budget))
    db = tmp_path / "runs" / "slow.sqlite"
    proc = start("run", str(path), "--quiet", cwd=tmp_path)
    wait_for(lambda: completed(db) >= 5 or proc.poll() is not None)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    events = kinds(db, "slow")
    assert events[-1][0] == "campaign_stopped"
    with sqlite3.connect(db) as conn:
        payload = json.loads(conn.execute("SELECT payload FROM selflab_events ORDER BY id DESC LIMIT 1").fetchone()[0])
    assert payload["reason"] == "interrupted"
    dispatched = {eid for kind, eid in events if kind == "dispatched"}
    ended = {eid for kind, eid in events if kind in ("completed", "failed", "abandoned", "stale")}
    assert dispatched <= ended, "in-flight experiments were finished before stopping"
    assert completed(db) < budget
    status = selflab("status", str(path), cwd=tmp_path)
    assert "stopped (interrupted" in status.stdout
    out = selflab("run", str(path), "--quiet", "--resume", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert_consistent(db, "slow", budget)


def test_status_and_export_read_while_a_campaign_writes(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.write_text("0")
    path = write(tmp_path, quadratic_config(
        name="gated", instruments=[{"name": "q1", "driver": "labdrivers:Gated", "options": {"gate": str(gate)}, "capacity": 2}],
        stop={"max_experiments": 12}))
    db = tmp_path / "runs" / "gated.sqlite"
    proc = start("run", str(path), "--quiet", cwd=tmp_path)
    try:
        for allowed in (4, 9):  # the campaign holds here, mid-write, while we read
            gate.write_text(str(allowed))
            wait_for(lambda: completed(db) >= allowed, timeout=120)
            status = selflab("status", str(path), "--json", cwd=tmp_path)
            assert status.returncode == 0, status.stderr
            data = json.loads(status.stdout)
            assert data["state"] == "running" and data["counts"]["completed"] == allowed
            assert data["counts"]["dispatched"] == 2  # both slots wait at the gate
            export = selflab("export", str(path), "--format", "jsonl", cwd=tmp_path)
            assert export.returncode == 0 and "locked" not in export.stderr, export.stderr
            rows = [json.loads(line) for line in export.stdout.splitlines()]
            assert sum(r["status"] == "completed" for r in rows) == allowed
        gate.write_text("100")
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0
    assert completed(db) == 12


def test_emergency_stop_from_another_terminal_aborts_and_stays_resumable(tmp_path: Path) -> None:
    budget = 30
    path = write(tmp_path, _slow_config(budget, delay_s=0.5))
    db = tmp_path / "runs" / "slow.sqlite"
    not_running = selflab("stop", str(path), cwd=tmp_path)
    assert not_running.returncode == 2 and "no ledger" in not_running.stderr
    proc = start("run", str(path), "--quiet", cwd=tmp_path)
    wait_for(lambda: completed(db) >= 3 or proc.poll() is not None)
    out = selflab("stop", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "emergency_stop" in out.stdout
    proc.wait(timeout=60)
    assert proc.returncode == 130
    with sqlite3.connect(db) as conn:
        rows = [(k, json.loads(p)) for k, p in conn.execute("SELECT kind, payload FROM selflab_events ORDER BY id")]
    assert rows[-1] == ("campaign_stopped", {"reason": "emergency_stop", "detail": "emergency stop requested with selflab stop"})
    aborted = [p for k, p in rows if k == "abandoned" and p["reason"] == "emergency_stop"]
    assert aborted, "experiments in flight were aborted and recorded"
    again = selflab("stop", str(path), cwd=tmp_path)
    assert again.returncode == 2 and "not running" in again.stderr
    resumed = selflab("run", str(path), "--quiet", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_consistent(db, "slow", budget)


def test_drivers_lists_options_and_limits(tmp_path: Path) -> None:
    out = selflab("drivers", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "branin  (selflab.simulators.benchmarks:BraninInstrument)" in out.stdout
    assert "    option noise_std: float (default 0.0)" in out.stdout
    assert "    limit  x1: [-5, 10]" in out.stdout
    data = {d["name"]: d for d in json.loads(selflab("drivers", "--json", cwd=tmp_path).stdout)}
    assert data["reactor"]["limits"]["temperature"] == [30.0, 150.0]
    assert {"residence_time", "temperature", "equivalents", "concentration"} == set(data["reactor"]["limits"])
