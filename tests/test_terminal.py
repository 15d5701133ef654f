"""What a person sees on the terminal during ``selflab run``: the live panel,
the log lines (how many, how stamped) and the last words of the command."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, quadratic_config
from rich.console import Console

from selflab.controller.cli import main
from selflab.controller.config import load_config
from selflab.controller.fleet import build_fleet
from selflab.controller.ledger import Event
from selflab.controller.progress import LiveDisplay, ShowsActivity, setup_logging
from selflab.controller.projection import CampaignState
from selflab.instruments.errors import BadResponse, InstrumentError, InstrumentTimeout
from selflab.instruments.transports import SerialSettings, SerialTransport
from selflab.instruments.transports.base import TRANSPORT_LOGGER, RetrySummary

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SELFLAB = str(Path(sys.executable).with_name("selflab"))


# --- the live panel ------------------------------------------------------------------


def _state(*results: float) -> CampaignState:
    """A branin campaign state with one completed experiment per result."""
    events = [Event(id=1, campaign="branin-random", kind="campaign_started", experiment_id=None, instrument=None, at=T0, recorded_at=T0,
                    payload={"config": {}, "version": "0", "seed": 0, "clock": "simulated"})]
    for eid, y in enumerate(results, start=1):
        for kind, instrument, payload in (("proposed", None, {"params": {"x1": 0.0, "x2": 0.0}}),
                                          ("dispatched", "branin-sim", {}),
                                          ("completed", "branin-sim", {"outcomes": {"y": y}})):
            events.append(Event(id=len(events) + 1, campaign="branin-random", kind=kind, experiment_id=eid, instrument=instrument,
                                at=T0 + timedelta(minutes=len(events)), recorded_at=T0, payload=payload))
    return CampaignState.replay("branin-random", events)


def _text(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=160, record=True)
    console.print(renderable)
    return console.export_text()


@pytest.fixture
def panel() -> Iterator[tuple[LiveDisplay, io.StringIO, Any]]:
    config = load_config(REPO / "lab_configs" / "branin_random.yaml")
    out = io.StringIO()
    display = LiveDisplay(config, Console(file=out, force_terminal=True, width=160), refresh_s=0.05)
    yield display, out, build_fleet(config)


def test_the_panel_shows_the_latest_result_at_once_even_right_after_another_update(panel: Any) -> None:
    """The demo read '0/40 no result yet' under four logged results: updates
    within 0.25 s of the last one were dropped, and nothing redrew them."""
    display, out, stations = panel
    with display:
        display.update(_state(), stations)
        display.update(_state(3.0), stations)  # (at once: the old panel dropped it)
        assert "1/60" in _text(display.renderable()) and "best y = 3 (#1)" in _text(display.renderable())
        display.update(_state(3.0, 1.5), stations)
        time.sleep(0.5)  # the loop is busy elsewhere: rich redraws on its own
        live = out.getvalue()
    assert "2/60" in live and "best y = 1.5 (#2)" in live
    last_frame = out.getvalue().rsplit("branin-random", 1)[1]
    assert "best y = 1.5 (#2)" in last_frame and "no result" not in last_frame


def test_the_panel_says_what_the_controller_is_doing_and_keeps_time_while_it_fits(panel: Any) -> None:
    display, out, stations = panel
    assert isinstance(display, ShowsActivity)
    with display:
        display.update(_state(3.0), stations)
        display.activity("proposing 4 (fitting bo)")
        time.sleep(1.4)  # a long fit: no update comes, and the panel still moves
        during = out.getvalue()
        display.activity("paused by interlock: hotplate.temperature > 200")
        assert "paused by interlock: hotplate.temperature > 200 (0 s)" in _text(display.renderable())
    assert "proposing 4 (fitting bo) (0 s)" in during and "proposing 4 (fitting bo) (1 s)" in during
    assert "paused by interlock" not in _text(display.renderable()), "the final frame shows the end, not a stale activity"


# --- log lines -----------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging rewires the ``selflab`` loggers; put them back for the other tests."""
    saved = {name: (lg.handlers[:], lg.propagate, lg.level) for name in ("selflab", "py.warnings") for lg in [logging.getLogger(name)]}
    yield
    logging.captureWarnings(False)
    for name, (handlers, propagate, level) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:], lg.propagate, lg.level = handlers, propagate, level


