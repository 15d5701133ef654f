"""The campaign loop in-process, with real ledgers and plain-class drivers."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from conftest import quadratic_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selflab.controller.campaign import Campaign, CampaignError, StopInfo, check_outcomes
from selflab.controller.config import parse_config
from selflab.controller.ledger import Ledger
from selflab.controller.projection import CampaignState
from selflab.instruments.errors import BadResponse
from selflab.instruments.protocol import limit_violations


def run(cfg: dict[str, Any], url: str, *, resume: bool = False) -> tuple[StopInfo, Campaign, CampaignState]:
    config = parse_config({**cfg, "ledger": url})
    ledger = Ledger(config.ledger_url)
    try:
        campaign = Campaign(config, ledger, resume=resume)
        stop = asyncio.run(campaign.run())
        state = CampaignState.replay(config.name, ledger.events(config.name))
    finally:
        ledger.close()
    return stop, campaign, state


def test_runs_to_max_experiments_and_records_everything(ledger_url: str) -> None:
    stop, campaign, state = run(quadratic_config(), ledger_url)
    assert stop.reason == "max_experiments"
    assert state.counts()["completed"] == 10
    assert state.stopped == ("max_experiments", "10 experiments completed")
    sent = campaign.stations[0].driver.sent
    assert len(sent) == 10
    completed = state.with_status("completed")
    assert sorted(e.params["x"] for e in completed) == sorted(p["x"] for p in sent)
    for exp in completed:
        assert exp.outcomes["y"] == pytest.approx(1 - (exp.params["x"] - 0.3) ** 2 - (exp.params["z"] - 0.6) ** 2)
        assert exp.reason["strategy"] == "random"
        assert exp.instrument == "q1" and exp.cost == 1.0
    assert state.config is not None and state.config["name"] == "quad"
    assert campaign.stations[0].driver.closes == 1


def test_every_slot_is_kept_busy() -> None:
    """Capacity 3 and capacity 2: five experiments run at once on the wall clock."""

    class Probe:
        def __init__(self) -> None:
            self.running = 0
            self.peak = 0

        async def connect(self) -> None: ...
        async def close(self) -> None: ...

        async def run(self, params: dict[str, Any]) -> dict[str, float]:
            self.running += 1
            self.peak = max(self.peak, self.running)
            await asyncio.sleep(0.02)
            self.running -= 1
            return {"y": float(params["x"])}

    import labdrivers

    labdrivers.Probe = Probe  # type: ignore[attr-defined]
    cfg = quadratic_config(
        instruments=[
            {"name": "a", "driver": "labdrivers:Probe", "capacity": 3},
            {"name": "b", "driver": "labdrivers:Probe", "capacity": 2},
        ],
        stop={"max_experiments": 25},
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        stop, campaign, state = run(cfg, f"sqlite:///{tmp}/l.sqlite")
    assert stop.reason == "max_experiments"
    assert [s.driver.peak for s in campaign.stations] == [3, 2]
    assert state.counts()["completed"] == 25


def test_simulated_clock_shows_simulated_time(sqlite_url: str) -> None:
    cfg = quadratic_config(
        instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "options": {"duration_s": 1800}, "capacity": 2}],
        stop={"max_experiments": 20},
    )
    stop, _, state = run(cfg, sqlite_url)
    assert state.clock == "simulated"
    assert state.started_at is not None and state.last_at is not None
    # 20 experiments of 30 min on 2 slots: 10 rounds, 5 simulated hours.
    assert state.last_at - state.started_at == timedelta(hours=5)
    for exp in state.with_status("completed"):
        assert exp.finished_at - exp.started_at == timedelta(minutes=30)  # type: ignore[operator]


def test_results_of_one_simulated_instant_are_all_recorded_before_the_planner_is_asked(sqlite_url: str) -> None:
    """4 slots of equal duration: each round's 4 results are in before the next 4
    proposals, which come from one planner call of 4 with nothing pending."""
    cfg = quadratic_config(
        instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "options": {"duration_s": 600}, "capacity": 4}],
        stop={"max_experiments": 12},
    )
    _, _, state = run(cfg, sqlite_url)
    done = sorted(state.with_status("completed"), key=lambda e: e.experiment_id)
    assert len(done) == 12 and [e.reason["batch_size"] for e in done] == [4] * 12
    rounds = [done[i : i + 4] for i in range(0, 12, 4)]
    for earlier, later in zip(rounds, rounds[1:]):
        assert max(e.finished_at for e in earlier) == min(e.started_at for e in later)  # type: ignore[type-var]
        assert max(e.proposed_at for e in later) >= max(e.finished_at for e in earlier)  # type: ignore[type-var]
    # staggered durations: an experiment that finishes alone still frees its slot at once
    cfg["instruments"][0]["options"] = {"duration_s": 600}
    cfg["instruments"].append({"name": "q2", "driver": "labdrivers:Quadratic", "options": {"duration_s": 900}})
    cfg["name"] = "quad-staggered"
    _, _, staggered = run(cfg, sqlite_url)
    assert staggered.counts()["completed"] == 12
    assert any(e.reason["batch_size"] == 1 for e in staggered.with_status("completed"))


def test_max_time_on_the_simulated_clock(sqlite_url: str) -> None:
    cfg = quadratic_config(
        instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "options": {"duration_s": 1800}}],
        stop={"max_time": "3h"},
    )
    stop, _, state = run(cfg, sqlite_url)
    assert stop.reason == "max_time"
    assert state.counts()["completed"] == 6


def test_max_cost_counts_each_instruments_cost(sqlite_url: str) -> None:
    cfg = quadratic_config(
        instruments=[
            {"name": "cheap", "driver": "labdrivers:Quadratic", "cost": 1},
            {"name": "dear", "driver": "labdrivers:Quadratic", "cost": 4},
        ],
        stop={"max_cost": 20},
    )
    stop, _, state = run(cfg, sqlite_url)
    assert stop.reason == "max_cost"
    assert state.cost_spent <= 20
    assert state.cost_spent > 20 - 4  # nothing left that the cheapest could not use
    by = Counter(e.instrument for e in state.with_status("completed"))
    assert by["cheap"] >= 1 and by["dear"] >= 1


def test_target_stops_the_campaign(sqlite_url: str) -> None:
    cfg = quadratic_config(stop={"max_experiments": 500, "target": {"value": 0.9}})
    stop, _, state = run(cfg, sqlite_url)
    assert stop.reason == "target"
    best = state.best("y", "maximize")
    assert best is not None and best.outcomes["y"] >= 0.9
    assert state.counts()["completed"] < 500


def test_failures_are_recorded_with_their_kind_and_budget_is_met(sqlite_url: str) -> None:
    cfg = quadratic_config(
        instruments=[{"name": "q1", "driver": "labdrivers:Quadratic",
                      "options": {"fail_every": 4, "nan_every": 5, "garbage_every": 7}}],
        stop={"max_experiments": 20},
    )
    stop, _, state = run(cfg, sqlite_url)
    assert stop.reason == "max_experiments"
    assert state.counts()["completed"] == 20
    failed = state.with_status("failed")
    kinds = Counter(e.error.split(":")[0] for e in failed)
    assert kinds["bad_response"] == len(failed) >= 6
    assert any("not finite" in e.error for e in failed)
    assert any("not a number" in e.error for e in failed)
    assert any("garbled" in e.error for e in failed)
    assert all(e.outcomes == {} for e in failed)


def test_timeout_fails_the_experiment_and_stops_the_instrument(sqlite_url: str) -> None:
    cfg = quadratic_config(
        instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "options": {"hang_every": 3}, "timeout": 0.2}],
        stop={"max_experiments": 4},
    )
    stop, campaign, state = run(cfg, sqlite_url)
    assert stop.reason == "max_experiments"
    failed = state.with_status("failed")
    assert len(failed) == 1 and failed[0].error.startswith("timeout:")
    assert campaign.stations[0].driver.stops == 1


def test_instrument_goes_offline_and_the_campaign_goes_on(sqlite_url: str) -> None:
    cfg = quadratic_config(
        instruments=[
            {"name": "broken", "driver": "labdrivers:Crashing", "max_consecutive_failures": 3},
            {"name": "good", "driver": "labdrivers:Quadratic"},
        ],
        stop={"max_experiments": 12},
    )
    stop, _, state = run(cfg, sqlite_url)
    assert stop.reason == "max_experiments"
    assert state.instruments["broken"].offline_reason is not None
    assert "ZeroDivisionError" in state.instruments["broken"].offline_reason
    assert state.instruments["broken"].failed == 3
    assert state.instruments["good"].completed == 12


def test_no_instrument_left_stops_with_a_reason(sqlite_url: str) -> None:
    cfg = quadratic_config(
        instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "options": {"fail_connect": True}}],
    )
    stop, _, state = run(cfg, sqlite_url)
    assert stop.reason == "no_instruments"
    assert "connect failed" in (state.instruments["q1"].offline_reason or "")
    assert state.counts()["proposed"] == 0 and not state.experiments


def test_a_second_run_without_resume_is_refused(sqlite_url: str) -> None:
    run(quadratic_config(), sqlite_url)
    with pytest.raises(CampaignError, match="--resume"):
        run(quadratic_config(), sqlite_url)


def test_resume_with_a_changed_space_is_refused(sqlite_url: str) -> None:
    run(quadratic_config(), sqlite_url)
    cfg = quadratic_config(stop={"max_experiments": 20})
    cfg["parameters"][0]["high"] = 2
    with pytest.raises(CampaignError, match="parameters"):
        run(cfg, sqlite_url, resume=True)


def test_resume_after_a_crash_marks_in_flight_stale_and_finishes_the_budget(sqlite_url: str) -> None:
    """Simulate a crash by writing a ledger that stops mid-flight."""
    stop, _, _ = run(quadratic_config(stop={"max_experiments": 5}), sqlite_url)
    ledger = Ledger(sqlite_url)
    from selflab.controller.ledger import NewEvent

    ledger.append([
        NewEvent(campaign="quad", kind="campaign_started", payload={
            "config": parse_config(quadratic_config()).model_dump(mode="json"), "version": "x", "seed": 0, "clock": "wall", "resumed": True}),
        NewEvent(campaign="quad", kind="proposed", experiment_id=6, payload={"params": {"x": 0.1, "z": 0.2}}),
        NewEvent(campaign="quad", kind="dispatched", experiment_id=6, instrument="q1", payload={"cost": 1.0}),
        NewEvent(campaign="quad", kind="proposed", experiment_id=7, payload={"params": {"x": 0.3, "z": 0.4}}),
    ])
    ledger.close()
    stop, campaign, state = run(quadratic_config(stop={"max_experiments": 10}), sqlite_url, resume=True)
    assert stop.reason == "max_experiments"
    assert state.experiments[6].status == "stale"
    assert state.experiments[7].status == "abandoned"
    assert state.counts()["completed"] == 10
    sent = campaign.stations[0].driver.sent
    assert len(sent) == 5  # only the new five ran in this process
    assert sent[0] == {"x": 0.1, "z": 0.2}  # the stale experiment's params, requeued first
    assert state.experiments[8].reason["strategy"] == "requeue" and state.experiments[8].reason["requeue_of"] == 6
    assert state.anomalies == []


def test_an_instrument_that_remembers_its_outcome_is_reconciled_not_stale(sqlite_url: str, tmp_path: Any) -> None:
    memory = str(tmp_path / "device-log.json")
    cfg = quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Remembering", "options": {"memory": memory}}],
                           stop={"max_experiments": 3}, stale_policy="drop")
    run(cfg, sqlite_url)
    # The device ran {x: .5, z: .5} while the controller was down after dispatching it.
    import json

    with open(memory) as handle:
        log_entries = json.load(handle)
    log_entries.append({"params": {"x": 0.5, "z": 0.5}, "result": {"y": 0.95, "aux": 1.0}})
    with open(memory, "w") as handle:
        json.dump(log_entries, handle)
    ledger = Ledger(sqlite_url)
    from selflab.controller.ledger import NewEvent

    ledger.append([
        NewEvent(campaign="quad", kind="proposed", experiment_id=4, payload={"params": {"x": 0.5, "z": 0.5}}),
        NewEvent(campaign="quad", kind="dispatched", experiment_id=4, instrument="q1", payload={"cost": 1.0}),
        NewEvent(campaign="quad", kind="proposed", experiment_id=5, payload={"params": {"x": 0.9, "z": 0.9}}),
        NewEvent(campaign="quad", kind="dispatched", experiment_id=5, instrument="q1", payload={"cost": 1.0}),
    ])
    ledger.close()
    stop, campaign, state = run({**cfg, "stop": {"max_experiments": 6}}, sqlite_url, resume=True)
    assert state.experiments[4].status == "completed" and state.experiments[4].outcomes == {"y": 0.95, "aux": 1.0}
    assert state.experiments[5].status == "stale"  # the device never ran it
    assert state.counts()["completed"] == 6
    assert {"x": 0.9, "z": 0.9} not in campaign.stations[0].driver.sent  # stale_policy: drop


def test_out_of_limit_proposals_are_refused_and_never_sent(sqlite_url: str) -> None:
    """Two instruments cover the space between them, with a gap: proposals in
    the gap are refused and recorded, and reach neither instrument."""
    cfg = quadratic_config(
        instruments=[
            {"name": "q1", "driver": "labdrivers:Quadratic", "options": {"limits": {"x": [0, 0.5]}}, "limits": {"z": [0.2, 1.0]}},
            {"name": "q2", "driver": "labdrivers:Quadratic", "limits": {"x": [0.7, 1.0]}},
        ],
        stop={"max_experiments": 15},
    )
    stop, campaign, state = run(cfg, sqlite_url)
    assert stop.reason == "max_experiments"
    q1, q2 = (s.driver.sent for s in campaign.stations)
    assert q1 and q2
    assert all(0 <= p["x"] <= 0.5 and 0.2 <= p["z"] <= 1.0 for p in q1)
    assert all(0.7 <= p["x"] <= 1.0 for p in q2)
    refused = [e for e in state.with_status("abandoned") if e.error.startswith("out_of_limits")]
    assert refused, "random proposals over [0,1]^2 must hit the gap sometimes"
    assert all(e.started_at is None and e.instrument is None for e in refused)
    assert "q1: " in refused[0].error and "q2: " in refused[0].error


def test_planner_that_always_misses_the_limits_gives_up(sqlite_url: str) -> None:
    cfg = quadratic_config(
        instruments=[{"name": "lo", "driver": "labdrivers:Quadratic", "limits": {"x": [0.0, 1e-9]}},
                     {"name": "hi", "driver": "labdrivers:Quadratic", "limits": {"x": [1 - 1e-9, 1.0]}}],
    )
    stop, campaign, state = run(cfg, sqlite_url)
    assert stop.reason == "refusals"
    assert all(s.driver.sent == [] for s in campaign.stations)
    assert state.counts()["abandoned"] >= 100


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lows=st.tuples(st.floats(0, 0.6), st.floats(0, 0.6)),
    widths=st.tuples(st.floats(0.2, 0.4), st.floats(0.2, 0.4)),
    seed=st.integers(0, 10_000),
    planner=st.sampled_from(["random", "sobol"]),
)
def test_property_no_proposal_is_ever_dispatched_outside_the_limits(
    tmp_path_factory: pytest.TempPathFactory, lows: tuple[float, float], widths: tuple[float, float], seed: int, planner: str
) -> None:
    limits = {"x": [lows[0], lows[0] + widths[0]], "z": [lows[1], lows[1] + widths[1]]}
    cfg = quadratic_config(
        seed=seed,
        planner={"kind": planner},
        instruments=[
            {"name": "q1", "driver": "labdrivers:Quadratic", "limits": limits, "capacity": 2},
            {"name": "q2", "driver": "labdrivers:Quadratic", "options": {"limits": {"x": [0.5, 1.0]}}},
            {"name": "q3", "driver": "labdrivers:Quadratic", "limits": {"x": [0.0, 0.25]}},
        ],
        stop={"max_experiments": 6},
    )
    url = f"sqlite:///{tmp_path_factory.mktemp('prop')}/l.sqlite"
    stop, campaign, state = run(cfg, url)
    declared = {"q1": {k: tuple(v) for k, v in limits.items()}, "q2": {"x": (0.5, 1.0)}, "q3": {"x": (0.0, 0.25)}}
    for station in campaign.stations:
        for params in station.driver.sent:
            assert limit_violations(params, declared[station.name]) == []
    for exp in state.experiments.values():
        if exp.instrument is not None:
            assert limit_violations(exp.params, declared[exp.instrument]) == []


def test_check_outcomes_rejects_bad_readings() -> None:
    assert check_outcomes({"y": 1, "z": 2.5}, ["y"], "i") == {"y": 1.0, "z": 2.5}
    for bad, match in [
        ([1.0], "not a mapping"),
        ({"y": True}, "not a number"),
        ({"y": "1"}, "not a number"),
        ({"y": float("inf")}, "not finite"),
        ({"z": 1.0}, "did not report y"),
    ]:
        with pytest.raises(BadResponse, match=match):
            check_outcomes(bad, ["y"], "i")


def test_a_planner_with_nothing_left_ends_the_campaign(sqlite_url: str) -> None:
    class TwoPoints:
        blocking = False

        def propose(self, space: Any, objectives: Any, observations: Any, pending: Any, n: int, *, context: Any) -> list[Any]:
            from selflab.planners.protocol import Proposal

            left = [{"x": 0.1, "z": 0.1}, {"x": 0.2, "z": 0.2}][context.step:]
            return [Proposal(params=p) for p in left[:n]]

    config = parse_config({**quadratic_config(), "ledger": sqlite_url})
    ledger = Ledger(sqlite_url)
    stop = asyncio.run(Campaign(config, ledger, planner=TwoPoints()).run())
    state = CampaignState.replay("quad", ledger.events("quad"))
    ledger.close()
    assert stop.reason == "planner_exhausted"
    assert state.counts()["completed"] == 2


def test_planner_errors_stop_the_campaign_with_the_reason(sqlite_url: str) -> None:
    class Broken:
        def propose(self, *args: Any, **kwargs: Any) -> list[Any]:
            raise RuntimeError("cholesky failed")

    config = parse_config({**quadratic_config(), "ledger": sqlite_url})
    ledger = Ledger(sqlite_url)
    stop = asyncio.run(Campaign(config, ledger, planner=Broken()).run())
    state = CampaignState.replay("quad", ledger.events("quad"))
    ledger.close()
    assert stop.reason == "planner_error" and "cholesky failed" in stop.detail
    assert state.stopped == ("planner_error", stop.detail)


def test_an_offline_instrument_comes_back_on_resume(sqlite_url: str) -> None:
    cfg = quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "options": {"fail_connect": True}}])
    stop, _, state = run(cfg, sqlite_url)
    assert stop.reason == "no_instruments" and state.instruments["q1"].state == "offline"
    stop, _, state = run(quadratic_config(), sqlite_url, resume=True)
    assert stop.reason == "max_experiments"
    assert state.instruments["q1"].state == "idle" and state.instruments["q1"].completed == 10


@pytest.mark.parametrize("planner", ["random", "sobol"])
def test_pool_instruments_are_measured_once_per_row_until_exhausted(sqlite_url: str, planner: str) -> None:
    cfg = quadratic_config(planner={"kind": planner},
                           instruments=[{"name": "pool", "driver": "labdrivers:Pool", "capacity": 3}],
                           stop={"max_experiments": 50})
    stop, campaign, state = run(cfg, sqlite_url)
    sent = campaign.stations[0].driver.sent
    assert stop.reason == "planner_exhausted"
    assert len(sent) == 12 and {(p["x"], p["z"]) for p in sent} == {(r["x"], r["z"]) for r in campaign.stations[0].driver.rows}
    assert state.counts()["completed"] == 12
    assert all(e.reason["proposal_seconds"] >= 0 for e in state.experiments.values())


def test_retries_recover_transient_faults_and_report_attempts(sqlite_url: str) -> None:
    """Every 3rd run is garbled; one retry each recovers them all."""
    cfg = quadratic_config(
        instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "options": {"fail_every": 3},
                      "retries": 1, "retry_backoff": 0.01}],
        stop={"max_experiments": 8},
    )
    stop, campaign, state = run(cfg, sqlite_url)
    assert stop.reason == "max_experiments"
    assert state.counts()["failed"] == 0 and state.counts()["completed"] == 8
    assert len(campaign.stations[0].driver.sent) == 8 + 3  # runs 3, 6 and 9 were garbled and retried

    cfg["instruments"][0]["options"] = {"fail_every": 1}  # always garbled: retries cannot help
    cfg["instruments"][0]["max_consecutive_failures"] = 2
    stop, _, state = run({**cfg, "name": "always"}, sqlite_url)
    assert stop.reason == "no_instruments"
    failed = state.with_status("failed")
    assert len(failed) == 2 and all(e.error.endswith("(after 2 attempts)") for e in failed)


def test_interlock_pauses_dispatch_and_resumes_and_records_both(sqlite_url: str) -> None:
    temperatures = [20, 20, 20, 250, 240, 200, 120, 20]
    cfg = quadratic_config(
        instruments=[{"name": "plate", "driver": "labdrivers:Hotplate",
                      "options": {"delay_s": 0.03, "temperatures": temperatures}}],
        interlocks=[{"pause_when": "plate.temperature > 200", "resume_when": "plate.temperature < 150", "poll": 0.05}],
        stop={"max_experiments": 12},
    )
    stop, campaign, state = run(cfg, sqlite_url)
    assert stop.reason == "max_experiments"
    ledger = Ledger(sqlite_url)
    events = ledger.events("quad")
    ledger.close()
    kinds = [e.kind for e in events]
    assert kinds.count("paused") == 1 and kinds.count("resumed") == 1
    paused_at, resumed_at = kinds.index("paused"), kinds.index("resumed")
    assert events[paused_at].payload == {"rule": "plate.temperature > 200", "reading": "plate.temperature", "value": 250.0}
    assert events[resumed_at].payload["value"] == 120.0
    assert "dispatched" not in kinds[paused_at:resumed_at], "nothing is dispatched while paused"
    assert campaign.stations[0].driver.reads >= 7
    assert state.paused is None


def test_interlock_needs_a_readable_instrument() -> None:
    from selflab.controller.config import ConfigError
    from selflab.controller.fleet import build_fleet

    cfg = quadratic_config(interlocks=[{"pause_when": "q1.temperature >= 90"}])
    with pytest.raises(ConfigError, match=r"interlocks\[0\].pause_when: instrument 'q1' has no read\(\) method"):
        build_fleet(parse_config(cfg))
    with pytest.raises(ConfigError, match=r"interlocks\[0\].pause_when: no instrument named 'oven'"):
        parse_config(quadratic_config(interlocks=[{"pause_when": "oven.temperature > 90"}]))
    with pytest.raises(ConfigError, match=r"cannot read 'oven temperature is high'"):
        parse_config(quadratic_config(interlocks=[{"pause_when": "oven temperature is high"}]))


def test_cost_expressions_charge_each_experiment_by_its_params(sqlite_url: str) -> None:
    cfg = quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "cost": "1 + 4 * x"}],
                           stop={"max_cost": 30})
    stop, campaign, state = run(cfg, sqlite_url)
    assert stop.reason == "max_cost"
    dispatched = [e for e in state.experiments.values() if e.started_at is not None]
    for exp in dispatched:
        assert exp.cost == pytest.approx(1 + 4 * exp.params["x"])
    assert state.cost_spent == pytest.approx(sum(e.cost for e in dispatched)) and state.cost_spent <= 30
    station = campaign.stations[0]
    assert station.min_cost == pytest.approx(1.0) and 2.0 < station.cost < 4.0  # least and mean over the space


def test_cost_expression_faults_name_the_field() -> None:
    from selflab.controller.config import ConfigError

    for cost, message in [
        ("1 + __import__('os').getpid()", "only min, max, abs, exp, log, sqrt may be called"),
        ("2 * temperature", "uses temperature, which is not a numeric parameter"),
        ("x +", "cannot read 'x +'"),
        (-1, "must be >= 0"),
    ]:
        cfg = quadratic_config(instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "cost": cost}])
        with pytest.raises(ConfigError) as info:
            parse_config(cfg)
        (fault,) = info.value.faults
        assert str(fault).startswith("instruments[0].cost: ") and message in str(fault), str(fault)


def test_recommendation_is_recorded_whenever_it_changes(sqlite_url: str) -> None:
    stop, _, state = run(quadratic_config(stop={"max_experiments": 15}), sqlite_url)
    ledger = Ledger(sqlite_url)
    recs = [e.payload for e in ledger.events("quad") if e.kind == "recommended"]
    ledger.close()
    best = state.best("y", "maximize")
    assert best is not None and recs
    assert recs[-1]["params"] == best.params and recs[-1]["experiment_id"] == best.experiment_id
    assert recs[-1]["basis"] == "best_observed" and recs[-1]["observed"]["y"] == best.outcomes["y"]
    values = [r["observed"]["y"] for r in recs]
    assert values == sorted(values) and len(set(values)) == len(values)  # only improvements are recorded
    assert state.recommendation == recs[-1]
