"""Interlocks as a pure state machine: readings in, pause/resume transitions out.

:class:`InterlockState` keeps the latest reading of every ``(instrument,
reading)`` pair (from ``read()`` polls and from experiment results) and which
interlock, if any, holds dispatch paused. At most one interlock pauses at a
time; it alone can resume. Feeding readings (:meth:`InterlockState.update`)
returns the transition that happened, if any; the campaign records it in the
ledger (``paused`` / ``resumed`` events with :attr:`Transition.payload`), logs
it and stops or restarts dispatching. Nothing here does I/O.

Example::

    lock = Interlock(pause_when="hotplate.temperature > 200", resume_when="hotplate.temperature < 150")
    state = InterlockState([lock])
    state.update("hotplate", {"temperature": 210.0})[0].kind   # 'paused'
    state.update("hotplate", {"temperature": 180.0})           # []: not safe yet
    state.update("hotplate", {"temperature": 140.0})[0].kind   # 'resumed'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from selflab.controller.config import Interlock


@dataclass(frozen=True)
class Transition:
    """Dispatch paused or resumed because of ``lock``; ``value`` is the deciding reading."""

    kind: Literal["paused", "resumed"]
    lock: Interlock
    value: float

    @property
    def instrument(self) -> str:
        return self.lock.pause_when.instrument

    @property
    def reading(self) -> str:
        """``instrument.reading`` of the deciding condition."""
        rule = self.lock.pause_when if self.kind == "paused" else (self.lock.resume_when or self.lock.pause_when)
        return f"{rule.instrument}.{rule.reading}"

    @property
    def rule(self) -> str:
        """The condition that fired, as written (resume without ``resume_when``: ``not (pause_when)``)."""
        if self.kind == "paused":
            return str(self.lock.pause_when)
        return str(self.lock.resume_when) if self.lock.resume_when is not None else f"not ({self.lock.pause_when})"

    @property
    def payload(self) -> dict[str, Any]:
        """The ``paused`` / ``resumed`` event payload."""
        return {"rule": self.rule, "reading": self.reading, "value": self.value}


class InterlockState:
    """Latest readings and the interlock holding dispatch paused (see module docs)."""

    def __init__(self, locks: Sequence[Interlock]) -> None:
        self.locks = list(locks)
        self.readings: dict[tuple[str, str], float] = {}
        self.paused_by: Interlock | None = None

    def update(self, instrument: str, readings: Mapping[str, float]) -> list[Transition]:
        """Record ``instrument``'s ``readings``; the pauses and resumes they cause,
        in order (one interlock may resume and the next one pause at once)."""
        for name, value in readings.items():
            self.readings[(instrument, name)] = value
        changes = []
        for lock in self.locks:
            if lock.pause_when.instrument != instrument:
                continue
            if self.paused_by is None:
                change = self._pause(lock)
            elif self.paused_by is lock:
                change = self._resume(lock)
            else:
                continue
            if change is not None:
                changes.append(change)
        return changes

    def _pause(self, lock: Interlock) -> Transition | None:
        rule = lock.pause_when
        value = self.readings.get((rule.instrument, rule.reading))
        if value is None or not rule.holds(value):
            return None
        self.paused_by = lock
        return Transition("paused", lock, value)

    def _resume(self, lock: Interlock) -> Transition | None:
        rule = lock.resume_when or lock.pause_when
        value = self.readings.get((rule.instrument, rule.reading))
        if value is None:
            return None
        safe = rule.holds(value) if lock.resume_when is not None else not rule.holds(value)
        if not safe:
            return None
        self.paused_by = None
        return Transition("resumed", lock, value)
