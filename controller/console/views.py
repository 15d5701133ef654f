"""What each console page shows, as plain data for its template.

Pure functions of a campaign's projection (:class:`CampaignState`) and its
events; no I/O, no HTML. The campaign summary is ``selflab status``'s own
(:func:`selflab.controller.reports.status_dict`), so the page and the
command agree on state, best so far (at the target fidelity for a
multi-fidelity campaign) and cost. Tables are sorted, filtered and cut into
pages here, so a page of a 10,000-experiment campaign sends 50 rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selflab.controller.events import KINDS
from selflab.controller.ledger import Event
from selflab.controller.projection import CampaignState, ExperimentView

MAX_PER_PAGE = 500


class QueryError(ValueError):
    """A page's query string is not valid; the message names the field."""


def parse_query(model: type[BaseModel], params: Mapping[str, str]) -> Any:
    """``params`` (a query string) as ``model``, or :class:`QueryError` naming each bad field."""
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        raise QueryError("; ".join(f"{'.'.join(map(str, e['loc'])) or 'query'}: {e['msg']}" for e in exc.errors())) from None


def fmt(value: Any) -> str:
    """A value as a table cell shows it: floats to 4 significant digits."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def when(value: datetime | None) -> str:
    """A time as the pages show it (UTC, to the second)."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def reason_text(reason: Mapping[str, Any]) -> str:
    """Why a proposal was made, in one line: strategy, acquisition value,
    predictions, flags (``bo · qlognei -2.45 · predicted yield 0.786 ± 0.27``)."""
    parts = [str(reason.get("strategy") or "unknown")]
    if reason.get("acquisition"):
        value = reason.get("acquisition_value")
        parts.append(f"{reason['acquisition']} {fmt(value)}".strip())
    predicted = reason.get("predicted") or {}
    if isinstance(predicted, Mapping) and predicted:
        said = []
        for name, p in predicted.items():
            if isinstance(p, Mapping) and p.get("mean") is not None:
                std = p.get("std")
                said.append(f"{name} {fmt(p['mean'])}" + (f" ± {float(std):.2g}" if isinstance(std, (int, float)) else ""))
        if said:
            parts.append("predicted " + ", ".join(said))
    flags = reason.get("flags")
    if flags:
        parts.append("flags: " + (", ".join(map(str, flags)) if isinstance(flags, (list, tuple)) else str(flags)))
    if isinstance(reason.get("requeue_of"), int):
        parts.append(f"requeue of #{reason['requeue_of']}")
    if reason.get("by"):
        parts.append(f"by {reason['by']}")
    if reason.get("message"):
        parts.append(str(reason["message"]))
    return " · ".join(parts)


def config_lists(state: CampaignState) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The campaign's parameters and objectives as its config snapshot names them."""
    config = state.config or {}
    return list(config.get("parameters", [])), list(config.get("objectives", []))


def outcome_names(state: CampaignState) -> list[str]:
    """Objectives, then constrained outcomes, each once."""
    config = state.config or {}
    names = [o["name"] for o in config.get("objectives", [])]
    return names + [c["outcome"] for c in config.get("constraints", []) if c["outcome"] not in names]


# --- the experiments table ----------------------------------------------------------------


class TableQuery(BaseModel):
    """The experiments table's query string."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    sort: str = Field(default="id", max_length=200)
    order: Literal["asc", "desc"] = "desc"
    status: str = Field(default="", max_length=40)
    instrument: str = Field(default="", max_length=100)
    fidelity: str = Field(default="", max_length=20)
    q: str = Field(default="", max_length=200, description="text anywhere in the row")
    page: int = Field(default=1, ge=1)
    per: int = Field(default=50, ge=1, le=MAX_PER_PAGE)


@dataclass(frozen=True)
class Column:
    """One column of the experiments table: its key in ``?sort=``, heading, and cell value."""

    key: str
    label: str
    value: Callable[[ExperimentView], Any]
    numeric: bool = False


def columns(state: CampaignState) -> list[Column]:
    """The experiments table's columns: id, state, instrument, fidelity, each
    parameter, each outcome, cost, times, the proposal's reason, the error."""
    params, objectives = config_lists(state)
    units = {p["name"]: p.get("unit") for p in params} | {o["name"]: o.get("unit") for o in objectives}

    def heading(name: str) -> str:
        return f"{name} [{units[name]}]" if units.get(name) else name

    cols = [Column("id", "#", lambda e: e.experiment_id, True), Column("status", "state", lambda e: e.shown_status),
            Column("instrument", "instrument", lambda e: e.instrument), Column("fidelity", "fidelity", lambda e: e.fidelity, True)]
    cols += [Column(f"param:{p['name']}", heading(p["name"]), _param(p["name"]), p.get("type") != "categorical") for p in params]
    cols += [Column(f"outcome:{n}", heading(n), _outcome(n), True) for n in outcome_names(state)]
    cols += [Column("cost", "cost", lambda e: e.cost, True), Column("proposed_at", "proposed", lambda e: e.proposed_at),
             Column("finished_at", "finished", lambda e: e.finished_at), Column("reason", "reason", lambda e: reason_text(e.reason)),
             Column("error", "error", lambda e: e.error or None)]
    return cols


