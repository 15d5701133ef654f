"""The queue of experiments for ``selflab worker`` processes, in the ledger.

``selflab run`` plans; for an instrument marked ``remote: true`` it does not
run the experiment but queues it: a ``proposed`` event and an ``open`` row in
``selflab_work``, in one transaction. A worker on the instrument's host claims
open rows atomically (``SELECT ... FOR UPDATE SKIP LOCKED`` on Postgres, so two
workers never claim the same row), appending ``dispatched`` in the same
transaction, and holds a lease that it renews with heartbeats. Its result and
the row's ``done`` land together. When a lease runs out (the worker died),
the planner marks the row ``expired`` and the experiment ``stale`` together,
and requeues its params according to the campaign's ``stale_policy``.

Every function here is one transaction; events and rows never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from selflab.controller.ledger import WORK, Event, Ledger, NewEvent


@dataclass(frozen=True)
class Claim:
    """An experiment a worker has claimed."""

    experiment_id: int
    instrument: str
    params: dict[str, Any]
    fidelity: float
    cost: float
    rank: int = 0
    """Its place among the experiments this claim took on its instrument (0, 1, ...):
    which of the worker's free slots it runs in."""


def _now() -> datetime:
    return datetime.now(UTC)


def claim(
    ledger: Ledger,
    campaign: str,
    free: Mapping[str, int],
    worker: str,
    lease_s: float,
    dispatched: Callable[[Claim], NewEvent],
) -> list[Claim]:
    """Claim up to ``free[instrument]`` open experiments per instrument, oldest
    first. A database session cut meanwhile claims nothing twice
    (:meth:`Ledger.write`); ``dispatched`` may then be called again for
    another claim, so it must change nothing outside the ledger."""
    claims: list[Claim] = []

    def body(conn: sa.Connection) -> list[Event] | None:
        claims.clear()  # (a transaction that did not land is run again)
        for instrument, n in free.items():
            if n <= 0:
                continue
            query = (
                sa.select(WORK.c.experiment_id, WORK.c.params, WORK.c.fidelity, WORK.c.cost)
                .where(WORK.c.campaign == campaign, WORK.c.instrument == instrument, WORK.c.state == "open")
                .order_by(WORK.c.experiment_id)
                .limit(n)
            )
            if ledger.backend == "postgresql":
                query = query.with_for_update(skip_locked=True)
            for rank, (eid, params, fidelity, cost) in enumerate(conn.execute(query).all()):
                claims.append(Claim(int(eid), instrument, dict(params), float(fidelity), float(cost), rank))
        if not claims:
            return None
        until = _now() + timedelta(seconds=lease_s)
        for c in claims:
            conn.execute(
                sa.update(WORK)
                .where(WORK.c.campaign == campaign, WORK.c.experiment_id == c.experiment_id)
                .values(state="claimed", worker=worker, lease_until=until)
            )
        return ledger.insert_events(conn, [dispatched(c) for c in claims])

    ledger.write(body)
    return list(claims)


def renew(ledger: Ledger, campaign: str, worker: str, lease_s: float) -> int:
    """Extend the leases of ``worker``'s claims (a heartbeat); returns how many."""
    with ledger.transaction() as conn:
        result = conn.execute(
            sa.update(WORK)
            .where(WORK.c.campaign == campaign, WORK.c.worker == worker, WORK.c.state == "claimed")
            .values(lease_until=_now() + timedelta(seconds=lease_s))
        )
        return int(result.rowcount or 0)


def finish(ledger: Ledger, campaign: str, experiment_id: int, worker: str, events: Sequence[NewEvent]) -> list[Event] | None:
    """Record a claimed experiment's end; ``None`` (nothing written) when the
    claim is no longer this worker's (its lease expired and it went stale).
    A database session cut meanwhile loses no result (:meth:`Ledger.write`)."""

    def body(conn: sa.Connection) -> list[Event] | None:
        query = sa.select(WORK.c.state, WORK.c.worker).where(WORK.c.campaign == campaign, WORK.c.experiment_id == experiment_id)
        if ledger.backend == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None or row.state != "claimed" or row.worker != worker:
            return None
        conn.execute(sa.update(WORK).where(WORK.c.campaign == campaign, WORK.c.experiment_id == experiment_id).values(state="done"))
        return ledger.insert_events(conn, events)

    return ledger.write(body)


def settle(
    ledger: Ledger,
    campaign: str,
    state: str,
    new_state: str,
    event: Callable[[int, str], NewEvent],
    expired_only: bool = False,
) -> list[Event]:
    """Move rows in ``state`` (with ``expired_only``: whose lease ran out) to
    ``new_state``, appending ``event(experiment_id, instrument)`` for each. A
    database session cut meanwhile settles nothing twice (:meth:`Ledger.write`)."""
    return ledger.write(lambda conn: settle_in(conn, ledger, campaign, state, new_state, event, expired_only) or None) or []


def settle_in(
    conn: sa.Connection,
    ledger: Ledger,
    campaign: str,
    state: str,
    new_state: str,
    event: Callable[[int, str], NewEvent],
    expired_only: bool = False,
) -> list[Event]:
    """:func:`settle` inside the open write transaction ``conn`` (a controller's start)."""
    where = [WORK.c.campaign == campaign, WORK.c.state == state]
    if expired_only:
        where.append(WORK.c.lease_until < _now())
    query = sa.select(WORK.c.experiment_id, WORK.c.instrument).where(*where).order_by(WORK.c.experiment_id)
    if ledger.backend == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = conn.execute(query).all()
    for eid, _ in rows:
        conn.execute(sa.update(WORK).where(WORK.c.campaign == campaign, WORK.c.experiment_id == eid).values(state=new_state))
    return ledger.insert_events(conn, [event(int(eid), str(inst)) for eid, inst in rows])


def rows(ledger: Ledger, campaign: str) -> list[dict[str, Any]]:
    """Every work row of ``campaign`` (for status and tests)."""
    with ledger.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(WORK).where(WORK.c.campaign == campaign).order_by(WORK.c.experiment_id)).mappings()]
