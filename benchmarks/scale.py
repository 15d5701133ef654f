"""Scale out (issue 20): the bench grid fanned out, simulators as Ray tasks, faults.

Four measurements, all in one run, printed as one JSON object:

1. **identical**: a grid of 2 planners x 2 problems x 3 seeds run by
   ``selflab bench`` serially, with ``--workers 2`` (process) and with
   ``--executor ray --workers 2`` gives the same record for every seed
   (traces to 1e-9; proposal timings excluded).
2. **speed-up**: the wall time of those three commands (each a fresh
   process, as a user runs it), and Ray's start-up (``ray.init()`` alone, in
   a fresh process). Targets: process <= 0.6 x serial; Ray <= process + Ray's
   start-up.
3. **simulator fan-out**: a campaign of 8 carburizing experiments (about 1 s
   of CPU each) as Ray tasks with capacity 2 against capacity 1, in one Ray
   session: wall time ratio (target <= 0.6), and no duplicate proposals
   among the experiments in flight at any time.
4. **faults**: a Ray worker killed in the middle of the grid (the seed is
   failed, ``--resume`` completes the grid with the serial records) and in
   the middle of the simulator campaign (the experiment is failed with its
   reason; the campaign still completes its 8).

    python benchmarks/scale.py [--budget 20] [--seeds 3] [--planners bo,sobol] [--problems branin,hartmann6]
                               [--experiments 8] [--json FILE]

A tiny check that it runs (figures meaningless; its runs are too short for
the kill to land inside one, so ``fault.failed`` may be empty there)::

    python benchmarks/scale.py --budget 3 --seeds 1 --planners random,sobol --problems branin,gramacy --experiments 2 --steps 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

SELFLAB = str(Path(sys.executable).with_name("selflab"))


def bench(args: argparse.Namespace, out: Path, *extra: str, kill: str | None = None) -> tuple[float, int, bool]:
    """Run ``selflab bench`` on the grid; (wall seconds, exit code, whether ``kill`` found a process to kill)."""
    command = [SELFLAB, "bench", "--problem", args.problems, "--planner", args.planners, "--budget", str(args.budget),
               "--seeds", str(args.seeds), "--json", str(out), *extra]
    killed: list[int] = []
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill is not None:
        threading.Thread(target=kill_first, args=(kill, killed), daemon=True).start()
    _, err = process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode not in (0, 1):
        raise SystemExit(f"selflab bench failed ({process.returncode}): {err[-2000:]}")
    return seconds, process.returncode, bool(killed)


def kill_first(prefix: str, killed: list[int], after_s: float = 0.3, deadline_s: float = 600.0) -> None:
    """Kill the first process whose command line starts with ``prefix`` (a Ray worker is titled ``ray::<task name>``)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for p in psutil.process_iter(["cmdline"]):
            if " ".join(p.info["cmdline"] or []).startswith(prefix):
                time.sleep(after_s)
                try:
                    p.kill()
                    killed.append(p.pid)
                except psutil.NoSuchProcess:
                    continue
                return
        time.sleep(0.01)


def records(path: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    data = json.loads(path.read_text())
    data = data if isinstance(data, list) else [data]
    return {(d["problem"], d["planner"], r["seed"]): {k: v for k, v in r.items() if k != "proposal_seconds"}
            for d in data for r in d["runs"]}


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two seeds' records agree: every trace to 1e-9, the rest exactly."""
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if key.endswith("trace") and isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y) or any((u is None) != (v is None) or (u is not None and abs(u - v) > 1e-9) for u, v in zip(x, y)):
                return False
        elif x != y:
            return False
    return True


def ray_startup() -> float:
    code = ("import time, logging, ray; t = time.perf_counter(); ray.init(include_dashboard=False, logging_level=logging.WARNING); "
            "print(time.perf_counter() - t); ray.shutdown()")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1])


