"""The reference drivers against emulators on real ptys, and campaigns through them."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import select
import threading
import tty
import types
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import REPO

from selflab.controller.campaign import Campaign
from selflab.controller.config import parse_config
from selflab.controller.ledger import Ledger
from selflab.controller.projection import CampaignState
from selflab.instruments.describe import describe_driver
from selflab.instruments.drivers import FlowSynthesis, Hotplate, Spectrometer, SyringePump
from selflab.instruments.drivers.emulated import EmulatorProcess
from selflab.instruments.errors import BadResponse, InstrumentDisconnected, InstrumentError, InstrumentTimeout, OutOfLimits
from selflab.instruments.registry import DriverError, build_driver, resolve_driver
from selflab.instruments.testing import TrafficSpy, check_instrument
from selflab.simulators.emulators.physics import outlet_fractions

FAST = {"timeout_s": 0.3, "retries": 0, "backoff_s": 0.05}
"""Link options that fail fast."""


@pytest.fixture(scope="module")
def rig() -> Iterator[dict[str, str]]:
    """One noise-free emulated rig (pump, hotplate, spectrometer) shared by this module's tests."""
    emulator = EmulatorProcess({"devices": ["pump", "hotplate", "spectrometer"], "time_scale": 6000, "noise": False})
    ports = asyncio.run(emulator.start())
    yield ports
    asyncio.run(emulator.stop())


def rig_driver(rig: dict[str, str], **options: Any) -> FlowSynthesis:
    return FlowSynthesis(pump_port=rig["pump"], hotplate_port=rig["hotplate"], spectrometer_port=rig["spectrometer"],
                         poll_s=0.01, **{"timeout_s": 0.5, **options})


async def _session(instrument: Any, *requests: dict[str, float]) -> list[dict[str, float]]:
    await instrument.connect()
    try:
        return [await instrument.run(r) for r in requests]
    finally:
        await instrument.close()


def test_the_flow_experiment_follows_the_kinetics(rig: dict[str, str]) -> None:
    """Yield = P at the residence time coil/flow x the share of the cell flushed."""
    hot, cold, short = asyncio.run(_session(rig_driver(rig), {"temperature": 100, "flow_rate": 0.2, "volume": 3.0},
                                            {"temperature": 40, "flow_rate": 1.0, "volume": 3.0},
                                            {"temperature": 100, "flow_rate": 0.2, "volume": 1.5}))
    flushed = {3.0: 1 - math.exp(-(3.0 - 1.0) / 0.25), 1.5: 1 - math.exp(-(1.5 - 1.0) / 0.25)}
    assert hot["yield"] == pytest.approx(outlet_fractions(5.0, 100.0)[1] * flushed[3.0], abs=0.02)
    assert hot["yield"] > 0.7 and cold["yield"] < 0.05
    assert short["yield"] == pytest.approx(outlet_fractions(5.0, 100.0)[1] * flushed[1.5], abs=0.02)
    assert hot["absorbance"] == pytest.approx(hot["yield"] * 0.8)
    assert hot["plate_temperature"] == pytest.approx(100, abs=1.0) and hot["dispensed"] == 3.0


def test_each_device_driver_runs_on_its_port(rig: dict[str, str]) -> None:
    (pump,) = asyncio.run(_session(SyringePump(rig["pump"], poll_s=0.01), {"flow_rate": 2.0, "volume": 0.5}))
    (plate,) = asyncio.run(_session(Hotplate(rig["hotplate"], poll_s=0.01, ramp_c_per_min=50), {"temperature": 70}))
    (uv,) = asyncio.run(_session(Spectrometer(rig["spectrometer"]), {"wavelength": 420}))
    assert pump == {"dispensed": 0.5}
    assert plate["temperature"] == pytest.approx(70, abs=1.0)
    assert 0 <= uv["absorbance"] < 1


def test_limits_are_refused_before_any_byte_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the driver's transport nor the emulated device sees a byte."""
    monkeypatch.setenv("SELFLAB_EMULATOR_LOG", "DEBUG")  # the emulator logs every command it answers
    pump = SyringePump(emulate=True, **FAST)

    async def session() -> tuple[int, list[str]]:
        await pump.connect()
        assert pump.connection.process is not None
        seen = len(pump.connection.process.log_lines())
        with TrafficSpy() as spy:
            for bad in ({"flow_rate": 11.0, "volume": 1.0}, {"flow_rate": 1.0, "volume": 0.0},
                        {"flow_rate": math.nan, "volume": 1.0}):
                with pytest.raises(OutOfLimits, match="nothing was sent"):
                    await pump.run(bad)
            with pytest.raises(BadResponse, match="missing input 'volume'"):
                await pump.run({"flow_rate": 1.0})
        await asyncio.sleep(0.1)
        lines = pump.connection.process.log_lines()[seen:]
        await pump.close()
        return spy.sent, lines

    sent, device_log = asyncio.run(session())
    assert sent == 0
    assert not [line for line in device_log if "->" in line], device_log


