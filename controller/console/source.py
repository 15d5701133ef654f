"""The console's read-only view of one ledger.

The console never writes here and never takes a writer lock: it opens the
ledger as ``selflab status`` does (``Ledger(url, create=False)``: SQLite
read-only, so WAL readers never block the campaign's writer; Postgres with
plain ``SELECT`` statements).

Two kinds of reads:

* :meth:`LedgerSource.position` and :meth:`LedgerSource.leases`: cheap (one
  indexed ``max(id)``; one small table), polled several times a second to
  tell the pages that something changed;
* :meth:`LedgerSource.campaign`: a campaign's projection and events, kept in
  memory and brought up to date by reading only the events past the last
  position seen (``Ledger.events(campaign, after=...)``), so a page of a
  10,000-experiment campaign costs one small read once it is warm.

A ledger that does not exist yet (the console started before the campaign)
is waited for: :attr:`LedgerSource.waiting` says why, and every read tries
to open it again.

Example::

    source = LedgerSource("sqlite:///runs/demo.sqlite")
    with source.campaign("demo") as view:
        print(view.state.counts(), len(view.events))
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from selflab.controller.lease import Holder
from selflab.controller.ledger import LEASES, WORK, Event, Ledger, LedgerError
from selflab.controller.projection import CampaignState

_EVENTS = sa.table("selflab_events", sa.column("id"))
_MAX_ID = sa.select(sa.func.max(_EVENTS.c.id))


class UnknownCampaign(LedgerError):
    """The ledger holds no campaign of that name."""


@dataclass
class CampaignView:
    """One campaign as the console has read it: its projection and every event, in order."""

    name: str
    state: CampaignState
    events: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class LedgerSource:
    """A read-only ledger, opened lazily, with campaigns cached by position."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.waiting: str | None = None
        """Why the ledger cannot be read yet (it does not exist, it is empty), or ``None``."""
        self._ledger: Ledger | None = None
        self._open_lock = threading.Lock()
        self._views: dict[str, CampaignView] = {}
        self._views_lock = threading.Lock()

    @property
    def display_url(self) -> str:
        return sa.make_url(self.url).render_as_string(hide_password=True)

    def ledger(self) -> Ledger | None:
        """The reader, opened on first use; ``None`` (with :attr:`waiting` set)
        while there is no ledger to read."""
        with self._open_lock:
            if self._ledger is None:
                try:
                    self._ledger = Ledger(self.url, create=False)
                except LedgerError as exc:
                    self.waiting = str(exc)
                    return None
                self.waiting = None
            return self._ledger

    def position(self) -> int:
        """The ledger's last event id (0: none yet, or no ledger)."""
        ledger = self.ledger()
        if ledger is None:
            return 0
        try:
            with ledger.engine.connect() as conn:
                return int(conn.execute(_MAX_ID).scalar() or 0)
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot read ledger {self.display_url}: {str(getattr(exc, 'orig', exc)).strip()}") from None

    def known(self, name: str) -> bool:
        """Whether the ledger holds campaign ``name`` (a campaign once seen
        stays: the ledger is append-only)."""
        with self._views_lock:
            if name in self._views:
                return True
        return name in self.campaigns()

    def campaigns(self) -> list[str]:
        """The ledger's campaigns, in order of their first event."""
        ledger = self.ledger()
        return [] if ledger is None else ledger.campaigns()

    def leases(self) -> dict[str, Holder]:
        """Every campaign's lease holder, live or not (an older ledger without leases: none)."""
        ledger = self.ledger()
        if ledger is None:
            return {}
        try:
            with ledger.engine.connect() as conn:
                rows = conn.execute(sa.select(LEASES)).mappings().all()
        except sa.exc.SQLAlchemyError:
            return {}
        return {r["campaign"]: Holder(campaign=r["campaign"], epoch=int(r["epoch"]), host=r["host"], pid=int(r["pid"]),
                                      process_started=float(r["process_started"]), renewed_at=_utc(r["renewed_at"]),
                                      expires_at=_utc(r["expires_at"]), released=bool(r["released"]))
                for r in rows}

    def lease_fingerprint(self) -> tuple[tuple[str, int, bool], ...]:
        """What a page shows of the leases: which campaign is held by which
        epoch, and whether that is live now. Changes when a controller starts,
        stops or dies, without any event (:meth:`Holder.alive`: a controller on
        this host is dead as soon as its process is; one on another host once
        its lease expires)."""
        now = datetime.now(UTC)
        return tuple(sorted((name, holder.epoch, holder.alive(now)) for name, holder in self.leases().items()))

    def running(self, campaign: str) -> bool | None:
        """Whether a live controller holds ``campaign``'s lease now (``None``: cannot tell)."""
        ledger = self.ledger()
        return None if ledger is None else ledger.writer_active(campaign)

    def work(self, campaign: str) -> list[dict[str, Any]]:
        """The campaign's open and claimed work queue rows: what ``selflab
        worker`` processes hold, or may claim."""
        ledger = self.ledger()
        if ledger is None:
            return []
        query = sa.select(WORK.c.experiment_id, WORK.c.instrument, WORK.c.state, WORK.c.worker, WORK.c.lease_until).where(
            WORK.c.campaign == campaign, WORK.c.state.in_(("open", "claimed"))).order_by(WORK.c.experiment_id)
        try:
            with ledger.engine.connect() as conn:
                return [dict(r) for r in conn.execute(query).mappings()]
        except sa.exc.SQLAlchemyError:  # (a ledger older than the work queue)
            return []

    @contextlib.contextmanager
    def campaign(self, name: str) -> Iterator[CampaignView]:
        """Campaign ``name``, brought up to date, held locked while in use
        (read it, never change it). :class:`UnknownCampaign` when the ledger
        holds no such campaign; :class:`LedgerError` when it cannot be read."""
        ledger = self.ledger()
        if ledger is None:
            raise LedgerError(self.waiting or f"no ledger at {self.display_url}")
        with self._views_lock:
            view = self._views.get(name)
            if view is None:
                if name not in ledger.campaigns():
                    raise UnknownCampaign(f"ledger {self.display_url} holds no campaign {name!r}")
                view = self._views[name] = CampaignView(name, CampaignState(name))
        with view.lock:
            fresh = ledger.events(name, after=view.state.last_position)
            for event in fresh:
                view.state.apply(event)
            view.events.extend(fresh)
            yield view

    def close(self) -> None:
        with self._open_lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
