"""The serial and VISA transports, on real pseudo-terminals and pyvisa-sim.

Framing details are checked against a scripted peer on the far end of a real
pty (a thread writing the bytes a device would); timeouts, reconnection and
faults against the device emulators in a child process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import threading
import time
import tty
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO
from pydantic import ValidationError

from selflab.instruments.drivers.emulated import EmulatorProcess
from selflab.instruments.errors import BadResponse, InstrumentDisconnected, InstrumentTimeout
from selflab.instruments.transports import SerialSettings, SerialTransport, VisaSettings, make_transport


class PtyPeer:
    """A scripted device on a real pty: ``reply(frame) -> bytes | None`` per received frame."""

    def __init__(self, reply: Callable[[bytes], bytes | None], terminator: bytes = b"\r\n") -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self.received: list[bytes] = []
        self._reply, self._terminator = reply, terminator
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        buffer = b""
        while self._running:
            if not select.select([self.master], [], [], 0.05)[0]:
                continue
            buffer += os.read(self.master, 1024)
            while self._terminator in buffer:
                frame, _, buffer = buffer.partition(self._terminator)
                self.received.append(frame + self._terminator)
                answer = self._reply(frame)
                if answer is not None:
                    os.write(self.master, answer)

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2)
        os.close(self.master)
        os.close(self._slave)


@pytest.fixture
def peer_factory():
    peers: list[PtyPeer] = []

    def make(reply: Callable[[bytes], bytes | None], terminator: bytes = b"\r\n") -> PtyPeer:
        peers.append(PtyPeer(reply, terminator))
        return peers[-1]

    yield make
    for peer in peers:
        peer.close()


def link(port: str, **settings: object) -> SerialTransport:
    return SerialTransport(SerialSettings(port=port, **{"timeout_s": 0.3, "backoff_s": 0.05, **settings}))  # type: ignore[arg-type]


async def _query(transport: SerialTransport, *commands: str, **kwargs: object) -> list[object]:
    async with transport:
        return [await transport.query(c, **kwargs) for c in commands]  # type: ignore[arg-type]


def test_framing_with_configured_terminators(peer_factory) -> None:
    peer = peer_factory(lambda frame: frame[::-1] + b"\r", terminator=b"\n")
    t = link(peer.port, write_termination="\n", read_termination="\r")
    assert asyncio.run(_query(t, "ABC", "12 3")) == ["CBA", "3 21"]
    assert peer.received == [b"ABC\n", b"12 3\n"]


def test_encoding_is_configurable(peer_factory) -> None:
    peer = peer_factory(lambda frame: "25.0 °C\r\n".encode("latin-1"))
    assert asyncio.run(_query(link(peer.port, encoding="latin-1"), "TEMP?")) == ["25.0 °C"]
    with pytest.raises(BadResponse, match="garbled reply to 'TEMP\\?'.*not ascii"):
        asyncio.run(_query(link(peer.port, retries=0), "TEMP?", idempotent=True))


def test_reply_split_across_writes_is_reassembled(peer_factory) -> None:
    def reply(frame: bytes) -> bytes:
        os.write(peer.master, b"12.")
        time.sleep(0.05)
        return b"50\r\n"

    peer = peer_factory(reply)
    assert asyncio.run(_query(link(peer.port), "TEMP?", parse=float)) == [12.5]


def test_silence_is_a_timeout_and_partial_is_a_bad_response(peer_factory) -> None:
    peer = peer_factory(lambda frame: b"12." if frame == b"HALF?" else None)
    t = link(peer.port, retries=0, timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(InstrumentTimeout, match="no reply to 'QUIET\\?' within 0.2 s"):
        asyncio.run(_query(t, "QUIET?"))
    assert 0.2 <= time.monotonic() - started < 1.0
    with pytest.raises(BadResponse, match="partial reply to 'HALF\\?': b'12.'"):
        asyncio.run(_query(t, "HALF?"))


def test_unparsable_reply_is_a_bad_response(peer_factory) -> None:
    peer = peer_factory(lambda frame: b"12.3.4\r\n")
    with pytest.raises(BadResponse, match="'TEMP\\?' -> '12.3.4'"):
        asyncio.run(_query(link(peer.port, retries=0), "TEMP?", parse=float))


def test_a_late_reply_is_discarded_not_taken_for_the_next(peer_factory) -> None:
    def reply(frame: bytes) -> bytes:
        if frame == b"SLOW?":
            time.sleep(0.3)
            return b"late\r\n"
        return b"fresh\r\n"

    peer = peer_factory(reply)

    async def session() -> str:
        t = link(peer.port, retries=0, timeout_s=0.15)
        await t.open()
        with pytest.raises(InstrumentTimeout):
            await t.query("SLOW?")
        await asyncio.sleep(0.3)  # the late reply arrives now
        try:
            return await t.query("FAST?")
        finally:
            await t.close()

    assert asyncio.run(session()) == "fresh"


def test_idempotent_queries_are_retried_with_exponential_backoff(peer_factory) -> None:
    peer = peer_factory(lambda frame: b"42\r\n" if len(peer.received) >= 3 else None)
    t = link(peer.port, retries=3, timeout_s=0.1, backoff_s=0.05)
    started = time.monotonic()
    assert asyncio.run(_query(t, "VALUE?", parse=int, idempotent=True)) == [42]
    elapsed = time.monotonic() - started
    assert len(peer.received) == 3
    assert elapsed >= 2 * 0.1 + 0.05 + 0.1  # two timeouts, then waits of 0.05 and 0.10 s
    assert t.settings.delay(0) == 0.05 and t.settings.delay(2) == 0.2


def test_commands_with_side_effects_are_sent_once(peer_factory) -> None:
    peer = peer_factory(lambda frame: None)
    with pytest.raises(InstrumentTimeout):
        asyncio.run(_query(link(peer.port, retries=3), "RUN"))
    assert peer.received == [b"RUN\r\n"]


def test_every_frame_is_logged_at_debug(peer_factory, caplog: pytest.LogCaptureFixture) -> None:
    peer = peer_factory(lambda frame: b"OK\r\n")
    with caplog.at_level(logging.DEBUG, logger="selflab.transport"):
        asyncio.run(_query(link(peer.port), "PING"))
    frames = [r for r in caplog.records if hasattr(r, "direction")]
    assert [(r.direction, r.nbytes, r.port) for r in frames] == [("send", 6, peer.port), ("receive", 4, peer.port)]
    assert f"{peer.port} -> b'PING\\r\\n'" in caplog.text and f"{peer.port} <- b'OK\\r\\n'" in caplog.text


def test_never_blocks_the_loop(peer_factory) -> None:
    """A 1 ms ticker keeps ticking while a query waits 0.3 s for a silent device."""
    peer = peer_factory(lambda frame: None)

    async def session() -> float:
        lags: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                before = time.monotonic()
                await asyncio.sleep(0.001)
                lags.append(time.monotonic() - before - 0.001)

        tick = asyncio.create_task(ticker())
        with pytest.raises(InstrumentTimeout):
            await _query(link(peer.port, retries=0, timeout_s=0.3), "QUIET?")
        done.set()
        await tick
        assert len(lags) > 50
        return max(lags)

    assert asyncio.run(session()) < 0.05


def test_open_a_missing_port_is_disconnected(tmp_path: Path) -> None:
    t = link(str(tmp_path / "ttyNOPE"), retries=1)
    with pytest.raises(InstrumentDisconnected, match="cannot open"):
        asyncio.run(t.open())
    with pytest.raises(InstrumentDisconnected, match="closed; call connect"):
        asyncio.run(t.query("X"))


def test_reconnects_after_the_emulator_restarts(tmp_path: Path) -> None:
    """The port vanishes when the emulator stops and comes back at the same path."""
    config = {"devices": ["hotplate"], "link_dir": str(tmp_path), "time_scale": 60}

    async def session() -> list[str]:
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
        await t.close()
        await emulator.stop()
        return replies

    assert asyncio.run(session()) == ["SELFLAB,HP-350,EMU0002,1.0"] * 2


def test_settings_are_strict() -> None:
    with pytest.raises(ValidationError, match="bogus"):
        SerialSettings(port="/dev/ttyUSB0", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="unknown encoding"):
        SerialSettings(port="/dev/ttyUSB0", encoding="klingon")
    with pytest.raises(ValidationError, match="timeout_s"):
        make_transport({"kind": "serial", "port": "/dev/ttyUSB0", "timeout_s": 0})
    assert make_transport({"kind": "visa", "resource": "ASRL1::INSTR"}).name == "ASRL1::INSTR"


def test_visa_transport_on_pyvisa_sim() -> None:
    library = f"{REPO / 'tests' / 'visa_uv.yaml'}@sim"

    async def session() -> list[object]:
        t = make_transport(VisaSettings(resource="ASRL1::INSTR", library=library, timeout_s=0.2, retries=0))
        await t.open()
        try:
            out: list[object] = [await t.query("*IDN?"), await t.query("WL 420.0"), await t.query("WL?", parse=float)]
            with pytest.raises(InstrumentTimeout, match="SILENT"):
                await t.query("SILENT?")
            return out
        finally:
            await t.close()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pyvisa-sim's error replies lack the terminator
        assert asyncio.run(session()) == ["SELFLAB,UV-1100,SIM0001,1.0", "OK", 420.0]
    missing = make_transport(VisaSettings(resource="ASRL1::INSTR", library="no-such.yaml@sim", retries=0))
    with pytest.raises(InstrumentDisconnected, match="cannot open with VISA"):
        asyncio.run(missing.open())
