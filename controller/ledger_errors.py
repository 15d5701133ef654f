"""The ledger's errors, and the wording of a database fault as one.

:class:`LedgerError` says why a ledger cannot be opened, read or written;
:class:`LeaseLost` says another controller took the campaign over;
:class:`LeaseHeld` says a live controller runs the campaign already;
:class:`LedgerBusy` says a write waited too long for another's lock. The
helpers turn SQLAlchemy's and pydantic's errors into one short line.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from pydantic import ValidationError


class LedgerError(Exception):
    """The ledger cannot be opened, read or written; the message says why."""


class LeaseLost(LedgerError):
    """This process's appends were refused because another controller took
    the campaign's lease (see :mod:`selflab.controller.lease`): it must stop."""


class LeaseHeld(LedgerError):
    """A live controller holds the campaign's lease (see
    :mod:`selflab.controller.lease`): this process may not take it."""


class LedgerBusy(LedgerError):
    """A write transaction waited longer than its bound for a lock another
    process holds (Postgres's ``lock_timeout``): nothing was written."""


LEASE_LOST_MESSAGE = "selflab lease lost"
"""What the fencing trigger raises; :meth:`selflab.controller.ledger.Ledger.transaction` turns it into :class:`LeaseLost`."""


def short(exc: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's boilerplate
    (for a validation error: each fault, on one line)."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def damaged(where: str, what: str) -> LedgerError:
    """The error for a ledger at ``where`` found damaged: ``what`` is wrong, and what to do."""
    return LedgerError(f"ledger {where} is damaged: {what}; restore it from a backup, or point --ledger elsewhere")


def is_damage(exc: sa.exc.SQLAlchemyError) -> bool:
    """Whether SQLite found the file corrupt (not merely locked, unreachable or read-only)."""
    orig = getattr(exc, "orig", None)
    return isinstance(orig, sqlite3.DatabaseError) and not isinstance(orig, sqlite3.OperationalError)


def read_error(where: str, exc: sa.exc.SQLAlchemyError) -> LedgerError:
    """The error for a failed read of the ledger at ``where``: damage, or another fault."""
    if is_damage(exc):
        return damaged(where, short(exc))
    return LedgerError(f"cannot read ledger {where}: {short(exc)}")
