"""Experiment state as a projection of events; replay is deterministic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selflab.controller.ledger import Event, Ledger, NewEvent
from selflab.controller.projection import CampaignState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ev(i: int, kind: str, eid: int | None = None, instrument: str | None = None, **payload: Any) -> Event:
    return Event(id=i, campaign="c", kind=kind, experiment_id=eid, instrument=instrument,
                 at=T0 + timedelta(minutes=i), recorded_at=T0, payload=payload)


def test_lifecycle_and_counts() -> None:
    events = [
        ev(1, "campaign_started", config={"name": "c"}, version="0", seed=0, clock="simulated"),
        ev(2, "proposed", 1, params={"x": 1.0}, fidelity=1.0),
        ev(3, "dispatched", 1, "a", cost=2.0),
        ev(4, "proposed", 2, params={"x": 2.0}),
        ev(5, "dispatched", 2, "a", cost=2.0),
        ev(6, "completed", 1, "a", outcomes={"y": 3.0}),
        ev(7, "failed", 2, "a", error_kind="timeout", message="no answer"),
        ev(8, "proposed", 3, params={"x": 9.0}),
        ev(9, "abandoned", 3, reason="out_of_limits", message="x=9 is above the limit 5"),
    ]
    state = CampaignState.replay("c", events)
    assert state.counts() == {"proposed": 0, "dispatched": 0, "completed": 1, "failed": 1, "abandoned": 1, "stale": 0}
    assert state.cost_spent == 4.0
    assert state.experiments[1].outcomes == {"y": 3.0}
    assert state.experiments[1].started_at == T0 + timedelta(minutes=3)
    assert state.experiments[1].finished_at == T0 + timedelta(minutes=6)
    assert state.experiments[2].error == "timeout: no answer"
    assert state.experiments[3].error.startswith("out_of_limits: x=9")
    assert state.instruments["a"].completed == 1 and state.instruments["a"].failed == 1
    assert state.instruments["a"].in_flight == 0
    assert state.clock == "simulated" and state.next_experiment_id == 4
    assert state.best("y", "maximize") is state.experiments[1]


def test_first_terminal_event_wins_and_the_rest_are_anomalies() -> None:
    events = [
        ev(1, "proposed", 1, params={"x": 1.0}),
        ev(2, "dispatched", 1, "a"),
        ev(3, "completed", 1, "a", outcomes={"y": 1.0}),
        ev(4, "completed", 1, "a", outcomes={"y": 5.0}),
        ev(5, "dispatched", 1, "a"),
        ev(6, "completed", 7, "a", outcomes={"y": 1.0}),
        ev(7, "proposed", 1, params={"x": 2.0}),
    ]
    state = CampaignState.replay("c", events)
    assert state.experiments[1].outcomes == {"y": 1.0}
    assert state.counts()["completed"] == 1
    assert len(state.anomalies) == 4
    assert "already completed" in state.anomalies[0]
    assert "unknown experiment 7" in state.anomalies[2]


def test_best_respects_direction_and_fidelity_and_updates_incrementally() -> None:
    state = CampaignState("c")
    n = 0
    for eid, (y, fid) in enumerate([(1.0, 1.0), (5.0, 0.5), (3.0, 1.0)], start=1):
        for kind, payload in (("proposed", {"params": {"x": eid}, "fidelity": fid}), ("dispatched", {}), ("completed", {"outcomes": {"y": y}})):
            n += 1
            state.apply(ev(n, kind, eid, "a", **payload))
            if eid == 1 and kind == "completed":
                assert state.best("y", "maximize").experiment_id == 1  # type: ignore[union-attr]
    assert state.best("y", "maximize").experiment_id == 2  # type: ignore[union-attr]
    assert state.best("y", "maximize", target_fidelity=1.0).experiment_id == 3  # type: ignore[union-attr]
    assert state.best("y", "minimize").experiment_id == 1  # type: ignore[union-attr]
    assert state.best("missing", "minimize") is None


_kind = st.sampled_from(["proposed", "dispatched", "completed", "failed", "abandoned", "stale"])


@st.composite
def event_streams(draw: st.DrawFn) -> list[NewEvent]:
    """Arbitrary (also illegal) event sequences over a few experiments."""
    out = [NewEvent(campaign="c", kind="campaign_started", payload={"config": {}, "version": "0", "seed": 0, "clock": "wall"})]
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(_kind)
        eid = draw(st.integers(1, 6))
        inst = draw(st.sampled_from(["a", "b"]))
        payload: dict[str, Any] = {
            "proposed": {"params": {"x": draw(st.floats(-10, 10))}, "fidelity": draw(st.sampled_from([0.5, 1.0]))},
            "dispatched": {"cost": draw(st.floats(0, 5))},
            "completed": {"outcomes": {"y": draw(st.floats(-5, 5))}},
            "failed": {"error_kind": "timeout", "message": "m"},
            "abandoned": {"reason": draw(st.sampled_from(["interrupted", "not_dispatched"]))},
            "stale": {"requeue": draw(st.booleans())},
        }[kind]
        out.append(NewEvent(campaign="c", kind=kind, experiment_id=eid, instrument=inst, payload=payload))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=event_streams())
def test_property_replaying_a_ledger_twice_gives_the_same_projection(tmp_path_factory: pytest.TempPathFactory, stream: list[NewEvent]) -> None:
    path: Path = tmp_path_factory.mktemp("replay") / "l.sqlite"
    ledger = Ledger(f"sqlite:///{path}")
    written = ledger.append(stream)
    incremental = CampaignState("c")
    for event in written:
        incremental.apply(event)
    first = CampaignState.replay("c", ledger.events("c"))
    second = CampaignState.replay("c", ledger.events("c"))
    ledger.close()
    assert first == second
    assert first == incremental
    assert first.counts() == second.counts()
    assert sum(first.counts().values()) == len(first.experiments)
    for name, view in first.instruments.items():
        assert view.in_flight == sum(1 for e in first.experiments.values() if e.status == "dispatched" and e.instrument == name)
    for status in ("proposed", "dispatched", "completed", "failed", "abandoned", "stale"):  # the status index agrees with a scan
        assert first.with_status(status) == sorted((e for e in first.experiments.values() if e.status == status), key=lambda e: e.experiment_id)
    assert sorted(first.completions) == sorted(e.experiment_id for e in first.experiments.values() if e.status == "completed")
    assert [e.experiment_id for e in first.avoided()] == [e.experiment_id for e in sorted(
        (e for e in first.experiments.values() if e.status == "failed"), key=lambda e: e.finished_position)]


def test_pareto_front_and_constrained_best() -> None:
    from selflab.planners.space import Objective, OutcomeConstraint

    rows = [(1, 1.0, 5.0, 0.9), (2, 2.0, 4.0, 0.9), (3, 1.5, 3.0, 0.9), (4, 3.0, 1.0, 0.1), (5, 0.5, 0.5, 0.9)]
    events, n = [], 0
    for eid, a, b, purity in rows:
        for kind, payload in (("proposed", {"params": {"x": eid}}), ("dispatched", {}), ("completed", {"outcomes": {"a": a, "b": b, "purity": purity}})):
            n += 1
            events.append(ev(n, kind, eid, "i", **payload))
    state = CampaignState.replay("c", events)
    objectives = [Objective(name="a"), Objective(name="b")]
    assert [e.experiment_id for e in state.pareto(objectives)] == [1, 2, 4]
    purity = [OutcomeConstraint.model_validate("purity >= 0.5")]
    assert [e.experiment_id for e in state.pareto(objectives, purity)] == [1, 2]
    assert [e.experiment_id for e in state.pareto([Objective(name="a", direction="minimize"), Objective(name="b")])] == [1, 5]
    assert state.best("a", "maximize").experiment_id == 4  # type: ignore[union-attr]
    twin = CampaignState.replay("c", events + [ev(n + 1, "proposed", 6, "i", params={"x": 6}), ev(n + 2, "dispatched", 6, "i"),
                                               ev(n + 3, "completed", 6, "i", outcomes={"a": 2.0, "b": 4.0, "purity": 0.9})])
    assert [e.experiment_id for e in twin.pareto(objectives)] == [1, 2, 4, 6], "an equal result stays on the front beside its twin"
    assert state.best("a", "maximize", constraints=purity).experiment_id == 2  # type: ignore[union-attr]
