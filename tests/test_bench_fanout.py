"""``selflab bench --workers N``: seeds fanned out over local worker processes
give the records of a serial run; a killed worker fails only its seed, and
``--resume`` runs only what is missing. Real processes, real campaigns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from test_cli import SELFLAB

from selflab.controller.bench import RunRecord, SeedFailure, get_problem
from selflab.controller.bench_store import BenchStore, GridSettings
from selflab.controller.cli import main
from selflab.controller.fanout import Outcome, SeedTask, grid_tasks, run_grid

PROBLEMS = ("branin", "gramacy")
PLANNERS = ("random", "sobol")


TIMINGS = ("proposal_seconds", "recommendation_seconds")
"""A run record's wall-clock timings."""


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A run's record without its timings (the only thing allowed to differ)."""
    return {k: v for k, v in record.items() if k not in TIMINGS}


def assert_same_runs(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Two records of one seed agree: traces to 1e-9, everything else exactly."""
    a, b = comparable(a), comparable(b)
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith("trace") and a[key] is not None:
            assert len(a[key]) == len(b[key]) and all(
                (x is None and y is None) or (x is not None and y is not None and abs(x - y) <= 1e-9) for x, y in zip(a[key], b[key])), key
        else:
            assert a[key] == b[key], key


def collect(tasks: list[SeedTask], **how: Any) -> dict[tuple[str, str, int], Outcome]:
    out: dict[tuple[str, str, int], Outcome] = {}
    run_grid(tasks, on_done=lambda task, outcome: out.setdefault((task.problem.name, task.planner, task.seed), outcome), **how)
    return out


def test_a_seed_whose_campaign_fails_is_recorded_with_its_reason_and_the_rest_go_on() -> None:
    tasks = grid_tasks([get_problem("branin")], ["random"], range(2), budget=3) + grid_tasks(
        [get_problem("branin")], ["bo"], range(1), budget=3, options={"kernel": "matern52", "n_init": 1, "num_restarts": -1})
    out = collect(tasks)
    assert all(isinstance(out[("branin", "random", s)], RunRecord) for s in (0, 1))
    failed = out[("branin", "bo", 0)]
    assert isinstance(failed, SeedFailure) and failed.seed == 0 and "bo on branin, seed 0" in failed.reason


def grid_workers() -> list[psutil.Process]:
    """This process's grid worker processes: forked by multiprocessing's fork
    server (the server's children), or started with ``spawn``."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            server = p.parent() is not None and "forkserver" in " ".join(p.parent().cmdline())
            if server or "spawn_main" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.NoSuchProcess:
            continue
    return found


def kill_first_worker(killed: list[int], deadline_s: float = 60.0) -> None:
    """Kill the first worker process started from now on."""
    before = {p.pid for p in grid_workers()}
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        workers = [p for p in grid_workers() if p.pid not in before]
        if workers:
            workers[0].kill()
            killed.append(workers[0].pid)
            return
        time.sleep(0.01)


def test_a_killed_worker_fails_only_its_seed_and_resume_reruns_only_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """2 problems x 2 planners x 2 seeds on 2 worker processes, one killed
    mid-run; resumed, every seed's record is the serial one."""
    out = tmp_path / "grid.json"
    args = ["bench", "--problem", ",".join(PROBLEMS), "--planner", ",".join(PLANNERS), "--budget", "3", "--seeds", "2",
            "--workers", "2", "--json", str(out)]
    killed: list[int] = []
    killer = threading.Thread(target=kill_first_worker, args=(killed,))
    killer.start()
    code = main(args)
    killer.join()
    assert killed and code == 1
    err = capsys.readouterr().err
    assert "1 of 8 seeds failed" in err and "--resume" in err and "worker process died" in err
    assert "seeds done" in err and "left" in err  # progress: seeds done / total, with a time estimate
    data = json.loads(out.read_text())
    failures = [(d["planner"], f["seed"], f["reason"]) for d in data for f in d["failed"]]
    assert len(failures) == 1 and "worker process died" in failures[0][2]
    assert sum(len(d["runs"]) for d in data) == 7

    assert main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    assert err.count("seeds done") == 1 and "bench: 8/8 seeds done" in err  # only the missing seed ran
    resumed = json.loads(out.read_text())
    assert all(d["failed"] == [] and [r["seed"] for r in d["runs"]] == [0, 1] for d in resumed)
    problems = [get_problem(p) for p in PROBLEMS]
    store = BenchStore(problems, list(PLANNERS), 2, GridSettings(budget=3))
    run_grid(store.missing(), on_done=store.add)  # serial, here
    serial = store.results()
    assert [(r.problem, r.planner) for r in serial] == [(d["problem"], d["planner"]) for d in resumed]
    for fresh, again in zip(serial, resumed):
        for a, b in zip(fresh.model_dump(mode="json")["runs"], again["runs"], strict=True):
            assert_same_runs(a, b)
    assert serial[0].runs[0].values != serial[0].runs[1].values


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resume"], "--resume needs --json FILE"),
        (["--ray-address", "auto"], "--ray-address needs --executor ray"),
        (["--problem", "branin,branin"], "names a problem twice"),
        (["--json", "{tmp}/b.json", "--resume", "--batch", "2"], "was run with batch 1 (now 2)"),
        (["--json", "{tmp}/bad.json", "--resume"], "is not `selflab bench --json` results"),
        (["--json", "{tmp}/b.json", "--resume"], "holds seed 1 of random on branin, beyond --seeds 1; give --seeds 2 or more"),
    ],
)
def test_bad_fanout_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    (tmp_path / "bad.json").write_text("[1, 2]")
    base = ["bench", "--problem", "branin", "--planner", "random", "--budget", "2", "--seeds", "1"]
    assert main([*base, "--seeds", "2", "--json", str(tmp_path / "b.json")]) == 0
    capsys.readouterr()
    assert main([*base, *[a.format(tmp=tmp_path) for a in extra]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_several_problems_give_one_result_each_and_one_plot_each(tmp_path: Path) -> None:
    out, png = tmp_path / "two.json", tmp_path / "two.png"
    assert main(["bench", "--problem", "branin,gramacy", "--planner", "random", "--budget", "3", "--seeds", "2",
                 "--json", str(out), "--plot", str(png)]) == 0
    data = json.loads(out.read_text())
    assert [(d["problem"], d["planner"], d["seeds"]) for d in data] == [("branin", "random", 2), ("gramacy", "random", 2)]
    assert (tmp_path / "two-branin.png").stat().st_size > 5_000 and (tmp_path / "two-gramacy.png").stat().st_size > 5_000


def test_bound_threads_sets_the_variables_and_torch() -> None:
    code = ("from selflab.instruments.ray_task import bound_threads; bound_threads(1, load_torch=True); import os, torch; "
            "print(torch.get_num_threads(), os.environ['OMP_NUM_THREADS'], os.environ['MKL_NUM_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["1", "1", "1"]


def test_parallel_workers_start_the_longest_seeds_first() -> None:
    """Model-based planners on bigger problems start before model-free ones,
    so that a long seed never starts last and runs alone; ties keep grid order."""
    from selflab.controller.fanout import longest_first

    tasks = grid_tasks([get_problem("branin"), get_problem("hartmann6")], ["sobol", "bo"], range(2), budget=20)
    order = [(t.problem.name, t.planner, t.seed) for t in longest_first(tasks)]
    assert order[:2] == [("hartmann6", "bo", 0), ("hartmann6", "bo", 1)]
    assert order[2:4] == [("branin", "bo", 0), ("branin", "bo", 1)]
    assert {p for _, p, _ in order[4:]} == {"sobol"} and sorted(order) == sorted((t.problem.name, t.planner, t.seed) for t in tasks)


def test_grid_workers_are_forked_with_torch_and_the_planners_already_imported() -> None:
    """``prepare_workers`` starts the fork server early; a worker forked from
    it starts with the grid planners' modules (and torch's lazily imported
    sympy) loaded and the thread variables bounded, before any seed runs."""
    code = """
import json, multiprocessing, os
from concurrent.futures import ProcessPoolExecutor
from selflab.controller.fanout import local_cpus, prepare_workers
prepare_workers(2, "process", ["bo", "sobol"])
probe = ("[m in __import__('sys').modules for m in ('selflab.planners.bo', 'selflab.planners.baselines', 'sympy', 'ax')]"
         " + [__import__('os').environ.get('OMP_NUM_THREADS'), __import__('os').getppid()]")
with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver")) as pool:
    *loaded, omp, parent = pool.submit(eval, probe).result(timeout=120)
server = [p for p in __import__("psutil").Process().children() if "forkserver" in " ".join(p.cmdline())]
print(json.dumps({"loaded": loaded, "omp": omp, "threads": str(max(1, local_cpus() // 2)),
                  "from_server": [p.pid for p in server] == [parent], "omp_here": os.environ.get("OMP_NUM_THREADS")}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=180,
                                    env=env).stdout)
    assert out["loaded"] == [True, True, True, False]  # bo, sobol's module, sympy; not a planner outside the grid
    assert out["omp"] == out["threads"] and out["from_server"]
    assert out["omp_here"] is None  # the caller's own environment is left as it was


def test_a_killed_grid_leaves_no_worker_running() -> None:
    """``selflab bench --workers 2`` killed outright (SIGKILL: no clean-up
    runs) while both workers run long seeds: the workers end within seconds
    instead of finishing their seeds unseen."""
    proc = subprocess.Popen([SELFLAB, "bench", "--problem", "branin", "--planner", "random",
                             "--budget", "1000000", "--seeds", "2", "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    grid = psutil.Process(proc.pid)
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline:  # the fork server's children run the seeds
            workers = [c for c in grid.children(recursive=True) if c.ppid() != proc.pid]
            time.sleep(0.2)
        assert len(workers) == 2, "the grid never started two workers"
        time.sleep(1.0)
        assert all(w.is_running() for w in workers)  # (busy with their million-experiment seeds)
        proc.kill()
        proc.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=15)
        assert alive == [], f"{len(alive)} worker(s) still running 15 s after the grid was killed"
    finally:
        for p in [*workers, grid]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
