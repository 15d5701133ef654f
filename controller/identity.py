"""Whether a pid still belongs to the process that recorded it.

A pid is reused once its process exits, so a recorded pid alone never proves
who runs a campaign. A process's start, recorded beside its pid, does: a
process that reuses the pid started later.

The start is recorded as :func:`process_identity`, which a change of the
system clock does not move. A creation time in seconds since the epoch
would: on Linux it is the boot time (``btime`` in ``/proc/stat``, the wall
clock minus the uptime) plus the process's start in ticks after boot, so a
clock step (an NTP step, a virtual machine resumed from a snapshot, a person
setting the clock) moves every process's creation time by the step, and a
live controller would look like a stranger that reuses its pid. psutil tells
processes apart the same way (``Process.is_running``).

>>> import os
>>> is_same_process(os.getpid(), process_identity(os.getpid()) or 0.0)
True
"""

from __future__ import annotations

import sys
import time

import psutil

TOLERANCE_S = 0.01
"""Starts are compared to within this many seconds (clock-tick rounding)."""

_SINCE_BOOT = sys.platform.startswith("linux")
"""Whether :func:`process_identity` counts from the host's boot (Linux) or
from the epoch (elsewhere, where a process's creation time is fixed when it
is created and a clock step leaves it alone)."""


def _process(pid: int) -> psutil.Process | None:
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped by its parent
            return None
        return process
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ValueError):
        return None


def process_started(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch as the clock
    reads now (for the record: a clock step moves it), or ``None`` when there
    is none."""
    process = _process(pid)
    try:
        return None if process is None else float(process.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def process_identity(pid: int) -> float | None:
    """What tells process ``pid`` apart from a later process with its pid, or
    ``None`` when there is none: on Linux its start in seconds after the
    host's boot (which no clock step moves), elsewhere its creation time in
    seconds since the epoch."""
    if not _SINCE_BOOT:
        return process_started(pid)
    for _ in range(3):  # (the boot time read twice, the same: no clock step in between)
        booted = psutil.boot_time()
        started = process_started(pid)
        if started is None:
            return None
        if psutil.boot_time() == booted:
            return started - booted
    return None


def is_same_process(pid: int, identity: float) -> bool:
    """Whether ``pid`` runs now and is the process whose :func:`process_identity`
    was ``identity``.

    A recorded value later than the time since boot is a creation time since
    the epoch, recorded by a selflab from before :func:`process_identity` on
    Linux; it is compared as one (and, as then, a clock step since defeats it).
    """
    if _SINCE_BOOT and identity > time.clock_gettime(time.CLOCK_BOOTTIME):
        now = process_started(pid)
    else:
        now = process_identity(pid)
    return now is not None and abs(now - identity) <= TOLERANCE_S