def _param(name: str) -> Callable[[ExperimentView], Any]:
    return lambda e: e.params.get(name)


def _outcome(name: str) -> Callable[[ExperimentView], Any]:
    return lambda e: e.outcomes.get(name)


@dataclass(frozen=True)
class TablePage:
    """One page of the experiments table."""

    columns: list[Column]
    rows: list[ExperimentView]
    cells: list[list[str]]
    total: int
    """Experiments that pass the filters."""
    page: int
    pages: int
    query: TableQuery
    statuses: list[str]
    instruments: list[str]
    fidelities: list[str]


def _sort_key(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return (1, 0.0)
    return (0, value)


def experiments_page(state: CampaignState, query: TableQuery) -> TablePage:
    """Filter, sort and cut the campaign's experiments; :class:`QueryError` for
    an unknown sort column or a fidelity that is not a number."""
    cols = columns(state)
    by_key = {c.key: c for c in cols}
    if query.sort not in by_key:
        raise QueryError(f"sort: unknown column {query.sort!r}; choose one of {', '.join(by_key)}")
    fidelity: float | None = None
    if query.fidelity:
        try:
            fidelity = float(query.fidelity)
        except ValueError:
            raise QueryError(f"fidelity: {query.fidelity!r} is not a number") from None
    found: Sequence[ExperimentView] = state.with_shown_status(query.status) if query.status else list(state.experiments.values())
    if query.instrument:
        found = [e for e in found if e.instrument == query.instrument]
    if fidelity is not None:
        found = [e for e in found if math.isclose(e.fidelity, fidelity)]
    if query.q:
        needle = query.q.lower()
        found = [e for e in found if needle in _row_text(e).lower()]
    column = by_key[query.sort]
    present = [e for e in found if column.value(e) is not None]
    missing = [e for e in found if column.value(e) is None]
    try:
        present.sort(key=lambda e: _sort_key(column.value(e)), reverse=query.order == "desc")
    except TypeError:  # (mixed types in one column: compare as text)
        present.sort(key=lambda e: str(column.value(e)), reverse=query.order == "desc")
    ordered = present + sorted(missing, key=lambda e: e.experiment_id)
    pages = max(1, -(-len(ordered) // query.per))
    page = min(query.page, pages)
    rows = ordered[(page - 1) * query.per: page * query.per]
    cells = [[_cell(c, e) for c in cols] for e in rows]
    return TablePage(cols, rows, cells, len(ordered), page, pages, query, statuses=[s for s, n in state.shown_counts().items() if n],
                     instruments=sorted({e.instrument for e in state.experiments.values() if e.instrument}),
                     fidelities=sorted({fmt(e.fidelity) for e in state.experiments.values()}, key=float))


def _cell(column: Column, exp: ExperimentView) -> str:
    value = column.value(exp)
    return when(value) if isinstance(value, datetime) else fmt(value)


def _row_text(exp: ExperimentView) -> str:
    return " ".join([str(exp.experiment_id), str(exp.status), exp.instrument or "", reason_text(exp.reason), exp.error,
                     *map(fmt, exp.params.values())])


# --- the event log -------------------------------------------------------------------------


class EventQuery(BaseModel):
    """The event log's query string (newest first)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    kind: str = Field(default="", max_length=40)
    experiment: int | None = Field(default=None, ge=0)
    page: int = Field(default=1, ge=1)
    per: int = Field(default=100, ge=1, le=MAX_PER_PAGE)


@dataclass(frozen=True)
class EventRow:
    """One event as the log shows it."""

    id: int
    at: str
    recorded_at: str
    kind: str
    experiment_id: int | None
    instrument: str
    summary: str
    payload: str


@dataclass(frozen=True)
class EventPage:
    rows: list[EventRow]
    total: int
    page: int
    pages: int
    query: EventQuery
    kinds: list[str]


def event_kinds() -> list[str]:
    return [str(k) for k in KINDS]


def events_page(events: Sequence[Event], query: EventQuery) -> EventPage:
    """Newest first, filtered by kind and experiment; :class:`QueryError` for an unknown kind."""
    kinds = event_kinds()
    if query.kind and query.kind not in kinds:
        raise QueryError(f"kind: unknown event kind {query.kind!r}; choose one of {', '.join(kinds)}")
    if not query.kind and query.experiment is None:
        total = len(events)
        pages = max(1, -(-total // query.per))
        page = min(query.page, pages)
        end = total - (page - 1) * query.per
        chosen = list(reversed(events[max(0, end - query.per): end]))
    else:
        found = [e for e in events if (not query.kind or e.kind == query.kind)
                 and (query.experiment is None or e.experiment_id == query.experiment)]
        total = len(found)
        pages = max(1, -(-total // query.per))
        page = min(query.page, pages)
        found.reverse()
        chosen = found[(page - 1) * query.per: page * query.per]
    return EventPage([event_row(e) for e in chosen], total, page, pages, query, kinds)


def event_row(event: Event) -> EventRow:
    payload = json.dumps(event.payload, sort_keys=True, default=str)
    return EventRow(id=event.id, at=when(event.at), recorded_at=when(event.recorded_at), kind=str(event.kind),
                    experiment_id=event.experiment_id, instrument=event.instrument or "", summary=_summary(event),
                    payload=payload)


def _summary(event: Event) -> str:
    """One line of what an event says."""
    p, kind = event.payload, str(event.kind)
    if kind == "proposed":
        return ", ".join(f"{k}={fmt(v)}" for k, v in p.get("params", {}).items()) + f" at fidelity {fmt(p.get('fidelity', 1.0))}" \
            + f" — {reason_text(p.get('reason') or {})}"
    if kind == "completed":
        return ", ".join(f"{k}={fmt(v)}" for k, v in p.get("outcomes", {}).items())
    if kind == "failed":
        return f"{p.get('error_kind')}: {p.get('message')}"
    if kind in ("abandoned", "campaign_stopped"):
        return f"{p.get('reason')}" + (f": {p.get('message') or p.get('detail')}" if p.get("message") or p.get("detail") else "")
    if kind == "dispatched":
        return f"cost {fmt(p.get('cost', 0.0))}"
    if kind == "stop_requested":
        return ("emergency stop" if p.get("emergency", True) else "stop") + f" requested by {p.get('by') or 'someone'}" \
            + (f" ({p['origin']})" if p.get("origin") else "") + (f": {p['reason']}" if p.get("reason") else "")
    if kind == "note":
        return f"{p.get('by') or 'someone'}: {p.get('text')}"
    if kind == "campaign_started":
        return ("resumed" if p.get("resumed") else "started") + f" by {p.get('controller', 'run')}, pid {p.get('pid')} on {p.get('host')!r}, seed {p.get('seed')}"
    if kind in ("paused", "resumed"):
        return f"{p.get('rule')} ({p.get('reading')} = {fmt(p.get('value'))})"
    if kind == "recommended":
        return ", ".join(f"{k}={fmt(v)}" for k, v in p.get("params", {}).items()) + f" ({p.get('basis')})"
    if kind == "space_changed":
        edit = p.get("edit") or {}
        backfill = f" (backfill {edit['backfill']})" if edit.get("backfill") is not None else ""
        return (f"search space v{p.get('version')}: {str(edit.get('op', '')).replace('_', '-')} {edit.get('parameter', '')} "
                f"{' '.join(map(str, edit.get('values') or []))}{backfill} by {p.get('by') or 'someone'}"
                + (f": {p['reason']}" if p.get("reason") else ""))
    if kind == "boundary_hit":
        return str(p.get("suggestion") or f"{p.get('parameter')} sits on its {p.get('bound')} bound")
    text = json.dumps(p, sort_keys=True, default=str)
    return text if len(text) <= 160 else text[:157] + "..."


# --- the campaign summary ---------------------------------------------------------------------


def latest_start(events: Sequence[Event]) -> Mapping[str, Any] | None:
    """The payload of the latest ``campaign_started``."""
    for event in reversed(events):
        if event.kind == "campaign_started":
            return event.payload
    return None


def stop_light(state: CampaignState, running: bool | None) -> dict[str, Any]:
    """The emergency-stop and interlock panel: whether a stop was requested
    (and by whom, and whether the controller obeyed), and what holds dispatch."""
    request = state.stop_request
    stopped = state.stopped
    config = state.config or {}
    return {
        "request": request,
        "obeyed": request is not None and stopped is not None,
        "emergency_stopped": stopped is not None and stopped[0] == "emergency_stop",
        "interlocks": [f"pause when {_condition(lock.get('pause_when'))}"
                       + (f", resume when {_condition(lock['resume_when'])}" if lock.get("resume_when") else "")
                       for lock in config.get("interlocks", [])],
        "paused": state.paused,
    }


def _condition(cond: Any) -> str:
    if not isinstance(cond, Mapping):
        return str(cond)
    return f"{cond.get('instrument')}.{cond.get('reading')} {cond.get('op')} {fmt(cond.get('value'))}"


def recent(events: Sequence[Event], n: int = 8) -> list[EventRow]:
    """The last ``n`` events, newest first."""
    return [event_row(e) for e in reversed(events[-n:])]
