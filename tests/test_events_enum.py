"""One enum of event kinds, one of experiment states, one payload model per
kind; one seed mix; one failure classification."""

from __future__ import annotations

import ast
import asyncio
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, quadratic_config

from selflab.controller.campaign import Campaign
from selflab.controller.config import parse_config
from selflab.controller.events import (
    PAYLOADS,
    TERMINAL_KINDS,
    Completed,
    Event,
    EventKind,
    ExperimentState,
    Failed,
    NewEvent,
    payload_model,
)
from selflab.controller.failures import failed_payload
from selflab.controller.ledger import Ledger
from selflab.controller.projection import STATES, CampaignState
from selflab.controller.study import Study
from selflab.instruments.errors import BadResponse, InstrumentTimeout
from selflab.planners.seeding import mix_seed, seeded_rng

STORED = {
    "proposed", "dispatched", "completed", "failed", "abandoned", "stale", "attached", "campaign_started",
    "campaign_stopped", "instrument_offline", "instrument_online", "paused", "resumed", "recommended", "note",
    "stop_requested",
}
"""The text the ledger stores for each kind of schema 3: never to change (a new kind may join them)."""
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_kinds_store_the_same_text_and_each_has_a_payload_model() -> None:
    assert {k.value for k in EventKind} >= STORED
    assert set(PAYLOADS) == set(EventKind)
    assert all(payload_model(str(k)) is payload_model(k) for k in EventKind)
    assert {s.value for s in ExperimentState} <= STORED and list(STATES) == list(ExperimentState)
    assert {s for s in ExperimentState if s.terminal} == set(TERMINAL_KINDS)
    assert EventKind.COMPLETED == "completed" and "completed" in TERMINAL_KINDS and f"{EventKind.NOTE}" == "note"
    with pytest.raises(ValueError, match="unknown event kind 'exploded'"):
        payload_model("exploded")


