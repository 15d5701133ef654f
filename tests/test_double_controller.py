"""Two controllers on one campaign, by every path we know of: refused while
the first is live, and fenced off when it is taken over. End to end, with the
``selflab`` command in subprocesses and a device log shared by processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import quadratic_config
from test_cli import start, wait_for, write

from selflab.controller.ledger import Ledger

pytestmark = pytest.mark.e2e

BUDGET = 40


def _config(tmp: Path, ledger: str, **overrides: Any) -> dict[str, Any]:
    options = {"delay_s": 0.05, "log_path": str(tmp / "device.jsonl"), "hold": str(tmp / "hold")}
    return quadratic_config(
        name="twice",
        instruments=[{"name": "q1", "driver": "labdrivers:HeldLogged", "capacity": 2, "options": options}],
        stop={"max_experiments": BUDGET},
        ledger=ledger,
        **overrides,
    )


def _completed(url: str) -> int:
    try:
        ledger = Ledger(url, create=False)
    except Exception:
        return 0
    try:
        return sum(e.kind == "completed" for e in ledger.events("twice"))
    except Exception:
        return 0
    finally:
        ledger.close()


def _check_once(tmp: Path, url: str, budget: int = BUDGET) -> list[dict[str, Any]]:
    """Nothing dispatched twice, nothing run twice on the device, the budget met."""
    ledger = Ledger(url, create=False)
    events = ledger.events("twice")
    ledger.close()
    dispatched = [e.experiment_id for e in events if e.kind == "dispatched"]
    assert len(dispatched) == len(set(dispatched)), "an experiment id was dispatched twice"
    done = [e.experiment_id for e in events if e.kind == "completed"]
    assert len(done) == len(set(done)) == budget
    terminal = Counter(e.experiment_id for e in events if e.kind in ("completed", "failed", "abandoned", "stale"))
    assert all(terminal[eid] == 1 for eid in dispatched)
    runs = [json.loads(line) for line in (tmp / "device.jsonl").read_text().splitlines()]
    seen = Counter(json.dumps(r["params"], sort_keys=True) for r in runs)
    assert max(seen.values()) == 1, "the same parameters ran twice on the device"
    return runs


def _refused(proc: subprocess.Popen[str], url: str) -> str:
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # (not refused: say who started, so that a failure in CI can be read)
        proc.kill()
        _, err = proc.communicate()
        ledger = Ledger(url, create=False)
        starts = [(e.payload.get("pid"), e.payload.get("epoch")) for e in ledger.events("twice") if e.kind == "campaign_started"]
        ledger.close()
        pytest.fail(f"the second controller (pid {proc.pid}) was not refused within 120 s; campaign_started "
                    f"(pid, epoch): {starts}; its stderr: {err!r}")
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selflab: "), err
    return lines[0]


@pytest.mark.parametrize("path", ["lock_file_deleted", "symlink", "hard_link"])
def test_a_second_controller_is_refused_on_sqlite_by_any_path(tmp_path: Path, path: str) -> None:
    db = tmp_path / "runs" / "twice.sqlite"
    url = f"sqlite:///{db}"
    first = start("run", str(write(tmp_path, _config(tmp_path, url))), "--quiet", cwd=tmp_path)
    try:
        wait_for(lambda: _completed(url) >= 3 or first.poll() is not None)
        (tmp_path / "hold").touch()  # the first controller stays live, with experiments in flight
        assert first.poll() is None, first.communicate()[1]
        if path == "lock_file_deleted":
            for lock in db.parent.glob("*.lock"):
                lock.unlink()
            second_url = url
        elif path == "symlink":
            (tmp_path / "elsewhere").mkdir()
            link = tmp_path / "elsewhere" / "link.sqlite"
            link.symlink_to(db)
            second_url = f"sqlite:///{link}"
        else:
            link = tmp_path / "hard.sqlite"
            os.link(db, link)
            second_url = f"sqlite:///{link}"
        second = start("run", str(write(tmp_path, _config(tmp_path, second_url), "second.yaml")), "--resume", "--quiet", cwd=tmp_path)
        line = _refused(second, url)
        (tmp_path / "hold").unlink()
        if path == "hard_link":
            assert "has 2 hard links" in line, line
            (tmp_path / "hard.sqlite").unlink()
        else:
            assert ("already being run by pid " + str(first.pid)) in line, line
        _, err = first.communicate(timeout=180)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
    runs = _check_once(tmp_path, url)
    assert {r["pid"] for r in runs} == {first.pid}


def _terminate_sessions(url: str) -> int:
    admin = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one())
    finally:
        admin.dispose()


@pytest.mark.postgres
def test_a_second_controller_is_refused_on_postgres_after_its_sessions_are_cut(postgres_url: str, tmp_path: Path) -> None:
    """An idle-session timeout, a pooler or a firewall cuts the first
    controller's database sessions: it carries on, and a second is still refused."""
    first = start("run", str(write(tmp_path, _config(tmp_path, postgres_url))), "--quiet", cwd=tmp_path)
    try:
        wait_for(lambda: _completed(postgres_url) >= 3 or first.poll() is not None)
        (tmp_path / "hold").touch()
        assert _terminate_sessions(postgres_url) >= 1
        second = start("run", str(write(tmp_path, _config(tmp_path, postgres_url), "second.yaml")), "--resume", "--quiet", cwd=tmp_path)
        assert ("already being run by pid " + str(first.pid)) in _refused(second, postgres_url)
        held_at = _completed(postgres_url)
        (tmp_path / "hold").unlink()
        wait_for(lambda: _completed(postgres_url) >= held_at + 2 or first.poll() is not None)
        assert _terminate_sessions(postgres_url) >= 1  # again, with experiments in flight
        _, err = first.communicate(timeout=180)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
    runs = _check_once(tmp_path, postgres_url)
    assert {r["pid"] for r in runs} == {first.pid}


