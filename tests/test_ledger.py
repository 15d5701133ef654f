"""The ledger on a real SQLite file and on the Postgres server."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from selflab.controller.ledger import SCHEMA_VERSION, Ledger, LedgerError, NewEvent


def _events(n: int, campaign: str = "c") -> list[NewEvent]:
    out = []
    for i in range(1, n + 1):
        out.append(NewEvent(campaign=campaign, kind="proposed", experiment_id=i, payload={"params": {"x": i / 10}}))
    return out


def test_append_and_read_back_in_order(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    written = ledger.append(_events(3))
    ledger.append(_events(2, campaign="other"))
    back = ledger.events("c")
    assert [e.id for e in back] == [e.id for e in written]
    assert [e.experiment_id for e in back] == [1, 2, 3]
    assert back[0].payload == {"params": {"x": 0.1}, "fidelity": 1.0, "planner": "", "reason": {}}
    assert back[0].at.tzinfo is not None
    assert ledger.events("c", after=written[1].id) == back[2:]
    assert ledger.campaigns() == ["c", "other"]
    ledger.close()


def test_append_is_all_or_nothing(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    with pytest.raises(Exception):
        ledger.append([_events(1)[0], NewEvent(campaign="c", kind="completed", experiment_id=1, payload={"outcomes": "oops"})])
    assert ledger.events("c") == []
    with pytest.raises(ValueError, match="unknown event kind"):
        ledger.append([NewEvent(campaign="c", kind="exploded")])
    ledger.close()


def test_updates_and_deletes_are_refused_by_the_database(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    ledger.append(_events(2))
    for statement in ("UPDATE selflab_events SET kind = 'completed'", "DELETE FROM selflab_events"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with ledger.engine.begin() as conn:
                conn.exec_driver_sql(statement)
    assert [e.kind for e in ledger.events("c")] == ["proposed", "proposed"]
    ledger.close()


def test_names_that_look_like_sql_are_stored_verbatim(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    nasty = "x'); DROP TABLE selflab_events; --"
    ledger.append([NewEvent(campaign=nasty, kind="proposed", experiment_id=1, instrument="$(rm -rf /)", payload={"params": {"a": nasty}})])
    back = ledger.events(nasty)
    assert back[0].campaign == nasty and back[0].instrument == "$(rm -rf /)" and back[0].payload["params"]["a"] == nasty
    ledger.close()


def test_reopening_keeps_events_and_schema(ledger_url: str) -> None:
    Ledger(ledger_url).append(_events(2))
    ledger = Ledger(ledger_url, create=False)
    assert len(ledger.events("c")) == 2
    with ledger.engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT value FROM selflab_meta WHERE key = 'schema_version'").scalar()
    assert version == str(SCHEMA_VERSION)
    ledger.close()


def test_a_newer_schema_is_refused(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE selflab_meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'")
    ledger.close()
    with pytest.raises(LedgerError, match="newer than this selflab"):
        Ledger(ledger_url)


def test_a_foreign_database_is_refused(ledger_url: str) -> None:
    engine = sa.create_engine(Ledger(ledger_url).engine.url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE selflab_meta")
    engine.dispose()
    with pytest.raises(LedgerError, match="not a selflab ledger"):
        Ledger(ledger_url)


def test_a_file_that_is_not_a_database_gets_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("these are my lab notes, not a database\n" * 100)
    with pytest.raises(LedgerError) as info:
        Ledger(f"sqlite:///{path}")
    assert "\n" not in str(info.value) and "not a database" in str(info.value)
    assert path.read_text().startswith("these are my lab notes")


def test_other_sqlite_database_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "inventory.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE chemicals (name TEXT)")
    with pytest.raises(LedgerError, match="not a selflab ledger.*chemicals"):
        Ledger(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"chemicals"}


def test_missing_ledger_is_not_created_by_readers(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger at"):
        Ledger(f"sqlite:///{tmp_path / 'nope.sqlite'}", create=False)
    assert not (tmp_path / "nope.sqlite").exists()


def test_bad_url_is_a_ledger_error() -> None:
    with pytest.raises(LedgerError, match="not a database URL"):
        Ledger("not a url")


def test_sqlite_is_in_wal_mode(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    with ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    ledger.close()


def test_readers_never_block_on_a_writer(sqlite_url: str) -> None:
    """A reader in another process reads while this one holds a write open."""
    ledger = Ledger(sqlite_url)
    ledger.append(_events(3))
    path = sa.make_url(sqlite_url).database
    raw = sqlite3.connect(path, timeout=0.1)
    raw.execute("BEGIN IMMEDIATE")
    raw.execute(
        "INSERT INTO selflab_events (campaign, kind, experiment_id, at, recorded_at, payload) "
        "VALUES ('c', 'proposed', 99, '2026-01-01', '2026-01-01', '{}')"
    )
    code = (
        "import sys; from selflab.controller.ledger import Ledger; "
        f"print(len(Ledger({sqlite_url!r}, create=False).events('c')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    raw.rollback()
    raw.close()
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"
    ledger.close()


def test_many_threads_append_without_losing_events(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)

    def work(k: int) -> None:
        for i in range(20):
            ledger.append([NewEvent(campaign="c", kind="proposed", experiment_id=k * 100 + i, payload={"params": {}})])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [e.experiment_id for e in ledger.events("c")]
    assert sorted(ids) == sorted(k * 100 + i for k in range(4) for i in range(20))
    ledger.close()


def test_processes_creating_one_ledger_at_once_all_succeed(ledger_url: str) -> None:
    """A planner and its workers often start together on an empty database."""
    code = f"from selflab.controller.ledger import Ledger; Ledger({ledger_url!r}).close(); print('ok')"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in outs]
    ledger = Ledger(ledger_url, create=False)
    with ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM selflab_meta").scalar() == 2
    ledger.close()


# --- a Postgres session cut at the commit ---------------------------------------------------


def _cut_at_commit(monkeypatch: pytest.MonkeyPatch, url: str, *, after: bool, skip: int = 0) -> list[int]:
    """The next commit (after ``skip`` others) on any psycopg connection is cut: its session is ended
    by ``pg_terminate_backend`` before the commit reaches the server
    (``after=False``, a real cut), or the commit lands and the connection
    then breaks before its answer is read (``after=True``: that moment cannot
    be hit from outside, so it is injected). Returns the cut sessions' pids."""
    import psycopg

    original, cut, passed = psycopg.Connection.commit, [], [0]

    def commit(self: psycopg.Connection) -> None:
        if cut or passed[0] < skip:
            passed[0] += 1
            return original(self)
        cut.append(self.info.backend_pid)
        if after:
            original(self)
            self.close()
            raise psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")
        admin = sa.create_engine(sa.make_url(url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": cut[0]}).scalar_one()
        admin.dispose()
        return original(self)

    monkeypatch.setattr(psycopg.Connection, "commit", commit)
    return cut


@pytest.mark.postgres
@pytest.mark.parametrize("after", [False, True], ids=["rolled_back", "landed"])
def test_a_session_cut_at_the_commit_appends_once(postgres_url: str, monkeypatch: pytest.MonkeyPatch, after: bool) -> None:
    """Whether or not the cut commit landed, the append returns its events and
    the ledger holds each of them exactly once (the ids are looked up)."""
    ledger = Ledger(postgres_url)
    ledger.append([NewEvent(campaign="c", kind="proposed", experiment_id=1, payload={"params": {"x": 0.1}})])
    cut = _cut_at_commit(monkeypatch, postgres_url, after=after)
    batch = [NewEvent(campaign="c", kind="proposed", experiment_id=i, payload={"params": {"x": i / 10}}) for i in (2, 3)]
    written = ledger.append(batch)
    assert len(cut) == 1, "the commit was not cut"
    events = ledger.events("c")
    assert [e.experiment_id for e in events] == [1, 2, 3], events
    assert [e.id for e in events[1:]] == [e.id for e in written]
    ledger.close()


@pytest.mark.postgres
@pytest.mark.parametrize("after", [False, True], ids=["rolled_back", "landed"])
def test_a_workers_result_survives_a_session_cut_at_its_commit(postgres_url: str, monkeypatch: pytest.MonkeyPatch, after: bool) -> None:
    """A worker's result is recorded once, its claim marked done, whether the
    cut commit landed or not (before, the worker stopped and the result was lost)."""
    from selflab.controller import workqueue
    from selflab.controller.ledger import WORK

    ledger = Ledger(postgres_url)
    ledger.append([NewEvent(campaign="c", kind="proposed", experiment_id=1, payload={"params": {"x": 0.1}})],
                  work=[{"campaign": "c", "experiment_id": 1, "instrument": "q1", "state": "open", "params": {"x": 0.1},
                         "fidelity": 1.0, "cost": 1.0}])
    [claim] = workqueue.claim(ledger, "c", {"q1": 1}, "w", 30.0, lambda c: NewEvent(
        campaign="c", kind="dispatched", experiment_id=c.experiment_id, instrument="q1", payload={"cost": 1.0}))
    cut = _cut_at_commit(monkeypatch, postgres_url, after=after)
    written = workqueue.finish(ledger, "c", claim.experiment_id, "w", [NewEvent(
        campaign="c", kind="completed", experiment_id=1, instrument="q1", payload={"outcomes": {"y": 0.5}})])
    assert len(cut) == 1 and written is not None and [e.kind for e in written] == ["completed"]
    assert [e.kind for e in ledger.events("c")] == ["proposed", "dispatched", "completed"]
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.select(WORK.c.state)).scalars().all() == ["done"]
    ledger.close()


@pytest.mark.postgres
@pytest.mark.parametrize("after", [False, True], ids=["rolled_back", "landed"])
def test_claims_and_settlements_survive_a_session_cut_at_their_commit(postgres_url: str, monkeypatch: pytest.MonkeyPatch,
                                                                      after: bool) -> None:
    """A worker's claim and a controller's settlement (withdrawing open work)
    whose commit is cut: each experiment is claimed or settled once, with one
    event, and the caller gets what landed."""
    from selflab.controller import workqueue
    from selflab.controller.ledger import WORK

    ledger = Ledger(postgres_url)
    ledger.append([NewEvent(campaign="c", kind="proposed", experiment_id=i, payload={"params": {"x": i / 10}}) for i in (1, 2, 3)],
                  work=[{"campaign": "c", "experiment_id": i, "instrument": "q1", "state": "open", "params": {"x": i / 10},
                         "fidelity": 1.0, "cost": 1.0} for i in (1, 2, 3)])
    cut = _cut_at_commit(monkeypatch, postgres_url, after=after)
    calls: list[int] = []

    def dispatched(c: workqueue.Claim) -> NewEvent:
        calls.append(c.experiment_id)
        return NewEvent(campaign="c", kind="dispatched", experiment_id=c.experiment_id, instrument="q1", payload={"cost": 1.0, "slot": c.rank})

    claims = workqueue.claim(ledger, "c", {"q1": 2}, "w", 30.0, dispatched)
    assert len(cut) == 1 and [(c.experiment_id, c.rank) for c in claims] == [(1, 0), (2, 1)]
    assert calls == ([1, 2] if after else [1, 2, 1, 2])  # (run again when the cut commit had not landed)
    cut.clear()
    settled = workqueue.settle(ledger, "c", "open", "withdrawn", lambda eid, instrument: NewEvent(
        campaign="c", kind="abandoned", experiment_id=eid, instrument=instrument, payload={"reason": "not_dispatched"}))
    assert len(cut) == 1 and [e.experiment_id for e in settled] == [3]
    assert [(e.kind, e.experiment_id) for e in ledger.events("c")][3:] == [("dispatched", 1), ("dispatched", 2), ("abandoned", 3)]
    with ledger.engine.connect() as conn:
        assert dict(conn.execute(sa.select(WORK.c.experiment_id, WORK.c.state)).all()) == {1: "claimed", 2: "claimed", 3: "withdrawn"}
    ledger.close()


@pytest.mark.postgres
@pytest.mark.parametrize("after", [False, True], ids=["rolled_back", "landed"])
def test_a_persons_action_is_recorded_once_when_its_commit_is_cut(postgres_url: str, monkeypatch: pytest.MonkeyPatch, after: bool) -> None:
    """A note from the console or ``selflab note``, and a ``selflab space``
    edit, whose commit is cut: each is recorded once and returned (before, the
    person got a database error and, had it landed, a retry recorded it twice)."""
    from conftest import quadratic_config

    from selflab.controller.config import parse_config
    from selflab.controller.oversight import OversightWriter
    from selflab.controller.space_cmd import SpaceWriter
    from selflab.controller.space_edits import SpaceEdit

    ledger = Ledger(postgres_url)
    snapshot = parse_config(quadratic_config(ledger=postgres_url)).model_dump(mode="json")
    ledger.append([NewEvent(campaign="quad", kind="campaign_started", payload={"config": snapshot, "version": "x", "seed": 0, "clock": "wall"})])
    cut = _cut_at_commit(monkeypatch, postgres_url, after=after)
    with OversightWriter(ledger, "quad") as writer:
        note = writer.note("the lab is warm today", by="ada")
    assert len(cut) == 1 and note.kind == "note"
    cut.clear()
    edit = SpaceWriter(ledger, "quad").edit(SpaceEdit(op="widen", parameter="x", values=[0, 2]), by="ada")
    assert len(cut) == 1 and edit.kind == "space_changed"
    assert [(e.kind, e.id) for e in ledger.events("quad")][1:] == [("note", note.id), ("space_changed", edit.id)]
    ledger.close()


@pytest.mark.postgres
@pytest.mark.parametrize("after", [False, True], ids=["rolled_back", "landed"])
def test_an_attach_without_a_holder_is_recorded_once_when_its_commit_is_cut(postgres_url: str, monkeypatch: pytest.MonkeyPatch,
                                                                            after: bool) -> None:
    """``selflab attach`` with no controller running: the request commits, then
    the writer takes the lease to record it as attached, and that commit is
    cut. The person gets the attached experiment, the ledger holds it once and
    the lease is released (before, a database error, and a retry attached the
    experiment twice had the cut commit landed)."""
    from conftest import quadratic_config

    from selflab.controller.config import parse_config
    from selflab.controller.lease import active_holder
    from selflab.controller.oversight import OversightWriter

    ledger = Ledger(postgres_url)
    snapshot = parse_config(quadratic_config(ledger=postgres_url)).model_dump(mode="json")
    ledger.append([NewEvent(campaign="quad", kind="campaign_started", payload={"config": snapshot, "version": "x", "seed": 0, "clock": "wall"})])
    cut = _cut_at_commit(monkeypatch, postgres_url, after=after, skip=1)
    with OversightWriter(ledger, "quad") as writer:
        attached = writer.attach({"x": 0.4, "z": 0.4}, {"y": 0.5}, by="ada")
        assert len(cut) == 1, "the fulfilment's commit was not cut"
        assert attached.kind == "attached" and attached.payload["by"] == "ada"
        kinds = [e.kind for e in ledger.events("quad")]
        assert kinds == ["campaign_started", "attach_requested", "attached"], kinds
        assert writer.state().experiments[attached.experiment_id or 0].outcomes == {"y": 0.5}
    assert active_holder(ledger, "quad") is None
    ledger.close()


@pytest.mark.postgres
@pytest.mark.parametrize("after", [False, True], ids=["rolled_back", "landed"])
def test_a_start_whose_commit_is_cut_starts_once(postgres_url: str, monkeypatch: pytest.MonkeyPatch, after: bool) -> None:
    """The start's transaction (take the lease, replay, ``campaign_started``)
    has its commit cut: the study starts all the same, with one
    ``campaign_started``, holds the lease, and its appends pass the fence
    (before, the start failed with a database error)."""
    from selflab.controller.lease import active_holder
    from selflab.controller.study import Study
    from selflab.planners.baselines import RandomPlanner
    from selflab.planners.space import FloatParameter, Objective

    ledger = Ledger(postgres_url)  # (opening it commits the schema)
    cut = _cut_at_commit(monkeypatch, postgres_url, after=after)
    with Study.create("cut-start", [FloatParameter(name="x", low=0, high=1)], [Objective(name="y")],
                      ledger=ledger, planner=RandomPlanner(), seed=0) as study:
        assert len(cut) == 1, "the start's commit was not cut"
        (trial,) = study.ask()
        study.tell(trial.trial_id, {"y": 0.5})
        holder = active_holder(ledger, "cut-start")
        assert holder is not None and holder.epoch == 1
    assert [e.kind for e in ledger.events("cut-start")] == ["campaign_started", "proposed", "completed", "campaign_stopped"]
    ledger.close()
