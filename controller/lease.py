"""One controller per campaign: a lease in the ledger, with a fencing epoch.

A controller takes its campaign's lease in the same transaction that replays
the ledger and appends ``campaign_started`` (:func:`acquire`), and renews it
from a heartbeat thread (:class:`Heartbeat`). Taking the lease bumps the
campaign's *epoch*; every event the controller appends carries that epoch,
and a database trigger refuses an insert whose epoch is no longer the
campaign's. So whatever path a second controller finds to the same ledger (a
deleted lock file, a symlink or hard link to the SQLite file, a Postgres
session cut by a pooler), either it is refused because the first one's lease
is live, or it takes over a dead one's lease and the first, should it wake
up, is fenced off before it can append or dispatch again
(:class:`selflab.controller.ledger.LeaseLost`).

A lease is live until it expires (``ttl_s`` after its last renewal) or is
released. A holder on this host whose process is gone (or whose pid now
belongs to another process, told apart by :func:`~selflab.controller.identity.process_identity`,
which no clock step moves) is dead at once, so ``selflab run --resume``
right after a ``kill -9`` does not wait; a holder on another host is
trusted until its lease expires.

Example::

    with ledger.transaction() as conn:
        epoch = acquire(conn, ledger.backend, "demo", ttl_s=30)
        ...  # replay, append campaign_started
    ledger.fence("demo", epoch)
    with Heartbeat(ledger, "demo", epoch, ttl_s=30) as beat:
        ...  # beat.lost is set once the lease is gone
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType

import sqlalchemy as sa

from selflab.controller.identity import is_same_process, process_identity
from selflab.controller.ledger import LEASES, Ledger, LedgerError
from selflab.controller.ledger_errors import LeaseHeld

log = logging.getLogger("selflab")

LEASE_TTL_S = 30.0
"""Seconds a lease outlives its last renewal; renewed every third of it."""
START_LOCK_WAIT_S = 20.0
"""How long a controller starting (or resuming) waits for the ledger's locks
before it is refused (:func:`refuse_busy`): a live first controller holds them
for milliseconds at a time, so a longer wait means it is stuck inside a write."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a campaign's lease."""

    campaign: str
    epoch: int
    host: str
    pid: int
    process_started: float
    renewed_at: datetime
    expires_at: datetime
    released: bool

    def __str__(self) -> str:
        return f"pid {self.pid} on host {self.host!r}"

    def alive(self, now: datetime) -> bool:
        """Whether the holder may still be running the campaign."""
        if self.released or self.expires_at <= now:
            return False
        if self.host == socket.gethostname():
            return is_same_process(self.pid, self.process_started)
        return True


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now(conn: sa.Connection) -> datetime:
    """The database's clock on Postgres (hosts' clocks may disagree), else this host's."""
    if conn.dialect.name == "postgresql":
        return _utc(conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one())
    return datetime.now(UTC)


def _read(conn: sa.Connection, campaign: str) -> Holder | None:
    row = conn.execute(sa.select(LEASES).where(LEASES.c.campaign == campaign)).mappings().first()
    if row is None:
        return None
    return Holder(campaign=row["campaign"], epoch=int(row["epoch"]), host=row["host"], pid=int(row["pid"]),
                  process_started=float(row["process_started"]), renewed_at=_utc(row["renewed_at"]),
                  expires_at=_utc(row["expires_at"]), released=bool(row["released"]))


def acquire(conn: sa.Connection, campaign: str, ttl_s: float = LEASE_TTL_S) -> int:
    """Take ``campaign``'s lease inside the open write transaction ``conn``;
    returns the new epoch. Raises :class:`LedgerError` naming the holder when
    a live controller has it.

    Its first statement writes (a no-op update of the lease row), so on
    SQLite the transaction holds the database's write lock from here on and
    on Postgres the row is locked: nobody appends or takes the lease until
    ``conn`` commits.
    """
    conn.execute(sa.update(LEASES).where(LEASES.c.campaign == campaign).values(epoch=LEASES.c.epoch))
    now = _now(conn)
    holder = _read(conn, campaign)
    if holder is not None and holder.alive(now):
        raise held_error(campaign, holder, now)
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process_started": process_identity(os.getpid()) or 0.0,  # (the column's name; see its doc)
        "renewed_at": now,
        "expires_at": now + timedelta(seconds=ttl_s),
        "released": False,
    }
    if holder is None:
        conn.execute(sa.insert(LEASES).values(campaign=campaign, epoch=1, **me))
        return 1
    if not holder.released and holder.expires_at > now:
        log.warning("campaign %s: taking over the lease of %s, which is gone", campaign, holder)
    conn.execute(sa.update(LEASES).where(LEASES.c.campaign == campaign).values(epoch=holder.epoch + 1, **me))
    return holder.epoch + 1


