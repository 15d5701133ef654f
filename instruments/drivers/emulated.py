"""Start a device emulator in a child process for a driver run with ``emulate: true``.

The child is ``python -m selflab.simulators.emulators '<config JSON>'`` (see
:mod:`selflab.simulators.emulators.server`). It prints its port paths on one line and
serves until its standard input closes, so it never outlives this process.
Its log (every injected fault at WARNING) goes to a temporary file whose
lines :meth:`EmulatorProcess.log_lines` returns, also after :meth:`stop`.

This module starts the emulator as a command and never imports
:mod:`simulators`, which keeps the package dependency one way (simulators ->
instruments); only :class:`~selflab.instruments.drivers.connection.Connection`
imports the emulator's config model, lazily, to validate ``emulator:``
options when a driver is built with ``emulate: true``.

Example::

    emulator = EmulatorProcess({"devices": ["pump"], "time_scale": 600})
    ports = await emulator.start()          # {"pump": "/tmp/selflab-emu-.../pump"}
    ...
    await emulator.stop()
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

from selflab.instruments.errors import InstrumentDisconnected

__all__ = ["EmulatorProcess"]

log = logging.getLogger("selflab.emulator")


class EmulatorProcess:
    """One emulator child process.

    Args:
        config: the emulator config (``devices``, ``seed``, ``time_scale``,
            ``faults``...), as :class:`selflab.simulators.emulators.EmulatorConfig` fields.
        start_timeout_s: seconds to wait for the ports to come up.
    """

    def __init__(self, config: Mapping[str, Any], *, start_timeout_s: float = 20.0) -> None:
        self.config = dict(config)
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = ""
        self._log_text = ""

    @property
    def running(self) -> bool:
        """Whether the child is running."""
        return self._process is not None and self._process.poll() is None

    async def start(self) -> dict[str, str]:
        """Start the child; device name -> port path.

        Raises:
            InstrumentDisconnected: the emulator did not come up (its log says why).
        """
        await self.stop()
        fd, self._log_path = tempfile.mkstemp(prefix="selflab-emulator-", suffix=".log")
        with os.fdopen(fd, "wb") as log_file:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "selflab.simulators.emulators", json.dumps(self.config)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
            )
        assert self._process.stdout is not None
        try:
            async with asyncio.timeout(self.start_timeout_s):
                line = await asyncio.to_thread(self._process.stdout.readline)
            ports: dict[str, str] = json.loads(line)["ports"]
        except (TimeoutError, ValueError, KeyError):
            await self.stop()
            tail = " | ".join(self._log_text.strip().splitlines()[-3:]) or "no output"
            raise InstrumentDisconnected(f"the emulator {self.config.get('devices')} did not start: {tail}") from None
        log.info("emulator pid %d serving %s (log: %s)", self._process.pid, ports, self._log_path)
        return ports

    async def stop(self) -> None:
        """Stop the child and keep its log; safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            assert process.stdin is not None
            process.stdin.close()  # the child exits on EOF
            try:
                await asyncio.to_thread(process.wait, 5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
            if process.stdout is not None:
                process.stdout.close()
        if self._log_path:
            with open(self._log_path, encoding="utf-8", errors="replace") as handle:
                self._log_text = handle.read()
            os.unlink(self._log_path)
            self._log_path = ""

    def log_lines(self) -> list[str]:
        """The emulator's log so far (after :meth:`stop`: all of it)."""
        if self._log_path:
            with open(self._log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read().splitlines()
        return self._log_text.splitlines()