def _kinds_written(path: Path) -> set[str]:
    """The ``kind="..."`` of every ``NewEvent(...)`` written in ``path``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        called = node.func if isinstance(node, ast.Call) else None
        if isinstance(called, ast.Name) and called.id == "NewEvent" or isinstance(called, ast.Attribute) and called.attr == "NewEvent":
            assert isinstance(node, ast.Call)
            for keyword in node.keywords:
                if keyword.arg == "kind" and isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, str):
                    found.add(keyword.value.value)
    return found


def test_every_kind_the_code_writes_is_an_enum_member() -> None:
    written = {kind: path.name for path in (REPO / "controller").rglob("*.py") for kind in _kinds_written(path)}
    assert len(written) >= 10, f"the scan found too few NewEvent(kind=...) calls: {written}"
    assert {k: where for k, where in written.items() if k not in set(EventKind)} == {}


def test_a_typed_payload_is_checked_against_its_kind_and_stored_as_a_mapping(sqlite_url: str) -> None:
    typed = NewEvent(campaign="c", kind=EventKind.COMPLETED, experiment_id=1, payload=Completed(outcomes={"y": 1}))
    plain = NewEvent(campaign="c", kind="completed", experiment_id=1, payload={"outcomes": {"y": 1}})
    with pytest.raises(ValueError, match="a failed event takes a Failed payload, not Completed"):
        NewEvent(campaign="c", kind="failed", payload=Completed(outcomes={}))
    ledger = Ledger(sqlite_url)
    try:
        ledger.append([NewEvent(campaign="c", kind="proposed", experiment_id=1, payload={"params": {"x": 1}})])
        [a], [b] = ledger.append([typed]), ledger.append([plain])
    finally:
        ledger.close()
    assert a.payload == b.payload == {"outcomes": {"y": 1.0}, "duration_s": None, "recovered": False}
    assert type(a.kind) is EventKind and a.kind == b.kind == "completed"


def test_every_event_of_a_real_campaign_has_its_kinds_payload(sqlite_url: str) -> None:
    """A campaign that fails, refuses, takes an instrument offline and pauses on
    an interlock, then a Study that notes, attaches, fails and abandons: each
    event read back is of an enum kind, and its stored payload is exactly what
    its kind's model writes."""
    cfg = quadratic_config(
        name="kinds",
        instruments=[
            {"name": "plate", "driver": "labdrivers:Hotplate", "limits": {"x": [0.0, 0.5]},
             "options": {"delay_s": 0.02, "fail_every": 3, "temperatures": [20, 20, 250, 120, 20]}},
            {"name": "broken", "driver": "labdrivers:Crashing", "limits": {"x": [0.7, 1.0]}, "max_consecutive_failures": 1},
        ],
        interlocks=[{"pause_when": "plate.temperature > 200", "resume_when": "plate.temperature < 150", "poll": 0.03}],
        stop={"max_experiments": 6},
        ledger=sqlite_url,
    )
    ledger = Ledger(sqlite_url)
    try:
        asyncio.run(Campaign(parse_config(cfg), ledger).run())
    finally:
        ledger.close()
    with Study.open({**cfg, "stop": {"max_experiments": 12}}, resume=True) as study:
        study.note("new reagent batch", by="ada")
        study.attach({"x": 0.3, "z": 0.6}, {"y": 1.0}, by="ada")
        first, second = study.ask(2)
        study.fail(first.trial_id, "the vial cracked")
        study.abandon(second.trial_id, "no reagent left")
    ledger = Ledger(sqlite_url, create=False)
    try:
        events = ledger.events("kinds")
    finally:
        ledger.close()
    seen = {e.kind for e in events}
    assert seen >= {"campaign_started", "proposed", "dispatched", "completed", "failed", "abandoned", "recommended",
                    "campaign_stopped", "paused", "resumed", "instrument_offline", "note", "attached"}, seen
    for event in events:
        assert type(event.kind) is EventKind
        model = payload_model(event.kind)
        assert model.model_validate(event.payload).model_dump(mode="json") == event.payload, event
        assert type(event.typed_payload()) is model
    state = CampaignState.replay("kinds", events)
    assert state.anomalies == [] and all(type(e.status) is ExperimentState for e in state.experiments.values())
    assert {"error"} <= {e.payload["error_kind"] for e in events if e.kind == EventKind.FAILED}


def test_an_event_of_an_unknown_kind_is_refused_where_it_is_made() -> None:
    with pytest.raises(ValueError, match="unknown event kind 'exploded'"):
        NewEvent(campaign="c", kind="exploded")
    with pytest.raises(ValueError, match="unknown event kind"):
        Event(id=1, campaign="c", kind="exploded", experiment_id=None, instrument=None, at=T0, recorded_at=T0, payload={})  # type: ignore[arg-type]


def test_one_failure_classification() -> None:
    assert failed_payload(InstrumentTimeout("no answer in 2 s")) == Failed(error_kind="timeout", message="no answer in 2 s")
    assert failed_payload(TimeoutError()) == Failed(error_kind="timeout", message="TimeoutError: ")
    assert failed_payload(BadResponse("")) == Failed(error_kind="bad_response", message="bad_response")
    assert failed_payload(ZeroDivisionError("driver bug")) == Failed(error_kind="error", message="ZeroDivisionError: driver bug")


def test_one_seed_mix() -> None:
    assert np.array_equal(seeded_rng(3, 7).random(4), np.random.default_rng([3, 7]).random(4))  # the random planner's stream
    seeds = {mix_seed(seed, step) for seed in range(20) for step in range(50)}
    assert len(seeds) == 1000 and all(0 <= s < 2**31 for s in seeds)
    assert mix_seed(1, 0) != mix_seed(0, 1_000_003 + 0) and mix_seed(5, 2, 1) == mix_seed(5, 2, 1) != mix_seed(5, 2, 2)
    with pytest.raises(ValueError, match=">= 0"):
        mix_seed(-1, 0)
