"""The append-only ledger: sqlmodel tables on SQLite (default) or Postgres.

Events are inserted and never updated or deleted; database triggers refuse
both. One ledger may hold several campaigns, told apart by name. An
experiment's state is a projection of its events (:mod:`selflab.controller.projection`),
so resuming a campaign is a replay.

SQLite runs in WAL mode, so ``selflab status`` and ``selflab export`` read
while the campaign writes, and with ``synchronous=FULL``, so a committed
event survives a power cut. One controller writes a campaign at a time:
it holds the campaign's lease (:mod:`selflab.controller.lease`), and the database
refuses its events once another controller has taken the lease over (the
``epoch`` column and the fencing trigger).

Example::

    ledger = Ledger("sqlite:///runs/demo.sqlite")
    ledger.append([NewEvent(campaign="demo", kind="campaign_stopped",
                            payload={"reason": "interrupted"})])
    for event in ledger.events("demo"):
        print(event.id, event.kind)
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from selflab.controller.events import PAYLOADS, Event, NewEvent, payload_model
from selflab.controller.ledger_errors import LEASE_LOST_MESSAGE, LeaseLost, LedgerBusy, LedgerError, damaged, is_damage, read_error, short
from selflab.controller.ledger_schema import (
    APPEND_LOCK,
    EVENT_COLUMNS,
    EVENTS,
    INSERT,
    LEASES,
    SCHEMA_VERSION,
    WORK,
    EventRow,
    LeaseRow,
    MetaRow,
    WorkRow,
    ensure_schema,
)

__all__ = [
    "LEASES", "LEASE_LOST_MESSAGE", "SCHEMA_VERSION", "WORK", "Event", "EventRow", "LeaseLost", "LeaseRow", "Ledger",
    "LedgerError", "MetaRow", "NewEvent", "WorkRow", "sqlite_path",
]
"""(The tables, the errors and the event records live in :mod:`selflab.controller.ledger_schema`,
:mod:`selflab.controller.ledger_errors` and :mod:`selflab.controller.events`; they are named here too.)"""


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL, or ``None`` for other backends."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _one_name(path: Path) -> Path:
    """The one name every process must open an SQLite ledger by: symlinks
    resolved. SQLite keeps the write-ahead log and its locks beside the name a
    database is opened by, so a second name (a hard link) would let two
    processes write past each other's locks and logs: refused."""
    real = path.resolve()
    try:
        links = real.stat().st_nlink
    except FileNotFoundError:
        return real
    if links > 1:
        raise LedgerError(
            f"{real} has {links} hard links; SQLite keeps its write-ahead log and locks beside the name a ledger is "
            "opened by, so two names would corrupt it: remove the other links and open it by one name only"
        )
    return real


_LOCK_NOT_AVAILABLE = "55P03"
"""Postgres's SQLSTATE for a lock wait past ``lock_timeout``."""


