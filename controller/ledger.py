"""The append-only ledger: sqlmodel tables on SQLite (default) or Postgres.

Events are inserted and never updated or deleted; database triggers refuse
both. One ledger may hold several campaigns, told apart by name. An
experiment's state is a projection of its events (:mod:`controller.projection`),
so resuming a campaign is a replay.

SQLite runs in WAL mode, so ``selflab status`` and ``selflab export`` read
while the campaign writes, and with ``synchronous=FULL``, so a committed
event survives a power cut. One process writes a campaign at a time:
:meth:`Ledger.writer_lock` enforces it (a lock file for SQLite, an advisory
lock for Postgres).

Example::

    ledger = Ledger("sqlite:///runs/demo.sqlite")
    ledger.append([NewEvent(campaign="demo", kind="campaign_stopped",
                            payload={"reason": "interrupted"})])
    for event in ledger.events("demo"):
        print(event.id, event.kind)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import threading
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlmodel import JSON, Column, DateTime, Field, SQLModel

from controller.events import KINDS, PAYLOADS

SCHEMA_VERSION = 2
"""Bumped whenever the tables change; older ledgers are migrated on open.

1: events and meta. 2: adds ``selflab_work``, the claimable queue of
experiments for ``selflab worker`` processes."""


class LedgerError(Exception):
    """The ledger cannot be opened, read or written; the message says why."""


class EventRow(SQLModel, table=True):
    """One ledger event, as stored."""

    __tablename__ = "selflab_events"
    __table_args__ = (sa.Index("ix_selflab_events_campaign_id", "campaign", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign: str = Field(max_length=100)
    kind: str = Field(max_length=32)
    experiment_id: int | None = Field(default=None)
    instrument: str | None = Field(default=None, max_length=100)
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    """When it happened on the campaign clock (simulated or wall), UTC."""
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    """When it was written, on the wall clock, UTC."""
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class MetaRow(SQLModel, table=True):
    """Key-value facts about the ledger itself (``schema_version``, ``application``)."""

    __tablename__ = "selflab_meta"

    key: str = Field(primary_key=True, max_length=64)
    value: str


class WorkRow(SQLModel, table=True):
    """An experiment queued for a ``selflab worker`` (mutable: the claim and
    its lease; the experiment's history stays in the append-only events)."""

    __tablename__ = "selflab_work"

    campaign: str = Field(primary_key=True, max_length=100)
    experiment_id: int = Field(primary_key=True)
    instrument: str = Field(max_length=100)
    state: str = Field(max_length=16)
    """``open`` (waiting for a worker), ``claimed``, ``done``, ``expired`` (its
    worker's lease ran out; the experiment is stale) or ``cancelled``."""
    worker: str | None = Field(default=None, max_length=200)
    lease_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    fidelity: float = 1.0
    cost: float = 0.0


class NewEvent(BaseModel):
    """An event to append; ``at`` defaults to now on the wall clock."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    campaign: str
    kind: str
    experiment_id: int | None = None
    instrument: str | None = None
    at: datetime | None = None
    payload: dict[str, Any] = {}


class Event(BaseModel):
    """An event read back from the ledger, with its position ``id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: int
    campaign: str
    kind: str
    experiment_id: int | None
    instrument: str | None
    at: datetime
    recorded_at: datetime
    payload: dict[str, Any]


_TABLES = [EventRow.__table__, MetaRow.__table__, WorkRow.__table__]  # type: ignore[attr-defined]
WORK: sa.Table = WorkRow.__table__  # type: ignore[attr-defined]
_EVENTS: sa.Table = EventRow.__table__  # type: ignore[attr-defined]
_APPEND_LOCK = zlib.crc32(b"selflab:append")
_CREATE_LOCK = zlib.crc32(b"selflab:create")
_INSERT = sa.insert(_EVENTS).returning(_EVENTS.c.id, sort_by_parameter_order=True)

_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS selflab_events_no_{op.lower()}
        BEFORE {op} ON selflab_events
        BEGIN SELECT RAISE(ABORT, 'the selflab ledger is append-only'); END"""
    for op in ("UPDATE", "DELETE")
]
_POSTGRES_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION selflab_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'the selflab ledger is append-only'; END $$ LANGUAGE plpgsql""",
    """DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'selflab_events_append_only') THEN
           CREATE TRIGGER selflab_events_append_only BEFORE UPDATE OR DELETE ON selflab_events
           FOR EACH ROW EXECUTE FUNCTION selflab_append_only();
         END IF;
       END $$""",
]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL, or ``None`` for other backends."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


