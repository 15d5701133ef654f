"""The documented failure hierarchy for instruments.

A driver signals every failure by raising one of these. It never returns a
silent NaN: the controller also rejects NaN or infinite readings and records
them as :class:`BadResponse`.

Example::

    raise InstrumentTimeout("pump did not answer 'STATUS?' within 2.0 s")
"""

from __future__ import annotations


class InstrumentError(Exception):
    """Base class of every instrument failure. ``kind`` names it in the ledger."""

    kind = "instrument_error"


class InstrumentTimeout(InstrumentError):
    """The instrument did not answer, or an experiment overran its timeout."""

    kind = "timeout"


class InstrumentDisconnected(InstrumentError):
    """The link to the instrument is gone (cable pulled, port closed, reboot)."""

    kind = "disconnected"


class BadResponse(InstrumentError):
    """The instrument answered, but the answer is garbled, partial or not finite."""

    kind = "bad_response"


class OutOfLimits(InstrumentError):
    """A request lies outside the instrument's declared safe limits.

    The controller checks limits before dispatch, so an experiment that would
    raise this is refused and recorded without anything being sent.
    """

    kind = "out_of_limits"


def failure_kind(exc: BaseException) -> str:
    """The ledger name of a failure: the hierarchy's ``kind``; ``"timeout"`` for a
    plain :class:`TimeoutError` too (``asyncio.wait_for`` inside a driver); else ``"error"``."""
    if isinstance(exc, InstrumentError):
        return exc.kind
    return "timeout" if isinstance(exc, TimeoutError) else "error"