FAULTS = [("garble", BadResponse), ("partial", BadResponse), ("nan", BadResponse),
          ("hang", InstrumentTimeout), ("disconnect", InstrumentDisconnected), ("reboot", InstrumentDisconnected)]


@pytest.mark.parametrize(("kind", "error"), FAULTS)
def test_each_fault_maps_to_its_error(kind: str, error: type[InstrumentError]) -> None:
    plate = Hotplate(emulate=True, poll_s=0.01, **FAST,
                     emulator={"time_scale": 6000, "faults": {"rate": 1.0, "kinds": [kind], "commands": ["TEMP?"],
                                                              "hang_s": 1.0, "replug_s": 0.5, "reboot_s": 0.5}})
    with pytest.raises(error):
        asyncio.run(_session(plate, {"temperature": 50}))


def test_retries_ride_out_a_fault_and_a_reboot_is_survived(caplog: pytest.LogCaptureFixture) -> None:
    """A garbled reading is re-asked; a pump that reboots mid-dispense fails that run, and the next works."""
    plate = Hotplate(emulate=True, poll_s=0.01, timeout_s=0.3, retries=2, backoff_s=0.05,
                     emulator={"time_scale": 6000, "faults": {"rate": 1.0, "kinds": ["garble"], "commands": ["TEMP?"],
                                                              "max_faults": 2}})
    with caplog.at_level(logging.WARNING, logger="selflab.transport"):
        (reading,) = asyncio.run(_session(plate, {"temperature": 50}))
    assert reading["temperature"] == pytest.approx(50, abs=1)
    assert "garbled reply to 'TEMP?'" in caplog.text and "retry 2 of 2" in caplog.text
    pump = SyringePump(emulate=True, poll_s=0.01, timeout_s=0.3, retries=4, backoff_s=0.1,
                       emulator={"time_scale": 600, "faults": {"rate": 1.0, "kinds": ["reboot"], "commands": ["STATUS?"],
                                                               "max_faults": 1, "reboot_s": 0.3}})

    async def session() -> dict[str, float]:
        await pump.connect()
        try:
            with pytest.raises(InstrumentError, match="went idle after 0.000 of 1.000 mL"):
                await pump.run({"flow_rate": 1.0, "volume": 1.0})
            return await pump.run({"flow_rate": 1.0, "volume": 1.0})
        finally:
            await pump.close()

    assert asyncio.run(session()) == {"dispensed": 1.0}


def test_cancelling_a_run_stops_the_pump_and_stop_makes_safe(rig: dict[str, str]) -> None:
    async def session() -> tuple[tuple[str, float], str, tuple[str, float]]:
        driver = rig_driver(rig)
        await driver.connect()
        assert driver._devices is not None
        plate, pump, _ = driver._devices
        task = asyncio.create_task(driver.run({"temperature": 30, "flow_rate": 0.1, "volume": 5.0}))
        while (await pump.status())[0] != "RUN":  # 50 emulated minutes: half a real second
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        after_cancel = await pump.status()
        await pump.ok("RATE 0.1")
        await pump.ok("VOL 5")
        await pump.ok("RUN")
        await driver.stop()
        setpoint = await plate.text("SETP?")
        after_stop = await pump.status()
        await driver.close()
        return after_cancel, setpoint, after_stop

    after_cancel, setpoint, after_stop = asyncio.run(session())
    assert after_cancel[0] == "IDLE" and after_cancel[1] < 5.0
    assert setpoint == "OFF" and after_stop[0] == "IDLE"


def test_options_are_checked_on_one_line() -> None:
    with pytest.raises(ValueError, match=r"^timeout_s: Input should be greater than 0 \(got -1\)$"):
        SyringePump("/dev/ttyUSB0", timeout_s=-1)
    with pytest.raises(ValueError, match="give port .* or emulate: true"):
        SyringePump()
    with pytest.raises(ValueError, match="give pump_port, spectrometer_port"):
        FlowSynthesis(hotplate_port="/dev/ttyUSB1")
    with pytest.raises(ValueError, match="leave the ports and visa_library out"):
        Hotplate("/dev/ttyUSB0", emulate=True)
    with pytest.raises(ValueError, match="emulator.faults.rate"):
        Hotplate(emulate=True, emulator={"faults": {"rate": 3}})
    with pytest.raises(DriverError, match="bad options for FlowSynthesis: .*colour"):
        build_driver("flow_synthesis", {"emulate": True, "colour": "red"})


def test_entry_points_and_describe_driver() -> None:
    for name, cls in (("syringe_pump", SyringePump), ("hotplate", Hotplate), ("uv_vis", Spectrometer),
                      ("flow_synthesis", FlowSynthesis)):
        assert resolve_driver(name) is cls
    info = describe_driver(FlowSynthesis)
    assert info["class"] == "selflab.instruments.drivers.flow_synthesis:FlowSynthesis"
    assert info["limits"] == {"temperature": [25.0, 150.0], "flow_rate": [0.1, 2.0], "volume": [1.5, 5.0]}
    options = {o["name"]: o for o in info["options"]}
    assert options["timeout_s"] == {"name": "timeout_s", "type": "float > 0", "default": 1.0, "required": False}
    assert options["dispense_timeout_s"]["type"] == "float > 0 | None"
    reactor = describe_driver(resolve_driver("reactor"))
    assert reactor["limits"]["temperature"] == [30.0, 150.0] and reactor["outputs"] == {"yield": "1", "space_time_yield": "kg/m^3/h"}
    assert reactor["capacity"] == 1
    assert describe_driver(Hotplate)["outputs"] == {"temperature": "degC"}  # a static describe(): no instance needed