def _freeze_between_writes(proc: subprocess.Popen[str], url: str) -> None:
    """SIGSTOP ``proc`` at a moment it holds no write lock on the ledger (a
    process frozen inside a write blocks every other writer, whoever they are)."""
    for _ in range(50):
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.05)
        engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg") if url.startswith("postgresql") else url,
                                  connect_args={} if url.startswith("postgresql") else {"timeout": 0.2})
        try:
            with engine.connect() as conn:
                if url.startswith("postgresql"):
                    with conn.begin():
                        free = conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": zlib.crc32(b"selflab:append")}).scalar_one()
                else:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    conn.exec_driver_sql("ROLLBACK")
                    free = True
        except sa.exc.OperationalError:
            free = False
        finally:
            engine.dispose()
        if free:
            return
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("could not catch the controller between two writes")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_frozen_controller_is_fenced_off_after_a_takeover(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    """The first controller freezes (SIGSTOP: a suspended VM) past its lease;
    a second takes the campaign over. When the first wakes up it appends
    nothing and dispatches nothing more: it says so in one line and exits 1."""
    url = f"sqlite:///{tmp_path / 'runs' / 'twice.sqlite'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    config = write(tmp_path, _config(tmp_path, url, stale_policy="drop"))
    first = start("run", str(config), "--quiet", "--lease", "1.5", cwd=tmp_path)
    second = None
    try:
        wait_for(lambda: _completed(url) >= 3 or first.poll() is not None)
        (tmp_path / "hold").touch()  # the first cannot finish the budget before it is frozen, however slow this machine
        assert first.poll() is None, first.communicate()[1]
        _freeze_between_writes(first, url)
        (tmp_path / "hold").unlink()
        time.sleep(2.0)  # past its lease
        second = start("run", str(config), "--resume", "--quiet", "--lease", "1.5", cwd=tmp_path)
        wait_for(lambda: _completed(url) >= 12 or second.poll() is not None)
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 1, (err, second.poll(), second.stderr.read() if second.poll() is not None and second.stderr else "")
        assert "lease_lost" in err and "another controller took campaign 'twice' over" in err, err
        _, err2 = second.communicate(timeout=180)
        assert second.returncode == 0, err2
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
    runs = _check_once(tmp_path, url)
    assert {r["pid"] for r in runs} == {first.pid, second.pid}
