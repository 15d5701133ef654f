"""``executor: ray`` in a lab config, and what a user without Ray is told
(no Ray is started here: it is hidden, as if not installed)."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from conftest import quadratic_config

from selflab.controller.cli import main
from selflab.controller.config import ConfigError, check_config
from selflab.controller.fleet import check_campaign
from selflab.instruments.ray_task import RAY_INSTALL, resource_capacity


def faults(cfg: dict[str, Any]) -> list[str]:
    found = check_config(cfg)
    return [f"{f.loc}: {f.message}" for f in found.faults]


def carburizing(**instrument: Any) -> dict[str, Any]:
    from selflab.simulators.carburizing import CARBURIZING_LIMITS

    return {
        "name": "furnace", "ledger": "sqlite:///unused.sqlite",
        "parameters": [{"name": n, "type": "float", "low": lo, "high": hi} for n, (lo, hi) in CARBURIZING_LIMITS.items()],
        "objectives": [{"name": "cycle_time", "direction": "minimize"}],
        "instruments": [{"name": "furnace", "driver": "carburizing", **instrument}],
        "stop": {"max_experiments": 4},
    }


@pytest.mark.parametrize(
    ("instrument", "message"),
    [
        ({"num_cpus": 2}, "num_cpus reserves Ray resources: set executor: ray, or remove num_cpus"),
        ({"num_cpus": 2, "num_gpus": 1}, "num_cpus and num_gpus reserve Ray resources"),
        ({"executor": "ray", "remote": True}, "either on its own host (remote: true) or as Ray tasks (executor: ray), not both"),
        ({"executor": "ray", "num_cpus": 0}, "num_cpus: must be > 0"),
        ({"executor": "dask"}, "executor: must be"),
    ],
)
def test_ray_fields_are_checked(instrument: dict[str, Any], message: str) -> None:
    cfg = quadratic_config()
    cfg["instruments"][0].update(instrument)
    (line,) = faults(cfg)
    assert line.startswith("instruments[0]") and message in line, line


def test_ray_fields_are_accepted_with_executor_ray() -> None:
    found = check_config(carburizing(executor="ray", num_cpus=2, num_gpus=0.5))
    assert not found.faults and found.config is not None
    inst = found.config.instruments[0]
    assert (inst.executor, inst.num_cpus, inst.num_gpus) == ("ray", 2.0, 0.5)
    assert check_config(carburizing()).config.instruments[0].executor == "local"  # type: ignore[union-attr]


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import ray`` fails, as where it is not installed."""
    monkeypatch.setitem(sys.modules, "ray", None)


@pytest.mark.usefixtures("no_ray")
def test_without_ray_a_config_fault_names_the_install_command() -> None:
    with pytest.raises(ConfigError) as caught:
        check_campaign(carburizing(executor="ray", capacity=2))
    (fault,) = caught.value.faults
    assert fault.loc == "instruments[0].executor" and RAY_INSTALL in fault.message
    config, stations, _ = check_campaign(carburizing())  # a local instrument never needs Ray
    assert stations[0].capacity == 1


@pytest.mark.usefixtures("no_ray")
def test_without_ray_bench_says_how_to_install_it_and_process_workers_need_none(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["bench", "--problem", "branin", "--planner", "random", "--budget", "2", "--seeds", "1"]
    assert main([*base, "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--executor ray: Ray is not installed" in err and RAY_INSTALL in err
    assert main(base) == 0


def test_capacity_is_what_the_resources_hold() -> None:
    assert resource_capacity({"CPU": 8.0}, 1, 0) == 8
    assert resource_capacity({"CPU": 8.0}, 3, 0) == 2
    assert resource_capacity({"CPU": 8.0, "GPU": 1.0}, 1, 0.5) == 2
    assert resource_capacity({"CPU": 8.0}, 1, 1) == 0  # no GPU: never fits
    assert resource_capacity({"CPU": 0.3}, 0.1, 0) == 3  # (fractions, within rounding)
