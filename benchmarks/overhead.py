"""Controller overhead per experiment: ledger writes plus dispatch.

Runs a campaign of N experiments (default 5,000) on a zero-duration simulator
(Branin, simulated clock) with the random planner, and splits the wall time
into the planner, the instrument and the rest, which is the controller's own
overhead (routing, ledger writes, projection, task dispatch). As a baseline
measured in the same run it appends the same number of events to a SQLite
file with the raw ``sqlite3`` module, one transaction per event batch, with
the same pragmas (WAL, synchronous=FULL): the floor any durable ledger pays.

    python benchmarks/overhead.py --n 5000 --capacity 1 [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from selflab.controller.campaign import Campaign
from selflab.controller.config import parse_config
from selflab.controller.ledger import Ledger


class Timed:
    """Wraps a callable or coroutine function and adds up the seconds spent in it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap_sync(self, fn: Any) -> Any:
        def inner(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1

        return inner

    def wrap_async(self, fn: Any) -> Any:
        async def inner(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1

        return inner


def run_campaign(n: int, capacity: int, workdir: Path) -> dict[str, Any]:
    config = parse_config({
        "name": "overhead",
        "seed": 0,
        "parameters": [{"name": "x1", "type": "float", "low": -5, "high": 10},
                       {"name": "x2", "type": "float", "low": 0, "high": 15}],
        "objectives": [{"name": "y", "direction": "minimize"}],
        "instruments": [{"name": "sim", "driver": "branin", "capacity": capacity}],
        "planner": {"kind": "random"},
        "stop": {"max_experiments": n},
        "ledger": f"sqlite:///{workdir / 'overhead.sqlite'}",
    })
    ledger = Ledger(config.ledger_url)
    campaign = Campaign(config, ledger)
    planner_time, instrument_time, ledger_time = Timed(), Timed(), Timed()
    ledger.append = ledger_time.wrap_sync(ledger.append)  # type: ignore[method-assign]
    campaign.planner.propose = planner_time.wrap_sync(campaign.planner.propose)  # type: ignore[method-assign]
    for station in campaign.stations:
        station.driver.run = instrument_time.wrap_async(station.driver.run)
        station.driver.connect = instrument_time.wrap_async(station.driver.connect)  # botorch import: not overhead
    start = time.perf_counter()
    stop = asyncio.run(campaign.run())
    total = time.perf_counter() - start
    events = len(ledger.events("overhead"))
    ledger.close()
    assert stop.reason == "max_experiments", stop
    overhead = total - planner_time.seconds - instrument_time.seconds
    return {
        "experiments": n,
        "capacity": capacity,
        "events": events,
        "total_seconds": total,
        "planner_seconds": planner_time.seconds,
        "instrument_seconds": instrument_time.seconds,
        "overhead_seconds": overhead,
        "ledger_seconds": ledger_time.seconds,
        "ledger_appends": ledger_time.calls,
        "overhead_ms_per_experiment": 1e3 * overhead / n,
        "total_ms_per_experiment": 1e3 * total / n,
    }


def raw_sqlite_baseline(events: int, transactions: int, workdir: Path) -> float:
    """Seconds to append ``events`` rows in ``transactions`` commits with raw sqlite3."""
    conn = sqlite3.connect(workdir / "raw.sqlite")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE e (id INTEGER PRIMARY KEY, campaign TEXT, kind TEXT, experiment_id INT, "
                 "instrument TEXT, at TEXT, recorded_at TEXT, payload TEXT)")
    payload = json.dumps({"params": {"x1": 1.2345, "x2": 6.789}, "fidelity": 1.0, "reason": {"strategy": "random"}})
    per = max(events // transactions, 1)
    start = time.perf_counter()
    written = 0
    while written < events:
        with conn:
            for _ in range(min(per, events - written)):
                conn.execute("INSERT INTO e (campaign, kind, experiment_id, instrument, at, recorded_at, payload) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", ("overhead", "completed", written, "sim", "t", "t", payload))
                written += 1
    seconds = time.perf_counter() - start
    conn.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="experiments (default 5000)")
    parser.add_argument("--capacity", type=int, default=1, help="instrument slots (default 1)")
    parser.add_argument("--json", metavar="FILE", help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_campaign(args.n, args.capacity, Path(tmp))
        # One transaction for proposed+dispatched per batch, one per completion.
        transactions = args.n + -(-args.n // args.capacity)
        raw = raw_sqlite_baseline(result["events"], transactions, Path(tmp))
    result["raw_sqlite_seconds"] = raw
    result["raw_sqlite_ms_per_experiment"] = 1e3 * raw / args.n
    result["overhead_vs_raw_sqlite"] = result["overhead_seconds"] / raw
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
