"""Readings as drivers really return them: numpy and Decimal numbers, and
names that collide with the export's columns or the campaign's parameters."""

from __future__ import annotations

import csv
import io
import json
import logging
import uuid
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from conftest import quadratic_config

from selflab.controller.columns import EXPORT_COLUMNS
from selflab.controller.execution import check_outcomes
from selflab.controller.ledger import Ledger, NewEvent
from selflab.controller.projection import CampaignState
from selflab.controller.reports import FIXED_HEAD, FIXED_TAIL, write_export
from selflab.instruments.errors import BadResponse


def test_every_real_number_type_a_driver_may_return_is_a_reading() -> None:
    for value in (np.float32(0.5), np.float64(0.25), np.int64(3), np.int32(-2), np.uint8(7), np.array(0.75), np.array(4),
                  Decimal("0.169"), Fraction(1, 4), 5, 2.5):
        out = check_outcomes({"y": value}, ["y"], "rig")
        assert out == {"y": float(value)} and type(out["y"]) is float, value


def test_bools_non_finite_and_non_numbers_stay_refused() -> None:
    for value, match in [
        (True, "not a number"), (np.bool_(False), "not a number"), (np.array(True), "not a number"),
        ("0.5", "not a number"), (1 + 2j, "not a number"), (None, "not a number"), (np.array([0.5]), "not a number"),
        (np.float64("nan"), "not finite"), (np.float32("inf"), "not finite"), (Decimal("NaN"), "not finite"),
        (Decimal("-Infinity"), "not finite"), (Decimal("sNaN"), "not finite"),
    ]:
        with pytest.raises(BadResponse, match=match):
            check_outcomes({"y": value}, ["y"], "rig")


def test_readings_named_like_export_columns_or_parameters_are_renamed_once_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    rig = f"rig-{uuid.uuid4().hex[:6]}"
    with caplog.at_level(logging.WARNING, logger="selflab"):
        for _ in range(3):
            out = check_outcomes({"y": 1.0, "status": 5.0, "x": 2.0}, ["y"], rig, parameters=["x", "z"])
            assert out == {"y": 1.0, "reading_status": 5.0, "reading_x": 2.0}
    warnings = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert len(warnings) == 2, warnings  # once per instrument and name, not per experiment
    assert "'status', which is a selflab export column; it is recorded as 'reading_status'" in warnings[0]
    assert "'x', which is a parameter; it is recorded as 'reading_x'" in warnings[1]
    assert check_outcomes({"status": 1.0, "reading_status": 2.0}, [], rig) == {"reading_reading_status": 1.0, "reading_status": 2.0}
    for name in EXPORT_COLUMNS:
        assert name not in check_outcomes({name: 1.0}, [], rig)
    assert check_outcomes({"status": 1.0}, [], rig, recorded=False) == {"status": 1.0}  # (an interlock's read(): never exported)


def _export(ledger: Ledger, outcomes: dict[str, float]) -> tuple[list[str], list[dict[str, str]], list[dict[str, Any]]]:
    config = quadratic_config()
    ledger.append([
        NewEvent(campaign="quad", kind="campaign_started", payload={"config": config, "version": "0", "seed": 0, "clock": "wall"}),
        NewEvent(campaign="quad", kind="proposed", experiment_id=1, payload={"params": {"x": 0.3, "z": 0.6}}),
        NewEvent(campaign="quad", kind="dispatched", experiment_id=1, instrument="q1", payload={"cost": 1.0}),
        NewEvent(campaign="quad", kind="completed", experiment_id=1, instrument="q1", payload={"outcomes": outcomes}),
    ])
    state = CampaignState.replay("quad", ledger.events("quad"))
    text, lines = io.StringIO(), io.StringIO()
    assert write_export(state, "csv", text) == 1 and write_export(state, "jsonl", lines) == 1
    header = text.getvalue().splitlines()[0].split(",")
    return header, list(csv.DictReader(io.StringIO(text.getvalue()))), [json.loads(line) for line in lines.getvalue().splitlines()]


def test_a_driver_reading_status_and_a_parameter_exports_with_every_column_intact(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    recorded = check_outcomes({"y": 1.0, "status": 5.0, "x": 2.0}, ["y"], "q1", parameters=["x", "z"])
    header, [row], [line] = _export(ledger, recorded)
    ledger.close()
    assert header == FIXED_HEAD + ["x", "z", "y", "reading_status", "reading_x"] + FIXED_TAIL
    assert row["experiment_id"] == "1" and row["status"] == "completed" and row["x"] == "0.3" and row["y"] == "1.0"
    assert row["reading_status"] == "5.0" and row["reading_x"] == "2.0"
    assert line["experiment_id"] == 1 and line["status"] == "completed" and line["x"] == 0.3 and line["reading_status"] == 5.0


def test_export_of_readings_recorded_unrenamed_never_overwrites_a_column(sqlite_url: str) -> None:
    """A ledger written before readings were renamed still exports one column per name."""
    ledger = Ledger(sqlite_url)
    header, [row], [line] = _export(ledger, {"y": 1.0, "status": 5.0, "x": 2.0, "experiment_id": 9.0})
    ledger.close()
    assert len(header) == len(set(header)), header
    assert header == FIXED_HEAD + ["x", "z", "y", "reading_status", "reading_x", "reading_experiment_id"] + FIXED_TAIL
    assert row["experiment_id"] == "1" and row["status"] == "completed" and row["x"] == "0.3"
    assert row["reading_status"] == "5.0" and row["reading_x"] == "2.0" and row["reading_experiment_id"] == "9.0"
    assert line["experiment_id"] == 1 and line["status"] == "completed" and line["x"] == 0.3 and line["reading_x"] == 2.0
