"""What every line transport shares: settings, retries with backoff, frame logging.

A *line transport* sends one command line and reads one reply line. The
concrete links (:class:`~selflab.instruments.transports.serial_port.SerialTransport`
on pyserial, :class:`~selflab.instruments.visa.VisaTransport` on pyvisa) implement
three small hooks; :class:`LineTransport` adds the policy on top:

* one exchange at a time (an :class:`asyncio.Lock`), so concurrent callers
  never interleave frames;
* ``parse`` turns the reply text into a value; a :class:`ValueError` from it
  becomes :class:`~selflab.instruments.errors.BadResponse`;
* an *idempotent* query (a read such as ``TEMP?``) is retried up to
  ``retries`` times after a timeout, a bad reply or a lost link, waiting
  ``backoff_s``, ``2 * backoff_s``, ``4 * backoff_s`` ... (at most
  ``backoff_max_s``) in between. A command with side effects (``RUN``) is
  sent once: a lost reply does not mean it was not done;
* a lost link is reopened before the next command, with the same backoff.

Retries are summarized, not logged one by one (the details are at DEBUG): the
first query that needed a retry and then got its answer is one WARNING line;
the retried queries that follow are counted, and the count is one WARNING
line a minute (``hotplate: 7 retried queries in the last 60 s, all recovered
(timeout 4, bad_response 3)``) and one more at :meth:`LineTransport.close`.
A query whose retries all fail raises; its caller reports the failure.

Every frame is logged at DEBUG on the logger ``selflab.transport`` as
``<port> -> b'TEMP?\\r\\n'`` (sent) or ``<port> <- b'85.20\\r\\n'``
(received); each record carries ``port``, ``direction`` (``"send"`` or
``"receive"``) and ``nbytes`` attributes, which
:mod:`selflab.instruments.testing` uses as a traffic spy.

Example::

    settings = SerialSettings(port="/dev/ttyUSB0", timeout_s=0.5, retries=2)
    async with SerialTransport(settings) as link:
        celsius = await link.query("TEMP?", parse=float, idempotent=True)
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from selflab.instruments.errors import BadResponse, InstrumentDisconnected, InstrumentError, InstrumentTimeout

__all__ = ["LineSettings", "LineTransport", "RetrySummary", "log_frame", "TRANSPORT_LOGGER", "SUMMARY_EVERY_S"]

T = TypeVar("T")

TRANSPORT_LOGGER = "selflab.transport"
"""Name of the logger that records every frame at DEBUG."""

log = logging.getLogger(TRANSPORT_LOGGER)

_RETRYABLE = (InstrumentTimeout, BadResponse, InstrumentDisconnected)

SUMMARY_EVERY_S = 60.0
"""Seconds between two WARNING summaries of one link's retried queries."""


def log_frame(port: str, direction: Literal["send", "receive", "discard"], data: bytes | str) -> None:
    """Log one frame at DEBUG with ``port``, ``direction`` and ``nbytes`` attributes."""
    if log.isEnabledFor(logging.DEBUG):
        arrow = {"send": "->", "receive": "<-", "discard": "<- (discarded)"}[direction]
        nbytes = len(data.encode() if isinstance(data, str) else data)
        log.debug("%s %s %r", port, arrow, data, extra={"port": port, "direction": direction, "nbytes": nbytes})


class LineSettings(BaseModel):
    """Framing, timing and retry settings shared by every line transport.

    Attributes:
        write_termination: appended to every command, e.g. ``"\\r\\n"``.
        read_termination: ends every reply.
        encoding: text codec of commands and replies (``"ascii"``, ``"latin-1"``...).
        timeout_s: seconds to wait for a whole reply line (> 0).
        retries: extra attempts for idempotent queries and for reopening a
            lost link (>= 0).
        backoff_s: seconds before the first retry; doubled on each further one.
        backoff_max_s: longest wait between two attempts, seconds.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    write_termination: str = Field(default="\r\n", min_length=1)
    read_termination: str = Field(default="\r\n", min_length=1)
    encoding: str = "ascii"
    timeout_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=2, ge=0, le=20)
    backoff_s: float = Field(default=0.1, ge=0)
    backoff_max_s: float = Field(default=2.0, ge=0)

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based).

        >>> LineSettings(backoff_s=0.1, backoff_max_s=0.3).delay(3)
        0.3
        """
        return float(min(self.backoff_s * 2**attempt, self.backoff_max_s))


