"""The lab console's benchmark (issue 17): latency, scale, and no interference.

Each part starts ``selflab console`` as a person would (its own process, on
a free loopback port) and, where a page matters, looks at it with Debian's
headless Chromium through Playwright.

* ``latency``: a ledger write -> visible in the open page. The page shows
  the event log; the benchmark appends a ``note`` through the real
  ``Ledger`` and waits until the page has a row for that event. Reports
  the median, 95th percentile and max over ``--writes`` writes (target:
  p95 <= 1 s; optuna-dashboard polls every 10 s).
* ``scale``: a 10,000-experiment ledger (``--n``): the campaign page's
  first render (the console reads every event), then warm renders of the
  campaign, experiments (sorted by an outcome) and event-log pages, a
  figure, and the browser's load of the campaign page (target: <= 2 s).
* ``interference``: a ``--n``-experiment SQLite campaign (random planner,
  zero-duration simulator, simulated clock), alternately without and with
  the console open on it (a browser page on its campaign page and one on
  its experiments table, loaded, the browser idle after its start-up),
  ``--rounds`` times each, in the same run. Reports
  the controller's own overhead per experiment (wall time less planner and
  instrument time) in each, and every "database is locked" (target: none,
  and within 5 % of the run without the console).
* ``screenshot``: the campaign page of the README's demo while it runs,
  written to ``--out`` (the PNG in ``benchmarks/figures/``).

Usage::

    python benchmarks/console.py all [--quick] [--json FILE]
    python benchmarks/console.py latency --writes 60
    python benchmarks/console.py scale --n 10000
    python benchmarks/console.py interference --n 500 --rounds 2
    python benchmarks/console.py screenshot --out benchmarks/figures/console_overview.png

Run it on an idle machine: the timings are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # console_fixtures: the ledgers the tests use

from console_fixtures import TOKEN, synthetic_ledger  # noqa: E402

from selflab.controller.campaign import Campaign  # noqa: E402
from selflab.controller.config import parse_config  # noqa: E402
from selflab.controller.ledger import Ledger, NewEvent  # noqa: E402

SELFLAB = str(Path(sys.executable).with_name("selflab"))


# --- the console, as a user starts it -------------------------------------------------------


@contextlib.contextmanager
def console(url: str, campaign: str | None = None) -> Iterator[tuple[str, list[str]]]:
    """``selflab console --ledger URL --port 0`` in its own process: its base
    URL, and the lines it writes to stderr (collected while it runs)."""
    env = {**os.environ, "SELFLAB_CONSOLE_TOKEN": TOKEN,
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    args = [SELFLAB, "console", "--ledger", url, "--port", "0"] + (["--campaign", campaign] if campaign else [])
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        lines.append(first)
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", first)
        if not match:
            raise RuntimeError(f"selflab console did not start: {first}{proc.stderr.read()}")
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
        reader.start()
        yield match.group(1), lines
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    path = os.environ.get("SELFLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise SystemExit("no chromium: apt-get install -y chromium (or set SELFLAB_CHROMIUM)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, url: str, width: int = 1360, height: int = 900) -> Any:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_selector("body[data-ready='1'][data-images='ready']", timeout=60_000)
    return page


def settle(pattern: str = "chrom", idle_share: float = 0.05, window_s: float = 0.5, limit_s: float = 15.0) -> float:
    """Wait until the processes whose command line holds ``pattern`` (the
    browser) use less than ``idle_share`` of one core over ``window_s``: a
    browser just launched keeps working for a second or two after its pages
    have loaded, and that start-up is not the console's cost. Returns the
    seconds waited (at most ``limit_s``)."""
    import psutil

    def used() -> float:
        total = 0.0
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if pattern in " ".join(proc.info["cmdline"] or []):
                    times = proc.cpu_times()
                    total += times.user + times.system
            except psutil.Error:
                pass
        return total

    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        before = used()
        time.sleep(window_s)
        if used() - before < idle_share * window_s:
            break
    return time.monotonic() - started


def in_thread(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` on a thread of its own (Playwright's synchronous API
    keeps an event loop on the main thread, so a campaign cannot run there)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


# --- latency -----------------------------------------------------------------------------------


def latency(writes: int, workdir: Path) -> dict[str, Any]:
    url = f"sqlite:///{workdir / 'latency.sqlite'}"
    synthetic_ledger(url, 200, name="lab")
    seconds: list[float] = []
    rng = random.Random(0)
    with console(url) as (base, _), chromium() as browser:
        page = open_page(browser, f"{base}/c/lab/events")
        ledger = Ledger(url)
        try:
            for i in range(writes):
                time.sleep(rng.uniform(0.05, 0.5))  # (writes land at every phase of the console's poll)
                start = time.perf_counter()
                [event] = ledger.append([NewEvent(campaign="lab", kind="note", payload={"text": f"write {i}", "by": "benchmark"})])
                page.wait_for_selector(f"tr[data-event='{event.id}']", timeout=10_000)
                seconds.append(time.perf_counter() - start)
        finally:
            ledger.close()
    return {"writes": writes, "median_s": statistics.median(seconds), "p95_s": percentile(seconds, 95), "max_s": max(seconds),
            "target_p95_s": 1.0}


# --- scale ---------------------------------------------------------------------------------------


def timed_get(web: httpx.Client, path: str) -> float:
    start = time.perf_counter()
    response = web.get(path)
    response.raise_for_status()
    return time.perf_counter() - start


def scale(n: int, workdir: Path) -> dict[str, Any]:
    url = f"sqlite:///{workdir / 'scale.sqlite'}"
    made = time.perf_counter()
    synthetic_ledger(url, n, name="big")
    result: dict[str, Any] = {"experiments": n, "ledger_written_s": time.perf_counter() - made, "target_s": 2.0}
    with console(url) as (base, _), httpx.Client(base_url=base, timeout=120) as web:
        result["campaign_page_first_s"] = timed_get(web, "/c/big")
        pages = {"campaign_page": "/c/big", "experiments_sorted": "/c/big/experiments?sort=outcome:y0&order=asc",
                 "experiments_filtered": "/c/big/experiments?status=failed&q=garbled", "event_log": "/c/big/events",
                 "status_json": "/api/c/big/status"}
        for name, path in pages.items():
            result[f"{name}_warm_median_s"] = statistics.median(timed_get(web, path) for _ in range(5))
        result["figure_best_so_far_first_s"] = timed_get(web, "/c/big/plots/best_so_far")
        with chromium() as browser:
            for name, path in (("campaign_page", "/c/big"), ("experiments", "/c/big/experiments")):
                start = time.perf_counter()
                open_page(browser, base + path).close()
                result[f"browser_{name}_s"] = time.perf_counter() - start
    return result


# --- no interference -------------------------------------------------------------------------------


class Timed:
    """Adds up the seconds spent in a wrapped callable or coroutine function."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def sync(self, fn: Any) -> Any:
        def inner(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t
        return inner

    def coro(self, fn: Any) -> Any:
        async def inner(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t
        return inner


class LockCounter(logging.Handler):
    """Counts log records that say "database is locked"."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "locked" in record.getMessage().lower():
            self.count += 1


def overhead_run(n: int, url: str, name: str) -> dict[str, Any]:
    """One campaign of ``n`` experiments; the controller's own seconds per experiment."""
    config = parse_config({
        "name": name, "seed": 0, "ledger": url, "clock": "simulated",
        "parameters": [{"name": "x1", "type": "float", "low": -5, "high": 10}, {"name": "x2", "type": "float", "low": 0, "high": 15}],
        "objectives": [{"name": "y", "direction": "minimize"}],
        "instruments": [{"name": "sim", "driver": "branin"}],
        "planner": {"kind": "random"}, "stop": {"max_experiments": n},
    })
    ledger = Ledger(config.ledger_url)
    campaign = Campaign(config, ledger)
    planner, instrument = Timed(), Timed()
    campaign.planner.propose = planner.sync(campaign.planner.propose)  # type: ignore[method-assign]
    for station in campaign.stations:
        station.driver.run = instrument.coro(station.driver.run)
        station.driver.connect = instrument.coro(station.driver.connect)
    locks = LockCounter()
    logging.getLogger("selflab").addHandler(locks)
    start = time.perf_counter()
    error = ""
    try:
        stop = asyncio.run(campaign.run())
        reason = stop.reason
    except Exception as exc:  # (a lock error would surface here)
        reason, error = "error", f"{type(exc).__name__}: {exc}"
    finally:
        total = time.perf_counter() - start
        logging.getLogger("selflab").removeHandler(locks)
        ledger.close()
    overhead = total - planner.seconds - instrument.seconds
    return {"stop": reason, "error": error, "lock_errors": locks.count + ("locked" in error.lower()),
            "total_s": total, "overhead_ms_per_experiment": 1e3 * overhead / n}


def interference(n: int, rounds: int, workdir: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    settled_s: list[float] = []
    console_lock_lines = 0
    in_thread(overhead_run, min(n, 50), f"sqlite:///{workdir / 'warmup.sqlite'}", "warmup")  # (imports and first connections: not overhead)
    for r in range(rounds):
        url = f"sqlite:///{workdir / f'alone{r}.sqlite'}"
        runs["without"].append(in_thread(overhead_run, n, url, "alone"))
        url = f"sqlite:///{workdir / f'watched{r}.sqlite'}"
        Ledger(url).close()  # (the console opens an existing ledger read-only)
        with console(url, campaign="watched") as (base, lines), chromium() as browser:
            pages = [open_page(browser, f"{base}/c/watched"), open_page(browser, f"{base}/c/watched/experiments")]
            settled_s.append(settle())  # (the pages are open and the browser idle, as a person's would be)
            runs["with"].append(in_thread(overhead_run, n, url, "watched"))
            for page in pages:
                page.close()
        console_lock_lines += sum("locked" in line.lower() for line in lines)
    alone = statistics.median(run["overhead_ms_per_experiment"] for run in runs["without"])
    watched = statistics.median(run["overhead_ms_per_experiment"] for run in runs["with"])
    return {"experiments": n, "rounds": rounds, "runs": runs, "browser_settled_s": settled_s,
            "overhead_ms_per_experiment_without": alone, "overhead_ms_per_experiment_with": watched,
            "overhead_change": watched / alone - 1, "target_change": 0.05,
            "lock_errors": sum(run["lock_errors"] for v in runs.values() for run in v) + console_lock_lines,
            "stops": sorted({run["stop"] for v in runs.values() for run in v})}


# --- the screenshot --------------------------------------------------------------------------------


def screenshot(out: Path, workdir: Path, experiments: int = 14) -> dict[str, Any]:
    """The README demo's campaign page, mid-run, unlocked by a person."""
    import yaml

    raw = yaml.safe_load((REPO / "lab_configs" / "reactor_demo.yaml").read_text())
    raw["ledger"] = f"sqlite:///{workdir / 'demo.sqlite'}"
    raw["stop"] = {"max_experiments": experiments + 26}
    config = parse_config(raw)
    done = threading.Event()

    def run() -> None:
        ledger = Ledger(config.ledger_url)
        try:
            asyncio.run(Campaign(config, ledger).run())
        finally:
            ledger.close()
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while not Path(workdir / "demo.sqlite").exists():
        time.sleep(0.1)
    with console(config.ledger_url, campaign=config.name) as (base, _), chromium() as browser:
        page = open_page(browser, f"{base}/c/{config.name}", height=1000)
        page.fill("input[name='who']", "ada")
        page.fill("input[name='token']", TOKEN)
        page.click("form.unlock button")
        page.wait_for_selector("#who")
        reader = Ledger(config.ledger_url, create=False)
        try:
            while len([e for e in reader.events(config.name) if e.kind == "completed"]) < experiments and not done.is_set():
                time.sleep(0.2)
        finally:
            reader.close()
        page.wait_for_selector("body[data-ready='1']")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        stop = httpx.post(f"{base}/c/{config.name}/actions/stop", data={"by": "benchmark", "reason": "screenshot taken"},
                          headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"})
    thread.join(timeout=120)
    return {"screenshot": str(out), "stop_requested": stop.json()}


# --- main ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("all", "latency", "scale", "interference", "screenshot"))
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that the script runs (timings meaningless)")
    parser.add_argument("--writes", type=int, default=60, help="latency: ledger writes (default 60)")
    parser.add_argument("--n", type=int, default=None, help="scale: experiments (default 10000); interference: (default 500)")
    parser.add_argument("--rounds", type=int, default=2, help="interference: runs without and with the console (default 2 each)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "figures" / "console_overview.png")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.writes, args.rounds = min(args.writes, 5), 1
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.part in ("all", "latency"):
            results["latency"] = latency(args.writes, work)
        if args.part in ("all", "scale"):
            results["scale"] = scale(args.n or (300 if args.quick else 10_000), work)
        if args.part in ("all", "interference"):
            results["interference"] = interference(args.n or (40 if args.quick else 500), args.rounds, work)
        if args.part == "screenshot":
            results["screenshot"] = screenshot(args.out, work, experiments=4 if args.quick else 14)
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
