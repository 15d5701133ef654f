"""The ledger against the world: raw SQL from other connections, damaged
files, readers that must not write, ``--resume`` with nothing to resume, and
``selflab stop`` when the recorded controller's pid is someone else's."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from conftest import quadratic_config
from test_cli import SELFLAB, env, write

from selflab.controller.cli import main
from selflab.controller.ledger import SCHEMA_VERSION, Ledger, NewEvent, sqlite_path

# --- the append-only ledger against raw SQL from any connection ---------------------------

_ROW = "(1, 'c', 'completed', 1, {at}, {at}, '{{\"outcomes\": {{\"yield\": 0.999}}}}')"
_COLUMNS = "(id, campaign, kind, experiment_id, at, recorded_at, payload)"


@contextlib.contextmanager
def _raw(url: str) -> Iterator[Callable[[str], str | None]]:
    """A plain sqlite3 or psycopg connection, not the ledger's: ``attempt(sql)``
    commits the statement, or rolls it back and returns the error."""
    path = sqlite_path(url)
    conn: sqlite3.Connection | psycopg.Connection
    if path is not None:
        conn, errors = sqlite3.connect(path), (sqlite3.DatabaseError,)
    else:
        conn = psycopg.connect(sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
        errors = (psycopg.Error,)  # type: ignore[assignment]

    def attempt(sql: str) -> str | None:
        try:
            conn.execute(sql)
        except errors as exc:
            conn.rollback()
            return str(exc)
        conn.commit()
        return None

    try:
        yield attempt
    finally:
        conn.close()


def test_raw_sql_cannot_replace_truncate_or_rewrite_an_event(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    ledger.append([NewEvent(campaign="c", kind="completed", experiment_id=1, payload={"outcomes": {"yield": 0.169}})])
    before = ledger.events("c")
    ledger.close()
    if ledger_url.startswith("sqlite"):
        row = _ROW.format(at="'2030-01-01 00:00:00.000000'")
        rewrites = [
            f"INSERT OR REPLACE INTO selflab_events {_COLUMNS} VALUES {row}",
            f"REPLACE INTO selflab_events {_COLUMNS} VALUES {row}",
            f"INSERT INTO selflab_events {_COLUMNS} VALUES {row} ON CONFLICT (id) DO UPDATE SET payload = excluded.payload",
        ]
    else:
        row = _ROW.format(at="'2030-01-01 00:00:00+00'")
        rewrites = [
            "TRUNCATE selflab_events",
            "TRUNCATE selflab_events, selflab_work CASCADE",
            f"INSERT INTO selflab_events {_COLUMNS} VALUES {row} ON CONFLICT (id) DO UPDATE SET payload = excluded.payload",
        ]
    rewrites += ["UPDATE selflab_events SET payload = '{\"outcomes\": {\"yield\": 0.999}}'", "DELETE FROM selflab_events"]
    with _raw(ledger_url) as attempt:
        for sql in rewrites:
            error = attempt(sql)
            assert error is not None and "append-only" in error, (sql, error)
        assert attempt(f"INSERT INTO selflab_events {_COLUMNS} VALUES {row.replace('(1,', '(1000,', 1)}") is None  # appending is fine
    reader = Ledger(ledger_url, create=False)
    after = reader.events("c")
    reader.close()
    assert after[0] == before[0] and after[0].payload["outcomes"] == {"yield": 0.169} and len(after) == 2


def test_raw_sql_cannot_rewrite_the_ledger_meta_but_an_upgrade_may_raise_its_schema(ledger_url: str) -> None:
    Ledger(ledger_url).close()
    rewrites = [
        "UPDATE selflab_meta SET value = 'other' WHERE key = 'application'",
        "UPDATE selflab_meta SET value = '1' WHERE key = 'schema_version'",
        "UPDATE selflab_meta SET value = 'two' WHERE key = 'schema_version'",
        "DELETE FROM selflab_meta WHERE key = 'schema_version'",
        "INSERT INTO selflab_meta (key, value) VALUES ('application', 'x') ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    ]
    if ledger_url.startswith("sqlite"):
        rewrites += ["INSERT OR REPLACE INTO selflab_meta (key, value) VALUES ('application', 'other')",
                     "REPLACE INTO selflab_meta (key, value) VALUES ('schema_version', '99')"]
    else:
        rewrites += ["TRUNCATE selflab_meta"]
    with _raw(ledger_url) as attempt:
        for sql in rewrites:
            error = attempt(sql)
            assert error is not None and "append-only" in error, (sql, error)
        assert attempt("INSERT INTO selflab_meta (key, value) VALUES ('note', 'a new key')") is None
    reader = Ledger(ledger_url, create=False)
    with reader.engine.connect() as conn:
        meta = dict(conn.exec_driver_sql("SELECT key, value FROM selflab_meta").all())
    reader.close()
    assert meta == {"application": "selflab", "schema_version": str(SCHEMA_VERSION), "note": "a new key"}
    with _raw(ledger_url) as attempt:  # what a migration does: raise schema_version (never lower it)
        assert attempt(f"UPDATE selflab_meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'") is None
        assert "append-only" in (attempt(f"UPDATE selflab_meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'") or "")


# --- damaged ledgers: one line, exit 2, never a traceback ---------------------------------


@pytest.fixture(scope="module")
def real_ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A ledger of a real (tiny) campaign, written by ``selflab run``; and its config."""
    tmp = tmp_path_factory.mktemp("real")
    config = write(tmp, quadratic_config(stop={"max_experiments": 6}, ledger=f"sqlite:///{tmp / 'real.sqlite'}"))
    out = subprocess.run([SELFLAB, "run", str(config), "--quiet"], cwd=tmp, env=env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return tmp / "real.sqlite", config


def _sql(*statements: str) -> Callable[[Path], None]:
    """Damage by SQL, as a careless script or a bad disk might (the triggers dropped first)."""

    def damage(path: Path) -> None:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
                conn.execute(f'DROP TRIGGER "{name}"')
            for statement in statements:
                conn.execute(statement)
            conn.commit()
            conn.execute("PRAGMA journal_mode=DELETE")  # (one self-contained file)

    return damage


def _truncate(keep: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: keep(len(data))])

    return damage


