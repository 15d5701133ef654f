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
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlmodel import JSON, Column, DateTime, Field, SQLModel

from selflab.controller.events import KINDS, PAYLOADS

SCHEMA_VERSION = 3
"""Bumped whenever the tables change; older ledgers are migrated on open.

1: events and meta. 2: adds ``selflab_work``, the claimable queue of
experiments for ``selflab worker`` processes. 3: adds ``selflab_leases`` (one
controller per campaign, :mod:`selflab.controller.lease`) and the events' ``epoch``,
which the database checks against the lease on every insert (fencing)."""


class LedgerError(Exception):
    """The ledger cannot be opened, read or written; the message says why."""


class LeaseLost(LedgerError):
    """This process's appends were refused because another controller took
    the campaign's lease (see :mod:`selflab.controller.lease`): it must stop."""


LEASE_LOST_MESSAGE = "selflab lease lost"
"""What the fencing trigger raises; :meth:`Ledger.transaction` turns it into :class:`LeaseLost`."""


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
    epoch: int | None = Field(default=None)
    """The lease epoch of the controller that wrote it (``None``: a worker or
    a tool). The database refuses a controller's insert whose epoch is not the
    campaign's current lease epoch, so a controller that lost its lease can
    never append again."""


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


class LeaseRow(SQLModel, table=True):
    """Who runs each campaign (mutable: one row per campaign, see :mod:`selflab.controller.lease`)."""

    __tablename__ = "selflab_leases"

    campaign: str = Field(primary_key=True, max_length=100)
    epoch: int
    """Bumped by every controller that takes the campaign; its appends carry it."""
    host: str = Field(max_length=200)
    pid: int
    process_started: float
    """The holder's process creation time (seconds since the epoch): a pid reused by another process has another."""
    renewed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    released: bool = False


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


_TABLES = [EventRow.__table__, MetaRow.__table__, WorkRow.__table__, LeaseRow.__table__]  # type: ignore[attr-defined]
WORK: sa.Table = WorkRow.__table__  # type: ignore[attr-defined]
LEASES: sa.Table = LeaseRow.__table__  # type: ignore[attr-defined]
_EVENTS: sa.Table = EventRow.__table__  # type: ignore[attr-defined]
_APPEND_LOCK = zlib.crc32(b"selflab:append")
_CREATE_LOCK = zlib.crc32(b"selflab:create")
_INSERT = sa.insert(_EVENTS).returning(_EVENTS.c.id, sort_by_parameter_order=True)
_EVENT_COLUMNS = [c for c in _EVENTS.c if c.name != "epoch"]
"""What a reader selects: the fields of :class:`Event` (a ledger of schema 2, read-only, has no ``epoch``)."""

