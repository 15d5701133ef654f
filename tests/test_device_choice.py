"""device: auto by measurement, the CPU fallback on GPU out-of-memory, and device parity (issue 21).

The rule is pure (CUDA availability is an argument). The GPU branch and its
fallback run here on the CPU: the policy's GPU device is injected as ``cpu``
and a ``torch.OutOfMemoryError`` is raised from the fit or the acquisition
(a fault no CPU can provoke). Parity runs the campaign ``benchmarks/gpu.py``
runs, CPU against CPU here, and CPU against CUDA where there is one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from selflab.planners.bo import BOPlanner
from selflab.planners.device_choice import (
    CROSSOVER,
    DevicePolicy,
    choose_device,
    crossover_for,
    crossover_from_results,
    measured_crossover,
)
from selflab.planners.device_parity import compare, hartmann6_campaign
from selflab.planners.encoding import Encoding
from selflab.planners.mf import MFPlanner
from selflab.planners.protocol import FidelityOption, Observation, PlanContext, Proposal
from selflab.planners.registry import make_planner
from selflab.planners.space import FloatParameter, Objective, SearchSpace
from selflab.planners.surrogate import SurrogateFitter, TrainingData

XZ = SearchSpace(parameters=[FloatParameter(name="x", low=0.0, high=1.0), FloatParameter(name="z", low=0.0, high=1.0)])
Y = [Objective(name="y", direction="minimize")]
QUICK = {"num_restarts": 2, "raw_samples": 64}


def observations(n: int) -> list[Observation]:
    U = torch.quasirandom.SobolEngine(2, scramble=True, seed=3).draw(n, dtype=torch.float64).tolist()
    return [Observation(params={"x": x, "z": z}, outcomes={"y": (x - 0.3) ** 2 + (z - 0.6) ** 2 + 0.1 * math.sin(9 * x)}) for x, z in U]


def gpu_on_cpu(crossover: dict[int, int | None]) -> DevicePolicy:
    """A policy whose GPU branch runs on the CPU: what ``auto`` does on a CUDA host, testable here."""
    return DevicePolicy("auto", crossover, cuda_available=True, cuda="cpu")


# --------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("asked", "n", "cuda", "device", "reason"),
    [
        ("cpu", 50_000, True, "cpu", "asked for cpu"),
        ("cuda", 3, True, "cuda", "asked for cuda"),
        ("auto", 50_000, False, "cpu", "auto: no CUDA device"),
        ("auto", 1999, True, "cpu", "auto: n=1999 below the CUDA crossover 2000 (d=6)"),
        ("auto", 2000, True, "cuda", "auto: n=2000 at or above the CUDA crossover 2000 (d=6)"),
    ],
)
def test_the_rule_uses_cuda_only_when_there_is_one_and_the_problem_reaches_the_crossover(
    asked: Any, n: int, cuda: bool, device: str, reason: str
) -> None:
    choice = choose_device(asked, n, 6, cuda_available=cuda, crossover={6: 2000, 20: 500})
    assert (choice.device.type, choice.reason, choice.accelerated) == (device, reason, device == "cuda")


def test_the_crossover_comes_from_the_nearest_measured_dimension_and_none_means_never() -> None:
    table = {6: 2000, 20: 500}
    assert [crossover_for(d, table) for d in (1, 6, 12, 13, 20, 60)] == [2000, 2000, 2000, 500, 500, 500]
    assert choose_device("auto", 900, 19, cuda_available=True, crossover=table).device.type == "cuda"
    never = choose_device("auto", 10**6, 6, cuda_available=True, crossover={6: None})
    assert never.device.type == "cpu" and "never" in never.reason
    # (until benchmarks/gpu.py has run on a GPU host: the anchors' figure, thousands of points)
    assert CROSSOVER == {6: 2000, 20: 2000}


def test_cuda_without_a_gpu_is_a_clear_error_and_the_option_is_checked() -> None:
    with pytest.raises(ValueError, match="device: 'cuda' was asked for but torch sees no CUDA device"):
        choose_device("cuda", 10, 6, cuda_available=False)
    with pytest.raises(ValueError, match="device: 'cuda'"):
        DevicePolicy("cuda", cuda_available=False)
    planner = make_planner("bo", {"device_crossover": {"6": 800, "20": None}})
    assert isinstance(planner, BOPlanner) and planner.devices.crossover == {6: 800, 20: None}
    with pytest.raises(ValueError, match="device_crossover"):
        make_planner("bo", {"device_crossover": {6: -1}})
    mf = MFPlanner(device_crossover={7: 100})
    assert mf.devices.crossover == mf._bo.devices.crossover == {7: 100}  # (its single-fidelity planner shares it)


def test_the_measured_crossover_is_where_cuda_wins_from_there_on() -> None:
    rows = [(100, 0.2, 0.9), (500, 0.8, 1.0), (1000, 2.5, 1.1), (2000, 9.0, None), (4000, 60.0, 2.0)]
    assert measured_crossover(rows) == 1000
    assert measured_crossover([*rows, (8000, 100.0, 120.0)]) is None  # (slower at the largest n: never)
    assert measured_crossover([(100, None, 0.1)]) is None


def test_the_table_is_read_from_a_gpu_benchmark_result(tmp_path: Path) -> None:
    good, empty = tmp_path / "gpu.json", tmp_path / "cpu.json"
    good.write_text(json.dumps({"device_crossover": {"6": 2000, "20": None}}))
    empty.write_text(json.dumps({"cells": []}))
    assert crossover_from_results(good) == {6: 2000, 20: None}
    with pytest.raises(ValueError, match="no device_crossover"):
        crossover_from_results(empty)


# --------------------------------------------------------------------------- per proposal, and the fallback


def test_each_proposal_chooses_its_device_by_its_own_size() -> None:
    planner = BOPlanner(**QUICK)
    planner.devices = gpu_on_cpu({2: 9})
    seen = observations(10)
    first = planner.propose(XZ, Y, seen[:8], [], 1, context=PlanContext(step=8))[0].reason
    later = planner.propose(XZ, Y, seen, [], 1, context=PlanContext(step=10))[0].reason
    assert first["device_reason"] == "auto: n=8 below the CUDA crossover 9 (d=2)"
    assert later["device_reason"] == "auto: n=10 at or above the CUDA crossover 9 (d=2)"
    initial = planner.propose(XZ, Y, seen[:2], [], 1, context=PlanContext(step=2))[0].reason
    assert initial["strategy"] == "sobol_init" and initial["device"] == "cpu" and "no model" in initial["device_reason"]


def test_reasons_here_say_why_the_cpu() -> None:
    reason = BOPlanner(**QUICK).propose(XZ, Y, observations(8), [], 1, context=PlanContext(step=8))[0].reason
    expected = "auto: no CUDA device" if not torch.cuda.is_available() else "auto: n=8 below the CUDA crossover 2000 (d=2)"
    assert (reason["device"], reason["device_reason"]) == ("cpu", expected)


@pytest.mark.parametrize("where", ["fit", "acquisition"])
def test_gpu_out_of_memory_makes_the_proposal_on_the_cpu_and_loses_nothing(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = observations(10)
    reference = BOPlanner(device="cpu", **QUICK).propose(XZ, Y, seen[:8], [], 2, context=PlanContext(step=8))
    planner = BOPlanner(**QUICK)
    planner.devices = gpu_on_cpu({2: 0})
    calls: list[str] = []
    target = planner._fitter if where == "fit" else planner
    name = "fit" if where == "fit" else "_bo"
    real = getattr(target, name)

    def first_call_out_of_memory(*args: Any, **kwargs: Any) -> Any:
        calls.append(str(args[0].device if where == "fit" else args[0].encoding.device))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, first_call_out_of_memory)
    batch: list[Proposal] = planner.propose(XZ, Y, seen[:8], [], 2, context=PlanContext(step=8))
    assert len(batch) == 2 and len(calls) == 2
    for got, want in zip(batch, reference):
        assert got.reason["strategy"] == "bo" and got.reason["device"] == "cpu"
        assert got.reason["device_reason"] == "cuda out of memory at n=8, q=2; fell back to cpu"
        assert all(abs(float(got.params[k]) - float(want.params[k])) <= 1e-9 for k in ("x", "z"))  # type: ignore[arg-type]
    assert planner.devices.out_of_memory == [(8, 2)]
    # (remembered: a larger proposal goes straight to the CPU, a smaller batch tries the GPU again)
    again = planner.propose(XZ, Y, seen, [], 2, context=PlanContext(step=10))
    assert len(calls) == 3 and again[0].reason["device_reason"] == "auto: cuda ran out of memory at n=8, q=2 earlier; cpu"
    assert planner.devices.choose(10, 2, 1).accelerated


def test_the_fitter_lets_out_of_memory_through_to_the_planner(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*args: Any, **kwargs: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr("selflab.planners.surrogate.fit_gpytorch_mll", out_of_memory)
    encoding = Encoding(XZ)
    data = TrainingData.from_observations(encoding, ["y"], observations(8))
    with pytest.raises(torch.OutOfMemoryError):  # (not retried as a numerical failure, not a SurrogateError)
        SurrogateFitter().fit(encoding, ["y"], data)


def test_mf_reasons_carry_the_device_and_fall_back_too(monkeypatch: pytest.MonkeyPatch) -> None:
    levels = (FidelityOption(fidelity=0.5, cost=0.1), FidelityOption(fidelity=1.0, cost=1.0))
    seen = [o.model_copy(update={"fidelity": 0.5 if i % 2 else 1.0}) for i, o in enumerate(observations(9))]
    planner = MFPlanner(num_restarts=2, raw_samples=32, candidate_set_size=64, num_fantasies=4)
    planner.devices = gpu_on_cpu({3: 0})
    real, calls = planner._fitter.fit, []

    def first_call_out_of_memory(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(planner._fitter, "fit", first_call_out_of_memory)
    reason = planner.propose(XZ, Y, seen, [], 1, context=PlanContext(step=9, fidelities=levels))[0].reason
    assert reason["strategy"] == "mf" and reason["device"] == "cpu"
    assert reason["device_reason"] == "cuda out of memory at n=9, q=1; fell back to cpu"


# --------------------------------------------------------------------------- parity


def test_parity_the_same_campaign_twice_on_the_cpu_agrees() -> None:
    a = hartmann6_campaign("cpu", start=20, proposals=2, options=QUICK)
    b = hartmann6_campaign("cpu", start=20, proposals=2, options=QUICK)
    result = compare(a, b, ("cpu", "cpu"))
    assert result.within and result.max_abs_diff <= 1e-6 and len(result.per_proposal) == 2
    assert all(0.0 <= x <= 1.0 for row in a for x in row) and len(a[0]) == 6
    moved = [[row[0] + 2e-6, *row[1:]] for row in b]
    assert not compare(a, moved, ("cpu", "cpu")).within  # (and a difference above 1e-6 is seen)
    assert not compare(a, b[:1], ("cpu", "cpu")).within


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_parity_cpu_against_cuda() -> None:
    result = compare(hartmann6_campaign("cpu", options=QUICK), hartmann6_campaign("cuda", options=QUICK), ("cpu", "cuda"))
    assert result.within, result


def test_fit_surrogate_follows_the_same_rule() -> None:
    """``fit_surrogate(device="auto")`` (the report's and the tests' one-off
    fit) chooses its device by the same crossover rule as the planners; a
    device that is not one of the three is refused."""
    from selflab.planners.surrogate import fit_surrogate

    space = SearchSpace(parameters=[FloatParameter(name="x", low=0, high=1)])
    observations = [Observation(params={"x": x}, outcomes={"y": math.sin(6 * x)}) for x in (0.1, 0.3, 0.5, 0.7, 0.9)]
    surrogate = fit_surrogate(space, [Objective(name="y")], observations, device="auto")
    expected = choose_device("auto", 5, 1, cuda_available=torch.cuda.is_available()).device
    assert surrogate.data.X.device.type == expected.type == "cpu"  # (5 points: far below any crossover)
    with pytest.raises(ValueError, match="device must be auto, cpu or cuda"):
        fit_surrogate(space, [Objective(name="y")], observations, device="tpu")
