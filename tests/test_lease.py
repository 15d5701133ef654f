"""One controller per campaign: the lease, its fencing epoch, and what a
controller that loses it does; requeues and starts that survive a crash."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import quadratic_config

from selflab.controller import lease, workqueue
from selflab.controller.campaign import Campaign, StopInfo
from selflab.controller.config import parse_config
from selflab.controller.ledger import LEASES, LeaseLost, Ledger, LedgerError, NewEvent
from selflab.controller.projection import CampaignState


def _take(ledger: Ledger, campaign: str) -> int:
    with ledger.transaction() as conn:
        return lease.acquire(conn, campaign)


def _orphan(ledger: Ledger, campaign: str) -> None:
    """Make the current holder look like a controller on another host whose
    lease ran out (a frozen VM, a cut network)."""
    with ledger.engine.begin() as conn:
        conn.execute(sa.update(LEASES).where(LEASES.c.campaign == campaign)
                     .values(host="elsewhere", expires_at=datetime.now(UTC) - timedelta(seconds=1)))


def test_a_live_lease_refuses_a_second_controller_until_released(ledger_url: str) -> None:
    first, second = Ledger(ledger_url), Ledger(ledger_url)
    epoch = _take(first, "c")
    assert first.writer_active("c") is True and second.writer_active("c") is True
    with pytest.raises(LedgerError, match=r"already being run by pid \d+ on host"):
        _take(second, "c")
    assert _take(second, "another-campaign") == 1
    lease.release(first, "c", epoch)
    assert second.writer_active("c") is False
    assert _take(second, "c") == epoch + 1
    first.close()
    second.close()


@pytest.mark.parametrize("step_s", [3600.0, -1.0, 1.0])
def test_a_clock_step_does_not_make_a_live_controller_look_dead(ledger_url: str, step_s: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step of the system clock (an NTP step, a VM resumed from a snapshot)
    moves the boot time Linux reports, and with it every process's creation
    time in seconds since the epoch: the holder, still running, is still the
    holder, and a second controller is refused rather than let take over."""
    import psutil._pslinux as linux

    first, second = Ledger(ledger_url), Ledger(ledger_url)
    _take(first, "c")
    booted = linux.boot_time()
    monkeypatch.setattr(linux, "boot_time", lambda: booted + step_s)  # (what /proc/stat's btime reads after the step)
    with pytest.raises(LedgerError, match=r"already being run by pid \d+ on host"):
        _take(second, "c")
    first.close()
    second.close()


def test_a_lease_an_older_selflab_took_still_names_its_live_holder(ledger_url: str) -> None:
    """Rows written before :func:`~selflab.controller.identity.process_identity`
    hold the creation time since the epoch: a live holder is still live, and
    one whose pid now belongs to another process is not."""
    import os

    from selflab.controller.identity import process_started

    ledger = Ledger(ledger_url)
    for campaign, started, live in (("live", process_started(os.getpid()), True), ("reused", time.time() - 5.0, False)):
        _take(ledger, campaign)
        with ledger.engine.begin() as conn:
            conn.execute(sa.update(LEASES).where(LEASES.c.campaign == campaign).values(process_started=started))
        assert (lease.active_holder(ledger, campaign) is not None) is live, campaign
    ledger.close()


