"""Campaign clocks: the wall clock, or a simulated clock for offline campaigns.

On the simulated clock an experiment that an instrument says takes 30 minutes
(``duration(params)``) finishes 30 simulated minutes after dispatch, at once in
real time; the ledger's ``at`` timestamps show simulated time, so a campaign's
makespan is realistic while nobody waits.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class WallClock:
    """Real time, UTC."""

    simulated = False

    def __init__(self, started_at: datetime | None = None) -> None:
        self.started_at = started_at or datetime.now(UTC)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def elapsed_s(self) -> float:
        """Seconds since the campaign first started (across resumes)."""
        return (self.now() - self.started_at).total_seconds()


class SimClock:
    """Simulated time that moves only when :meth:`advance_to` is called."""

    simulated = True

    def __init__(self, started_at: datetime | None = None, now: datetime | None = None) -> None:
        self.started_at = started_at or datetime.now(UTC)
        self._now = max(now or self.started_at, self.started_at)

    def now(self) -> datetime:
        return self._now

    def elapsed_s(self) -> float:
        return (self._now - self.started_at).total_seconds()

    def at(self, seconds_from_now: float) -> datetime:
        return self._now + timedelta(seconds=seconds_from_now)

    def advance_to(self, when: datetime) -> None:
        """Move time forward to ``when``; time never goes back."""
        if when > self._now:
            self._now = when


Clock = WallClock | SimClock
