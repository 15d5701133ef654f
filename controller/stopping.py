"""How a run is stopped: signals, stop requests from the ledger, and the wake-up
of the runner's loop.

:class:`StopControl` holds why the runner stops (``None`` while it goes on)
and whether it aborts the experiments in flight; signal handlers and
``stop_requested`` events set them and wake the loop. :class:`SignalHandlers`
installs handlers on the running loop, or, where the loop cannot (Windows'
proactor loop), plain ``signal.signal`` handlers that hand the signal to the
loop, so Ctrl-C still stops gracefully; the worker uses it too.

Example::

    control = StopControl(in_flight=lambda: len(flights))
    control.install_signals()          # Ctrl-C: no new experiments; again: abort
    ...
    await control.wait(5.0)            # until woken by a signal, or 5 s
    control.remove_signals()
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any

from selflab.controller.scheduler import StopInfo

log = logging.getLogger("selflab")


class SignalHandlers:
    """Handlers for some signals, installed on the running event loop (see the module docs)."""

    def __init__(self, handlers: Sequence[tuple[int, Callable[[], None]]]) -> None:
        self.handlers = list(handlers)
        self._on_loop: list[int] = []
        self._replaced: dict[int, Any] = {}
        """Signals handled with ``signal.signal`` where the loop cannot (number -> the handler it replaced)."""

    def install(self) -> None:
        """Handle each signal on the running loop, or hand it to the loop from
        a plain handler where the loop cannot; off the main thread there are
        no signals at all (stop requests still come through the ledger)."""
        loop = asyncio.get_running_loop()
        for number, handler in self.handlers:
            try:
                loop.add_signal_handler(number, handler)
                self._on_loop.append(number)
            except NotImplementedError:
                try:
                    self._replaced[number] = signal.signal(number, _to_loop(loop, handler))
                except ValueError:  # not the main thread
                    return
            except (RuntimeError, ValueError):  # not the main thread, or no such signal here
                return

    def remove(self) -> None:
        """Put back what was there before :meth:`install`."""
        try:
            loop = asyncio.get_running_loop()
            for number in self._on_loop:
                loop.remove_signal_handler(number)
            for number, previous in self._replaced.items():
                signal.signal(number, previous)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        self._on_loop, self._replaced = [], {}


def _to_loop(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> Callable[[int, FrameType | None], None]:
    """A plain signal handler that hands the signal to ``loop`` (thread-safe)."""

    def handle(_number: int, _frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(handler)

    return handle


class StopControl:
    """Why a run stops, whether it aborts, and the wake-up of its loop."""

    def __init__(self, in_flight: Callable[[], int]) -> None:
        self.stop: StopInfo | None = None
        """Why the run stops (no new experiments), or ``None`` while it goes on."""
        self.abort = False
        """Whether the experiments in flight are aborted rather than awaited."""
        self._in_flight = in_flight
        self._wake: asyncio.Future[None] | None = None
        self._signals = SignalHandlers(self._handlers())

    def reset(self) -> None:
        """Go on again (a new run): no stop, no abort."""
        self.stop, self.abort = None, False

    # --- the loop's wake-up --------------------------------------------------------

    def armed(self) -> asyncio.Future[None]:
        """The future the next :meth:`wake_up` resolves (a new one once the last was)."""
        if self._wake is None or self._wake.done():
            self._wake = asyncio.get_running_loop().create_future()
        return self._wake

    async def wait(self, timeout: float) -> None:
        """Wait ``timeout`` seconds, or less when woken."""
        await asyncio.wait({self.armed()}, timeout=timeout)

    def wake_up(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    # --- signals ---------------------------------------------------------------------

    def _handlers(self) -> list[tuple[int, Callable[[], None]]]:
        """The signals the runner handles where the platform has them (SIGUSR1 is
        POSIX only: the emergency stop also comes through the ledger)."""
        handlers: list[tuple[int, Callable[[], None]]] = [(signal.SIGINT, self.on_interrupt), (signal.SIGTERM, self.on_terminate)]
        usr1 = getattr(signal, "SIGUSR1", None)
        return handlers + ([(usr1, self.on_emergency_stop)] if usr1 is not None else [])

    def install_signals(self) -> None:
        """Handle Ctrl-C, SIGTERM (and SIGUSR1) while the run goes on."""
        self._signals.install()

    def remove_signals(self) -> None:
        self._signals.remove()

    def on_interrupt(self) -> None:
        """Ctrl-C: no new experiments, wait for those in flight; a second one aborts them."""
        if self.stop is not None and self.stop.reason == "interrupted":
            log.warning("second Ctrl-C: aborting %d experiment(s) in flight", self._in_flight())
            self.abort = True
        else:
            self.stop = StopInfo("interrupted", "stopped by Ctrl-C (SIGINT)")
            if self._in_flight():
                log.warning("Ctrl-C: no new experiments; waiting for %d in flight (Ctrl-C again to abort them)", self._in_flight())
        self.wake_up()

    def on_terminate(self) -> None:
        log.warning("SIGTERM: aborting %d experiment(s) in flight", self._in_flight())
        self.stop = StopInfo("terminated", "stopped by SIGTERM")
        self.abort = True
        self.wake_up()

    def on_emergency_stop(self) -> None:
        log.error("EMERGENCY STOP (selflab stop): aborting %d experiment(s) in flight through stop()", self._in_flight())
        self.stop = StopInfo("emergency_stop", "emergency stop requested with selflab stop")
        self.abort = True
        self.wake_up()

    def on_stop_requested(self, request: Mapping[str, Any]) -> None:
        """A ``stop_requested`` event read from the ledger (``selflab stop``, any host)."""
        who = f" with {request['by']}" if request.get("by") else ""
        why = f": {request['reason']}" if request.get("reason") else ""
        where = f" ({request['origin']})" if request.get("origin") else ""
        if request.get("emergency", True):
            log.error("EMERGENCY STOP requested%s%s%s: aborting %d experiment(s) in flight through stop()",
                      who, where, why, self._in_flight())
            self.stop = StopInfo("emergency_stop", f"emergency stop requested{who}{why}")
            self.abort = True
        elif self.stop is None:
            log.warning("stop requested%s%s: no new experiments; waiting for %d in flight", who, why, self._in_flight())
            self.stop = StopInfo("stop_requested", f"stop requested{who}{why}")
        self.wake_up()


__all__ = ["SignalHandlers", "StopControl"]