_SQLITE_TRIGGERS = [
    *(f"""CREATE TRIGGER IF NOT EXISTS selflab_events_no_{op.lower()}
        BEFORE {op} ON selflab_events
        BEGIN SELECT RAISE(ABORT, 'the selflab ledger is append-only'); END"""
      for op in ("UPDATE", "DELETE")),
    # INSERT OR REPLACE / REPLACE / UPSERT of an existing id: REPLACE deletes the
    # old row without firing the DELETE trigger, so refuse it before it inserts.
    """CREATE TRIGGER IF NOT EXISTS selflab_events_no_replace
        BEFORE INSERT ON selflab_events
        WHEN EXISTS (SELECT 1 FROM selflab_events WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'the selflab ledger is append-only: that event id exists already'); END""",
    """CREATE TRIGGER IF NOT EXISTS selflab_meta_no_replace
        BEFORE INSERT ON selflab_meta
        WHEN EXISTS (SELECT 1 FROM selflab_meta WHERE key = NEW.key)
        BEGIN SELECT RAISE(ABORT, 'the selflab ledger is append-only: selflab_meta keys are never rewritten'); END""",
    """CREATE TRIGGER IF NOT EXISTS selflab_meta_no_delete
        BEFORE DELETE ON selflab_meta
        BEGIN SELECT RAISE(ABORT, 'the selflab ledger is append-only: selflab_meta keys are never deleted'); END""",
    # (a migration may raise schema_version; nothing else in selflab_meta changes)
    """CREATE TRIGGER IF NOT EXISTS selflab_meta_no_update
        BEFORE UPDATE ON selflab_meta
        WHEN (OLD.key = 'schema_version' AND NEW.key = OLD.key AND NEW.value <> '' AND NEW.value NOT GLOB '*[^0-9]*'
              AND CAST(NEW.value AS INTEGER) > CAST(OLD.value AS INTEGER)) IS NOT 1
        BEGIN SELECT RAISE(ABORT, 'the selflab ledger is append-only: selflab_meta changes only by a schema upgrade'); END""",
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
    # (a migration may raise schema_version; nothing else in selflab_meta changes)
    """CREATE OR REPLACE FUNCTION selflab_meta_guard() RETURNS trigger AS $$
       BEGIN
         IF TG_OP = 'UPDATE' AND OLD.key = 'schema_version' AND NEW.key = OLD.key
            AND length(NEW.value) BETWEEN 1 AND 9 AND NEW.value !~ '[^0-9]'
            AND length(OLD.value) BETWEEN 1 AND 9 AND OLD.value !~ '[^0-9]' THEN
           IF NEW.value::int > OLD.value::int THEN
             RETURN NEW;
           END IF;
         END IF;
         RAISE EXCEPTION 'the selflab ledger is append-only: selflab_meta changes only by a schema upgrade';
       END $$ LANGUAGE plpgsql""",
    """DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'selflab_events_no_truncate') THEN
           CREATE TRIGGER selflab_events_no_truncate BEFORE TRUNCATE ON selflab_events
           FOR EACH STATEMENT EXECUTE FUNCTION selflab_append_only();
         END IF;
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'selflab_meta_guard') THEN
           CREATE TRIGGER selflab_meta_guard BEFORE UPDATE OR DELETE ON selflab_meta
           FOR EACH ROW EXECUTE FUNCTION selflab_meta_guard();
         END IF;
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'selflab_meta_no_truncate') THEN
           CREATE TRIGGER selflab_meta_no_truncate BEFORE TRUNCATE ON selflab_meta
           FOR EACH STATEMENT EXECUTE FUNCTION selflab_append_only();
         END IF;
       END $$""",
]