def _campaign(options: dict[str, Any], url: str, **overrides: Any) -> tuple[Any, Campaign, CampaignState]:
    config = parse_config({
        "name": "flow", "seed": 1, "ledger": url,
        "parameters": [{"name": "temperature", "type": "float", "low": 60, "high": 140},
                       {"name": "flow_rate", "type": "float", "low": 0.2, "high": 2.0},
                       {"name": "volume", "type": "float", "low": 1.5, "high": 3.0}],
        "objectives": [{"name": "yield", "direction": "maximize"}],
        "instruments": [{"name": "rig", "driver": "flow_synthesis", "timeout": 20,
                         "options": {"emulate": True, "poll_s": 0.01, "timeout_s": 0.3, "retries": 1, "backoff_s": 0.05,
                                     "settle_timeout_s": 5, **options}, **overrides.pop("instrument", {})}],
        "planner": {"kind": "sobol"},
        "stop": {"max_experiments": 8},
        **overrides,
    })
    ledger = Ledger(config.ledger_url)
    try:
        campaign = Campaign(config, ledger)
        stop = asyncio.run(campaign.run())
        return stop, campaign, CampaignState.replay(config.name, ledger.events(config.name))
    finally:
        ledger.close()


def test_a_campaign_with_faults_completes_its_budget(sqlite_url: str) -> None:
    faults = {"rate": 0.3, "commands": ["RUN", "ACQ?"], "hang_s": 0.4, "replug_s": 0.1, "reboot_s": 0.2}
    stop, campaign, state = _campaign({"emulator": {"seed": 5, "time_scale": 6000, "faults": faults}}, sqlite_url,
                                      instrument={"max_consecutive_failures": 8})
    assert stop.reason == "max_experiments"
    counts = state.counts()
    assert counts["completed"] == 8
    process = campaign.stations[0].driver.connection.process
    injected = [line for line in process.log_lines() if "fault '" in line]
    assert len(injected) >= 0.2 * (counts["completed"] + counts["failed"])
    failed = state.with_status("failed")
    assert failed and all(e.error.split(":")[0] in ("bad_response", "timeout", "disconnected") for e in failed)
    assert all(0 <= e.outcomes["yield"] <= 1 for e in state.with_status("completed"))


def test_max_consecutive_failures_takes_the_rig_offline(sqlite_url: str) -> None:
    faults = {"rate": 1.0, "kinds": ["nan"], "commands": ["RUN"]}
    stop, campaign, state = _campaign({"emulator": {"time_scale": 6000, "faults": faults}}, sqlite_url,
                                      instrument={"max_consecutive_failures": 2})
    assert stop.reason == "no_instruments"
    assert state.counts()["failed"] == 2 and state.counts()["completed"] == 0
    assert "2 consecutive failures" in (state.instruments["rig"].offline_reason or "")
    assert not campaign.stations[0].driver.connection.process.running  # the emulator was stopped


WRITE_A_DRIVER = re.search(r"```python\n(# my_lab/dosing.py.*?)```", (REPO / "README.md").read_text(), flags=re.S).group(1)  # type: ignore[union-attr]
"""The README's 'Write a driver' example, exactly as a user copies it."""


def test_the_write_a_driver_example_passes_the_conformance_kit() -> None:
    """The README's 'Write a driver' example, against a balance on a real pty."""
    module = types.ModuleType("my_lab_dosing")
    exec(compile(WRITE_A_DRIVER, "README:dosing", "exec"), module.__dict__)
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def balance() -> None:
        buffer, dosed = b"", 0.0
        while not stop.is_set():
            if not select.select([master], [], [], 0.05)[0]:
                continue
            buffer += os.read(master, 256)
            while b"\r\n" in buffer:
                line, _, buffer = buffer.partition(b"\r\n")
                words = line.decode().split()
                if words[0] == "DOSE":
                    dosed = float(words[1])
                reply = f"{0.998 * dosed:.4f}" if words[0] == "MASS?" else "OK"
                os.write(master, reply.encode() + b"\r\n")

    thread = threading.Thread(target=balance, daemon=True)
    thread.start()
    try:
        report = check_instrument(lambda: module.DosingBalance(os.ttyname(slave), timeout_s=0.5), {"volume_ml": 2.5})
    finally:
        stop.set()
        thread.join(2)
        os.close(master)
        os.close(slave)
    assert not report.failed and "limits refused {'volume_ml': 6.25}" in report.passed
    assert (REPO / "lab_configs" / "emulated_flow.yaml").exists()