class Ledger:
    """A connection to one ledger database.

    ``create=False`` opens an existing ledger only (for ``status`` and
    ``export``) and never writes to it.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self._writer_conn: sa.Connection | None = None
        self._writer_guard = threading.Lock()
        self._epochs: dict[str, int] = {}
        """Campaign -> the lease epoch this process holds (see :meth:`fence`)."""
        try:
            parsed = make_url(url)
        except sa.exc.ArgumentError:
            raise LedgerError(f"{url!r} is not a database URL (expected sqlite:///PATH or postgresql://...)") from None
        self.display_url = parsed.render_as_string(hide_password=True)
        """The URL with any password hidden (for messages)."""
        self._path = sqlite_path(url)
        if self._path is not None:
            self._path = _one_name(self._path)
            parsed = parsed.set(database=str(self._path))
        if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.backend = parsed.get_backend_name()
        self._read_only = not create and self._path is not None
        """A reader of an SQLite file: it opens the file read-only (``mode=ro``)
        and leaves its journal mode alone, so it never changes a byte."""
        if self._path is not None:
            if not create and not self._path.exists():
                raise LedgerError(f"no ledger at {self._path}; has the campaign run yet? (selflab run CONFIG)")
            if not create and self._path.stat().st_size == 0:
                raise LedgerError(f"{self._path} is empty: no selflab ledger there")
            if create:
                self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._path is not None and self._path.exists() and self._path.stat().st_size > 0:
            self._check_sqlite_file(self._path)
        try:
            self.engine = self._make_engine(parsed)
            ensure_schema(self.engine, self.backend, self.display_url, create)
        except LedgerError:
            raise
        except ModuleNotFoundError as exc:
            raise LedgerError(f"the driver for {self.backend} is not installed ({exc.name}); pip install 'selflab[postgres]'") from None
        except sa.exc.SQLAlchemyError as exc:
            if is_damage(exc):
                raise damaged(self.display_url, short(exc)) from None
            raise LedgerError(f"cannot open ledger {self.display_url}: {short(exc)}") from None
        except ValueError as exc:  # text that is not text (UnicodeDecodeError)
            raise damaged(self.display_url, short(exc)) from None

    def _make_engine(self, parsed: sa.URL) -> Engine:
        if self._read_only:
            assert self._path is not None
            read_only = sa.URL.create("sqlite", database=_read_only_uri(self._path), query={"uri": "true"})
            return sa.create_engine(read_only, connect_args={"check_same_thread": False, "timeout": 30})
        if self.backend == "sqlite":
            engine = sa.create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=FULL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

            return engine
        return sa.create_engine(parsed, pool_pre_ping=True)

    def _check_sqlite_file(self, path: Path) -> None:
        """Refuse, without writing a byte, a file that is not a selflab ledger."""
        try:
            with contextlib.closing(sqlite3.connect(_read_only_uri(path), uri=True)) as conn:
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.OperationalError as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc}") from None
        except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
            not_one = getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB"
            raise damaged(self.display_url, f"it is not a selflab ledger, or a damaged one ({exc})" if not_one else str(exc)) from None
        except UnicodeDecodeError as exc:  # a table name that is not text
            raise damaged(self.display_url, f"its table list cannot be read ({exc})") from None
        if tables and "selflab_meta" not in tables:
            raise LedgerError(f"{path} is not a selflab ledger (it holds tables: {', '.join(sorted(tables))})")

    def append(self, events: Sequence[NewEvent], work: Sequence[dict[str, Any]] = ()) -> list[Event]:
        """Append ``events`` in one transaction: all land, or none do.

        ``work`` rows (see :class:`WorkRow`) are queued for workers in the same
        transaction. A database session cut meanwhile is handled as
        :meth:`write` says.
        """

        def body(conn: sa.Connection) -> list[Event]:
            if work:
                conn.execute(sa.insert(WORK), list(work))
            return self.insert_events(conn, events)

        written = self.write(body)
        assert written is not None
        return written

    def write(self, body: Callable[[sa.Connection], list[Event] | None], lock_wait_s: float | None = None) -> list[Event] | None:
        """Run ``body`` in one write transaction; return what it returned: the
        events it inserted, or ``None`` when it wrote nothing at all
        (``lock_wait_s``: as :meth:`transaction`'s).

        A database session cut while the transaction ran (an idle timeout, a
        pooler, a firewall, ``pg_terminate_backend``) is retried once on a
        fresh connection: nothing had committed. A cut during the commit
        itself leaves it unknown whether the transaction landed: the events'
        ids, which the database assigned before the commit, are then looked up
        on a fresh connection (:meth:`_landed`): all there, the write is done;
        none there, it is retried once; unknown (the lookup failed too, or the
        transaction wrote rows but no event), a :class:`LedgerError`. A body
        that wrote nothing is done either way. So ``body`` must be safe to run
        again after a transaction that did not land.
        """
        for attempt in (1, 2):
            written: list[Event] | None = None
            committing = False
            try:
                with self.transaction(lock_wait_s) as conn:
                    written = body(conn)
                    committing = True
                return written
            except sa.exc.DBAPIError as exc:
                if attempt == 1 and exc.connection_invalidated:
                    if not committing:  # (cut before the commit: nothing landed)
                        landed: bool | None = False
                    elif written is None:  # (the body wrote nothing: nothing to lose)
                        landed = True
                    else:  # (its events looked up; rows but no event: unknown)
                        landed = self._landed(written) if written else None
                    if landed is True:
                        return written
                    if landed is False:
                        continue
                raise LedgerError(f"cannot write to ledger {self.display_url}: {short(exc)}") from None
            except sa.exc.SQLAlchemyError as exc:
                raise LedgerError(f"cannot write to ledger {self.display_url}: {short(exc)}") from None
        raise AssertionError("unreachable")

    def _landed(self, written: Sequence[Event]) -> bool | None:
        """Whether the transaction that inserted ``written`` (ids assigned, its
        commit cut off) committed: ``True`` when every id is in the ledger,
        ``False`` when none is (a transaction lands whole or not at all),
        ``None`` when that cannot be read."""
        ids = [e.id for e in written]
        try:
            with self.engine.connect() as conn:
                found = int(conn.execute(sa.select(sa.func.count()).select_from(EVENTS).where(EVENTS.c.id.in_(ids))).scalar_one())
        except sa.exc.SQLAlchemyError:
            return None
        return True if found == len(ids) else False if found == 0 else None

    @contextlib.contextmanager
    def transaction(self, lock_wait_s: float | None = None) -> Iterator[sa.Connection]:
        """One write transaction on the writer connection. On Postgres it first
        takes a transaction-level advisory lock, so that events commit in the
        order of their ids and a reader polling ``after=position`` misses none.

        ``lock_wait_s`` (Postgres): wait at most this long for any lock the
        transaction needs (the append lock, a row another holds), then raise
        :class:`LedgerBusy` having written nothing; ``None``: wait as long as
        it takes. (On SQLite the connection's busy timeout bounds the wait.)"""
        with self._writer_guard:  # one transaction at a time on the shared connection
            try:
                conn, transaction = self._begin(lock_wait_s)
                with transaction:
                    yield conn
            except sa.exc.SQLAlchemyError as exc:
                if LEASE_LOST_MESSAGE in str(exc):
                    raise LeaseLost(f"another controller took over: {short(exc)}") from None
                if getattr(getattr(exc, "orig", None), "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                    raise LedgerBusy(f"ledger {self.display_url}: waited {lock_wait_s:g} s for a lock another process holds "
                                     f"({short(exc)}); nothing was written") from None
                raise

    def _begin(self, lock_wait_s: float | None = None) -> tuple[sa.Connection, sa.RootTransaction]:
        """Begin on the kept writer connection; if its session was cut while
        idle (a Postgres idle timeout, a pooler, a firewall), begin once more
        on a fresh one rather than fail the campaign."""
        for attempt in (1, 2):
            conn = self._writer()
            transaction = conn.begin()
            try:
                if self.backend == "postgresql":
                    if lock_wait_s is not None:  # (transaction-local: set_config(..., true) is SET LOCAL)
                        conn.execute(sa.text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{int(lock_wait_s * 1000)}ms"})
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": APPEND_LOCK})
                return conn, transaction
            except sa.exc.DBAPIError as exc:
                transaction.rollback()
                if attempt == 2 or not exc.connection_invalidated:
                    raise
                conn.close()
        raise AssertionError("unreachable")

    def fence(self, campaign: str, epoch: int | None) -> None:
        """Stamp this process's appends to ``campaign`` with lease ``epoch``
        (``None``: unfenced, as a worker's). The database then refuses them
        once another controller holds a newer epoch."""
        if epoch is None:
            self._epochs.pop(campaign, None)
        else:
            self._epochs[campaign] = epoch

    def insert_events(self, conn: sa.Connection, events: Sequence[NewEvent]) -> list[Event]:
        """Insert ``events`` inside the open transaction ``conn``."""
        if not events:
            return []
        now = datetime.now(UTC)
        rows = []
        for e in events:
            payload = payload_model(e.kind).model_validate(e.payload).model_dump(mode="json")
            rows.append(
                {
                    "campaign": e.campaign,
                    "kind": str(e.kind),  # (the text, never the enum member: a driver may store an enum by its name)
                    "experiment_id": e.experiment_id,
                    "instrument": e.instrument,
                    "at": _utc(e.at) if e.at is not None else now,
                    "recorded_at": now,
                    "payload": payload,
                }
            )
        stamped = [{**row, "epoch": self._epochs.get(row["campaign"])} for row in rows]
        ids = conn.execute(INSERT, stamped).scalars().all()
        return [Event(id=int(i), **row) for i, row in zip(ids, rows, strict=True)]

    def _writer(self) -> sa.Connection:
        """The connection appends go through, kept open (a pool checkout per
        event costs as much as the insert itself)."""
        if self._writer_conn is None or self._writer_conn.closed or self._writer_conn.invalidated:
            self._writer_conn = self.engine.connect()
        return self._writer_conn

    def events(self, campaign: str, after: int = 0) -> list[Event]:
        """Every event of ``campaign`` with position above ``after``, in order."""
        query = sa.select(*EVENT_COLUMNS).where(EVENTS.c.campaign == campaign, EVENTS.c.id > after).order_by(EVENTS.c.id)
        try:
            try:
                with self.engine.connect() as conn:
                    rows = conn.execute(query).mappings().all()
            except sa.exc.DBAPIError as exc:  # a session cut between the pool's ping and the read: read again
                if not exc.connection_invalidated:
                    raise
                with self.engine.connect() as conn:
                    rows = conn.execute(query).mappings().all()
        except sa.exc.SQLAlchemyError as exc:
            raise read_error(self.display_url, exc) from None
        except ValueError as exc:  # a payload that is not JSON, a time that is not one
            raise damaged(self.display_url, f"an event of campaign {campaign!r} cannot be decoded ({short(exc)})") from None
        return [_to_event(row, self.display_url) for row in rows]

    def campaigns(self) -> list[str]:
        """Names of the campaigns in this ledger, in order of first event."""
        query = sa.select(EVENTS.c.campaign, sa.func.min(EVENTS.c.id)).group_by(EVENTS.c.campaign).order_by(sa.func.min(EVENTS.c.id))
        try:
            with self.engine.connect() as conn:
                return [row[0] for row in conn.execute(query)]
        except sa.exc.SQLAlchemyError as exc:
            raise read_error(self.display_url, exc) from None
        except ValueError as exc:  # a name that is not text (UnicodeDecodeError)
            raise damaged(self.display_url, f"a campaign name cannot be decoded ({short(exc)})") from None

    def writer_active(self, campaign: str) -> bool | None:
        """Whether a live controller holds ``campaign``'s lease now (see
        :mod:`selflab.controller.lease`; ``None``: cannot tell)."""
        from selflab.controller.lease import active_holder  # (lease builds on this module)

        try:
            return active_holder(self, campaign) is not None
        except sa.exc.SQLAlchemyError:
            return None

    def close(self) -> None:
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None
        self.engine.dispose()


def _read_only_uri(path: Path) -> str:
    """An SQLite URI that opens ``path`` read-only (``?`` and ``#`` in names escaped)."""
    return f"file:{quote(str(path))}?mode=ro"


def _to_event(row: Any, where: str) -> Event:
    """An event read back, checked: a known kind, a time, a payload of its
    kind's shape (fields a newer selflab added are let through)."""
    try:
        kind = row["kind"]
        if kind not in PAYLOADS:
            raise ValueError(f"its kind {kind!r} is not an event kind")
        payload = row["payload"]
        if not isinstance(payload, dict):
            raise ValueError(f"its payload is {type(payload).__name__}, not an object")
        model = payload_model(kind)
        fields = model.model_fields  # (a class property: read once, not per key)
        model.model_validate({k: v for k, v in payload.items() if k in fields})
        at, recorded_at = row["at"], row["recorded_at"]
        return Event(**{**row, "at": _utc(at) if isinstance(at, datetime) else at,  # type: ignore[arg-type]
                        "recorded_at": _utc(recorded_at) if isinstance(recorded_at, datetime) else recorded_at})
    except ValueError as exc:  # (pydantic's ValidationError is one)
        raise damaged(where, f"event {row['id']} cannot be read: {short(exc)}") from None