def test_log_lines_are_stamped_to_the_second(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(quiet=False, console=Console(file=io.StringIO(), force_terminal=False))  # off a terminal: stderr
    logging.getLogger("selflab.test").info("experiment 1 completed")
    line = capsys.readouterr().err.strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO    experiment 1 completed", line), line
    out = io.StringIO()
    setup_logging(quiet=False, console=Console(file=out, force_terminal=True, width=120))
    logging.getLogger("selflab.test").info("experiment 2 completed")
    assert re.match(r"^\d\d:\d\d:\d\d INFO +experiment 2 completed", re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())), out.getvalue()


class _Peer:
    """A device on a real pty whose every other reply is garbled (not ASCII)."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self.replies = 0
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        buffer = b""
        while self._running:
            if not select.select([self.master], [], [], 0.05)[0]:
                continue
            buffer += os.read(self.master, 1024)
            while b"\r\n" in buffer:
                _, _, buffer = buffer.partition(b"\r\n")
                self.replies += 1
                os.write(self.master, b"\x85\r\n" if self.replies % 2 else b"25.0\r\n")

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2)
        os.close(self.master)
        os.close(self._slave)


def test_recovered_retries_are_summarized_not_logged_one_by_one(caplog: pytest.LogCaptureFixture) -> None:
    """19 WARNING lines in a 15-experiment emulated run, most of them retries that worked."""
    peer = _Peer()

    async def session() -> list[float]:
        async with SerialTransport(SerialSettings(port=peer.port, timeout_s=0.3, retries=2, backoff_s=0.0)) as link:
            return [await link.query("TEMP?", parse=float, idempotent=True) for _ in range(10)]

    try:
        with caplog.at_level(logging.DEBUG, logger=TRANSPORT_LOGGER):
            readings = asyncio.run(session())
    finally:
        peer.close()
    assert readings == [25.0] * 10
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "garbled reply to 'TEMP?'" in warnings[0] and "answered on retry 1 of 2" in warnings[0]
    assert warnings[1] == f"{peer.port}: 10 retried queries in the last 1 s, all recovered (bad_response 10)"
    assert sum("; retry 1 of 2 in " in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG) == 10, "details stay at DEBUG"


def test_the_retry_summary_comes_once_a_minute_and_starts_over_after_a_quiet_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    summary = RetrySummary("/dev/ttyUSB0", every_s=60, clock=lambda: now[0])
    timeout: list[InstrumentError] = [InstrumentTimeout("/dev/ttyUSB0: no reply to 'TEMP?' within 0.5 s")]
    with caplog.at_level(logging.WARNING, logger=TRANSPORT_LOGGER):
        for t in range(0, 70, 10):  # one recovered query every 10 s
            now[0] = float(t)
            summary.retried("TEMP?", timeout, recovered=True, allowed=2)
        now[0] = 75.0
        summary.retried("ACQ?", [*timeout, BadResponse("garbled"), BadResponse("garbled")], recovered=False, allowed=2)
        now[0] = 200.0  # a quiet spell longer than a minute
        summary.retried("TEMP?", timeout, recovered=True, allowed=2)
        summary.close()
    assert [r.getMessage() for r in caplog.records] == [
        "/dev/ttyUSB0: no reply to 'TEMP?' within 0.5 s [timeout]; 'TEMP?' answered on retry 1 of 2 "
        "(further retried queries on /dev/ttyUSB0: one summary every 60 s)",
        "/dev/ttyUSB0: 6 retried queries in the last 60 s, all recovered (timeout 6)",
        "/dev/ttyUSB0: 2 retried queries in the last 140 s, 1 recovered, 1 failed (timeout 2, bad_response 2)",
        "/dev/ttyUSB0: no reply to 'TEMP?' within 0.5 s [timeout]; 'TEMP?' answered on retry 1 of 2 "
        "(further retried queries on /dev/ttyUSB0: one summary every 60 s)",
    ], "a count that adds nothing to the detailed line is left out"


# --- the command's first and last words ------------------------------------------------


def test_selflab_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"selflab {version('selflab')}\n"


def test_the_end_of_a_run_is_said_once_and_points_to_status_report_and_export(tmp_path: Path) -> None:
    config = tmp_path / "lab.yaml"
    config.write_text(yaml.safe_dump(quadratic_config(stop={"max_experiments": 3})))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([SELFLAB, "run", str(config)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    stopped = [line for line in out.stderr.splitlines() if "stopped" in line]
    assert stopped == ["campaign quad stopped: max_experiments - 3 experiments completed"], out.stderr
    assert out.stderr.splitlines()[-1] == (f"see: selflab status {config} | selflab report {config} --out DIR | "
                                           f"selflab export {config} --out FILE.csv")
