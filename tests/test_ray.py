"""Ray, for real: one local cluster of 2 CPUs for the module (no dashboard).

* ``selflab bench --executor ray``: a killed Ray worker fails only its seed,
  ``--resume`` completes the grid, and every seed's record is the serial one.
* ``executor: ray`` instruments: the conformance kit passes unchanged, the
  capacity comes from the cluster's resources, a campaign gives the local
  one's results, the emergency stop cancels the tasks (``abandoned``), and a
  killed task is a failed experiment with its reason.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from test_bench_fanout import comparable

from selflab.controller.bench import get_problem
from selflab.controller.bench_store import BenchStore, GridSettings
from selflab.controller.campaign import Campaign
from selflab.controller.cli import main
from selflab.controller.config import parse_config
from selflab.controller.fanout import run_grid
from selflab.controller.ledger import Ledger, NewEvent
from selflab.controller.projection import CampaignState
from selflab.instruments.ray_task import RayUnavailable, ray_task_instrument
from selflab.instruments.testing import check_instrument
from selflab.simulators.carburizing import CARBURIZING_LIMITS, CarburizingFurnace

ray = pytest.importorskip("ray")

GOOD = {"temperature": 925.0, "carbon_potential": 1.1, "boost_time": 2.0, "diffuse_time": 1.0}
FAST = {"grid_points": 200, "time_steps": 1000}
"""Carburizing options for a run of some 50 ms."""


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


def ray_processes(prefix: str) -> list[psutil.Process]:
    """Ray workers whose title starts with ``prefix`` (Ray titles a worker ``ray::<task name>`` while it runs one)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if " ".join(p.info["cmdline"] or []).startswith(prefix):
            found.append(p)
    return found


