"""The exit codes of the ``selflab`` command, in one place.

``0`` done; ``1`` the campaign could not finish (every instrument offline, the
planner failed, too many refusals, its lease taken over by another
controller) or an internal error; ``2`` bad input (config, ledger URL,
arguments), one line per fault and never a traceback; ``130`` stopped by
Ctrl-C, SIGTERM or an emergency stop.

Example::

    ExitCode.for_stop("lease_lost")   # ExitCode.FAILED (1)
    ExitCode.for_stop("max_cost")     # ExitCode.OK (0)
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What the ``selflab`` process exits with."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    INTERRUPTED = 130

    @classmethod
    def for_stop(cls, reason: str) -> ExitCode:
        """The exit code of a run that stopped for ``reason`` (a
        :class:`~selflab.controller.scheduler.StopInfo` reason): a stop rule
        that held is ``OK``."""
        return STOP_EXIT.get(reason, cls.OK)


STOP_EXIT: dict[str, ExitCode] = {
    "interrupted": ExitCode.INTERRUPTED,
    "terminated": ExitCode.INTERRUPTED,
    "emergency_stop": ExitCode.INTERRUPTED,
    "no_instruments": ExitCode.FAILED,
    "planner_error": ExitCode.FAILED,
    "refusals": ExitCode.FAILED,
    "error": ExitCode.FAILED,
    "lease_lost": ExitCode.FAILED,
}
"""Stop reasons that are not a stop rule holding, and their exit codes."""


__all__ = ["STOP_EXIT", "ExitCode"]