def _overwrite(seed: int) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        rng = random.Random(seed)
        data = bytearray(path.read_bytes())
        at = rng.randrange(100, len(data) - 64)  # (the 100-byte header intact)
        data[at : at + 64] = rng.randbytes(64)
        path.write_bytes(bytes(data))

    return damage


_REBUILT = [  # selflab_events without its NOT NULL constraints, so a row can lose its time
    "CREATE TABLE plain AS SELECT * FROM selflab_events",
    "DROP TABLE selflab_events",
    "ALTER TABLE plain RENAME TO selflab_events",
]
_LAST_COMPLETED = "(SELECT max(id) FROM selflab_events WHERE kind = 'completed')"
DAMAGES: dict[str, Callable[[Path], None]] = {
    "empty": _truncate(lambda n: 0),
    "truncated-50": _truncate(lambda n: 50),
    "truncated-1000": _truncate(lambda n: 1000),
    "truncated-page": _truncate(lambda n: 4096 + 100),
    "truncated-half": _truncate(lambda n: n // 2),
    "truncated-tail": _truncate(lambda n: n - 100),
    "garbage": lambda path: path.write_bytes(random.Random(7).randbytes(16384)),
    "text": lambda path: path.write_text("these are my lab notes\n" * 500),
    "events-dropped": _sql("DROP TABLE selflab_events"),
    "events-renamed": _sql("ALTER TABLE selflab_events RENAME TO selflab_events_old"),
    "column-renamed": _sql("ALTER TABLE selflab_events RENAME COLUMN kind TO what"),
    "version-not-a-number": _sql("UPDATE selflab_meta SET value = 'two' WHERE key = 'schema_version'"),
    "payload-not-json": _sql(f"UPDATE selflab_events SET payload = '{{\"outcomes\": {{\"y\": 0.5' WHERE id = {_LAST_COMPLETED}"),
    "payload-not-an-object": _sql(f"UPDATE selflab_events SET payload = '[1, 2]' WHERE id = {_LAST_COMPLETED}"),
    "payload-wrong-shape": _sql(f"UPDATE selflab_events SET payload = '{{\"outcomes\": \"lots\"}}' WHERE id = {_LAST_COMPLETED}"),
    "started-without-config": _sql("UPDATE selflab_events SET payload = '{}' WHERE kind = 'campaign_started'"),
    "unknown-kind": _sql(f"UPDATE selflab_events SET kind = 'exploded' WHERE id = {_LAST_COMPLETED}"),
    "null-at": _sql(*_REBUILT, f"UPDATE selflab_events SET at = NULL WHERE id = {_LAST_COMPLETED}"),
    "at-not-a-time": _sql(f"UPDATE selflab_events SET at = 'last tuesday' WHERE id = {_LAST_COMPLETED}"),
}
FLIPS = {f"overwritten-{seed}": _overwrite(seed) for seed in range(24)}


def _commands(url: str, config: Path) -> list[list[str]]:
    return [["status", "--ledger", url, "--campaign", "quad"], ["status", "--ledger", url, "--json"],
            ["export", "--ledger", url], ["run", str(config), "--resume", "--quiet", "--ledger", url]]


def _cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def _damaged_copy(real: Path, tmp_path: Path, name: str, damage: Callable[[Path], None]) -> Path:
    path = tmp_path / f"{name}.sqlite"
    shutil.copyfile(real, path)
    damage(path)
    return path


@pytest.mark.parametrize("name", list(DAMAGES))
def test_a_damaged_ledger_gets_one_line_and_exit_2_and_stays_as_it_was(
        name: str, real_ledger: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _damaged_copy(real_ledger[0], tmp_path, name, DAMAGES[name])
    damaged = path.read_bytes()
    for argv in _commands(f"sqlite:///{path}", real_ledger[1]):
        code, out, err = _cli(capsys, argv)
        assert code == 2 and out == "", (argv, code, err)
        [line] = err.splitlines()
        assert line.startswith("selflab: ") and "internal error" not in line, (argv, line)
        assert path.read_bytes() == damaged, f"{argv[0]} changed a damaged ledger"


def test_damage_in_the_data_names_the_ledger_and_what_to_do(real_ledger: tuple[Path, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    for name, expected in [("payload-not-json", "cannot be decoded"), ("unknown-kind", "'exploded' is not an event kind"),
                           ("null-at", "at: "), ("version-not-a-number", "schema_version is 'two'"),
                           ("events-dropped", "selflab_events table is missing"), ("truncated-half", "malformed")]:
        path = _damaged_copy(real_ledger[0], tmp_path, name, DAMAGES[name])
        _, _, err = _cli(capsys, ["status", "--ledger", f"sqlite:///{path}"])
        assert err.startswith(f"selflab: ledger sqlite:///{path} is damaged: ") and expected in err, err
        assert err.rstrip().endswith("restore it from a backup, or point --ledger elsewhere"), err


def test_random_overwrites_never_give_a_traceback(real_ledger: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Bytes overwritten where SQLite cannot notice (free space) may go unseen;
    anything else is the one-line ledger error."""
    refused = 0
    for name, damage in FLIPS.items():
        path = _damaged_copy(real_ledger[0], tmp_path, name, damage)
        for argv in _commands(f"sqlite:///{path}", real_ledger[1])[:3]:
            code, _, err = _cli(capsys, argv)
            assert code in (0, 2) and "internal error" not in err and "Traceback" not in err, (name, argv, err)
            if code == 2:
                [line] = err.splitlines()
                assert line.startswith("selflab: "), (name, line)
                refused += 1
    assert refused > 0, "no overwrite hit anything SQLite or selflab could notice: the test tests nothing"


def test_the_console_script_on_a_damaged_ledger_prints_one_line(real_ledger: tuple[Path, Path], tmp_path: Path) -> None:
    path = _damaged_copy(real_ledger[0], tmp_path, "truncated", DAMAGES["truncated-half"])
    for argv in _commands(f"sqlite:///{path}", real_ledger[1]):
        out = subprocess.run([SELFLAB, *argv], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and out.stdout == "", out
        [line] = out.stderr.splitlines()
        assert line.startswith(f"selflab: ledger sqlite:///{path} is damaged: "), line


# --- readers never write ----------------------------------------------------------------


def _journal_mode(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def test_status_and_export_leave_an_empty_file_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    for command in ("status", "export"):
        code, out, err = _cli(capsys, [command, "--ledger", f"sqlite:///{path}"])
        assert code == 2 and out == "" and err == f"selflab: {path} is empty: no selflab ledger there\n"
        assert path.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_status_and_export_never_change_the_ledger_file(journal: str, real_ledger: tuple[Path, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "copy.sqlite"
    shutil.copyfile(real_ledger[0], path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA journal_mode={journal}")
    before = path.read_bytes()
    assert _journal_mode(path) == journal
    url = f"sqlite:///{path}"
    for argv in (["status", "--ledger", url], ["status", "--ledger", url, "--json"], ["export", "--ledger", url, "--format", "jsonl"]):
        code, out, err = _cli(capsys, argv)
        assert code == 0 and out, err
    assert path.read_bytes() == before and _journal_mode(path) == journal


# --- --resume with nothing to resume ----------------------------------------------------


def test_resume_without_a_ledger_file_refuses_and_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    config = write(tmp_path, quadratic_config())  # (its ledger: runs/quad.sqlite)
    code, _, err = _cli(capsys, ["run", str(config), "--resume", "--quiet"])
    assert (code, err) == (2, "selflab: nothing to resume: there is no ledger at runs/quad.sqlite; run without --resume to start campaign 'quad'\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.yaml"]


def test_resume_on_an_empty_file_refuses_and_leaves_it_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    config = write(tmp_path, quadratic_config(ledger=f"sqlite:///{path}"))
    code, _, err = _cli(capsys, ["run", str(config), "--resume", "--quiet"])
    assert (code, err) == (2, f"selflab: nothing to resume: ledger {path} holds no campaign 'quad'; run without --resume to start it\n")
    assert path.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite", "lab.yaml"]


def test_resume_of_a_campaign_the_ledger_does_not_hold_refuses(ledger_url: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    ledger = Ledger(ledger_url)
    ledger.append([NewEvent(campaign="someone-else", kind="campaign_stopped", payload={"reason": "interrupted"})])
    ledger.close()
    config = write(tmp_path, quadratic_config(ledger=ledger_url))
    code, _, err = _cli(capsys, ["run", str(config), "--resume", "--quiet"])
    shown = sa.make_url(ledger_url).render_as_string(hide_password=True)
    assert (code, err) == (2, f"selflab: nothing to resume: ledger {shown} holds no campaign 'quad'; run without --resume to start it\n")
    reader = Ledger(ledger_url, create=False)
    assert reader.campaigns() == ["someone-else"] and reader.events("quad") == []
    reader.close()


# --- selflab stop signals only the campaign's own controller -------------------------------


def _started(ledger_url: str, campaign: str, pid: int, **identity: float) -> None:
    ledger = Ledger(ledger_url)
    ledger.append([NewEvent(campaign=campaign, kind="campaign_started", payload={
        "config": quadratic_config(name=campaign), "version": "0", "seed": 0, "clock": "wall",
        "host": socket.gethostname(), "pid": pid, **identity})])
    ledger.close()


def test_stop_never_signals_a_process_that_now_has_the_controllers_pid(ledger_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        _started(ledger_url, "quad", bystander.pid, process_started=12345.0)  # a crashed controller's pid, now reused
        _started(ledger_url, "old", bystander.pid)  # recorded before selflab kept the process start time
        code, out, err = _cli(capsys, ["stop", "--ledger", ledger_url, "--campaign", "quad", "--wait", "2"])
        assert code == 2 and out == "", err
        [line] = err.splitlines()
        assert line.startswith("selflab stop: campaign 'quad': ") and "nothing was signalled" in line, line
        assert f"pid {bystander.pid} on host {socket.gethostname()!r}" in line and "belongs to another process" in line
        code, _, err = _cli(capsys, ["stop", "--ledger", ledger_url, "--campaign", "old", "--wait", "2"])
        assert code == 2 and "nothing was signalled" in err and err.count("\n") == 1, err
        time.sleep(0.3)
        assert bystander.poll() is None, "selflab stop signalled a process that is not the campaign's controller"
    finally:
        bystander.kill()
        bystander.wait()


def test_stop_refuses_a_controller_that_is_gone(ledger_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _started(ledger_url, "quad", gone.pid, process_started=time.time())
    code, _, err = _cli(capsys, ["stop", "--ledger", ledger_url, "--campaign", "quad", "--wait", "2"])
    assert code == 2 and "is gone" in err and "nothing was signalled" in err and err.count("\n") == 1, err
