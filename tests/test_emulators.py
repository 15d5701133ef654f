"""The device emulators: protocol replies, physics, seeded faults, ptys, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial
from pydantic import ValidationError

from selflab.simulators.emulators import EmulatorConfig, FaultInjector, FaultPlan
from selflab.simulators.emulators.devices import HotplateDevice, PumpDevice, SpectrometerDevice
from selflab.simulators.emulators.physics import FlowWorld, absorbance_at, outlet_fractions


def test_fault_draws_are_reproducible_and_filtered() -> None:
    plan = FaultPlan(rate=0.5, kinds=["garble", "hang"], commands=["ACQ?"], skip=2, max_faults=3)
    draws = [FaultInjector(plan, seed=7, device="spectrometer") for _ in range(2)]
    sequences = [[d.draw(c) for c in ["WL 420", "ACQ?"] * 20] for d in draws]
    assert sequences[0] == sequences[1]
    assert all(f is None for f in sequences[0][::2])  # WL is never faulted
    assert sequences[0][1] is None and sequences[0][3] is None  # the first two ACQ? are skipped
    assert sum(f is not None for f in sequences[0]) == 3  # max_faults
    other = FaultInjector(plan, seed=8, device="spectrometer")
    assert [other.draw(c) for c in ["WL 420", "ACQ?"] * 20] != sequences[0]
    assert FaultInjector(FaultPlan(), seed=0, device="pump").draw("RUN") is None


def test_fault_plan_and_config_are_strict() -> None:
    with pytest.raises(ValidationError, match="kinds"):
        FaultPlan(kinds=["explode"])  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="extra"):
        EmulatorConfig(devices=["pump"], speed=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="unique"):
        EmulatorConfig(devices=["pump", "pump"])


def test_device_protocols() -> None:
    world = FlowWorld(time_scale=60_000.0)  # a real millisecond is an emulated minute
    pump, plate, uv = (PumpDevice(world, seed=0, noise=False), HotplateDevice(world, seed=0, noise=False),
                       SpectrometerDevice(world, seed=0, noise=False))
    assert pump.handle("*IDN?").startswith("SELFLAB,SP-20")
    assert pump.handle("RATE 99") == "ERR 2 RATE 99 out of range [0.001, 20]"
    assert pump.handle("RATE x") == "ERR 5 RATE: 'x' is not a number"
    assert pump.handle("FLY") == "ERR 1 unknown command 'FLY'"
    assert pump.handle("RUN") == "ERR 2 RUN: set VOL first"
    assert [pump.handle(c) for c in ("RATE 0.5", "VOL 2", "RUN", "RATE 1")] == ["OK", "OK", "OK", "ERR 3 RATE: busy dispensing; send STOP first"]
    assert pump.handle("STATUS?").startswith("RUN")
    time.sleep(0.01)  # 10 emulated minutes: 2 mL at 0.5 mL/min takes 4
    assert pump.handle("STATUS?") == "IDLE 2.0000"
    assert plate.handle("SETP?") == "OFF"
    assert [plate.handle(c) for c in ("RAMP 50", "SETP 80")] == ["OK", "OK"]
    time.sleep(0.01)
    assert float(plate.handle("TEMP?")) == pytest.approx(80.0, abs=0.01)
    assert uv.handle("WL?") == "500.0"
    assert uv.handle("WL 50") == "ERR 2 WL 50 out of range [190, 1100]"


def test_kinetics_have_an_interior_temperature_optimum() -> None:
    """A -> P -> D with E2 > E1: at 5 min the yield peaks near 100 degC, not at an edge."""
    yields = {t: outlet_fractions(5.0, t)[1] for t in range(25, 151, 5)}
    best = max(yields, key=yields.__getitem__)
    assert 90 <= best <= 110 and yields[best] > 0.75
    assert yields[25] < 0.05 and yields[150] < 0.2
    assert absorbance_at(420.0, 1e-4, 0.0) == pytest.approx(0.8)
    assert absorbance_at(420.0, 0.0, 1e-4) < 1e-4  # A does not absorb at 420 nm


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Callable[..., dict[str, str]]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(**config: object) -> dict[str, str]:
        config = {"link_dir": str(tmp_path), "noise": False, **config}
        process = subprocess.Popen([sys.executable, "-m", "selflab.simulators.emulators", json.dumps(config)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        processes.append(process)
        assert process.stdout is not None
        return json.loads(process.stdout.readline())["ports"]

    yield start
    for process in processes:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(5)


def ask(port: serial.Serial, command: bytes) -> bytes:
    port.write(command + b"\r\n")
    return port.read_until(b"\r\n")


def test_each_fault_on_the_wire(emulator, tmp_path: Path) -> None:
    """Fault kinds as raw bytes through pyserial: one fault per kind, in order."""
    kinds = ["garble", "partial", "nan", "hang", "disconnect", "reboot"]
    for kind in kinds:
        ports = emulator(devices=["hotplate"], faults={"rate": 1.0, "kinds": [kind], "commands": ["TEMP?"],
                                                       "max_faults": 1, "hang_s": 0.3, "replug_s": 0.2, "reboot_s": 0.2},
                         link_dir=str(tmp_path / kind))
        link = ports["hotplate"]
        with serial.Serial(link, timeout=0.5) as port:
            assert ask(port, b"SETP 60") == b"OK\r\n"
            reply = b""
            try:
                reply = ask(port, b"TEMP?")
            except serial.SerialException:
                reply = b"<gone>"
            if kind == "garble":
                assert reply.endswith(b"\r\n") and any(b > 0x7F for b in reply)
            elif kind == "partial":
                assert reply and not reply.endswith(b"\n")
            elif kind == "nan":
                assert reply == b"NaN\r\n"
            elif kind == "hang":
                assert reply == b""
                time.sleep(0.3)
            else:
                assert reply in (b"", b"<gone>") and not os.path.exists(link)
        if kind in ("disconnect", "reboot"):
            time.sleep(0.4)  # the port comes back at the same path
        with serial.Serial(link, timeout=0.5) as port:
            port.reset_input_buffer()
            expected = b"OFF\r\n" if kind == "reboot" else b"60.00\r\n"  # a reboot loses the setpoint
            assert ask(port, b"SETP?") == expected


def test_selflab_emulate_prints_the_port_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "selflab.controller.cli", "emulate", "pump", "--link-dir", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith(f"pump: {tmp_path / 'pump'}")
    assert process.stdout.readline().strip() == "serving until Ctrl-C"
    with serial.Serial(str(tmp_path / "pump"), timeout=1) as port:
        assert ask(port, b"*IDN?").startswith(b"SELFLAB,SP-20")
    process.send_signal(signal.SIGINT)
    assert process.wait(5) == 0
    assert not (tmp_path / "pump").exists()


def test_selflab_emulate_rejects_a_bad_fault_plan() -> None:
    result = subprocess.run([sys.executable, "-m", "selflab.controller.cli", "emulate", "pump", "--faults", '{"rate": 2}'],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == "selflab emulate: faults.rate: Input should be less than or equal to 1"
