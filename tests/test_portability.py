"""Lab PCs often run Windows: nothing POSIX-only may be needed to import selflab or run a simulated campaign.

Windows lacks ``fcntl``, ``termios``, ``pty`` (hence ``tty``) and
``signal.SIGUSR1``, and its default event loop (the proactor) has no
``add_reader``/``add_writer``. The first test takes those modules away from
a Python process before anything is imported, then imports every module of
the four packages and runs a small simulated campaign with ``selflab run``.
The others run the serial transport, and the conformance kit on bundled
drivers, on an event loop that refuses ``add_reader`` as the proactor does
(the fault this one subclass injects cannot be provoked on Linux otherwise):
the transport must notice and read in a worker thread instead.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from conftest import REPO
from test_conformance import DRIVERS, FAULTS, emulated
from test_transport import PtyPeer, link

from selflab.instruments.drivers.emulated import EmulatorProcess
from selflab.instruments.errors import BadResponse, InstrumentDisconnected, InstrumentTimeout
from selflab.instruments.testing import acheck_instrument
from selflab.instruments.transports import READ_POLL_S, SerialTransport

T = TypeVar("T")

WITHOUT_POSIX = """
import json, signal, sys
for name in ("fcntl", "termios", "pty", "tty"):
    assert name not in sys.modules, f"{name} was imported before the test could take it away"
    sys.modules[name] = None  # import raises ImportError, as on Windows
del signal.SIGUSR1
for name in ("fcntl", "termios", "pty"):
    try:
        __import__(name)
    except ImportError:
        continue
    raise AssertionError(f"{name} is still importable")
assert not hasattr(signal, "SIGUSR1")
"""
"""The start of a script run as on Windows: no ``fcntl``, ``termios``, ``pty``,
``tty``, ``signal.SIGUSR1``."""

IMPORT_ALL_AND_RUN = """
import importlib, pkgutil
failed = {}
for package in ("selflab.controller", "selflab.instruments", "selflab.planners", "selflab.simulators"):
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + ".",
                                      onerror=lambda name: failed.setdefault(name, repr(sys.exc_info()[1]))):
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failed[info.name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"modules": sorted(m for m in sys.modules if m.split(".")[0] == "selflab"),
                  "failed": failed}))

from selflab.controller.cli import main
sys.exit(main(["run", sys.argv[1], "--quiet", "--ledger", sys.argv[2]]))
"""


def test_every_module_imports_and_a_simulated_campaign_runs_without_posix_modules(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "lab_configs" / "branin_random.yaml").read_text())
    config["stop"] = {"max_experiments": 6}
    path = tmp_path / "branin.yaml"
    path.write_text(yaml.safe_dump(config))
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    out = subprocess.run([sys.executable, "-c", WITHOUT_POSIX + IMPORT_ALL_AND_RUN, str(path), ledger], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    report = json.loads(out.stdout.splitlines()[0])
    assert report["failed"] == {}, report["failed"]
    for module in ("selflab.controller.campaign", "selflab.instruments.transports.serial_port", "selflab.simulators.emulators.ptyport",
                   "selflab.simulators.emulate_cmd", "selflab.instruments.testing"):
        assert module in report["modules"]
    assert out.returncode == 0, out.stderr
    status = subprocess.run([str(Path(sys.executable).with_name("selflab")), "status", "--ledger", ledger, "--json"],
                            capture_output=True, text=True, timeout=120)
    data = json.loads(status.stdout)
    assert data["counts"]["completed"] == 6 and data["state"] == "stopped" and data["clock"] == "simulated", data


def test_without_pseudo_terminals_selflab_emulate_says_so_in_one_line(tmp_path: Path) -> None:
    script = WITHOUT_POSIX + "from selflab.controller.cli import main\nsys.exit(main(['emulate', 'pump', '--link-dir', sys.argv[1]]))"
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ports")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stdout == "", out
    [line] = out.stderr.splitlines()
    assert line.startswith("selflab emulate: emulated devices are served on pseudo-terminals, which this platform lacks")


class ProactorLikeLoop(asyncio.SelectorEventLoop):
    """An event loop that cannot watch file descriptors, as Windows' proactor loop cannot."""

    def add_reader(self, fd: Any, callback: Any, *args: Any) -> None:
        raise NotImplementedError

    def add_writer(self, fd: Any, callback: Any, *args: Any) -> None:
        raise NotImplementedError


def without_add_reader(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=ProactorLikeLoop) as runner:
        return runner.run(main())


@pytest.fixture
def peer():
    peers: list[PtyPeer] = []

    def make(reply: Callable[[bytes], bytes | None]) -> PtyPeer:
        peers.append(PtyPeer(reply))
        return peers[-1]

    yield make
    for p in peers:
        p.close()


