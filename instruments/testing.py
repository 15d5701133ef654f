"""The conformance kit: checks that any instrument behaves as the controller needs.

Run it from your own pytest tests::

    from selflab.instruments.testing import check_instrument

    def test_my_pump_conforms():
        check_instrument(lambda: MyPump("/dev/ttyUSB0"), {"flow_rate": 1.0, "volume": 2.0})

It builds instruments with ``factory`` (each call must return a fresh,
unconnected instrument) and checks, each with a time limit of ``timeout_s``:

=========================  ===============================================================
check                      passes when
=========================  ===============================================================
members                    async ``connect``/``run``/``close``; well-formed ``limits``,
                           ``capacity``, ``describe()``
close before connect       ``close()`` on a fresh instrument returns
run before connect         raises :class:`InstrumentDisconnected`, sends nothing
connect, run               ``run(good_params)`` returns finite floats, named as ``describe()``
limits refused             every out-of-limits request raises :class:`OutOfLimits` and sends
                           nothing
missing input              a request lacking a limited input raises an
                           :class:`InstrumentError` (not ``KeyError``), sends nothing
cancellation               cancelling ``run()`` mid-way, then ``stop()``, leaves it usable:
                           the next ``run()`` succeeds
stop when idle             ``stop()`` returns when nothing runs
close twice                ``close(); close()`` returns
reconnect                  ``connect()`` after ``close()``, then ``run()`` works
faults                     for each ``faults[Error] = factory``: ``run()`` raises ``Error``
                           (a subclass of the documented hierarchy) within ``timeout_s``,
                           never hangs, never returns; ``stop()`` and ``close()`` then return
=========================  ===============================================================

*Sends nothing* is seen by a traffic spy: every frame a selflab transport
sends is logged on ``selflab.transport`` (:mod:`selflab.instruments.transports`), and
the kit counts them. A driver with its own I/O passes ``sent_bytes``, a
function of the instrument returning how many bytes it has sent so far (or
how many commands its device has seen). An instrument with neither (a
simulator) sends nothing by construction; the report says so.

``faults`` maps an expected error to a factory of an instrument whose device
misbehaves, e.g. ``{BadResponse: garbling, InstrumentTimeout: silent,
InstrumentDisconnected: unplugged}``; the bundled emulators provide such
devices (:class:`selflab.simulators.emulators.FaultPlan`).

:func:`check_instrument` raises :class:`ConformanceError` listing every
failed check; it returns a :class:`ConformanceReport` otherwise. Inside a
running event loop, await :func:`acheck_instrument` instead.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from selflab.instruments.errors import InstrumentDisconnected, InstrumentError, OutOfLimits
from selflab.instruments.protocol import Stoppable, declared_limits
from selflab.instruments.transports import TRANSPORT_LOGGER

__all__ = ["ConformanceError", "ConformanceReport", "TrafficSpy", "acheck_instrument", "check_instrument",
           "out_of_limits_requests"]

T = TypeVar("T")

Factory = Callable[[], Any]


class ConformanceError(AssertionError):
    """One or more conformance checks failed; the message lists them."""


@dataclass
class ConformanceReport:
    """What the kit checked: ``passed`` and ``failed`` check names with details."""

    instrument: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.instrument}: {len(self.passed)} passed, {len(self.failed)} failed"]
        lines += [f"  FAIL {f}" for f in self.failed] + [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class TrafficSpy(logging.Handler):
    """Counts the bytes every selflab transport sends (frames logged at DEBUG).

    Use as a context manager; :attr:`sent` is the running total.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.sent = 0
        self._logger = logging.getLogger(TRANSPORT_LOGGER)
        self._level = self._logger.level

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "direction", None) == "send":
            self.sent += int(getattr(record, "nbytes", 0))

    def __enter__(self) -> TrafficSpy:
        self._level = self._logger.level
        self._logger.setLevel(logging.DEBUG)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


def out_of_limits_requests(good_params: Mapping[str, Any], limits: Mapping[str, tuple[float, float]]) -> list[dict[str, Any]]:
    """For each limited input, ``good_params`` with it a quarter span above, then below, its range.

    >>> out_of_limits_requests({"t": 50}, {"t": (20.0, 100.0)})
    [{'t': 120.0}, {'t': 0.0}]
    """
    requests = []
    for name, (low, high) in limits.items():
        step = 0.25 * (high - low) or 1.0
        requests += [{**good_params, name: high + step}, {**good_params, name: low - step}]
    return requests


