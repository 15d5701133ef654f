"""Crash safety: SIGKILL a running campaign at seeded random moments, 20+ times,
including inside ledger writes, resuming after each kill."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import REPO, quadratic_config
from test_cli import SELFLAB, env, wait_for

pytestmark = pytest.mark.e2e

KILLS = 22
BUDGET = 600


def _events(db: Path) -> list[tuple[int, str, int | None, str]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return list(conn.execute("SELECT id, kind, experiment_id, payload FROM selflab_events ORDER BY id"))
    except sqlite3.OperationalError:
        return []


def test_twenty_kills_lose_nothing_and_run_nothing_twice(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    device_log = tmp_path / "device-log.json"
    config = quadratic_config(
        name="crashy",
        instruments=[
            {"name": "q1", "driver": "labdrivers:Remembering", "capacity": 2,
             "options": {"delay_s": 0.02, "memory": str(device_log)}},
        ],
        stop={"max_experiments": BUDGET},
        stale_policy="drop",
    )
    path = tmp_path / "crashy.yaml"
    path.write_text(yaml.safe_dump(config))
    db = tmp_path / "runs" / "crashy.sqlite"
    base_env = env()
    base_env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests" / "crashhook"), base_env["PYTHONPATH"]])

    completed_ever: set[int] = set()
    in_write = 0
    for k in range(KILLS):
        run_env = dict(base_env)
        if k % 3 == 2:  # every third kill lands inside a ledger commit
            run_env["SELFLAB_KILL_AT_COMMIT"] = str(rng.randint(2, 40))
            in_write += 1
        starts_before = sum(1 for _, kind, _, _ in _events(db) if kind == "campaign_started")
        args = [SELFLAB, "run", str(path), "--quiet"] + (["--resume"] if k else [])
        proc = subprocess.Popen(args, cwd=tmp_path, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if "SELFLAB_KILL_AT_COMMIT" not in run_env:
            wait_for(lambda: proc.poll() is not None
                     or sum(1 for _, kind, _, _ in _events(db) if kind == "campaign_started") > starts_before, timeout=60)
            time.sleep(rng.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode in (-signal.SIGKILL, 0), proc.stderr.read() if proc.stderr else ""
        events = _events(db)
        done_now = {eid for _, kind, eid, _ in events if kind == "completed"}
        assert completed_ever <= done_now, "a completed result disappeared"
        completed_ever = done_now
        if len(done_now) >= BUDGET:
            break
    assert in_write >= 6

    final = subprocess.run([SELFLAB, "run", str(path), "--quiet", "--resume"], cwd=tmp_path, env=base_env,
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    events = _events(db)
    kills = sum(1 for _, kind, _, _ in events if kind == "campaign_started") - 1
    assert kills >= 20

    done = [eid for _, kind, eid, _ in events if kind == "completed"]
    assert len(done) == len(set(done)) == BUDGET, "the final count of completed experiments equals the budget"
    assert completed_ever <= set(done), "no completed result lost"
    dispatched = [eid for _, kind, eid, _ in events if kind == "dispatched"]
    assert len(dispatched) == len(set(dispatched)), "no experiment dispatched twice"
    terminal = Counter(eid for _, kind, eid, _ in events if kind in ("completed", "failed", "abandoned", "stale"))
    assert all(terminal[eid] == 1 for eid in dispatched), "every dispatched experiment ends in exactly one terminal state"
    proposed = [eid for _, kind, eid, _ in events if kind == "proposed"]
    assert all(terminal[eid] == 1 for eid in proposed), "every proposal is settled"

    # The device's own log: with stale_policy drop nothing ran twice, and every
    # recorded result is what the device measured for those params.
    runs = json.loads(device_log.read_text())
    seen = Counter(json.dumps(r["params"], sort_keys=True) for r in runs)
    assert max(seen.values()) == 1, "an experiment ran twice on the device"
    by_params = {json.dumps(r["params"], sort_keys=True): r["result"] for r in runs}
    params_of = {eid: json.loads(p)["params"] for _, kind, eid, p in events if kind == "proposed"}
    for _, kind, eid, payload in events:
        if kind == "completed":
            key = json.dumps(params_of[eid], sort_keys=True)
            assert json.loads(payload)["outcomes"] == pytest.approx(by_params[key])