def test_the_transport_picks_how_to_read_by_what_the_loop_can_do(peer) -> None:
    device = peer(lambda frame: frame[::-1] + b"\r\n")

    async def session(t: SerialTransport) -> tuple[bool, list[str]]:
        async with t:
            return t.reads_in_thread, [await t.query(c) for c in ("ABC", "12 3")]

    assert asyncio.run(session(link(device.port))) == (False, ["CBA", "3 21"])
    assert without_add_reader(lambda: session(link(device.port))) == (True, ["CBA", "3 21"])
    assert device.received == [b"ABC\r\n", b"12 3\r\n"] * 2


def test_reading_in_a_thread_keeps_the_transport_s_failure_mapping(peer) -> None:
    device = peer(lambda frame: {b"HALF?": b"12.", b"GARBLED?": b"\xff\xfe\r\n", b"QUIET?": None}.get(frame, b"late\r\n"))

    async def session() -> list[str]:
        t = link(device.port, retries=0, timeout_s=0.2)
        await t.open()
        try:
            started = time.monotonic()
            with pytest.raises(InstrumentTimeout, match="no reply to 'QUIET\\?' within 0.2 s"):
                await t.query("QUIET?")
            assert 0.2 <= time.monotonic() - started < 0.2 + 4 * READ_POLL_S + 0.5
            with pytest.raises(BadResponse, match="partial reply to 'HALF\\?': b'12.'"):
                await t.query("HALF?")
            with pytest.raises(BadResponse, match="garbled reply"):
                await t.query("GARBLED?")
            return [await t.query("NEXT?")]
        finally:
            await t.close()

    assert without_add_reader(session) == ["late"]


def test_reading_in_a_thread_never_blocks_the_loop(peer) -> None:
    device = peer(lambda frame: None)

    async def session() -> float:
        lags: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                before = time.monotonic()
                await asyncio.sleep(0.001)
                lags.append(time.monotonic() - before - 0.001)

        tick = asyncio.create_task(ticker())
        t = link(device.port, retries=0, timeout_s=0.3)
        async with t:
            with pytest.raises(InstrumentTimeout):
                await t.query("QUIET?")
        done.set()
        await tick
        assert len(lags) > 50
        return max(lags)

    assert without_add_reader(session) < 0.05


def test_reading_in_a_thread_is_not_held_up_by_busy_worker_threads(peer) -> None:
    """A planner fitting in ``asyncio.to_thread`` (every default worker busy) does not delay a reply."""
    device = peer(lambda frame: b"OK\r\n")

    async def session() -> tuple[str, float]:
        busy = [asyncio.create_task(asyncio.to_thread(time.sleep, 1.5)) for _ in range(40)]  # the default executor has <= 32
        await asyncio.sleep(0.1)
        t = link(device.port, retries=0, timeout_s=0.5)
        started = time.monotonic()
        async with t:
            reply = await t.query("PING")
        took = time.monotonic() - started
        await asyncio.gather(*busy)
        return reply, took

    reply, took = without_add_reader(session)
    assert reply == "OK" and took < 1.0


def test_reading_in_a_thread_sees_the_port_vanish_and_reconnects(tmp_path: Path) -> None:
    config = {"devices": ["hotplate"], "link_dir": str(tmp_path), "time_scale": 60}

    async def session() -> tuple[list[str], float]:
        emulator = EmulatorProcess(config)
        port = (await emulator.start())["hotplate"]
        t = link(port, retries=2, timeout_s=0.3, backoff_s=0.1)
        await t.open()
        replies = [await t.query("*IDN?", idempotent=True)]
        await emulator.stop()
        with pytest.raises(InstrumentDisconnected):
            await t.query("*IDN?", idempotent=True)
        await emulator.start()
        replies.append(await t.query("*IDN?", idempotent=True))
        started = time.monotonic()
        await t.close()  # the reader thread is in read(): close does not wait for it
        closing = time.monotonic() - started
        await t.open()  # the port is free again (exclusive lock released)
        replies.append(await t.query("*IDN?", idempotent=True))
        await t.close()
        await emulator.stop()
        return replies, closing

    replies, closing = without_add_reader(session)
    assert replies == ["SELFLAB,HP-350,EMU0002,1.0"] * 3
    assert closing < 0.1


@pytest.mark.parametrize("name", ["hotplate", "uv_vis"])
def test_bundled_drivers_conform_where_a_thread_reads(name: str) -> None:
    cls, good, options, command = DRIVERS[name]
    faults = {error: emulated(cls, {"kinds": [kind], "commands": [command]}, **options) for error, kind in FAULTS.items()}
    report = without_add_reader(lambda: acheck_instrument(emulated(cls, **options), good, faults=faults, timeout_s=10.0,
                                                          cancel_after_s=0.02))
    assert not report.failed
    assert {"fault -> BadResponse", "fault -> InstrumentTimeout", "fault -> InstrumentDisconnected", "reconnect"} <= set(report.passed)