def kill_when_running(prefix: str, killed: list[int], after_s: float = 0.0, deadline_s: float = 90.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        running = ray_processes(prefix)
        if running:
            time.sleep(after_s)
            running[0].kill()
            killed.append(running[0].pid)
            return
        time.sleep(0.01)


def wait_for_free_cpus(total: float = 2.0, within_s: float = 10.0) -> float:
    """Seconds until every CPU of the cluster is free again (inf if never)."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if ray.available_resources().get("CPU", 0.0) >= total:
            return time.monotonic() - started
        time.sleep(0.05)
    return float("inf")


# --- the bench grid ---------------------------------------------------------------------------


def test_a_killed_ray_worker_fails_its_seed_and_resume_gives_the_serial_records(tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ray.json"
    args = ["bench", "--problem", "branin", "--planner", "random,sobol", "--budget", "3", "--seeds", "2", "--workers", "2",
            "--executor", "ray", "--json", str(out)]
    killed: list[int] = []
    killer = threading.Thread(target=kill_when_running, args=("ray::selflab:bench:", killed))
    killer.start()
    code = main(args)
    killer.join()
    assert killed and code == 1
    err = capsys.readouterr().err
    assert "1 of 4 seeds failed" in err and "its Ray worker died" in err and "--resume" in err
    data = json.loads(out.read_text())
    assert sum(len(d["failed"]) for d in data) == 1 and sum(len(d["runs"]) for d in data) == 3

    assert main([*args, "--resume"]) == 0
    assert capsys.readouterr().err.count("seeds done") == 1  # only the missing seed ran
    resumed = json.loads(out.read_text())
    store = BenchStore([get_problem("branin")], ["random", "sobol"], 2, GridSettings(budget=3))
    run_grid(store.missing(), on_done=store.add)  # serial, here
    for fresh, again in zip(store.results(), resumed, strict=True):
        assert again["failed"] == []
        for a, b in zip(fresh.model_dump(mode="json")["runs"], again["runs"], strict=True):
            assert comparable(a) == comparable(b)
    assert ray.is_initialized()  # a Ray the bench did not start is left running


# --- instruments as Ray tasks -----------------------------------------------------------------


def furnace(options: dict[str, Any] | None = None, **how: Any) -> Any:
    options = {**FAST, **(options or {})}
    return ray_task_instrument(CarburizingFurnace(**options), "carburizing", options, **how)


def test_a_ray_task_instrument_passes_the_kit_with_its_capacity_from_the_resources() -> None:
    report = check_instrument(furnace, GOOD, timeout_s=60.0)
    assert not report.failed and "cancellation (run after cancel)" in report.passed and "missing input 'temperature'" in report.passed
    instrument = furnace()
    assert instrument.capacity == 2 and instrument.duration(GOOD) == 3 * 3600.0 and instrument.limits == CARBURIZING_LIMITS
    assert furnace(num_cpus=2).capacity == 1 and furnace(capacity=5).capacity == 5
    with pytest.raises(RayUnavailable, match="never fits"):
        furnace(num_gpus=1)


def carburizing_config(url: str, *, executor: str = "ray", options: dict[str, Any] | None = None, experiments: int = 4,
                       **instrument: Any) -> Any:
    return parse_config({
        "name": "furnace", "seed": 3, "ledger": url,
        "parameters": [{"name": n, "type": "float", "low": lo, "high": hi} for n, (lo, hi) in CARBURIZING_LIMITS.items()],
        "objectives": [{"name": "cycle_time", "direction": "minimize"}],
        "constraints": [{"outcome": "case_depth", "op": ">=", "value": 0.8}],
        "instruments": [{"name": "furnace", "driver": "carburizing", "options": {**FAST, **(options or {})}, "executor": executor,
                         **instrument}],
        "planner": {"kind": "sobol"},
        "stop": {"max_experiments": experiments},
    })


def run_campaign(config: Any) -> tuple[Any, Campaign, CampaignState]:
    ledger = Ledger(config.ledger)
    try:
        campaign = Campaign(config, ledger)
        stop = asyncio.run(campaign.run())
        return stop, campaign, CampaignState.replay(config.name, ledger.events(config.name))
    finally:
        ledger.close()


def test_a_campaign_on_ray_tasks_gives_the_local_results(tmp_path: Path) -> None:
    _, local, here = run_campaign(carburizing_config(f"sqlite:///{tmp_path / 'local.sqlite'}", executor="local", capacity=2))
    _, remote, there = run_campaign(carburizing_config(f"sqlite:///{tmp_path / 'ray.sqlite'}"))
    assert remote.stations[0].capacity == 2 and type(remote.stations[0].driver).__name__ == "RayTaskInstrument"
    done = [(e.params, e.outcomes) for e in there.with_status("completed")]
    assert len(done) == 4 and done == [(e.params, e.outcomes) for e in here.with_status("completed")]
    assert len({tuple(sorted(p.items())) for p, _ in done}) == 4  # no duplicate proposals
    # clock: auto is simulated for the furnace run here, the wall clock on Ray (its real computation is the time that
    # matters: on the simulated clock a finished task's result would wait for its simulated due time, its worker idle)
    assert (here.clock, there.clock) == ("simulated", "wall")


def test_the_emergency_stop_cancels_the_ray_tasks_and_abandons_their_experiments(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'stop.sqlite'}"
    config = carburizing_config(url, options={"grid_points": 1000, "time_steps": 200_000}, experiments=10)  # a minute of CPU each
    result: dict[str, Any] = {}
    other = Ledger(url)  # (opened first: two ledgers creating one SQLite file at once may find it locked)
    thread = threading.Thread(target=lambda: result.setdefault("run", run_campaign(config)))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not (sum(e.kind == "dispatched" for e in other.events("furnace")) == 2 and len(ray_processes("ray::selflab:carburizing")) == 2):
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
        other.append([NewEvent(campaign="furnace", kind="stop_requested", payload={"by": "ada", "origin": "the console"})])
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert wait_for_free_cpus() < 5.0  # the tasks were cancelled, not left to run their minute
    finally:
        other.close()
    stop, _, state = result["run"]
    assert stop.reason == "emergency_stop"
    abandoned = state.with_status("abandoned")
    assert len(abandoned) == 2 and all(e.error.startswith("emergency_stop") for e in abandoned)


def test_a_killed_ray_task_is_a_failed_experiment_with_its_reason(tmp_path: Path) -> None:
    config = carburizing_config(f"sqlite:///{tmp_path / 'kill.sqlite'}", options={"grid_points": 500, "time_steps": 20_000}, experiments=3)
    killed: list[int] = []
    killer = threading.Thread(target=kill_when_running, args=("ray::selflab:carburizing", killed, 0.2))
    killer.start()
    stop, _, state = run_campaign(config)
    killer.join()
    assert killed and stop.reason == "max_experiments"
    (failed,) = state.with_status("failed")
    assert "its Ray task died" in failed.error and "disconnected" in failed.error
    assert state.counts()["completed"] == 3  # the campaign went on to its budget: nothing lost


def test_an_interlock_cannot_watch_a_ray_instrument(tmp_path: Path) -> None:
    """``read()`` is not forwarded (the driver built here runs nothing), and the
    config check says why rather than pausing on readings that never change."""
    from selflab.controller.config import ConfigError
    from selflab.controller.fleet import build_fleet

    config = carburizing_config(f"sqlite:///{tmp_path / 'lock.sqlite'}", capacity=1).model_copy(
        update={"interlocks": parse_config({**carburizing_config("sqlite://").model_dump(mode="json"),
                                            "interlocks": [{"pause_when": "furnace.temperature > 950"}]}).interlocks})
    with pytest.raises(ConfigError, match=r"interlocks\[0\].pause_when: instrument 'furnace' has no read\(\) method.*executor: ray"):
        build_fleet(config)
