"""Every bundled driver and simulator passes the conformance kit, and the kit catches faults."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from selflab.instruments.drivers import FlowSynthesis, Hotplate, Spectrometer, SyringePump
from selflab.instruments.errors import BadResponse, InstrumentDisconnected, InstrumentError, InstrumentTimeout
from selflab.instruments.testing import ConformanceError, check_instrument
from selflab.simulators import BraninInstrument, Hartmann6Instrument, PlugFlowReactor

LINK = {"timeout_s": 0.3, "retries": 1, "backoff_s": 0.05}
FAULTS = {BadResponse: "garble", InstrumentTimeout: "hang", InstrumentDisconnected: "disconnect"}


def emulated(cls: type, faults: dict[str, Any] | None = None, **options: Any) -> Callable[[], Any]:
    emulator: dict[str, Any] = {"time_scale": 6000, "seed": 2}
    if faults:
        emulator["faults"] = {"rate": 1.0, "hang_s": 1.0, "replug_s": 1.0, **faults}
    return lambda: cls(emulate=True, emulator=emulator, **LINK, **options)


DRIVERS: dict[str, tuple[type, dict[str, float], dict[str, Any], str]] = {
    # name: (class, good params, options, the command whose replies the faults hit)
    "flow_synthesis": (FlowSynthesis, {"temperature": 90.0, "flow_rate": 0.5, "volume": 2.0},
                       {"poll_s": 0.01, "settle_timeout_s": 5.0}, "TEMP?"),
    "syringe_pump": (SyringePump, {"flow_rate": 0.5, "volume": 2.0}, {"poll_s": 0.01}, "STATUS?"),
    "hotplate": (Hotplate, {"temperature": 60.0}, {"poll_s": 0.01, "ramp_c_per_min": 50.0}, "TEMP?"),
    "uv_vis": (Spectrometer, {"wavelength": 420.0}, {}, "ACQ?"),
}


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_bundled_driver_conforms(name: str) -> None:
    cls, good, options, command = DRIVERS[name]
    faults = {error: emulated(cls, {"kinds": [kind], "commands": [command]}, **options) for error, kind in FAULTS.items()}
    report = check_instrument(emulated(cls, **options), good, faults=faults, timeout_s=10.0, cancel_after_s=0.02)
    assert not report.failed
    assert {"limits refused", "fault -> BadResponse", "fault -> InstrumentTimeout", "fault -> InstrumentDisconnected",
            "cancellation (run after cancel)", "reconnect"} <= {p.split(" {")[0] for p in report.passed}


SIMULATORS: dict[str, tuple[Callable[[], Any], dict[str, float]]] = {
    "reactor": (lambda: PlugFlowReactor(noise_std=0.01, seed=1),
                {"residence_time": 10.0, "temperature": 80.0, "equivalents": 2.0, "concentration": 0.5}),
    "branin": (lambda: BraninInstrument(noise_std=0.1), {"x1": 3.14, "x2": 2.27}),
    "hartmann6": (Hartmann6Instrument, {f"x{i}": 0.5 for i in range(1, 7)}),
}


@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_bundled_simulator_conforms(name: str) -> None:
    factory, good = SIMULATORS[name]
    report = check_instrument(factory, good)
    assert not report.failed and len(report.passed) >= 2 * len(good) + 10


class _Plain:
    """A small hand-written instrument for the kit's own tests."""

    limits = {"x": (0.0, 1.0)}

    def __init__(self, result: Callable[[float], Any] = lambda x: {"y": x}, hang: bool = False) -> None:
        self.result, self.hang, self.connected, self.sent = result, hang, False, 0

    async def connect(self) -> None:
        self.connected = True

    async def run(self, params: Mapping[str, Any]) -> Any:
        self.sent += 1  # "sends" before it checks anything
        if not self.connected:
            raise InstrumentDisconnected("not connected")
        if self.hang:
            await asyncio.sleep(3600)
        x = params["x"]
        if not 0 <= x <= 1:
            raise InstrumentError("out of range")
        return self.result(x)

    async def close(self) -> None:
        self.connected = False


def failures(factory: Callable[[], Any], **kwargs: Any) -> str:
    with pytest.raises(ConformanceError) as caught:
        check_instrument(factory, {"x": 0.5}, timeout_s=0.3, **kwargs)
    return str(caught.value)


def test_the_kit_catches_what_a_careless_driver_does() -> None:
    leaky = failures(_Plain, sent_bytes=lambda inst: inst.sent)
    assert "run before connect: raised InstrumentDisconnected but only after sending 1 bytes" in leaky
    assert "limits refused {'x': 1.25}: raised InstrumentError: out of range, not OutOfLimits" in leaky
    assert "missing input 'x': raised KeyError: 'x', not InstrumentError" in leaky
    nan = failures(lambda: _Plain(lambda x: {"y": math.nan}))
    assert "run: readings that are not finite numbers: {'y': nan}" in nan
    assert "run: run() returned" in failures(lambda: _Plain(lambda x: x))
    hung = failures(lambda: _Plain(hang=True))
    assert "run: run() hung for 0.3 s" in hung and "cancellation (run after cancel): run() hung" in hung
    wrong_fault = failures(_Plain, faults={InstrumentTimeout: _Plain})
    assert "fault -> InstrumentTimeout: run() returned {'y': 0.5} instead of raising InstrumentTimeout" in wrong_fault
