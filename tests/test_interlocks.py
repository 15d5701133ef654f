"""The interlock state machine (selflab.controller.interlocks), without a campaign."""

from __future__ import annotations

from selflab.controller.config import Interlock
from selflab.controller.interlocks import InterlockState

HOT = Interlock(pause_when="hotplate.temperature > 200", resume_when="hotplate.temperature < 150")
DRY = Interlock(pause_when="pump.pressure < 1")


def test_pause_then_resume_only_once_safe_again() -> None:
    state = InterlockState([HOT])
    assert state.update("hotplate", {"temperature": 190.0}) == []
    [paused] = state.update("hotplate", {"temperature": 210.0})
    assert (paused.kind, paused.instrument, paused.value, state.paused_by) == ("paused", "hotplate", 210.0, HOT)
    assert paused.payload == {"rule": "hotplate.temperature > 200", "reading": "hotplate.temperature", "value": 210.0}
    assert state.update("hotplate", {"temperature": 180.0}) == []  # below the pause level but not yet below 150
    assert state.update("hotplate", {"temperature": 230.0}) == []  # still paused: no second pause event
    [resumed] = state.update("hotplate", {"temperature": 140.0})
    assert resumed.kind == "resumed" and state.paused_by is None
    assert resumed.payload == {"rule": "hotplate.temperature < 150", "reading": "hotplate.temperature", "value": 140.0}


def test_without_resume_when_it_resumes_when_the_pause_rule_stops_holding() -> None:
    state = InterlockState([DRY])
    assert [c.kind for c in state.update("pump", {"pressure": 0.5})] == ["paused"]
    [resumed] = state.update("pump", {"pressure": 1.0})
    assert resumed.rule == "not (pump.pressure < 1)" and resumed.payload["reading"] == "pump.pressure"


def test_only_the_pausing_interlock_resumes_and_others_wait_their_turn() -> None:
    state = InterlockState([HOT, DRY])
    assert [c.kind for c in state.update("hotplate", {"temperature": 250.0})] == ["paused"]
    assert state.update("pump", {"pressure": 0.2}) == []  # already paused by HOT: recorded, no event
    assert state.readings[("pump", "pressure")] == 0.2
    assert [c.kind for c in state.update("hotplate", {"temperature": 100.0})] == ["resumed"]
    assert [(c.kind, c.instrument) for c in state.update("pump", {"pressure": 0.3})] == [("paused", "pump")]
    assert state.paused_by is DRY


def test_readings_of_other_instruments_or_names_change_nothing() -> None:
    state = InterlockState([HOT])
    assert state.update("pump", {"temperature": 999.0}) == []
    assert state.update("hotplate", {"stirring": 999.0}) == []
    assert state.paused_by is None
