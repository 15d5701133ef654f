"""Fixture ledgers for the lab console's tests and benchmark.

Each builder writes a real ledger through the real :class:`Ledger`: the
small ones by running a tiny simulated campaign (``Campaign`` with a
``sobol`` or ``random`` planner), the big one (:func:`synthetic_ledger`) by
appending the events a campaign would have written, in batches, so that a
10,000-experiment ledger takes seconds to make rather than an hour.

Importable as ``console_fixtures`` (pytest puts ``tests/`` on ``sys.path``;
``benchmarks/console.py`` adds it), so configs name its drivers by import
path, e.g. ``driver: console_fixtures:MixedRecipe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from selflab.controller.bench import bench_config
from selflab.controller.campaign import Campaign
from selflab.controller.config import LabConfig, parse_config
from selflab.controller.console.actions import ActionRegistry
from selflab.controller.console.app import Console, ConsoleSettings
from selflab.controller.console.server import ConsoleServer, listen
from selflab.controller.ledger import Ledger, NewEvent
from selflab.simulators.problems import get_problem


class MixedRecipe:
    """A recipe over a float, an integer and a categorical parameter:
    ``score = -(t - 60)^2 / 400 - (n - 3)^2 / 4 + bonus(solvent)``."""

    BONUS = {"water": 0.0, "ethanol": 0.5, "toluene": -0.3}

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        t, n, solvent = float(params["temperature"]), int(params["stages"]), str(params["solvent"])
        return {"score": -((t - 60.0) ** 2) / 400.0 - (n - 3) ** 2 / 4.0 + self.BONUS[solvent]}


def run_campaign(config: LabConfig) -> None:
    """Run ``config`` to its stop rules on its own ledger (on a thread of its
    own, so that a test driving Playwright's synchronous API, which keeps an
    event loop on the main thread, may run one)."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            _run(config)
        except BaseException as exc:  # (raised again below)
            failed.append(exc)

    thread = threading.Thread(target=run, name=f"fixture-{config.name}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def _named(config: LabConfig, name: str) -> LabConfig:
    return parse_config({**config.model_dump(mode="json", exclude_none=True), "name": name})


def single_objective(url: str, n: int = 8) -> str:
    """Branin, one objective, sobol: campaign ``single``."""
    run_campaign(_named(bench_config(get_problem("branin"), "sobol", n, 0, 1, url), "single"))
    return "single"


def multi_objective(url: str, n: int = 8) -> str:
    """Branin-Currin, two objectives, sobol: campaign ``multi``."""
    run_campaign(_named(bench_config(get_problem("branin_currin"), "sobol", n, 0, 2, url), "multi"))
    return "multi"


def multi_fidelity(url: str, n: int = 24) -> str:
    """Two fidelities (0.5 costs 0.5, 1 costs 1; one instrument each), as a
    multi-fidelity campaign records them, every 7th experiment failing:
    campaign ``mf`` (written event by event: the baseline planners propose
    at the target fidelity only, and the ``mf`` planner is too slow for a fixture)."""
    return synthetic_ledger(url, n, name="mf", fidelities=(0.5, 1.0), fail_every=7)


def many_failures(url: str, n: int = 8) -> str:
    """A quadratic instrument whose every second run fails (and every third
    returns NaN), random planner: campaign ``failing``."""
    run_campaign(parse_config({
        "name": "failing", "seed": 0, "ledger": url, "clock": "simulated",
        "parameters": [{"name": "x", "type": "float", "low": 0, "high": 1}, {"name": "z", "type": "float", "low": 0, "high": 1}],
        "objectives": [{"name": "y", "direction": "maximize"}],
        "instruments": [{"name": "flaky", "driver": "labdrivers:Quadratic", "options": {"fail_every": 2, "nan_every": 3},
                         "max_consecutive_failures": 50}],
        "planner": {"kind": "random"}, "stop": {"max_experiments": n},
    }))
    return "failing"


def mixed_space(url: str, n: int = 8) -> str:
    """Float, integer and categorical parameters, sobol: campaign ``mixed``."""
    run_campaign(parse_config({
        "name": "mixed", "seed": 0, "ledger": url, "clock": "simulated",
        "parameters": [{"name": "temperature", "type": "float", "low": 20, "high": 120, "unit": "degC"},
                       {"name": "stages", "type": "int", "low": 1, "high": 6},
                       {"name": "solvent", "type": "categorical", "choices": ["water", "ethanol", "toluene"]}],
        "objectives": [{"name": "score", "direction": "maximize"}],
        "instruments": [{"name": "bench", "driver": "console_fixtures:MixedRecipe"}],
        "planner": {"kind": "sobol"}, "stop": {"max_experiments": n},
    }))
    return "mixed"


def started_only(url: str) -> str:
    """A campaign that has started and done nothing yet: campaign ``empty``."""
    config = _named(bench_config(get_problem("branin"), "sobol", 5, 0, 1, url), "empty")
    ledger = Ledger(url)
    try:
        ledger.append([NewEvent(campaign="empty", kind="campaign_started", payload={
            "config": config.model_dump(mode="json"), "version": "test", "seed": 0, "clock": "simulated"})])
    finally:
        ledger.close()
    return "empty"


def empty_ledger(url: str) -> None:
    """A ledger with no campaign at all."""
    Ledger(url).close()


FIXTURES: dict[str, Callable[[str], str]] = {
    "single": single_objective,
    "multi": multi_objective,
    "mf": multi_fidelity,
    "failing": many_failures,
    "mixed": mixed_space,
    "empty": started_only,
}
"""Every small fixture campaign, by name; each may share one ledger with the others."""


def synthetic_config(url: str, name: str = "big", objectives: int = 1, fidelities: tuple[float, ...] = (1.0,)) -> LabConfig:
    """The config snapshot of a :func:`synthetic_ledger` campaign: a 3-D
    space, ``objectives`` objectives, one instrument per fidelity."""
    return parse_config({
        "name": name, "seed": 0, "ledger": url, "clock": "simulated",
        "parameters": [{"name": f"x{i}", "type": "float", "low": 0, "high": 1} for i in range(3)],
        "objectives": [{"name": f"y{k}", "direction": "minimize"} for k in range(objectives)],
        "instruments": [{"name": f"sim_{f:g}", "driver": "branin", "fidelity": f, "cost": f"{f:g}", "capacity": 2} for f in fidelities],
        "target_fidelity": max(fidelities),
        "planner": {"kind": "sobol"}, "stop": {"max_experiments": 10 ** 6},
    })


def synthetic_ledger(url: str, n: int, *, name: str = "big", objectives: int = 1, fidelities: tuple[float, ...] = (1.0,),
                     fail_every: int = 20, batch: int = 500, seed: int = 0) -> str:
    """Append a finished campaign of ``n`` experiments as the campaign loop
    would record it (``campaign_started``; per experiment ``proposed``,
    ``dispatched`` and ``completed``, or ``failed`` every ``fail_every``-th;
    ``campaign_stopped``), ``batch`` experiments per transaction. Returns
    the campaign's name."""
    config = synthetic_config(url, name, objectives, fidelities)
    rng = random.Random(seed)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    ledger = Ledger(url)
    try:
        ledger.append([NewEvent(campaign=name, kind="campaign_started", at=t0, payload={
            "config": config.model_dump(mode="json"), "version": "synthetic", "seed": seed, "clock": "simulated"})])
        for start in range(1, n + 1, batch):
            events: list[NewEvent] = []
            for eid in range(start, min(n, start + batch - 1) + 1):
                at = t0 + timedelta(minutes=eid)
                fidelity = fidelities[eid % len(fidelities)]
                params = {f"x{i}": rng.random() for i in range(3)}
                instrument = f"sim_{fidelity:g}"
                events.append(NewEvent(campaign=name, kind="proposed", experiment_id=eid, at=at, payload={
                    "params": params, "fidelity": fidelity, "planner": "sobol", "reason": {"strategy": "sobol", "index": eid}}))
                events.append(NewEvent(campaign=name, kind="dispatched", experiment_id=eid, instrument=instrument, at=at,
                                       payload={"cost": fidelity}))
                done = at + timedelta(seconds=50)
                if fail_every and eid % fail_every == 0:
                    events.append(NewEvent(campaign=name, kind="failed", experiment_id=eid, instrument=instrument, at=done,
                                           payload={"error_kind": "bad_response", "message": f"garbled reply to run #{eid}"}))
                    continue
                outcomes = {f"y{k}": sum((v - 0.3 - 0.2 * k) ** 2 for v in params.values()) + 0.1 * (1 - fidelity) + 0.01 * rng.random()
                            for k in range(objectives)}
                events.append(NewEvent(campaign=name, kind="completed", experiment_id=eid, instrument=instrument, at=done,
                                       payload={"outcomes": outcomes, "duration_s": 50.0}))
            ledger.append(events)
        ledger.append([NewEvent(campaign=name, kind="campaign_stopped", at=t0 + timedelta(minutes=n + 1),
                                payload={"reason": "max_experiments", "detail": f"{n} experiments"})])
    finally:
        ledger.close()
    return name



TOKEN = "console-test-token-0123456789"
"""The write token of the consoles the tests start."""


@contextlib.contextmanager
def serve(url: str, *, campaign: str | None = None, token: str = TOKEN, model_every_s: float = 0.0,
          actions: ActionRegistry | None = None) -> Iterator[ConsoleServer]:
    """A console on ``url``, served on a free loopback port on a thread."""
    console = Console(ConsoleSettings(ledger_url=url, campaign=campaign, model_every_s=model_every_s), token, actions)
    with ConsoleServer(console, listen("127.0.0.1", 0)).running() as server:
        yield server


def quadratic_running(url: str, name: str = "live", delay_s: float = 0.05) -> LabConfig:
    """A wall-clock campaign over ``labdrivers:Quadratic`` that would run for
    hours (each run takes ``delay_s``), for stopping from the console."""
    return parse_config({
        "name": name, "seed": 0, "ledger": url, "clock": "wall",
        "parameters": [{"name": "x", "type": "float", "low": 0, "high": 1}, {"name": "z", "type": "float", "low": 0, "high": 1}],
        "objectives": [{"name": "y", "direction": "maximize"}],
        "instruments": [{"name": "q1", "driver": "labdrivers:Quadratic", "options": {"delay_s": delay_s}}],
        "planner": {"kind": "random"}, "stop": {"max_experiments": 100000},
    })


@contextlib.contextmanager
def campaign_thread(config: LabConfig, started_timeout_s: float = 30.0) -> Iterator[dict[str, Any]]:
    """Run ``config`` on a thread until it stops by itself; yields a dict
    that gets ``stop`` (its :class:`StopInfo`) or ``error`` once it ends.
    Waits until the campaign has completed an experiment before yielding."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["stop"] = _run(config)
        except BaseException as exc:  # (reported to the test)
            result["error"] = exc

    thread = threading.Thread(target=run, name=f"campaign-{config.name}", daemon=True)
    thread.start()
    reader: Ledger | None = None
    deadline = time.monotonic() + started_timeout_s
    try:
        while time.monotonic() < deadline and thread.is_alive():
            try:
                reader = reader or Ledger(config.ledger_url, create=False)
                if any(e.kind == "completed" for e in reader.events(config.name)):
                    break
            except Exception:  # (the ledger is being made)
                pass
            time.sleep(0.05)
        else:
            raise AssertionError(f"campaign {config.name} did not complete an experiment in {started_timeout_s} s: {result}")
        result["thread"] = thread
        yield result
    finally:
        if reader is not None:
            reader.close()
        thread.join(timeout=60)


def _run(config: LabConfig) -> Any:
    ledger = Ledger(config.ledger_url)
    try:
        return asyncio.run(Campaign(config, ledger).run())
    finally:
        ledger.close()


def gated_running(url: str, name: str = "gated", delay_s: float = 0.02, max_experiments: int = 4) -> LabConfig:
    """A wall-clock campaign with ``oversight: {approval: all}`` on one
    ``labdrivers:Quadratic`` slot: every proposal waits for a person."""
    return parse_config({
        "name": name, "seed": 3, "ledger": url, "clock": "wall",
        "parameters": [{"name": "x", "type": "float", "low": 0, "high": 1}, {"name": "z", "type": "float", "low": 0, "high": 1}],
        "objectives": [{"name": "y", "direction": "maximize"}],
        "instruments": [{"name": "q1", "driver": "labdrivers:Quadratic", "options": {"delay_s": delay_s}}],
        "planner": {"kind": "random"}, "stop": {"max_experiments": max_experiments},
        "oversight": {"approval": "all", "veto_radius": 0.15},
    })


@contextlib.contextmanager
def runner_thread(config: LabConfig) -> Iterator[dict[str, Any]]:
    """Run ``config`` with a :class:`~selflab.controller.runner.Runner` on a
    thread; yields a dict with ``runner`` at once, and ``stop`` (or ``error``)
    once it ends (``thread`` to join)."""
    from selflab.controller.runner import Runner

    result: dict[str, Any] = {}
    ledger = Ledger(config.ledger_url)
    result["runner"] = Runner.from_config(config, ledger)

    def run() -> None:
        try:
            result["stop"] = asyncio.run(result["runner"].run())
        except BaseException as exc:  # (reported to the test)
            result["error"] = exc

    thread = threading.Thread(target=run, name=f"runner-{config.name}", daemon=True)
    result["thread"] = thread
    thread.start()
    try:
        yield result
    finally:
        thread.join(timeout=60)
        ledger.close()