@pytest.mark.postgres
def test_a_second_controller_stuck_behind_a_held_write_lock_is_refused_promptly(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first controller holds the campaign's lease and sits inside a write
    transaction (holding the append lock) without ending it: a second
    controller starting on that campaign is refused within the bound, naming
    the holder, instead of waiting for ever; the ledger is unchanged."""
    from selflab.controller.study import Study

    monkeypatch.setattr(lease, "START_LOCK_WAIT_S", 1.0)
    config = quadratic_config(name="stuck", ledger=postgres_url)
    with Study.open(config) as study:
        study.ask(1)
        reader = Ledger(postgres_url)
        before = len(reader.events("stuck"))
        with study.ledger.transaction():  # (the first is stuck inside a write: its append lock is held)
            started = time.monotonic()
            with pytest.raises(LedgerError, match=r"already being run by pid \d+ on host"):
                Study.open(config, resume=True)
            waited = time.monotonic() - started
        assert 0.9 <= waited < 15, f"refused after {waited:.1f} s"
        assert len(reader.events("stuck")) == before, "the refused controller wrote nothing"
        study.ask(1)  # (the first carries on)
        reader.close()


@pytest.mark.postgres
def test_a_stray_session_holding_the_write_lock_is_named_not_waited_on(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No live controller, but some session sits in a transaction holding the
    ledger's append lock (a process frozen mid-write): a controller starting
    is refused within the bound, saying what holds it up and how to end it."""
    from selflab.controller.ledger_schema import APPEND_LOCK
    from selflab.controller.study import Study

    monkeypatch.setattr(lease, "START_LOCK_WAIT_S", 1.0)
    config = quadratic_config(name="stray", ledger=postgres_url)
    Ledger(postgres_url).close()  # (the ledger exists)
    stray = sa.create_engine(sa.make_url(postgres_url).set(drivername="postgresql+psycopg"))
    try:
        with stray.connect() as conn, conn.begin():
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": APPEND_LOCK})
            with pytest.raises(LedgerError, match="another session holds the ledger's write lock.*pg_terminate_backend"):
                Study.open(config)
        with Study.open(config) as study:  # (the session gone, the campaign starts)
            assert len(study.ask(1)) == 1
    finally:
        stray.dispose()


def test_a_controller_that_lost_its_lease_can_append_nothing(ledger_url: str) -> None:
    old, new = Ledger(ledger_url), Ledger(ledger_url)
    epoch = _take(old, "c")
    old.fence("c", epoch)
    old.append([NewEvent(campaign="c", kind="proposed", experiment_id=1, payload={"params": {"x": 0.5}})])
    _orphan(new, "c")
    assert _take(new, "c") == epoch + 1
    with pytest.raises(LeaseLost, match="another controller"):
        old.append([NewEvent(campaign="c", kind="dispatched", experiment_id=1, instrument="q1", payload={"cost": 1.0})])
    assert not lease.renew(old, "c", epoch), "the old epoch cannot renew the lease either"
    # A worker (unfenced) and the new controller still append.
    new.append([NewEvent(campaign="c", kind="abandoned", experiment_id=1, payload={"reason": "not_dispatched"})])
    assert [e.kind for e in new.events("c")] == ["proposed", "abandoned"]
    old.close()
    new.close()


def test_a_campaign_that_loses_its_lease_stops_dispatching(ledger_url: str) -> None:
    """Another controller takes the campaign over mid-run: the first one's
    next append is refused by the database, it aborts its experiments, sends
    nothing more to its instrument and stops with ``lease_lost``."""
    config = parse_config({**quadratic_config(
        instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "capacity": 2, "options": {"delay_s": 0.03}}],
        stop={"max_experiments": 400}), "ledger": ledger_url})
    ledger, intruder = Ledger(ledger_url), Ledger(ledger_url)
    campaign = Campaign(config, ledger)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.setdefault("stop", asyncio.run(campaign.run())))
    thread.start()
    deadline = time.monotonic() + 60
    while sum(e.kind == "completed" for e in intruder.events("quad")) < 5:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.02)
    _orphan(intruder, "quad")
    with intruder.transaction() as conn:
        epoch = lease.acquire(conn, "quad")
        taken_at = conn.execute(sa.text("SELECT max(id) FROM selflab_events")).scalar_one()
    thread.join(timeout=60)
    assert not thread.is_alive()
    stop: StopInfo = result["stop"]
    assert stop.reason == "lease_lost" and "another controller" in stop.detail
    with intruder.engine.connect() as conn:
        late = conn.execute(sa.text("SELECT count(*) FROM selflab_events WHERE id > :m AND epoch < :e"),
                            {"m": taken_at, "e": epoch}).scalar_one()
    assert late == 0, "the fenced controller appended after the takeover"
    events = intruder.events("quad")
    dispatched = [e.experiment_id for e in events if e.kind == "dispatched"]
    assert len(campaign.stations[0].driver.sent) == len(dispatched), "something was sent to the device without a dispatch in the ledger"
    ledger.close()
    intruder.close()