_SQLITE_FENCE = [
    f"""CREATE TRIGGER IF NOT EXISTS selflab_events_fenced
        BEFORE INSERT ON selflab_events
        WHEN NEW.epoch IS NOT NULL AND NEW.epoch IS NOT (SELECT epoch FROM selflab_leases WHERE campaign = NEW.campaign)
        BEGIN SELECT RAISE(ABORT, '{LEASE_LOST_MESSAGE}: another controller took this campaign'); END"""
]
_POSTGRES_FENCE = [
    f"""CREATE OR REPLACE FUNCTION selflab_fence() RETURNS trigger AS $$
       BEGIN
         IF NEW.epoch IS NOT NULL AND NEW.epoch IS DISTINCT FROM
            (SELECT epoch FROM selflab_leases WHERE campaign = NEW.campaign) THEN
           RAISE EXCEPTION '{LEASE_LOST_MESSAGE}: another controller took this campaign';
         END IF;
         RETURN NEW;
       END $$ LANGUAGE plpgsql""",
    """DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'selflab_events_fenced') THEN
           CREATE TRIGGER selflab_events_fenced BEFORE INSERT ON selflab_events
           FOR EACH ROW EXECUTE FUNCTION selflab_fence();
         END IF;
       END $$""",
]
_SQLITE_TRIGGERS += _SQLITE_FENCE  # (created with the ledger, and by the migration to schema 3)
_POSTGRES_TRIGGERS += _POSTGRES_FENCE


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
            self._check_schema(create)
        except LedgerError:
            raise
        except ModuleNotFoundError as exc:
            raise LedgerError(f"the driver for {self.backend} is not installed ({exc.name}); pip install 'selflab[postgres]'") from None
        except sa.exc.SQLAlchemyError as exc:
            if _is_damage(exc):
                raise _damaged(self.display_url, _short(exc)) from None
            raise LedgerError(f"cannot open ledger {self.display_url}: {_short(exc)}") from None
        except ValueError as exc:  # text that is not text (UnicodeDecodeError)
            raise _damaged(self.display_url, _short(exc)) from None

    @property
    def display_url(self) -> str:
        """The URL with any password hidden."""
        return make_url(self.url).render_as_string(hide_password=True)

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
            raise _damaged(self.display_url, f"it is not a selflab ledger, or a damaged one ({exc})" if not_one else str(exc)) from None
        except UnicodeDecodeError as exc:  # a table name that is not text
            raise _damaged(self.display_url, f"its table list cannot be read ({exc})") from None
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
        try:
            version = int(meta.get("schema_version", "0"))
        except ValueError:
            raise _damaged(self.display_url, f"its schema_version is {meta['schema_version']!r}, not a number") from None
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.display_url} has ledger schema {version}, newer than this selflab's {SCHEMA_VERSION}; upgrade selflab"
            )
        if version < 1:
            raise LedgerError(f"{self.display_url} has ledger schema {version}, which this selflab cannot migrate")
        if "selflab_events" not in tables:
            raise _damaged(self.display_url, "its selflab_events table is missing")
        missing = [name for name in Event.model_fields if name not in {c["name"] for c in inspector.get_columns("selflab_events")}]
        if missing:
            raise _damaged(self.display_url, f"its selflab_events table has no column {', '.join(missing)}")
        if version < SCHEMA_VERSION and create:  # (a reader reads an older schema as it is, and writes nothing)
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Bring a ledger of an older schema up to date, in one transaction."""
        with self.engine.begin() as conn:
            if self.backend == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CREATE_LOCK})
            if version < 2:
                SQLModel.metadata.create_all(conn, tables=[WORK])
            if version < 3 and "epoch" not in {c["name"] for c in sa.inspect(conn).get_columns("selflab_events")}:
                conn.exec_driver_sql("ALTER TABLE selflab_events ADD COLUMN epoch INTEGER")
            if version < 3:
                SQLModel.metadata.create_all(conn, tables=[LEASES])
                for ddl in _SQLITE_TRIGGERS if self.backend == "sqlite" else _POSTGRES_TRIGGERS:
                    conn.exec_driver_sql(ddl)
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

        A database session cut while the transaction ran (an idle timeout, a
        pooler, a firewall) is retried once on a fresh connection: nothing
        had committed. A cut during the commit itself is not retried (it may
        have landed), and is a :class:`LedgerError`.
        """
        for attempt in (1, 2):
            inserted = False
            try:
                with self.transaction() as conn:
                    if work:
                        conn.execute(sa.insert(WORK), list(work))
                    written = self.insert_events(conn, events)
                    inserted = True
                return written
            except sa.exc.DBAPIError as exc:
                if attempt == 1 and not inserted and exc.connection_invalidated:
                    continue
                raise LedgerError(f"cannot write to ledger {self.display_url}: {_short(exc)}") from None
            except sa.exc.SQLAlchemyError as exc:
                raise LedgerError(f"cannot write to ledger {self.display_url}: {_short(exc)}") from None
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One write transaction on the writer connection. On Postgres it first
        takes a transaction-level advisory lock, so that events commit in the
        order of their ids and a reader polling ``after=position`` misses none."""
        with self._writer_guard:  # one transaction at a time on the shared connection
            try:
                conn, transaction = self._begin()
                with transaction:
                    yield conn
            except sa.exc.SQLAlchemyError as exc:
                if LEASE_LOST_MESSAGE in str(exc):
                    raise LeaseLost(f"another controller took over: {_short(exc)}") from None
                raise

    def _begin(self) -> tuple[sa.Connection, sa.RootTransaction]:
        """Begin on the kept writer connection; if its session was cut while
        idle (a Postgres idle timeout, a pooler, a firewall), begin once more
        on a fresh one rather than fail the campaign."""
        for attempt in (1, 2):
            conn = self._writer()
            transaction = conn.begin()
            try:
                if self.backend == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _APPEND_LOCK})
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
        stamped = [{**row, "epoch": self._epochs.get(row["campaign"])} for row in rows]
        ids = conn.execute(_INSERT, stamped).scalars().all()
        return [Event(id=int(i), **row) for i, row in zip(ids, rows, strict=True)]

    def _writer(self) -> sa.Connection:
        """The connection appends go through, kept open (a pool checkout per
        event costs as much as the insert itself)."""
        if self._writer_conn is None or self._writer_conn.closed or self._writer_conn.invalidated:
            self._writer_conn = self.engine.connect()
        return self._writer_conn

    def events(self, campaign: str, after: int = 0) -> list[Event]:
        """Every event of ``campaign`` with position above ``after``, in order."""
        query = sa.select(*_EVENT_COLUMNS).where(_EVENTS.c.campaign == campaign, _EVENTS.c.id > after).order_by(_EVENTS.c.id)
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
            raise _read_error(self.display_url, exc) from None
        except ValueError as exc:  # a payload that is not JSON, a time that is not one
            raise _damaged(self.display_url, f"an event of campaign {campaign!r} cannot be decoded ({_short(exc)})") from None
        return [_to_event(row, self.display_url) for row in rows]

    def campaigns(self) -> list[str]:
        """Names of the campaigns in this ledger, in order of first event."""
        query = sa.select(_EVENTS.c.campaign, sa.func.min(_EVENTS.c.id)).group_by(_EVENTS.c.campaign).order_by(sa.func.min(_EVENTS.c.id))
        try:
            with self.engine.connect() as conn:
                return [row[0] for row in conn.execute(query)]
        except sa.exc.SQLAlchemyError as exc:
            raise _read_error(self.display_url, exc) from None
        except ValueError as exc:  # a name that is not text (UnicodeDecodeError)
            raise _damaged(self.display_url, f"a campaign name cannot be decoded ({_short(exc)})") from None

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


def _short(exc: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's boilerplate
    (for a validation error: each fault, on one line)."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _read_only_uri(path: Path) -> str:
    """An SQLite URI that opens ``path`` read-only (``?`` and ``#`` in names escaped)."""
    return f"file:{quote(str(path))}?mode=ro"


def _damaged(where: str, what: str) -> LedgerError:
    return LedgerError(f"ledger {where} is damaged: {what}; restore it from a backup, or point --ledger elsewhere")


def _is_damage(exc: sa.exc.SQLAlchemyError) -> bool:
    """Whether SQLite found the file corrupt (not merely locked, unreachable or read-only)."""
    orig = getattr(exc, "orig", None)
    return isinstance(orig, sqlite3.DatabaseError) and not isinstance(orig, sqlite3.OperationalError)


def _read_error(where: str, exc: sa.exc.SQLAlchemyError) -> LedgerError:
    if _is_damage(exc):
        return _damaged(where, _short(exc))
    return LedgerError(f"cannot read ledger {where}: {_short(exc)}")


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
        model = PAYLOADS[kind]
        model.model_validate({k: v for k, v in payload.items() if k in model.model_fields})
        at, recorded_at = row["at"], row["recorded_at"]
        return Event(**{**row, "at": _utc(at) if isinstance(at, datetime) else at,  # type: ignore[arg-type]
                        "recorded_at": _utc(recorded_at) if isinstance(recorded_at, datetime) else recorded_at})
    except ValueError as exc:  # (pydantic's ValidationError is one)
        raise _damaged(where, f"event {row['id']} cannot be read: {_short(exc)}") from None
