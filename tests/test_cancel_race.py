"""A cancellation that arrives just as an instrument answers must still cancel.

Python 3.11's ``asyncio.wait_for`` returns the awaited result, dropping a
cancellation, when both happen in the same turn of the event loop. A dropped
cancellation left an interlock watcher polling forever after its campaign had
stopped (one run in six of ``test_events_enum``'s interlock campaign hung),
and could let an aborted experiment return a result. The controller and the
transports use ``asyncio.timeout`` instead; these tests force that turn of
the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from selflab.controller.config import InstrumentConfig
from selflab.controller.execution import run_experiment
from selflab.controller.fleet import Station
from selflab.controller.runner import Runner
from selflab.controller.study import Study
from selflab.planners.baselines import SobolPlanner
from selflab.planners.space import FloatParameter, Objective


class Gated:
    """An instrument whose ``run`` and ``read`` answer when the test opens ``gate``."""

    def __init__(self, gate: asyncio.Future[Any]) -> None:
        self.gate = gate
        self.reads = 0

    async def connect(self) -> None:
        return None

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        return dict(await self.gate)

    async def read(self) -> dict[str, float]:
        self.reads += 1
        return {"temperature": float((await self.gate)["temperature"])}

    async def close(self) -> None:
        return None


async def answer_and_cancel(task: asyncio.Task[Any], gate: asyncio.Future[Any], answer: dict[str, float]) -> str:
    """Let ``task`` start waiting on the instrument, then open the gate and
    cancel the task in the same turn of the loop; wait (at most 5 s) for it
    to end. Returns how it ended: "cancelled", "returned" or "running" (read
    here: ``asyncio.run`` cancels what still runs when it returns)."""
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()
    gate.set_result(answer)
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    return "running" if not task.done() else "cancelled" if task.cancelled() else "returned"


def test_an_experiment_cancelled_as_its_instrument_answers_is_cancelled() -> None:
    async def scenario() -> str:
        gate: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        config = InstrumentConfig(name="reactor", driver="labdrivers:Quadratic", timeout=30)
        station = Station(config=config, driver=Gated(gate), capacity=1, fidelity=1.0, cost=1.0, limits={})
        task = asyncio.create_task(run_experiment(station, {"x": 0.5}, 1, ["y"], parameters=["x"]))
        return await answer_and_cancel(task, gate, {"y": 1.0})

    assert asyncio.run(scenario()) == "cancelled"  # not "returned": the abort was lost


def test_an_interlock_watcher_cancelled_as_its_instrument_answers_stops(sqlite_url: str) -> None:
    async def scenario(study: Study) -> tuple[str, int]:
        gate: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        plate = Gated(gate)
        runner = Runner(study, {"plate": plate},
                        interlocks=[{"pause_when": "plate.temperature > 200", "resume_when": "plate.temperature < 150", "poll": 0.01}])
        task = asyncio.create_task(runner._watch(runner.config.interlocks[0]))
        return await answer_and_cancel(task, gate, {"temperature": 20.0}), plate.reads

    with Study.create("watch", [FloatParameter(name="x", low=0, high=1)], [Objective(name="y")], ledger=sqlite_url,
                      planner=SobolPlanner()) as study:
        ended, reads = asyncio.run(scenario(study))
    assert (ended, reads) == ("cancelled", 1)  # not ("running", hundreds): it kept polling