def test_requeued_params_survive_a_second_crash(sqlite_url: str) -> None:
    """A stale experiment's requeue is a ledger fact: a controller that dies
    again before dispatching it still owes it after the next resume."""
    cfg = quadratic_config(stop={"max_experiments": 3})
    ledger = Ledger(sqlite_url)
    snapshot = parse_config(cfg).model_dump(mode="json")
    start = {"config": snapshot, "version": "x", "seed": 0, "clock": "wall"}
    ledger.append([
        NewEvent(campaign="quad", kind="campaign_started", payload=start),
        NewEvent(campaign="quad", kind="proposed", experiment_id=1, payload={"params": {"x": 0.1, "z": 0.2}}),
        NewEvent(campaign="quad", kind="dispatched", experiment_id=1, instrument="q1", payload={"cost": 1.0}),
        # resumed: 1 is stale and owed; its requeue (2) is proposed, then the controller dies again
        NewEvent(campaign="quad", kind="campaign_started", payload={**start, "resumed": True}),
        NewEvent(campaign="quad", kind="stale", experiment_id=1, instrument="q1", payload={"requeue": True}),
        NewEvent(campaign="quad", kind="proposed", experiment_id=2,
                 payload={"params": {"x": 0.1, "z": 0.2}, "reason": {"strategy": "requeue", "requeue_of": 1}}),
    ])
    assert [e.experiment_id for e in CampaignState.replay("quad", ledger.events("quad")).requeues_owed()] == []
    campaign = Campaign(parse_config({**cfg, "ledger": sqlite_url}), ledger, resume=True)
    stop = asyncio.run(campaign.run())
    state = CampaignState.replay("quad", ledger.events("quad"))
    ledger.close()
    assert stop.reason == "max_experiments"
    assert state.experiments[2].status == "abandoned"
    assert campaign.stations[0].driver.sent[0] == {"x": 0.1, "z": 0.2}, "the owed params ran first"
    requeue = state.experiments[3]
    assert requeue.reason["strategy"] == "requeue" and requeue.reason["requeue_of"] == 1
    assert requeue.status == "completed"
    assert state.requeues_owed() == []


def test_requeues_owed_pays_on_dispatch_or_refusal_not_on_a_stop() -> None:
    from selflab.controller.ledger import Event

    now = datetime.now(UTC)
    rows = [
        ("proposed", 1, {"params": {"x": 1}}), ("dispatched", 1, {}), ("stale", 1, {"requeue": True}),
        ("proposed", 2, {"params": {"x": 2}}), ("dispatched", 2, {}), ("stale", 2, {"requeue": True}),
        ("proposed", 3, {"params": {"x": 3}}), ("dispatched", 3, {}), ("stale", 3, {"requeue": False}),
        ("proposed", 4, {"params": {"x": 1}, "reason": {"requeue_of": 1}}), ("dispatched", 4, {}),
        ("proposed", 5, {"params": {"x": 2}, "reason": {"requeue_of": 2}}),
        ("abandoned", 5, {"reason": "not_dispatched"}),
    ]
    events = [Event(id=i + 1, campaign="c", kind=k, experiment_id=eid, instrument="q", at=now, recorded_at=now, payload=p)
              for i, (k, eid, p) in enumerate(rows)]
    state = CampaignState.replay("c", events)
    assert [e.experiment_id for e in state.requeues_owed()] == [2]
    refused = Event(id=99, campaign="c", kind="proposed", experiment_id=6, instrument=None, at=now, recorded_at=now,
                    payload={"params": {"x": 2}, "reason": {"requeue_of": 2}})
    state.apply(refused)
    assert state.requeues_owed() == [], "a requeue waiting to be sent is not owed twice"
    state.apply(Event(id=100, campaign="c", kind="abandoned", experiment_id=6, instrument=None, at=now, recorded_at=now,
                      payload={"reason": "out_of_limits"}))
    assert state.requeues_owed() == [], "a requeue refused by the limits is settled, not proposed forever"


def _remote_config(url: str) -> dict[str, Any]:
    return {**quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "remote": True}],
                               stop={"max_experiments": 5}), "ledger": url}


