"""Small drivers for the tests, written as a user would: plain classes, no base.

Importable as ``labdrivers`` (pytest puts ``tests/`` on ``sys.path``; the
end-to-end tests set ``PYTHONPATH``), so configs name them by import path,
e.g. ``driver: labdrivers:Quadratic``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

from selflab.instruments.errors import BadResponse, InstrumentDisconnected


class Quadratic:
    """``y = 1 - (x - 0.3)^2 - (z - 0.6)^2`` on ``x, z`` in [0, 1].

    ``delay_s`` real seconds per run; ``fail_every``/``nan_every``/``hang_every``
    make every k-th run (1-based) fail, return NaN or hang; ``sent`` records
    every parameter set that reached the instrument.
    """

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        limits: Mapping[str, list[float]] | None = None,
        fail_every: int = 0,
        nan_every: int = 0,
        hang_every: int = 0,
        garbage_every: int = 0,
        duration_s: float | None = None,
        fail_connect: bool = False,
    ) -> None:
        self.delay_s = delay_s
        self.limits = {k: (float(v[0]), float(v[1])) for k, v in (limits or {}).items()}
        self.fail_every, self.nan_every, self.hang_every, self.garbage_every = fail_every, nan_every, hang_every, garbage_every
        self.fail_connect = fail_connect
        self._duration_s = duration_s
        self.sent: list[dict[str, Any]] = []
        self.connected = False
        self.stops = 0
        self.closes = 0
        if duration_s is not None:
            self.duration = lambda params: self._duration_s  # declared duration -> simulated clock

    async def connect(self) -> None:
        if self.fail_connect:
            raise InstrumentDisconnected("no answer on /dev/ttyFAKE")
        self.connected = True

    async def run(self, params: Mapping[str, Any]) -> dict[str, Any]:
        if not self.connected:
            raise InstrumentDisconnected("not connected")
        self.sent.append(dict(params))
        k = len(self.sent)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.hang_every and k % self.hang_every == 0:
            await asyncio.sleep(3600)
        if self.fail_every and k % self.fail_every == 0:
            raise BadResponse(f"garbled reply to run #{k}")
        if self.nan_every and k % self.nan_every == 0:
            return {"y": math.nan}
        if self.garbage_every and k % self.garbage_every == 0:
            return {"y": "12.3.4"}
        x, z = float(params["x"]), float(params["z"])
        return {"y": 1.0 - (x - 0.3) ** 2 - (z - 0.6) ** 2, "aux": x + z}

    async def stop(self) -> None:
        self.stops += 1

    async def close(self) -> None:
        self.closes += 1
        self.connected = False

    def describe(self) -> dict[str, str]:
        return {"y": "1", "aux": "1"}


class Crashing:
    """Raises a plain Python error (not the hierarchy) on every run."""

    async def connect(self) -> None:
        return None

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        raise ZeroDivisionError("driver bug")

    async def close(self) -> None:
        return None


class NotAnInstrument:
    """Lacks ``run``: the registry must refuse it."""

    async def connect(self) -> None:
        return None


class Pool:
    """A dataset as an instrument: only its rows can be measured."""

    def __init__(self, *, rows: int = 12) -> None:
        self.rows = [{"x": i / rows, "z": (i * 7 % rows) / rows} for i in range(rows)]
        self.sent: list[dict[str, Any]] = []

    def candidates(self) -> list[dict[str, float]]:
        return list(self.rows)

    async def connect(self) -> None: ...
    async def close(self) -> None: ...

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        self.sent.append(dict(params))
        return {"y": float(params["x"]) + float(params["z"])}


class Hotplate(Quadratic):
    """A Quadratic whose ``read()`` reports a scripted plate temperature (degC):
    one value per poll from ``temperatures``, then the last one forever."""

    def __init__(self, *, temperatures: list[float], **options: Any) -> None:
        super().__init__(**options)
        self.temperatures = list(temperatures)
        self.reads = 0

    async def read(self) -> dict[str, float]:
        value = self.temperatures[min(self.reads, len(self.temperatures) - 1)]
        self.reads += 1
        return {"temperature": value}


class Remembering(Quadratic):
    """Remembers outcomes across restarts in a JSON file (``memory``), as a
    device with its own run log would, and reports them via ``outcome_of``."""

    def __init__(self, *, memory: str, **options: Any) -> None:
        super().__init__(**options)
        self.memory = memory

    def _log(self) -> list[dict[str, Any]]:
        import json
        import os

        if not os.path.exists(self.memory):
            return []
        with open(self.memory) as handle:
            return list(json.load(handle))

    async def run(self, params: Mapping[str, Any]) -> dict[str, Any]:
        import json

        result = await super().run(params)
        import os

        entries = self._log() + [{"params": dict(params), "result": result}]
        with open(self.memory + ".tmp", "w") as handle:  # atomic: a kill never leaves half a log
            json.dump(entries, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(self.memory + ".tmp", self.memory)
        return result

    async def outcome_of(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        for entry in reversed(self._log()):
            if entry["params"] == dict(params):
                return dict(entry["result"])
        return None


class Logged(Quadratic):
    """Appends every run to a JSON-lines file shared by processes (O_APPEND)."""

    def __init__(self, *, log_path: str, **options: Any) -> None:
        super().__init__(**options)
        self.log_path = log_path

    async def run(self, params: Mapping[str, Any]) -> dict[str, Any]:
        import json
        import os

        result = await super().run(params)
        line = (json.dumps({"params": dict(params), "result": result, "pid": os.getpid()}) + "\n").encode()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return result


class HeldLogged(Logged):
    """:class:`Logged` that waits before each run while the file ``hold`` exists
    (a test holds a campaign mid-run, whatever the machine's speed)."""

    def __init__(self, *, hold: str, **options: Any) -> None:
        super().__init__(**options)
        self.hold = hold

    async def run(self, params: Mapping[str, Any]) -> dict[str, Any]:
        import os

        while os.path.exists(self.hold):
            await asyncio.sleep(0.02)
        return await super().run(params)


class Gated(Quadratic):
    """Runs only as many experiments as the number written in the file ``gate``
    allows (a test opens the gate step by step); the others wait."""

    def __init__(self, *, gate: str, **options: Any) -> None:
        super().__init__(**options)
        self.gate = gate

    def _allowed(self) -> int:
        try:
            with open(self.gate) as handle:
                return int(handle.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    async def run(self, params: Mapping[str, Any]) -> dict[str, Any]:
        while len(self.sent) >= self._allowed():
            await asyncio.sleep(0.02)
        return await super().run(params)


class Reporting(Quadratic):
    """:class:`Quadratic` that also reports the noise of ``y`` as ``y_sd`` (``sd`` option)."""

    def __init__(self, *, sd: float = 0.05, **options: Any) -> None:
        super().__init__(**options)
        self.sd = sd

    async def run(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {**await super().run(params), "y_sd": self.sd}

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "y_sd": "1"}
