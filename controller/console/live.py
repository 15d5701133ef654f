"""Live updates: watch the ledger cheaply, tell every open page when it changed.

:class:`Hub` polls the ledger's last event id every ``poll_s`` seconds (one
indexed ``max(id)``: microseconds on SQLite and Postgres, and a read, so it
never blocks the campaign's writer), and its leases every
``lease_every_s`` (a controller that starts, stops or dies changes a page
without writing an event). Whatever changed, it publishes a new *stamp*
(``position.leases.figures``); a page carries the stamp it was drawn at
(``data-stamp``), the server-sent event stream (``/stream``) sends every new
one, and the page fetches itself again when they differ. So a write shows
in the page about ``poll_s`` plus one page render after it commits.

While events stream in, the hub publishes at most one stamp per gap: the
first change after a quiet spell goes out at once, later ones wait for the
gap to end and go out together. The gap is ``min_gap_s`` (0.5 s) while the
ledger grows at a pace a person can follow, and stretches with the pace
past ``busy_events_per_s`` (20 events a second, about 7 experiments) up to
``max_gap_s`` (2 s): see :func:`gap_for`. A campaign that runs flat out
(a simulator writing hundreds of events a second) is the one a redraw would
slow, since every open page costs the browser and the console a few tens of
milliseconds of CPU, and nobody reads a page that changes faster than that
anyway; so its pages redraw every 2 s, while a real lab's results (seconds
or more apart) show within ``poll_s`` plus one render.

Example (inside the app's lifespan)::

    hub = Hub(source, poll_s=0.2)
    task = asyncio.create_task(hub.run())
    async for stamp in hub.stamps():   # in the SSE endpoint
        ...
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator

from selflab.controller.console.source import LedgerSource

log = logging.getLogger("selflab.console")


class Hub:
    """The ledger's latest stamp, and who waits for the next one."""

    def __init__(self, source: LedgerSource, poll_s: float = 0.2, lease_every_s: float = 1.0, min_gap_s: float = 0.5,
                 max_gap_s: float = 2.0, busy_events_per_s: float = 20.0, pace_window_s: float = 2.0) -> None:
        self.source = source
        self.poll_s = poll_s
        self.lease_every_s = lease_every_s
        self.min_gap_s = min_gap_s
        self.max_gap_s = max(max_gap_s, min_gap_s)
        self.busy_events_per_s = busy_events_per_s
        self.pace_window_s = pace_window_s
        self._seen: deque[tuple[float, int]] = deque()
        """(monotonic time, ledger position) of the polls in the last ``pace_window_s``."""
        self._published_at = -math.inf
        self._held = False
        """A change seen but not yet published (the gap since the last one has not ended)."""
        self.position = 0
        self.leases = "-"
        self.figures = 0
        self._changed = asyncio.Event()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._complained = ""

    @property
    def stamp(self) -> str:
        """What a page drawn now shows: the ledger position, the leases, the figures drawn."""
        return f"{self.position}.{self.leases}.{self.figures}"

    async def run(self) -> None:
        """Poll until :meth:`close`."""
        self._loop = asyncio.get_running_loop()
        leases_due = 0.0
        while not self._closing:
            try:
                position = await asyncio.to_thread(self.source.position)
                leases = self.leases
                if time.monotonic() >= leases_due:
                    leases = hashlib.sha1(repr(await asyncio.to_thread(self.source.lease_fingerprint)).encode()).hexdigest()[:8]
                    leases_due = time.monotonic() + self.lease_every_s
                self._complained = ""
            except Exception as exc:  # (a ledger unreachable for a moment: say so once, keep polling)
                if str(exc) != self._complained:
                    log.warning("console: cannot read the ledger: %s", exc)
                    self._complained = str(exc)
                await asyncio.sleep(max(self.poll_s, 1.0))
                continue
            now = time.monotonic()
            self._seen.append((now, position))
            while self._seen[0][0] < now - self.pace_window_s:
                self._seen.popleft()
            if (position, leases) != (self.position, self.leases):
                self.position, self.leases = position, leases
                self._held = True
            if self._held and now >= self._published_at + self.gap_s:
                self._bump()
            await asyncio.sleep(self.poll_s)

    @property
    def events_per_s(self) -> float:
        """How fast the ledger grew over the last ``pace_window_s`` (events a second)."""
        if len(self._seen) < 2:
            return 0.0
        (t0, p0), (t1, p1) = self._seen[0], self._seen[-1]
        return (p1 - p0) / max(t1 - t0, self.poll_s)

    @property
    def gap_s(self) -> float:
        """The least seconds between two stamps now: :func:`gap_for` the ledger's pace."""
        return gap_for(self.events_per_s, self.min_gap_s, self.max_gap_s, self.busy_events_per_s)

    def _bump(self) -> None:
        self._held = False
        self._published_at = time.monotonic()
        old, self._changed = self._changed, asyncio.Event()
        old.set()

    def figures_ready(self) -> None:
        """A background figure is drawn (called from any thread)."""
        if self._loop is None or self._loop.is_closed():
            return

        def bump() -> None:
            self.figures += 1
            self._bump()

        try:
            self._loop.call_soon_threadsafe(bump)
        except RuntimeError:  # (the loop closed meanwhile: nobody to tell)
            pass

    async def stamps(self, keepalive_s: float = 15.0) -> AsyncIterator[str]:
        """The current stamp, then each new one, until :meth:`close`; the same
        stamp again every ``keepalive_s`` when nothing changes."""
        last = None
        while not self._closing:
            if self.stamp != last:
                last = self.stamp
                yield last
            changed = self._changed
            try:
                async with asyncio.timeout(keepalive_s):
                    await changed.wait()
            except TimeoutError:
                last = None

    def close(self) -> None:
        """Stop polling and end every stream (call on the event loop's thread,
        or through :meth:`close_threadsafe`)."""
        self._closing = True
        self._bump()

    def close_threadsafe(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.close)
        else:
            self._closing = True


def gap_for(events_per_s: float, min_gap_s: float, max_gap_s: float, busy_events_per_s: float) -> float:
    """The least seconds between two page updates for a ledger growing at
    ``events_per_s``: ``min_gap_s`` up to ``busy_events_per_s``, then growing
    in proportion to the pace, up to ``max_gap_s``.

    >>> gap_for(5, 0.5, 2.0, 20), gap_for(40, 0.5, 2.0, 20), gap_for(1500, 0.5, 2.0, 20)
    (0.5, 1.0, 2.0)
    """
    if busy_events_per_s <= 0 or events_per_s <= busy_events_per_s:
        return min_gap_s
    return min(max_gap_s, min_gap_s * events_per_s / busy_events_per_s)
