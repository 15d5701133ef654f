"""One failure classification: how an exception raised while running an
experiment is named and worded in the ledger.

An instrument signals a failure with the documented hierarchy of
:mod:`selflab.instruments.errors` (its ``kind`` names it: ``timeout``,
``disconnected``, ``bad_response``, ``out_of_limits``, ``instrument_error``).
A plain :class:`TimeoutError` (``asyncio.wait_for`` in a driver) is a
``timeout`` too; anything else is an ``error`` and keeps its type name in the
message, so a bug in a driver reads as one.

Example::

    except Exception as exc:
        NewEvent(campaign=name, kind=EventKind.FAILED, experiment_id=eid, payload=failed_payload(exc))
"""

from __future__ import annotations

from selflab.controller.events import Failed
from selflab.instruments.errors import InstrumentError, failure_kind


def failure_name(exc: BaseException) -> str:
    """The ledger's name of failure ``exc`` (``Failed.error_kind``)."""
    return failure_kind(exc)


def failure_message(exc: BaseException) -> str:
    """What the ledger says about failure ``exc``: an instrument's own message,
    or ``Type: message`` for any other exception; never empty."""
    message = str(exc) if isinstance(exc, InstrumentError) else f"{type(exc).__name__}: {exc}"
    return message or failure_name(exc)


def failed_payload(exc: BaseException) -> Failed:
    """The payload of the ``failed`` event for an experiment that raised ``exc``."""
    return Failed(error_kind=failure_name(exc), message=failure_message(exc))
