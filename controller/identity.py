"""Whether a pid still belongs to the process that recorded it.

A pid is reused once its process exits, so a recorded pid alone never proves
who runs a campaign. A process's creation time, recorded beside its pid,
does: a process that reuses the pid has a later one.

>>> import os
>>> is_same_process(os.getpid(), process_started(os.getpid()) or 0.0)
True
"""

from __future__ import annotations

import psutil

TOLERANCE_S = 0.01
"""Creation times are compared to within this many seconds (clock-tick rounding)."""


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or ``None`` when there is none."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped by its parent
            return None
        return float(process.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ValueError):
        return None


def is_same_process(pid: int, started: float) -> bool:
    """Whether ``pid`` runs now and is the process that started at ``started``."""
    now = process_started(pid)
    return now is not None and abs(now - started) <= TOLERANCE_S