def check_instrument(
    factory: Factory,
    good_params: Mapping[str, Any],
    *,
    out_of_limits: Sequence[Mapping[str, Any]] | None = None,
    faults: Mapping[type[InstrumentError], Factory] | None = None,
    sent_bytes: Callable[[Any], int] | None = None,
    timeout_s: float = 30.0,
    cancel_after_s: float = 0.05,
) -> ConformanceReport:
    """Run every check (see the module docstring); raise :class:`ConformanceError` on failure.

    Args:
        factory: returns a fresh, unconnected instrument.
        good_params: a request inside the limits that the device can run.
        out_of_limits: requests that must be refused (default: each limited
            input just outside its declared range, :func:`out_of_limits_requests`).
        faults: expected error -> factory of an instrument whose device fails that way.
        sent_bytes: bytes (or commands) the instrument has sent so far, for
            drivers that do not use a selflab transport.
        timeout_s: the most any single call may take, seconds.
        cancel_after_s: how long ``run()`` runs before the cancellation check cancels it.
    """
    return asyncio.run(acheck_instrument(factory, good_params, out_of_limits=out_of_limits, faults=faults,
                                         sent_bytes=sent_bytes, timeout_s=timeout_s, cancel_after_s=cancel_after_s))


async def acheck_instrument(
    factory: Factory,
    good_params: Mapping[str, Any],
    *,
    out_of_limits: Sequence[Mapping[str, Any]] | None = None,
    faults: Mapping[type[InstrumentError], Factory] | None = None,
    sent_bytes: Callable[[Any], int] | None = None,
    timeout_s: float = 30.0,
    cancel_after_s: float = 0.05,
) -> ConformanceReport:
    """:func:`check_instrument` for callers already inside an event loop."""
    instrument = factory()
    report = ConformanceReport(type(instrument).__name__)
    kit = _Kit(report, timeout_s, sent_bytes)
    with TrafficSpy() as spy:
        kit.spy = spy
        await kit.members(instrument)
        await kit.step("close before connect", instrument.close())
        await kit.refused("run before connect", instrument, good_params, InstrumentDisconnected)
        if not await kit.step("connect", instrument.connect()):
            raise ConformanceError(str(report))
        try:
            await kit.good_run("run", instrument, good_params)
            requests = out_of_limits_requests(good_params, declared_limits(instrument)) if out_of_limits is None else out_of_limits
            if not requests:
                report.notes.append("no limits declared and no out_of_limits requests given: limit refusal not checked")
            for request in requests:
                await kit.refused(f"limits refused {dict(request)}", instrument, request, OutOfLimits)
            for name in declared_limits(instrument):
                partial = {k: v for k, v in good_params.items() if k != name}
                await kit.refused(f"missing input {name!r}", instrument, partial, InstrumentError)
            await kit.cancellation(instrument, good_params, cancel_after_s)
            if isinstance(instrument, Stoppable):
                await kit.step("stop when idle", instrument.stop())
        finally:
            await kit.step("close", instrument.close())
        await kit.step("close twice", instrument.close())
        if await kit.step("reconnect", instrument.connect()):
            await kit.good_run("run after reconnect", instrument, good_params)
            await kit.step("close after reconnect", instrument.close())
        for error, faulty_factory in (faults or {}).items():
            await kit.fault(error, faulty_factory(), good_params)
    if not (spy.sent or sent_bytes):
        report.notes.append("no traffic seen on selflab.transport and no sent_bytes given: 'sends nothing' holds trivially")
    if report.failed:
        raise ConformanceError(str(report))
    return report