@pytest.mark.postgres
def test_a_worker_racing_a_resume_neither_loses_a_result_nor_hides_one(postgres_url: str) -> None:
    """A worker claims or finishes work just after the resuming controller has
    read the ledger: the start is one transaction with the replay, so the
    claim waits for it (and finds the work withdrawn), and the result lands
    after ``campaign_started``, where the controller's poller reads it."""
    config = parse_config(_remote_config(postgres_url))
    ledger, worker = Ledger(postgres_url), Ledger(postgres_url)
    snapshot = config.model_dump(mode="json")
    ledger.append([
        NewEvent(campaign="quad", kind="campaign_started", payload={"config": snapshot, "version": "x", "seed": 0, "clock": "wall"}),
        NewEvent(campaign="quad", kind="proposed", experiment_id=1, payload={"params": {"x": 0.1, "z": 0.2}}),
        NewEvent(campaign="quad", kind="proposed", experiment_id=2, payload={"params": {"x": 0.3, "z": 0.4}}),
    ], work=[{"campaign": "quad", "experiment_id": eid, "instrument": "q1", "state": "open", "params": p, "fidelity": 1.0, "cost": 1.0}
             for eid, p in ((1, {"x": 0.1, "z": 0.2}), (2, {"x": 0.3, "z": 0.4}))])
    claimed = workqueue.claim(worker, "quad", {"q1": 1}, "w", 30.0, lambda c: NewEvent(
        campaign="quad", kind="dispatched", experiment_id=c.experiment_id, instrument="q1", payload={"cost": 1.0}))
    assert [c.experiment_id for c in claimed] == [1]

    campaign = Campaign(config, ledger, resume=True)
    raced: dict[str, Any] = {}

    def race() -> None:  # a worker finishing 1 and claiming 2 in the window after the replay
        raced["finished"] = workqueue.finish(worker, "quad", 1, "w", [NewEvent(
            campaign="quad", kind="completed", experiment_id=1, instrument="q1", payload={"outcomes": {"y": 0.5}})])
        raced["claimed"] = workqueue.claim(worker, "quad", {"q1": 1}, "w", 30.0, lambda c: NewEvent(
            campaign="quad", kind="dispatched", experiment_id=c.experiment_id, instrument="q1", payload={"cost": 1.0}))

    racer = threading.Thread(target=race)
    replay = ledger.events

    def replay_then_race(name: str, after: int = 0) -> list[Any]:
        events = replay(name, after)
        if not racer.is_alive() and "finished" not in raced:
            racer.start()
            racer.join(timeout=1.0)  # it waits for the start's transaction (or, unfenced, slips in)
        return events

    ledger.events = replay_then_race  # type: ignore[method-assign]  (fault injection: a timing window)
    campaign._open_study(lease.LEASE_TTL_S)
    ledger.events = replay  # type: ignore[method-assign]
    racer.join(timeout=30)
    events = ledger.events("quad")
    started = max(e.id for e in events if e.kind == "campaign_started")
    done = next(e for e in events if e.kind == "completed")
    assert campaign.study is not None
    assert done.id > started and [e.id for e in campaign.study.follow()][-1] == done.id, "the controller's poller would never see this result"
    assert raced["claimed"] == [], "a worker claimed work the resuming controller withdrew"
    state = CampaignState.replay("quad", events)
    assert state.anomalies == []
    assert state.experiments[1].status == "completed"
    assert state.experiments[2].status == "abandoned"
    campaign.study.release()
    ledger.close()
    worker.close()


def _old_ledger(url: str, version: int) -> None:
    """The tables a ledger of schema ``version`` (1 or 2) had: no leases, no epochs."""
    meta = sa.MetaData()
    events = sa.Table(
        "selflab_events", meta,
        sa.Column("id", sa.Integer, primary_key=True), sa.Column("campaign", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False), sa.Column("experiment_id", sa.Integer),
        sa.Column("instrument", sa.String(100)), sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False), sa.Column("payload", sa.JSON, nullable=False),
    )
    facts = sa.Table("selflab_meta", meta, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.String, nullable=False))
    tables = [events, facts] + ([workqueue.WORK.to_metadata(meta)] if version >= 2 else [])
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg") if url.startswith("postgresql") else url)
    with engine.begin() as conn:
        meta.create_all(conn, tables=tables)
        conn.execute(sa.insert(facts), [{"key": "application", "value": "selflab"}, {"key": "schema_version", "value": str(version)}])
        now = datetime.now(UTC)
        conn.execute(sa.insert(events).values(campaign="c", kind="campaign_stopped", at=now, recorded_at=now, payload={"reason": "old"}))
    engine.dispose()


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_ledger_is_migrated_and_then_fenced(ledger_url: str, version: int) -> None:
    _old_ledger(ledger_url, version)
    reader = Ledger(ledger_url, create=False)  # a reader reads it as it is, without migrating it
    assert [e.payload["reason"] for e in reader.events("c")] == ["old"]
    reader.close()
    old, new = Ledger(ledger_url), Ledger(ledger_url)
    with old.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT value FROM selflab_meta WHERE key = 'schema_version'").scalar() == "3"
    assert {"selflab_work", "selflab_leases"} <= set(sa.inspect(old.engine).get_table_names())
    epoch = _take(old, "c")
    old.fence("c", epoch)
    old.append([NewEvent(campaign="c", kind="campaign_stopped", payload={"reason": "mine"})])
    _orphan(new, "c")
    _take(new, "c")
    with pytest.raises(LeaseLost):
        old.append([NewEvent(campaign="c", kind="campaign_stopped", payload={"reason": "fenced"})])
    assert [e.payload["reason"] for e in new.events("c")] == ["old", "mine"]
    old.close()
    new.close()