def grid(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    serial_s, _, _ = bench(args, tmp / "serial.json")
    process_s, _, _ = bench(args, tmp / "process.json", "--workers", "2")
    ray_s, _, _ = bench(args, tmp / "ray.json", "--workers", "2", "--executor", "ray")
    startup_s = ray_startup()
    serial = records(tmp / "serial.json")
    identical = {name: set(records(tmp / f"{name}.json")) == set(serial)
                 and all(same(serial[k], records(tmp / f"{name}.json")[k]) for k in serial) for name in ("process", "ray")}
    return {
        "seeds": len(serial), "identical_process": identical["process"], "identical_ray": identical["ray"],
        "serial_s": serial_s, "process_s": process_s, "ray_s": ray_s, "ray_startup_s": startup_s,
        "process_over_serial": process_s / serial_s, "process_target_met": process_s <= 0.6 * serial_s,
        "ray_target_met": ray_s <= process_s + startup_s,
    }


def grid_fault(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out = tmp / "fault.json"
    _, code, killed = bench(args, out, "--workers", "2", "--executor", "ray", kill="ray::selflab:bench:")
    failed = sum(len(d["failed"]) for d in json.loads(out.read_text()))
    _, resumed_code, _ = bench(args, out, "--workers", "2", "--executor", "ray", "--resume")
    serial = records(tmp / "serial.json")
    after = records(out)
    return {"killed": killed, "exit_code": code, "failed_seeds": failed, "resume_exit_code": resumed_code,
            "complete_after_resume": set(after) == set(serial) and all(same(serial[k], after[k]) for k in serial)}


def campaign(workdir: Path, name: str, capacity: int, experiments: int, steps: int,
             kill: bool = False) -> dict[str, Any]:
    from selflab.controller.campaign import Campaign
    from selflab.controller.config import parse_config
    from selflab.controller.ledger import Ledger
    from selflab.controller.projection import CampaignState
    from selflab.simulators.carburizing import CARBURIZING_LIMITS

    url = f"sqlite:///{workdir / f'{name}.sqlite'}"
    config = parse_config({
        "name": name, "seed": 0, "ledger": url,
        "parameters": [{"name": n, "type": "float", "low": lo, "high": hi} for n, (lo, hi) in CARBURIZING_LIMITS.items()],
        "objectives": [{"name": "cycle_time", "direction": "minimize"}],
        "constraints": [{"outcome": "case_depth", "op": ">=", "value": 0.8}, {"outcome": "surface_carbon", "op": "<=", "value": 0.85}],
        "instruments": [{"name": "furnace", "driver": "carburizing", "options": {"time_steps": steps}, "executor": "ray", "capacity": capacity}],
        "planner": {"kind": "sobol"},
        "stop": {"max_experiments": experiments},
    })
    killed: list[int] = []
    if kill:
        threading.Thread(target=kill_first, args=("ray::selflab:carburizing", killed, 0.1), daemon=True).start()
    ledger = Ledger(url)
    try:
        started = time.perf_counter()
        stop = asyncio.run(Campaign(config, ledger).run())
        seconds = time.perf_counter() - started
        events = ledger.events(name)
    finally:
        ledger.close()
    state = CampaignState.replay(name, events)
    in_flight: dict[int, tuple[tuple[str, float], ...]] = {}
    duplicates = 0
    for event in events:  # the params of the experiments in flight, at each dispatch
        if event.kind == "dispatched" and event.experiment_id is not None:
            key = tuple(sorted(state.experiments[event.experiment_id].params.items()))
            duplicates += key in in_flight.values()
            in_flight[event.experiment_id] = key
        elif event.kind in ("completed", "failed", "abandoned", "stale") and event.experiment_id in in_flight:
            del in_flight[event.experiment_id]
    failed = state.with_status("failed")
    return {"seconds": seconds, "stop": stop.reason, "completed": state.counts()["completed"], "duplicates_in_flight": duplicates,
            "failed": [e.error for e in failed], "killed": bool(killed)}


def simulator(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import logging

    import ray

    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    try:
        campaign(tmp, "warmup", 2, 2, args.steps)  # (starts Ray's workers and imports on them)
        one = campaign(tmp, "capacity1", 1, args.experiments, args.steps)
        two = campaign(tmp, "capacity2", 2, args.experiments, args.steps)
        fault = campaign(tmp, "killed", 2, args.experiments, args.steps, kill=True)
    finally:
        ray.shutdown()
    return {"capacity1": one, "capacity2": two, "ratio": two["seconds"] / one["seconds"],
            "target_met": two["seconds"] <= 0.6 * one["seconds"] and two["duplicates_in_flight"] == 0, "fault": fault}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--planners", default="bo,sobol")
    parser.add_argument("--problems", default="branin,hartmann6")
    parser.add_argument("--experiments", type=int, default=8, help="simulator campaign: experiments")
    parser.add_argument("--steps", type=int, default=16000, help="simulator: time steps per run (16000: about 1 s)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="selflab-scale-") as tmp:
        report = {"grid": grid(args, Path(tmp)), "grid_fault": grid_fault(args, Path(tmp)), "simulator": simulator(args, Path(tmp)),
                  "settings": vars(args)}
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