class RetrySummary:
    """One link's retried queries, logged as a few summary lines rather than a flood.

    The first retried query that recovers after a quiet spell is logged at
    WARNING with its last error; every retried query (details at DEBUG) is
    counted. Once ``every_s`` seconds have passed since the first, the next
    retried query logs the count at WARNING, e.g. ``/dev/ttyUSB0: 7 retried
    queries in the last 60 s, all recovered (timeout 4, bad_response 3)``;
    so do a quiet spell of ``every_s`` (after which the next recovery is
    detailed again) and :meth:`close`. A count that says no more than the
    detailed line is not logged.

    Example::

        summary = RetrySummary("/dev/ttyUSB0")
        summary.retried("TEMP?", [InstrumentTimeout("no reply")], recovered=True, allowed=2)   # WARNING
        summary.retried("TEMP?", [InstrumentTimeout("no reply")], recovered=True, allowed=2)   # DEBUG
        summary.close()   # WARNING: 2 retried queries in the last 1 s, all recovered (timeout 2)
    """

    def __init__(self, name: str, every_s: float = SUMMARY_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.every_s = every_s
        self._clock = clock
        self._since: float | None = None  # start of the spell being counted; None: quiet
        self._last = 0.0  # the last retried query
        self._shown = 0  # of the counted queries, those logged in detail at WARNING
        self._recovered = 0
        self._failed = 0
        self._kinds: Counter[str] = Counter()

    def retried(self, command: str, errors: Sequence[InstrumentError], recovered: bool, allowed: int) -> None:
        """Record one query that failed ``len(errors)`` times, out of ``allowed``
        retries (``recovered``: and then got its answer)."""
        now = self._clock()
        if self._since is not None and now - self._last >= self.every_s:  # after a quiet spell: start over
            self._flush(now)
            self._since = None
        elif self._since is not None and now - self._since >= self.every_s:
            self._flush(now)
            self._since = now
        last = errors[-1]
        outcome = f"answered on retry {len(errors)} of {allowed}" if recovered else f"failed after {len(errors)} attempts"
        line = f"{last} [{last.kind}]; {command!r} {outcome}"
        if self._since is None and recovered:
            log.warning("%s (further retried queries on %s: one summary every %g s)", line, self.name, self.every_s)
            self._shown += 1
        else:
            log.debug("%s", line)
        self._since = now if self._since is None else self._since
        self._last = now
        self._recovered += recovered
        self._failed += not recovered
        self._kinds.update(e.kind for e in errors)

    def close(self) -> None:
        """Log what is counted and not yet said; the next recovery is detailed again."""
        self._flush(self._clock())
        self._since = None

    def _flush(self, now: float) -> None:
        total = self._recovered + self._failed
        if total > self._shown:
            assert self._since is not None
            outcome = "all recovered" if not self._failed else f"{self._recovered} recovered, {self._failed} failed"
            kinds = ", ".join(f"{kind} {n}" for kind, n in self._kinds.most_common())
            log.warning("%s: %d retried quer%s in the last %.0f s, %s (%s)", self.name, total, "y" if total == 1 else "ies",
                        max(now - self._since, 1.0), outcome, kinds)
        self._recovered = self._failed = self._shown = 0
        self._kinds.clear()


class LineTransport:
    """Retries, reconnection and the one-at-a-time lock around a concrete link.

    Subclasses implement :meth:`_open_link`, :meth:`_close_link`,
    :meth:`_link_is_up` and :meth:`_exchange`, raising only
    :class:`InstrumentTimeout`, :class:`InstrumentDisconnected` and
    :class:`BadResponse`.
    """

    def __init__(self, settings: LineSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        """Port or resource name, used in every message."""
        self._lock = asyncio.Lock()
        self._wanted = False  # open() was called and close() was not
        self.retries = RetrySummary(name)
        """This link's retried queries, summarized in the log."""

    async def __aenter__(self) -> LineTransport:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the link, retrying with backoff.

        Raises:
            InstrumentDisconnected: the port or resource cannot be opened.
        """
        self._wanted = True
        async with self._lock:
            try:
                await self._reopen()
            except InstrumentDisconnected:
                self._wanted = False
                raise

    async def close(self) -> None:
        """Close the link; safe to call twice, or before :meth:`open`."""
        self._wanted = False
        self._close_link()
        self.retries.close()

    async def query(
        self,
        command: str,
        *,
        parse: Callable[[str], T] = str,  # type: ignore[assignment]
        idempotent: bool = False,
        timeout_s: float | None = None,
    ) -> T:
        """Send ``command`` and return ``parse(reply)``.

        Args:
            command: the command without its terminator, e.g. ``"TEMP?"``.
            parse: turns the reply text (terminator removed) into a value; a
                :class:`ValueError` or :class:`BadResponse` it raises means a
                bad reply. Other :class:`InstrumentError` pass through.
            idempotent: the command has no side effects, so it may be resent.
            timeout_s: seconds for this reply (default ``settings.timeout_s``).

        Raises:
            InstrumentTimeout: no whole reply within the timeout.
            BadResponse: garbled, partial, undecodable or unparsable reply.
            InstrumentDisconnected: the link is gone and could not be reopened.
        """
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        attempts = 1 + (self.settings.retries if idempotent else 0)
        errors: list[InstrumentError] = []
        async with self._lock:
            for attempt in range(attempts):
                try:
                    if not self._wanted:
                        raise InstrumentDisconnected(f"{self.name}: link is closed; call connect() first")
                    if not self._link_is_up():
                        await self._reopen()
                    reply = await self._exchange(command, timeout)
                    value = _parse(parse, reply, self.name, command)
                except _RETRYABLE as exc:
                    if isinstance(exc, InstrumentDisconnected):
                        self._close_link()
                    if attempt + 1 >= attempts or not self._wanted:
                        if errors:
                            self.retries.retried(command, [*errors, exc], recovered=False, allowed=attempts - 1)
                        raise
                    errors.append(exc)
                    delay = self.settings.delay(attempt)
                    log.debug("%s [%s]; retry %d of %d in %.2f s", exc, exc.kind, attempt + 1, attempts - 1, delay)
                    await asyncio.sleep(delay)
                else:
                    if errors:
                        self.retries.retried(command, errors, recovered=True, allowed=attempts - 1)
                    return value
        raise AssertionError("unreachable")  # pragma: no cover

    async def _reopen(self) -> None:
        """Open the link, trying ``1 + retries`` times with backoff."""
        tries = 1 + self.settings.retries
        for attempt in range(tries):
            try:
                await self._open_link()
                log.debug("%s: link open", self.name)
                return
            except InstrumentDisconnected as exc:
                if attempt + 1 >= tries:
                    raise
                delay = self.settings.delay(attempt)
                log.debug("%s; retry %d of %d in %.2f s", exc, attempt + 1, tries - 1, delay)
                await asyncio.sleep(delay)

    # --- hooks ------------------------------------------------------------------

    async def _open_link(self) -> None:
        raise NotImplementedError

    def _close_link(self) -> None:
        raise NotImplementedError

    def _link_is_up(self) -> bool:
        raise NotImplementedError

    async def _exchange(self, command: str, timeout_s: float) -> str:
        raise NotImplementedError


def _parse(parse: Callable[[str], T], reply: str, name: str, command: str) -> T:
    """``parse(reply)``; its errors name the port, the command and the reply."""
    try:
        return parse(reply)
    except InstrumentError as exc:
        raise type(exc)(f"{name}: {command!r} -> {reply!r}: {exc}") from None
    except (ValueError, IndexError) as exc:
        raise BadResponse(f"{name}: {command!r} -> {reply!r}: {exc}") from None
