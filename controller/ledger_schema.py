"""The ledger's tables, triggers and migrations (sqlmodel, SQLite or Postgres).

Four tables: ``selflab_events`` (append-only: database triggers refuse an
update, a delete or a replace), ``selflab_meta`` (``application`` and
``schema_version``, changed only by a migration), ``selflab_work`` (the
claimable queue of ``selflab worker``) and ``selflab_leases`` (one controller
per campaign). A controller's insert carries its lease ``epoch``; the fencing
trigger refuses it once another controller holds the campaign
(:mod:`selflab.controller.lease`).

:func:`ensure_schema` creates the tables of an empty database, checks that a
database is a selflab ledger of a schema this selflab reads, and migrates an
older one. :class:`selflab.controller.ledger.Ledger` calls it on open.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlmodel import JSON, Column, DateTime, Field, SQLModel

from selflab.controller.events import Event
from selflab.controller.ledger_errors import LEASE_LOST_MESSAGE, LedgerError, damaged

SCHEMA_VERSION = 3
"""Bumped whenever the tables change; older ledgers are migrated on open.

1: events and meta. 2: adds ``selflab_work``, the claimable queue of
experiments for ``selflab worker`` processes. 3: adds ``selflab_leases`` (one
controller per campaign, :mod:`selflab.controller.lease`) and the events' ``epoch``,
which the database checks against the lease on every insert (fencing)."""


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
    """The holder's :func:`~selflab.controller.identity.process_identity` (on Linux its start in seconds
    after the host's boot; elsewhere, and in rows an older selflab wrote, its creation time in seconds
    since the epoch): a pid reused by another process has another."""
    renewed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    released: bool = False


TABLES = [EventRow.__table__, MetaRow.__table__, WorkRow.__table__, LeaseRow.__table__]  # type: ignore[attr-defined]
WORK: sa.Table = WorkRow.__table__  # type: ignore[attr-defined]
LEASES: sa.Table = LeaseRow.__table__  # type: ignore[attr-defined]
EVENTS: sa.Table = EventRow.__table__  # type: ignore[attr-defined]
APPEND_LOCK = zlib.crc32(b"selflab:append")
CREATE_LOCK = zlib.crc32(b"selflab:create")
INSERT = sa.insert(EVENTS).returning(EVENTS.c.id, sort_by_parameter_order=True)
EVENT_COLUMNS = [c for c in EVENTS.c if c.name != "epoch"]
"""What a reader selects: the fields of :class:`selflab.controller.events.Event` (a ledger of schema 2, read-only, has no ``epoch``)."""

SQLITE_TRIGGERS = [
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
POSTGRES_TRIGGERS = [
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

SQLITE_FENCE = [
    f"""CREATE TRIGGER IF NOT EXISTS selflab_events_fenced
        BEFORE INSERT ON selflab_events
        WHEN NEW.epoch IS NOT NULL AND NEW.epoch IS NOT (SELECT epoch FROM selflab_leases WHERE campaign = NEW.campaign)
        BEGIN SELECT RAISE(ABORT, '{LEASE_LOST_MESSAGE}: another controller took this campaign'); END"""
]
POSTGRES_FENCE = [
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
SQLITE_TRIGGERS += SQLITE_FENCE  # (created with the ledger, and by the migration to schema 3)
POSTGRES_TRIGGERS += POSTGRES_FENCE


EVENT_FIELDS = tuple(Event.model_fields)
"""The columns a ledger must have for its events to be read."""


def ensure_schema(engine: Engine, backend: str, display_url: str, create: bool) -> None:
    """Check that ``engine`` holds a selflab ledger of a schema this selflab
    reads; with ``create``, create an empty database's tables and migrate an
    older schema (a reader reads an older schema as it is).

    Raises:
        LedgerError: not a selflab ledger, a newer schema, or a damaged one.
    """
    inspector = sa.inspect(engine)
    tables = set(inspector.get_table_names())
    if "selflab_meta" not in tables:
        if tables:
            raise LedgerError(f"{display_url} is not a selflab ledger (it holds tables: {', '.join(sorted(tables)) or 'none'})")
        if not create:
            raise LedgerError(f"{display_url} is empty: no selflab ledger there yet")
        create_tables(engine, backend)
        return ensure_schema(engine, backend, display_url, create=False)
    with engine.connect() as conn:
        meta = dict(conn.execute(sa.select(MetaRow.__table__.c.key, MetaRow.__table__.c.value)).all())  # type: ignore[attr-defined]
    if meta.get("application") != "selflab":
        raise LedgerError(f"{display_url} is not a selflab ledger (selflab_meta names {meta.get('application')!r})")
    try:
        version = int(meta.get("schema_version", "0"))
    except ValueError:
        raise damaged(display_url, f"its schema_version is {meta['schema_version']!r}, not a number") from None
    if version > SCHEMA_VERSION:
        raise LedgerError(
            f"{display_url} has ledger schema {version}, newer than this selflab's {SCHEMA_VERSION}; upgrade selflab"
        )
    if version < 1:
        raise LedgerError(f"{display_url} has ledger schema {version}, which this selflab cannot migrate")
    if "selflab_events" not in tables:
        raise damaged(display_url, "its selflab_events table is missing")
    missing = [name for name in EVENT_FIELDS if name not in {c["name"] for c in inspector.get_columns("selflab_events")}]
    if missing:
        raise damaged(display_url, f"its selflab_events table has no column {', '.join(missing)}")
    if version < SCHEMA_VERSION and create:  # (a reader reads an older schema as it is, and writes nothing)
        migrate(engine, backend, version)


def migrate(engine: Engine, backend: str, version: int) -> None:
    """Bring a ledger of an older schema up to date, in one transaction."""
    with engine.begin() as conn:
        if backend == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": CREATE_LOCK})
        if version < 2:
            SQLModel.metadata.create_all(conn, tables=[WORK])
        if version < 3 and "epoch" not in {c["name"] for c in sa.inspect(conn).get_columns("selflab_events")}:
            conn.exec_driver_sql("ALTER TABLE selflab_events ADD COLUMN epoch INTEGER")
        if version < 3:
            SQLModel.metadata.create_all(conn, tables=[LEASES])
            for ddl in SQLITE_TRIGGERS if backend == "sqlite" else POSTGRES_TRIGGERS:
                conn.exec_driver_sql(ddl)
        conn.execute(sa.update(MetaRow.__table__).where(MetaRow.__table__.c.key == "schema_version")  # type: ignore[attr-defined]
                     .values(value=str(SCHEMA_VERSION)))


def create_tables(engine: Engine, backend: str) -> None:
    """Create the tables in one transaction that holds the database's write
    lock (SQLite) or an advisory lock (Postgres), so that processes starting
    together on an empty database (a planner and its workers) create it
    once, and nobody ever sees half a ledger."""
    meta = [{"key": "application", "value": "selflab"}, {"key": "schema_version", "value": str(SCHEMA_VERSION)}]
    if backend == "sqlite":
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            if cursor.execute("SELECT 1 FROM sqlite_master WHERE name = 'selflab_meta'").fetchone() is None:
                for table in TABLES:
                    cursor.execute(str(CreateTable(table).compile(dialect=engine.dialect)))
                    for index in table.indexes:
                        cursor.execute(str(CreateIndex(index).compile(dialect=engine.dialect)))
                for ddl in SQLITE_TRIGGERS:
                    cursor.execute(ddl)
                cursor.executemany("INSERT INTO selflab_meta (key, value) VALUES (:key, :value)", meta)
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()
        return
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": CREATE_LOCK})
        if conn.execute(sa.text("SELECT to_regclass('selflab_meta')")).scalar() is None:
            SQLModel.metadata.create_all(conn, tables=TABLES)
            for ddl in POSTGRES_TRIGGERS:
                conn.exec_driver_sql(ddl)
            conn.execute(sa.insert(MetaRow.__table__), meta)  # type: ignore[attr-defined]