class Ledger:
    """A connection to one ledger database.

    ``create=False`` opens an existing ledger only (for ``status`` and
    ``export``) and never writes to it.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self._writer_conn: sa.Connection | None = None
        self._writer_guard = threading.Lock()
        try:
            parsed = make_url(url)
        except sa.exc.ArgumentError:
            raise LedgerError(f"{url!r} is not a database URL (expected sqlite:///PATH or postgresql://...)") from None
        self._path = sqlite_path(url)
        if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.backend = parsed.get_backend_name()
        if self._path is not None:
            if not create and not self._path.exists():
                raise LedgerError(f"no ledger at {self._path}; has the campaign run yet? (selflab run CONFIG)")
            if create:
                self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._path is not None and self._path.exists() and self._path.stat().st_size > 0:
            self._check_sqlite_file(self._path)
        try:
            self.engine = self._make_engine(parsed)
            self._check_schema(create)
        except LedgerError:
            raise
        except ModuleNotFoundError as exc:
            raise LedgerError(f"the driver for {self.backend} is not installed ({exc.name}); pip install 'selflab[postgres]'") from None
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot open ledger {self.display_url}: {_short(exc)}") from None

    @property
    def display_url(self) -> str:
        """The URL with any password hidden."""
        return make_url(self.url).render_as_string(hide_password=True)

    def _make_engine(self, parsed: sa.URL) -> Engine:
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
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{path} is not a selflab ledger: {exc}") from None
        if tables and "selflab_meta" not in tables:
            raise LedgerError(f"{path} is not a selflab ledger (it holds tables: {', '.join(sorted(tables))})")

    def _check_schema(self, create: bool) -> None:
        inspector = sa.inspect(self.engine)
        tables = set(inspector.get_table_names())
        if "selflab_meta" not in tables:
            if tables:
                raise LedgerError(f"{self.display_url} is not a selflab ledger (it holds tables: {', '.join(sorted(tables)) or 'none'})")
            if not create:
                raise LedgerError(f"{self.display_url} is empty: no selflab ledger there yet")
            self._create()
            return self._check_schema(create=False)
        with self.engine.connect() as conn:
            meta = dict(conn.execute(sa.select(MetaRow.__table__.c.key, MetaRow.__table__.c.value)).all())  # type: ignore[attr-defined]
        if meta.get("application") != "selflab":
            raise LedgerError(f"{self.display_url} is not a selflab ledger (selflab_meta names {meta.get('application')!r})")
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.display_url} has ledger schema {version}, newer than this selflab's {SCHEMA_VERSION}; upgrade selflab"
            )
        if version < 1:
            raise LedgerError(f"{self.display_url} has ledger schema {version}, which this selflab cannot migrate")
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Bring a ledger of an older schema up to date, in one transaction."""
        with self.engine.begin() as conn:
            if version < 2:
                SQLModel.metadata.create_all(conn, tables=[WORK])
            conn.execute(sa.update(MetaRow.__table__).where(MetaRow.__table__.c.key == "schema_version")  # type: ignore[attr-defined]
                         .values(value=str(SCHEMA_VERSION)))

    def _create(self) -> None:
        """Create the tables in one transaction that holds the database's write
        lock (SQLite) or an advisory lock (Postgres), so that processes starting
        together on an empty database (a planner and its workers) create it
        once, and nobody ever sees half a ledger."""
        meta = [{"key": "application", "value": "selflab"}, {"key": "schema_version", "value": str(SCHEMA_VERSION)}]
        if self.backend == "sqlite":
            raw = self.engine.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute("BEGIN IMMEDIATE")
                if cursor.execute("SELECT 1 FROM sqlite_master WHERE name = 'selflab_meta'").fetchone() is None:
                    for table in _TABLES:
                        cursor.execute(str(CreateTable(table).compile(dialect=self.engine.dialect)))
                        for index in table.indexes:
                            cursor.execute(str(CreateIndex(index).compile(dialect=self.engine.dialect)))
                    for ddl in _SQLITE_TRIGGERS:
                        cursor.execute(ddl)
                    cursor.executemany("INSERT INTO selflab_meta (key, value) VALUES (:key, :value)", meta)
                raw.commit()
            except BaseException:
                raw.rollback()
                raise
            finally:
                raw.close()
            return
        with self.engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CREATE_LOCK})
            if conn.execute(sa.text("SELECT to_regclass('selflab_meta')")).scalar() is None:
                SQLModel.metadata.create_all(conn, tables=_TABLES)
                for ddl in _POSTGRES_TRIGGERS:
                    conn.exec_driver_sql(ddl)
                conn.execute(sa.insert(MetaRow.__table__), meta)  # type: ignore[attr-defined]

    def append(self, events: Sequence[NewEvent], work: Sequence[dict[str, Any]] = ()) -> list[Event]:
        """Append ``events`` in one transaction: all land, or none do.

        ``work`` rows (see :class:`WorkRow`) are queued for workers in the same
        transaction.
        """
        try:
            with self.transaction() as conn:
                if work:
                    conn.execute(sa.insert(WORK), list(work))
                return self.insert_events(conn, events)
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot write to ledger {self.display_url}: {_short(exc)}") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One write transaction on the writer connection. On Postgres it first
        takes a transaction-level advisory lock, so that events commit in the
        order of their ids and a reader polling ``after=position`` misses none."""
        with self._writer_guard:  # one transaction at a time on the shared connection
            conn = self._writer()
            with conn.begin():
                if self.backend == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _APPEND_LOCK})
                yield conn

    def insert_events(self, conn: sa.Connection, events: Sequence[NewEvent]) -> list[Event]:
        """Insert ``events`` inside the open transaction ``conn``."""
        if not events:
            return []
        now = datetime.now(UTC)
        rows = []
        for e in events:
            if e.kind not in KINDS:
                raise ValueError(f"unknown event kind {e.kind!r}")
            payload = PAYLOADS[e.kind].model_validate(e.payload).model_dump(mode="json")
            rows.append(
                {
                    "campaign": e.campaign,
                    "kind": e.kind,
                    "experiment_id": e.experiment_id,
                    "instrument": e.instrument,
                    "at": _utc(e.at) if e.at is not None else now,
                    "recorded_at": now,
                    "payload": payload,
                }
            )
        ids = conn.execute(_INSERT, rows).scalars().all()
        return [Event(id=int(i), **row) for i, row in zip(ids, rows, strict=True)]

    def _writer(self) -> sa.Connection:
        """The connection appends go through, kept open (a pool checkout per
        event costs as much as the insert itself)."""
        if self._writer_conn is None or self._writer_conn.closed or self._writer_conn.invalidated:
            self._writer_conn = self.engine.connect()
        return self._writer_conn

    def events(self, campaign: str, after: int = 0) -> list[Event]:
        """Every event of ``campaign`` with position above ``after``, in order."""
        query = sa.select(_EVENTS).where(_EVENTS.c.campaign == campaign, _EVENTS.c.id > after).order_by(_EVENTS.c.id)
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot read ledger {self.display_url}: {_short(exc)}") from None
        return [
            Event(**{**row, "at": _utc(row["at"]), "recorded_at": _utc(row["recorded_at"])})  # type: ignore[arg-type]
            for row in rows
        ]

    def campaigns(self) -> list[str]:
        """Names of the campaigns in this ledger, in order of first event."""
        query = sa.select(_EVENTS.c.campaign, sa.func.min(_EVENTS.c.id)).group_by(_EVENTS.c.campaign).order_by(sa.func.min(_EVENTS.c.id))
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(query)]

    @contextlib.contextmanager
    def writer_lock(self, campaign: str) -> Iterator[None]:
        """Hold the single-writer lock of ``campaign``, or raise :class:`LedgerError`."""
        if self._path is not None:
            lock_path = self._lock_path(campaign)
            with open(lock_path, "a+") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    raise LedgerError(f"campaign {campaign!r} is already running ({holder}); stop it first or wait") from None
                handle.seek(0)
                handle.truncate()
                handle.write(f"pid {os.getpid()}")
                handle.flush()
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        key = zlib.crc32(f"selflab:{campaign}".encode())
        with self.engine.connect() as conn:
            if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                raise LedgerError(f"campaign {campaign!r} is already being run by another process on {self.display_url}")
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})

    def _lock_path(self, campaign: str) -> Path:
        assert self._path is not None
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", campaign)[:80]
        return self._path.with_name(f"{self._path.name}.{safe}-{zlib.crc32(campaign.encode()):08x}.lock")

    def writer_active(self, campaign: str) -> bool | None:
        """Whether some process holds the writer lock now (``None``: cannot tell)."""
        if self._path is None:
            return None
        lock_path = self._lock_path(campaign)
        if not lock_path.exists():
            return False
        with open(lock_path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def close(self) -> None:
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None
        self.engine.dispose()


def _short(exc: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's boilerplate."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
