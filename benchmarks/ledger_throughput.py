"""Ledger throughput: SQLite with one process, Postgres with a planner and 4 workers.

SQLite: one ``selflab run`` process drives a zero-duration simulator; the
figure is experiments (3 events, 2 durable transactions each) per second,
against raw ``sqlite3`` appends of the same events and commits in the same run.

Postgres: ``selflab run`` plans and queues, ``--workers`` ``selflab worker``
processes claim (``FOR UPDATE SKIP LOCKED``), run a zero-duration simulator
and record. The figure is completed experiments per second between the first
claim and the last result (process start-up excluded), against raw psycopg
appends of the same number of rows and commits from the same number of
processes.

    python benchmarks/ledger_throughput.py --backend sqlite --n 3000
    python benchmarks/ledger_throughput.py --backend postgres --workers 4 --n 600 \\
        --url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

SELFLAB = str(Path(sys.executable).with_name("selflab"))


def _config(n: int, ledger: str, remote: bool, capacity: int) -> dict[str, Any]:
    return {
        "name": "throughput",
        "parameters": [{"name": "x1", "type": "float", "low": -5, "high": 10}, {"name": "x2", "type": "float", "low": 0, "high": 15}],
        "objectives": [{"name": "y", "direction": "minimize"}],
        "instruments": [{"name": "sim", "driver": "branin", "capacity": capacity, "remote": remote}],
        "planner": {"kind": "random"},
        "stop": {"max_experiments": n},
        "clock": "wall",
        "ledger": ledger,
    }


def _span(ledger_url: str) -> tuple[int, int, float]:
    """(events, completed, seconds from first dispatch to last completion)."""
    from selflab.controller.ledger import Ledger

    ledger = Ledger(ledger_url, create=False)
    events = ledger.events("throughput")
    ledger.close()
    dispatched = [e.recorded_at for e in events if e.kind == "dispatched"]
    completed = [e.recorded_at for e in events if e.kind == "completed"]
    return len(events), len(completed), (max(completed) - min(dispatched)).total_seconds()


def _raw_sqlite(path: Path, transactions: int, rows: int) -> float:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE e (id INTEGER PRIMARY KEY, payload TEXT)")
    per = max(rows // transactions, 1)
    start, written = time.perf_counter(), 0
    while written < rows:
        with conn:
            for _ in range(min(per, rows - written)):
                conn.execute("INSERT INTO e (payload) VALUES (?)", ('{"outcomes": {"y": 1.0}}',))
                written += 1
    seconds = time.perf_counter() - start
    conn.close()
    return seconds


def _raw_pg_worker(url: str, table: str, transactions: int) -> None:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        for _ in range(transactions):
            with conn.begin():
                conn.exec_driver_sql(f"INSERT INTO {table} (payload) VALUES ('{{\"outcomes\": {{\"y\": 1.0}}}}')")
    engine.dispose()


def sqlite_run(n: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp())
    try:
        url = f"sqlite:///{tmp / 'ledger.sqlite'}"
        path = tmp / "lab.yaml"
        path.write_text(yaml.safe_dump(_config(n, url, remote=False, capacity=1)))
        subprocess.run([SELFLAB, "run", str(path), "--quiet"], check=True, cwd=tmp)
        events, completed, seconds = _span(url)
        raw = _raw_sqlite(tmp / "raw.sqlite", transactions=2 * n, rows=events)
    finally:
        shutil.rmtree(tmp)
    return {"backend": "sqlite", "processes": 1, "experiments": completed, "events": events, "seconds": seconds,
            "experiments_per_second": completed / seconds, "raw_sqlite_seconds": raw,
            "raw_experiments_per_second": completed / raw, "ratio_vs_raw": raw / seconds}


def postgres_run(n: int, workers: int, base_url: str) -> dict[str, Any]:
    admin = sa.create_engine(sa.make_url(base_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    name = f"selflab_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(base_url).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    tmp = Path(tempfile.mkdtemp())
    try:
        path = tmp / "lab.yaml"
        path.write_text(yaml.safe_dump(_config(n, url, remote=True, capacity=4 * workers)))
        planner = subprocess.Popen([SELFLAB, "run", str(path), "--quiet"], cwd=tmp)
        procs = [subprocess.Popen([SELFLAB, "worker", str(path), "--quiet"], cwd=tmp) for _ in range(workers)]
        planner.wait(timeout=1800)
        for p in procs:
            p.wait(timeout=120)
        events, completed, seconds = _span(url)
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE raw_events (id BIGSERIAL PRIMARY KEY, payload TEXT)")
        engine.dispose()
        per = 3 * n // workers  # proposed, claim+dispatched, completed: three transactions per experiment
        start = time.perf_counter()
        ctx = multiprocessing.get_context("spawn")
        raws = [ctx.Process(target=_raw_pg_worker, args=(url, "raw_events", per)) for _ in range(workers)]
        for p in raws:
            p.start()
        for p in raws:
            p.join()
        raw = time.perf_counter() - start
    finally:
        shutil.rmtree(tmp)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    return {"backend": "postgres", "processes": workers + 1, "workers": workers, "experiments": completed, "events": events,
            "seconds": seconds, "experiments_per_second": completed / seconds, "raw_psycopg_seconds": raw,
            "raw_experiments_per_second": completed / raw, "ratio_vs_raw": raw / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--n", type=int, default=2000, help="experiments")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test", help="a Postgres database to create a scratch database from")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    result = sqlite_run(args.n) if args.backend == "sqlite" else postgres_run(args.n, args.workers, args.url)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