class _Kit:
    """The individual checks; each records a pass or a failure in the report."""

    def __init__(self, report: ConformanceReport, timeout_s: float, sent_bytes: Callable[[Any], int] | None) -> None:
        self.report, self.timeout_s, self.sent_bytes = report, timeout_s, sent_bytes
        self.spy = TrafficSpy()

    def fail(self, check: str, why: str) -> None:
        self.report.failed.append(f"{check}: {why}")

    async def call(self, awaitable: Awaitable[T]) -> T:
        async with asyncio.timeout(self.timeout_s):
            return await awaitable

    async def step(self, check: str, awaitable: Awaitable[Any]) -> bool:
        try:
            await self.call(awaitable)
        except TimeoutError:
            self.fail(check, f"hung for {self.timeout_s:g} s")
            return False
        except Exception as exc:
            self.fail(check, f"raised {type(exc).__name__}: {exc}")
            return False
        self.report.passed.append(check)
        return True

    def traffic(self, instrument: Any) -> int:
        return self.spy.sent + (self.sent_bytes(instrument) if self.sent_bytes else 0)

    async def members(self, instrument: Any) -> None:
        faults = [f"{m}() is missing or not async" for m in ("connect", "run", "close")
                  if not inspect.iscoroutinefunction(getattr(instrument, m, None))]
        stop = getattr(instrument, "stop", None)
        if stop is not None and not inspect.iscoroutinefunction(stop):
            faults.append("stop() is not async")
        try:
            for name, (low, high) in declared_limits(instrument).items():
                if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                    faults.append(f"limits[{name!r}] = ({low}, {high}) is not a finite range")
        except (TypeError, ValueError) as exc:
            faults.append(f"limits is not a mapping of (low, high): {exc}")
        capacity = getattr(instrument, "capacity", 1)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            faults.append(f"capacity {capacity!r} is not an int >= 1")
        describe = getattr(instrument, "describe", None)
        if describe is not None:
            units = describe()
            if not isinstance(units, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in units.items()):
                faults.append(f"describe() returned {units!r}, not a mapping of output name -> unit")
        for fault in faults:
            self.fail("members", fault)
        if not faults:
            self.report.passed.append("members")

    async def good_run(self, check: str, instrument: Any, params: Mapping[str, Any]) -> bool:
        try:
            result = await self.call(instrument.run(dict(params)))
        except TimeoutError:
            self.fail(check, f"run() hung for {self.timeout_s:g} s")
            return False
        except Exception as exc:
            self.fail(check, f"run({dict(params)}) raised {type(exc).__name__}: {exc}")
            return False
        if not isinstance(result, Mapping) or not result:
            self.fail(check, f"run() returned {result!r}, not a non-empty mapping of readings")
            return False
        bad = {k: v for k, v in result.items()
               if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)}
        if bad:
            self.fail(check, f"readings that are not finite numbers: {bad}")
            return False
        describe = getattr(instrument, "describe", None)
        if describe is not None and set(describe()) != set(result):
            self.fail(check, f"run() reported {sorted(result)} but describe() names {sorted(describe())}")
            return False
        self.report.passed.append(check)
        return True

    async def refused(self, check: str, instrument: Any, params: Mapping[str, Any], error: type[Exception]) -> None:
        before = self.traffic(instrument)
        try:
            result = await self.call(instrument.run(dict(params)))
        except TimeoutError:
            self.fail(check, f"hung for {self.timeout_s:g} s instead of raising {error.__name__}")
            return
        except error:
            sent = self.traffic(instrument) - before
            if sent:
                self.fail(check, f"raised {error.__name__} but only after sending {sent} bytes")
            else:
                self.report.passed.append(check)
            return
        except Exception as exc:
            self.fail(check, f"raised {type(exc).__name__}: {exc}, not {error.__name__}")
            return
        self.fail(check, f"returned {result!r} instead of raising {error.__name__}")

    async def cancellation(self, instrument: Any, params: Mapping[str, Any], cancel_after_s: float) -> None:
        task = asyncio.ensure_future(instrument.run(dict(params)))
        await asyncio.sleep(cancel_after_s)
        if task.done():
            self.report.notes.append(f"run() finished within {cancel_after_s:g} s, before it could be cancelled")
        task.cancel()
        try:
            await self.call(task)
        except asyncio.CancelledError:
            pass
        except TimeoutError:
            self.fail("cancellation", f"a cancelled run() was still running {self.timeout_s:g} s later")
            return
        except Exception as exc:
            self.fail("cancellation", f"a cancelled run() raised {type(exc).__name__}: {exc}")
            return
        if isinstance(instrument, Stoppable) and not await self.step("stop after cancel", instrument.stop()):
            return
        await self.good_run("cancellation (run after cancel)", instrument, params)

    async def fault(self, error: type[InstrumentError], instrument: Any, params: Mapping[str, Any]) -> None:
        check = f"fault -> {error.__name__}"
        if not await self.step(f"{check}: connect", instrument.connect()):
            return
        try:
            result = await self.call(instrument.run(dict(params)))
            self.fail(check, f"run() returned {result!r} instead of raising {error.__name__}")
        except TimeoutError:
            self.fail(check, f"run() hung for {self.timeout_s:g} s instead of raising {error.__name__}")
        except error:
            self.report.passed.append(check)
        except Exception as exc:
            self.fail(check, f"run() raised {type(exc).__name__}: {exc}, not {error.__name__}")
        try:
            if isinstance(instrument, Stoppable):
                await self.call(instrument.stop())
        except InstrumentError:
            pass  # a device that is gone may refuse stop(); raising the hierarchy is fine
        except TimeoutError:
            self.fail(f"{check}: stop", f"hung for {self.timeout_s:g} s")
        except Exception as exc:
            self.fail(f"{check}: stop", f"raised {type(exc).__name__}: {exc}")
        finally:
            await self.step(f"{check}: close", instrument.close())
