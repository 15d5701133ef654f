"""Several hosts on one campaign: a planner and worker processes sharing a
Postgres ledger, with workers killed at random."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from conftest import quadratic_config
from test_cli import SELFLAB, env

from selflab.controller import workqueue
from selflab.controller.ledger import Ledger

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([SELFLAB, *args], cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_four_workers_with_random_kills_claim_once_and_lose_nothing(postgres_url: str, tmp_path: Path) -> None:
    budget = 40
    device_log = tmp_path / "device.jsonl"
    options = {"delay_s": 0.4, "log_path": str(device_log)}
    config = quadratic_config(
        name="shared",
        instruments=[
            {"name": "q1", "driver": "labdrivers:Logged", "options": options, "capacity": 3, "remote": True},
            {"name": "q2", "driver": "labdrivers:Logged", "options": options, "capacity": 2, "remote": True},
        ],
        stop={"max_experiments": budget},
        ledger=postgres_url,
    )
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(config))
    rng = random.Random(7)
    watcher = Ledger(postgres_url)  # creates the ledger's tables, as any first user does
    planner = _start(["run", str(path), "--quiet"], tmp_path)
    worker_args = ["worker", str(path), "--quiet", "--lease", "1.5"]
    workers = [_start(worker_args + (["--instruments", "q1"] if i % 2 else []), tmp_path) for i in range(4)]
    kills, busy_kills = 0, 0
    deadline = time.monotonic() + 240
    try:
        while planner.poll() is None:
            assert time.monotonic() < deadline, "the campaign did not finish"
            time.sleep(rng.uniform(0.3, 1.0))
            if kills >= 6:
                continue
            # Half the kills hit a worker in the middle of an experiment it claimed.
            holders = {int(r["worker"].rsplit(":", 1)[1]) for r in workqueue.rows(watcher, "shared") if r["state"] == "claimed"}
            candidates = [i for i, w in enumerate(workers) if w.poll() is None and (w.pid in holders or kills % 2)]
            if not candidates:
                continue
            victim = rng.choice(candidates)
            busy_kills += workers[victim].pid in holders
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait(timeout=30)
            kills += 1
            workers[victim] = _start(worker_args, tmp_path)
        _, err = planner.communicate(timeout=30)
        assert planner.returncode == 0, err
        for w in workers:  # workers leave on their own once the planner has stopped
            w.wait(timeout=60)
            assert w.returncode == 0, w.stderr.read() if w.stderr else ""
    finally:
        watcher.close()
        for p in [planner, *workers]:
            if p.poll() is None:
                p.kill()
    assert kills >= 4 and busy_kills >= 2

    ledger = Ledger(postgres_url, create=False)
    events = ledger.events("shared")
    rows = workqueue.rows(ledger, "shared")
    ledger.close()
    dispatched = [e.experiment_id for e in events if e.kind == "dispatched"]
    assert len(dispatched) == len(set(dispatched)), "an experiment was claimed twice"
    terminal = Counter(e.experiment_id for e in events if e.kind in ("completed", "failed", "abandoned", "stale"))
    assert all(terminal[eid] == 1 for eid in dispatched), "every claimed experiment ends exactly once"
    done = [e for e in events if e.kind == "completed"]
    assert len({e.experiment_id for e in done}) == len(done) == budget
    assert {r["state"] for r in rows} <= {"done", "expired", "cancelled"}
    assert sum(1 for r in rows if r["state"] == "done") >= budget
    # No lost or invented results: each recorded outcome is one the device produced for those params.
    runs = [json.loads(line) for line in device_log.read_text().splitlines()]
    measured = {json.dumps(r["params"], sort_keys=True): r["result"] for r in runs}
    params = {e.experiment_id: e.payload["params"] for e in events if e.kind == "proposed"}
    for e in done:
        assert e.payload["outcomes"] == pytest.approx(measured[json.dumps(params[e.experiment_id], sort_keys=True)])
    assert len({r["pid"] for r in runs}) >= 2, "the work was spread over several worker processes"
    stale = [e.experiment_id for e in events if e.kind == "stale"]
    assert len(stale) >= busy_kills, "a killed worker's claims become stale when its lease runs out"
    requeued = [e.payload["reason"].get("requeue_of") for e in events if e.kind == "proposed"]
    assert set(stale) <= set(requeued), "stale experiments are requeued (stale_policy: requeue)"


def test_worker_refuses_instruments_that_are_not_remote(postgres_url: str, tmp_path: Path) -> None:
    cfg = quadratic_config(ledger=postgres_url)
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([SELFLAB, "worker", str(path)], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "--instruments: nothing is not a remote instrument of campaign 'quad'; remote ones: none (mark instruments remote: true)"


def test_remote_instruments_need_postgres() -> None:
    from selflab.controller.config import ConfigError, parse_config

    cfg = quadratic_config()
    cfg["instruments"][0]["remote"] = True
    with pytest.raises(ConfigError, match=r"instruments\[0\].remote: remote instruments need a shared Postgres ledger"):
        parse_config(cfg)