def held_error(campaign: str, holder: Holder, now: datetime) -> LeaseHeld:
    """The refusal of a second controller: who runs ``campaign``, and what to do."""
    left = (holder.expires_at - now).total_seconds()
    return LeaseHeld(
        f"campaign {campaign!r} is already being run by {holder} (lease renewed "
        f"{(now - holder.renewed_at).total_seconds():.0f} s ago); stop it first (selflab stop), "
        f"or, if that process is dead, wait {left:.0f} s for its lease to expire"
    )


def refuse_busy(ledger: Ledger, campaign: str, busy: LedgerError) -> LedgerError:
    """The error for a controller whose lease transaction waited too long for
    a lock (``busy``): the live holder's refusal when there is one (read
    without locks), else ``busy`` itself with what to do."""
    with ledger.engine.connect() as conn:
        holder, now = _read(conn, campaign), _now(conn)
    if holder is not None and holder.alive(now):
        return held_error(campaign, holder, now)
    return LedgerError(f"campaign {campaign!r}: {busy}; another session holds the ledger's write lock and no live "
                       "controller holds the campaign: try again, and if it persists, end that session (on Postgres: "
                       "pg_stat_activity shows it 'idle in transaction'; pg_terminate_backend ends it)")


def renew(ledger: Ledger, campaign: str, epoch: int, ttl_s: float = LEASE_TTL_S) -> bool:
    """Extend the lease of ``epoch``; ``False`` when it is no longer held (taken over or released)."""
    with ledger.engine.begin() as conn:
        now = _now(conn)
        result = conn.execute(
            sa.update(LEASES)
            .where(LEASES.c.campaign == campaign, LEASES.c.epoch == epoch, LEASES.c.released.is_(False))
            .values(renewed_at=now, expires_at=now + timedelta(seconds=ttl_s))
        )
        return bool(result.rowcount)


def release(ledger: Ledger, campaign: str, epoch: int) -> None:
    """Give the lease back (a clean stop), so the next controller need not wait."""
    with ledger.engine.begin() as conn:
        conn.execute(sa.update(LEASES).where(LEASES.c.campaign == campaign, LEASES.c.epoch == epoch).values(released=True))


def active_holder(ledger: Ledger, campaign: str) -> Holder | None:
    """The live holder of ``campaign``'s lease, or ``None`` when nobody runs it."""
    with ledger.engine.connect() as conn:
        found = _read(conn, campaign)
        return found if found is not None and found.alive(_now(conn)) else None


class Heartbeat:
    """Renews a lease every ``ttl_s / 3`` seconds from a daemon thread, so a
    long model fit or a blocked event loop never lets it lapse. ``lost`` is
    set once a renewal finds the lease gone; a failed renewal (the database
    unreachable) is retried at the next beat."""

    def __init__(self, ledger: Ledger, campaign: str, epoch: int, ttl_s: float = LEASE_TTL_S) -> None:
        self.ledger, self.campaign, self.epoch, self.ttl_s = ledger, campaign, epoch, ttl_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{campaign}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if not self.lost.is_set():
            try:
                release(self.ledger, self.campaign, self.epoch)
            except Exception as error:  # the lease then simply expires
                log.warning("campaign %s: could not release its lease (%s); it expires in %.0f s", self.campaign, error, self.ttl_s)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                held = renew(self.ledger, self.campaign, self.epoch, self.ttl_s)
            except Exception as error:
                log.warning("campaign %s: lease renewal failed (%s); retrying", self.campaign, error)
                continue
            if not held:
                log.error("campaign %s: lost its lease (epoch %d) to another controller; no more dispatches", self.campaign, self.epoch)
                self.lost.set()
                return
