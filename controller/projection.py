"""The state of a campaign, as a projection of its ledger events.

:class:`CampaignState` folds events one at a time (:meth:`CampaignState.apply`),
so the running controller and a replay build the same state from the same
events. It is a pure function of the event sequence: replaying a ledger twice
gives equal projections.

An experiment moves ``proposed -> dispatched -> completed | failed |
abandoned | stale``, or ``proposed -> abandoned`` when it never ran. The first
terminal event wins; a later one is kept in :attr:`CampaignState.anomalies`,
never silently applied.

Human oversight adds a projection state on top: a proposal recorded with
``awaiting_approval`` is ``proposed`` with :attr:`ExperimentView.approval`
``awaiting`` (shown as ``awaiting_approval``, :attr:`ExperimentView.shown_status`)
until ``approved`` or ``edited`` (``approval`` becomes that word, and it is
ready to dispatch) or ``vetoed`` (it ends ``abandoned``, ``end_reason``
``vetoed``; its point joins :meth:`CampaignState.vetoed`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from selflab.controller.events import TERMINAL_STATES, Event, EventKind, ExperimentState
from selflab.controller.space_edits import SpaceView
from selflab.planners.space import Objective, OutcomeConstraint

STATES: tuple[ExperimentState, ...] = tuple(ExperimentState)
"""Every experiment state, in lifecycle order."""

_BestKey = tuple[str, str, float | None, tuple[OutcomeConstraint, ...]]
"""``(objective, direction, target_fidelity, constraints)`` of a :meth:`CampaignState.best` query."""


@dataclass
class ExperimentView:
    """One experiment as the ledger tells it."""

    experiment_id: int
    status: ExperimentState
    params: dict[str, Any]
    fidelity: float
    reason: dict[str, Any]
    instrument: str | None = None
    cost: float = 0.0
    outcomes: dict[str, float] = field(default_factory=dict)
    proposed_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str = ""
    error_kind: str = ""
    """A failed experiment's ``Failed.error_kind`` (``timeout``, ``disconnected``, ``error``, a driver's own, ...)."""
    expected_duration_s: float | None = None
    end_reason: str = ""
    """Why an abandoned experiment did not run (``not_dispatched``, ``out_of_limits``, ...)."""
    finished_position: int = 0
    """Ledger position of its terminal event: results in the order they came."""
    requeue: bool = False
    """Stale, with its params owed a new run (``stale_policy: requeue``)."""
    approval: str = ""
    """Human oversight: ``""`` (none asked), ``awaiting``, ``approved``, ``edited`` or ``vetoed``."""
    flags: list[str] = field(default_factory=list)
    """Why a flagger held the proposal for approval."""
    original_params: dict[str, Any] | None = None
    """The planner's parameters, when a person edited them (``params`` are the edited ones)."""
    oversight: list[dict[str, Any]] = field(default_factory=list)
    """The human actions on it: ``{"action", "by", "at", "reason"}``, in order."""
    attached: bool = False
    """Chosen and run by a person or another tool (an ``attached`` event)."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATES

    @property
    def awaiting_approval(self) -> bool:
        """Proposed and held for a person's approval."""
        return self.status == ExperimentState.PROPOSED and self.approval == "awaiting"

    @property
    def shown_status(self) -> str:
        """The state a person reads: ``awaiting_approval`` and ``vetoed`` beside the ledger states."""
        if self.awaiting_approval:
            return "awaiting_approval"
        if self.status == ExperimentState.ABANDONED and self.end_reason == "vetoed":
            return "vetoed"
        return str(self.status)

    @property
    def failure_kind(self) -> str:
        """Why a planner avoids this point: the failed event's ``error_kind``,
        else the end reason (``bad_cost``, ``vetoed``), else ``error``."""
        return self.error_kind or self.end_reason or "error"


@dataclass
class InstrumentView:
    """What the ledger says about one instrument."""

    name: str
    in_flight: int = 0
    completed: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    offline_reason: str | None = None

    @property
    def state(self) -> str:
        if self.offline_reason is not None:
            return "offline"
        return "busy" if self.in_flight else "idle"


@dataclass
class CampaignState:
    """Everything derived from a campaign's events."""

    campaign: str
    experiments: dict[int, ExperimentView] = field(default_factory=dict)
    instruments: dict[str, InstrumentView] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    starts: int = 0
    clock: str = "wall"
    started_at: datetime | None = None
    last_at: datetime | None = None
    last_position: int = 0
    stopped: tuple[str, str] | None = None
    """``(reason, detail)`` of the latest stop, cleared by a later start."""
    cost_spent: float = 0.0
    paused: str | None = None
    """The interlock rule holding dispatch, if any."""
    recommendation: dict[str, Any] | None = None
    """The latest ``recommended`` payload."""
    anomalies: list[str] = field(default_factory=list)
    stop_request: dict[str, Any] | None = None
    """The latest ``stop_requested`` payload since the last start, if any."""
    notes: list[tuple[datetime, str, str]] = field(default_factory=list)
    """``(at, by, text)`` of every ``note``, in order."""
    completions: list[int] = field(default_factory=list)
    """Ids of completed experiments (attached ones too), in the order their results came."""
    hold: dict[str, Any] | None = None
    """The latest ``pause_requested`` payload while a person holds dispatch (``None``: not paused)."""
    actions: list[dict[str, Any]] = field(default_factory=list)
    """Every human action (approve, veto, edit, attach, note, pause, resume, stop):
    ``{"action", "by", "at", "experiment_id", "text"}``, in ledger order."""
    attach_requests: dict[int, dict[str, Any]] = field(default_factory=dict)
    """``attach_requested`` payloads not yet recorded as ``attached``, by event id."""
    space_view: SpaceView = field(default_factory=SpaceView)
    """The current search space and its version, every ``space_changed`` edit and the
    boundary hits since the last (:mod:`selflab.controller.space_edits`)."""
    miscalibrated: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Outcome -> the ``miscalibrated`` payload of each outcome whose model the
    ledger marks miscalibrated now (until a ``calibration_restored``)."""
    drift_suspected: list[dict[str, Any]] = field(default_factory=list)
    """Every ``drift_suspected`` payload, in order (:mod:`selflab.controller.drift`)."""
    _vetoed: list[int] = field(default_factory=list, repr=False)
    _counts: Counter[str] = field(default_factory=Counter, repr=False)
    _max_id: int = 0
    _by_status: dict[str, dict[int, ExperimentView]] = field(default_factory=dict, repr=False, compare=False)
    _avoided: list[int] = field(default_factory=list, repr=False)
    _owed_requeue: list[int] = field(default_factory=list, repr=False)
    """Stale experiments marked for requeue, in order."""
    _requeues: dict[int, list[int]] = field(default_factory=dict, repr=False)
    """Stale experiment -> the experiments proposed as its requeue."""
    _best: dict[_BestKey, ExperimentView | None] = field(default_factory=dict, repr=False, compare=False)
    _judges: dict[_BestKey, Objective] = field(default_factory=dict, repr=False, compare=False)
    """The objective each key of ``_best`` compares by (:meth:`selflab.planners.space.Objective.better`)."""

    @classmethod
    def replay(cls, campaign: str, events: list[Event]) -> CampaignState:
        state = cls(campaign)
        for event in events:
            state.apply(event)
        return state

    def apply(self, event: Event) -> None:
        """Fold one event into the state."""
        self.last_position = max(self.last_position, event.id)
        self.last_at = event.at if self.last_at is None else max(self.last_at, event.at)
        kind, p = event.kind, event.payload
        if kind == EventKind.CAMPAIGN_STARTED:
            if self.config is None:
                self.started_at = event.at
            self.config = p["config"]
            self.clock = p.get("clock", "wall")
            self.starts += 1
            self.stopped = None
            self.paused = None
            self.stop_request = None
            self.space_view.started(self.config.get("parameters"))
            return
        if kind == EventKind.SPACE_CHANGED:
            self.space_view.changed(p, event.at, self._max_id + 1)
            self._act(event, f"space v{p['version']}: {p['edit']['op']} {p['edit']['parameter']}", p.get("reason", ""))
            return
        if kind == EventKind.BOUNDARY_HIT:
            self.space_view.hits.append(dict(p))
            return
        if kind == EventKind.CAMPAIGN_STOPPED:
            self.stopped = (p["reason"], p.get("detail", ""))
            return
        if kind == EventKind.RECOMMENDED:
            self.recommendation = dict(p)
            return
        if kind == EventKind.STOP_REQUESTED:
            self.stop_request = dict(p)
            self._act(event, "emergency stop" if p.get("emergency", True) else "stop", p.get("reason", ""))
            return
        if kind == EventKind.NOTE:
            self.notes.append((event.at, p.get("by", ""), p["text"]))
            self._act(event, "note", p["text"])
            return
        if kind in (EventKind.PAUSE_REQUESTED, EventKind.RESUME_REQUESTED):
            self.hold = dict(p) if kind == EventKind.PAUSE_REQUESTED else None
            self._act(event, "pause" if kind == EventKind.PAUSE_REQUESTED else "resume", p.get("reason", ""))
            return
        if kind == EventKind.ATTACH_REQUESTED:
            self.attach_requests[event.id] = dict(p)
            self._act(event, "attach requested", p.get("message", ""))
            return
        if kind in (EventKind.MISCALIBRATED, EventKind.CALIBRATION_RESTORED):
            if kind == EventKind.MISCALIBRATED:
                self.miscalibrated[p["outcome"]] = dict(p)
            else:
                self.miscalibrated.pop(p["outcome"], None)
            return
        if kind == EventKind.DRIFT_SUSPECTED:
            self.drift_suspected.append(dict(p))
            return
        if kind in (EventKind.PAUSED, EventKind.RESUMED):
            self.paused = f"{p['rule']} ({p['reading']} = {p['value']:g})" if kind == EventKind.PAUSED else None
            return
        if kind in (EventKind.INSTRUMENT_OFFLINE, EventKind.INSTRUMENT_ONLINE) and event.instrument:
            view = self.instrument(event.instrument)
            view.offline_reason = p.get("reason", "") if kind == EventKind.INSTRUMENT_OFFLINE else None
            if kind == EventKind.INSTRUMENT_ONLINE:
                view.consecutive_failures = 0
            return
        if event.experiment_id is None:
            self.anomalies.append(f"event {event.id}: {kind} without an experiment id")
            return
        eid = event.experiment_id
        if kind == EventKind.ATTACHED:
            if eid in self.experiments:
                self.anomalies.append(f"event {event.id}: experiment {eid} attached over an existing one")
                return
            self._max_id = max(self._max_id, eid)
            pending = bool(p.get("pending", False))
            exp = ExperimentView(experiment_id=eid, status=ExperimentState.DISPATCHED if pending else ExperimentState.COMPLETED,
                                 params=dict(p["params"]), fidelity=float(p.get("fidelity", 1.0)),
                                 reason={"strategy": "attached", "by": p.get("by", ""), "message": p.get("message", "")},
                                 instrument=event.instrument, outcomes={k: float(v) for k, v in (p.get("outcomes") or {}).items()},
                                 proposed_at=event.at, started_at=event.at, attached=True,
                                 finished_at=None if pending else event.at, finished_position=0 if pending else event.id)
            self.experiments[eid] = exp
            self._enter(exp)
            request = p.get("request")
            if isinstance(request, int):
                self.attach_requests.pop(request, None)
            self._act(event, "attach", p.get("message", ""))
            if not pending:
                self.completions.append(eid)
                self._offer(exp)
            return
        if kind == EventKind.PROPOSED:
            if eid in self.experiments:
                self.anomalies.append(f"event {event.id}: experiment {eid} proposed twice")
                return
            self._max_id = max(self._max_id, eid)
            exp = ExperimentView(
                experiment_id=eid,
                status=ExperimentState.PROPOSED,
                params=dict(p["params"]),
                fidelity=float(p.get("fidelity", 1.0)),
                reason=dict(p.get("reason", {})),
                instrument=event.instrument,
                proposed_at=event.at,
                approval="awaiting" if p.get("awaiting_approval") else "",
                flags=list(p.get("flags", [])),
            )
            self.experiments[eid] = exp
            self._enter(exp)
            of = exp.reason.get("requeue_of")
            if isinstance(of, int):
                self._requeues.setdefault(of, []).append(eid)
            return
        exp = self.experiments.get(eid)
        if exp is None:
            self.anomalies.append(f"event {event.id}: {kind} for unknown experiment {eid}")
            return
        if exp.terminal:
            self.anomalies.append(f"event {event.id}: {kind} for experiment {eid}, already {exp.status}")
            return
        if kind in (EventKind.APPROVED, EventKind.VETOED, EventKind.EDITED):
            self._oversee(event, exp)
            return
        if kind == EventKind.DISPATCHED:
            if exp.status != ExperimentState.PROPOSED:
                self.anomalies.append(f"event {event.id}: experiment {eid} dispatched twice")
                return
            self._set_status(exp, ExperimentState.DISPATCHED)
            exp.instrument = event.instrument
            exp.cost = float(p.get("cost", 0.0))
            exp.started_at = event.at
            exp.expected_duration_s = p.get("expected_duration_s")
            self.cost_spent += exp.cost
            self.instrument(exp.instrument).in_flight += 1
            return
        was_running = exp.status == ExperimentState.DISPATCHED and not exp.attached
        self._set_status(exp, ExperimentState(kind))
        exp.finished_at = event.at
        exp.finished_position = event.id
        if kind == EventKind.COMPLETED:
            exp.outcomes = {k: float(v) for k, v in p["outcomes"].items()}
            self.completions.append(eid)
            self._offer(exp)
            if p.get("by"):  # (a person gave the result of their attached experiment)
                self._act(event, "result", ", ".join(f"{k}={v:g}" for k, v in exp.outcomes.items()))
        elif kind == EventKind.FAILED:
            exp.error = f"{p['error_kind']}: {p['message']}"
            exp.error_kind = p["error_kind"]
            self._avoided.append(eid)
        elif kind == EventKind.ABANDONED:
            exp.error = f"{p['reason']}: {p.get('message', '')}".rstrip(": ")
            exp.end_reason = p["reason"]
            if exp.end_reason == "bad_cost":
                self._avoided.append(eid)
        elif kind == EventKind.STALE:
            exp.error = f"stale: {p.get('message', '')}".rstrip(": ")
            exp.requeue = bool(p.get("requeue", False))
            if exp.requeue:
                self._owed_requeue.append(eid)
        if was_running and exp.instrument is not None:
            view = self.instrument(exp.instrument)
            view.in_flight -= 1
            if kind == EventKind.COMPLETED:
                view.completed += 1
                view.consecutive_failures = 0
            elif kind == EventKind.FAILED:
                view.failed += 1
                view.consecutive_failures += 1

    def _oversee(self, event: Event, exp: ExperimentView) -> None:
        """Fold in a person's approve, veto or edit of an awaiting proposal."""
        kind, p, eid = event.kind, event.payload, exp.experiment_id
        if not exp.awaiting_approval:
            self.anomalies.append(f"event {event.id}: {kind} for experiment {eid}, which is not awaiting approval")
            return
        action = {EventKind.APPROVED: "approve", EventKind.VETOED: "veto", EventKind.EDITED: "edit"}[EventKind(kind)]
        exp.oversight.append({"action": action, "by": p.get("by", ""), "at": event.at, "reason": p.get("reason", "")})
        self._act(event, action, p.get("reason", ""))
        if kind == EventKind.APPROVED:
            exp.approval = "approved"
        elif kind == EventKind.EDITED:
            exp.approval = "edited"
            exp.original_params = dict(exp.params)
            exp.params = dict(p["params"])
        else:
            exp.approval = "vetoed"
            self._set_status(exp, ExperimentState.ABANDONED)
            exp.end_reason = "vetoed"
            exp.error = f"vetoed by {p.get('by', '')}: {p.get('reason', '')}"
            exp.finished_at = event.at
            exp.finished_position = event.id
            self._vetoed.append(eid)

    def _act(self, event: Event, action: str, text: str) -> None:
        """Log a human action for status and the console."""
        self.actions.append({"action": action, "by": event.payload.get("by", ""), "at": event.at,
                             "experiment_id": event.experiment_id, "text": text})

    def _enter(self, exp: ExperimentView) -> None:
        """Index a new experiment under its status."""
        self._counts[exp.status] += 1
        self._by_status.setdefault(exp.status, {})[exp.experiment_id] = exp

    def _offer(self, exp: ExperimentView) -> None:
        """Let a newly completed experiment replace the incumbents it beats."""
        for key, best in self._best.items():
            if _better(exp, best, self._judges[key], key[2], key[3]):
                self._best[key] = exp

    def _set_status(self, exp: ExperimentView, status: ExperimentState) -> None:
        self._counts[exp.status] -= 1
        self._by_status.get(exp.status, {}).pop(exp.experiment_id, None)
        exp.status = status
        self._enter(exp)

    def instrument(self, name: str) -> InstrumentView:
        if name not in self.instruments:
            self.instruments[name] = InstrumentView(name)
        return self.instruments[name]

    # --- queries -------------------------------------------------------------------

    def counts(self) -> dict[ExperimentState, int]:
        """Experiments by state, every state present (zeros included); the keys equal their strings."""
        return {s: self._counts.get(s, 0) for s in STATES}

    def shown_counts(self) -> dict[str, int]:
        """Experiments by the state a person reads (:attr:`ExperimentView.shown_status`):
        :meth:`counts`, with ``awaiting_approval`` taken out of ``proposed`` and
        ``vetoed`` out of ``abandoned`` (so the values still add up to the total)."""
        counts: dict[str, int] = {str(s): n for s, n in self.counts().items()}
        awaiting, vetoed = len(self.awaiting()), len(self._vetoed)
        counts[ExperimentState.PROPOSED] -= awaiting
        counts[ExperimentState.ABANDONED] -= vetoed
        return counts | {"awaiting_approval": awaiting, "vetoed": vetoed}

    def with_shown_status(self, status: str) -> list[ExperimentView]:
        """Experiments whose :attr:`ExperimentView.shown_status` is ``status``, by id."""
        if status == "awaiting_approval":
            return self.awaiting()
        if status == "vetoed":
            return sorted(self.vetoed(), key=lambda e: e.experiment_id)
        return [e for e in self.with_status(status) if e.shown_status == status]

    def with_status(self, *statuses: str) -> list[ExperimentView]:
        """Experiments in any of ``statuses``, by id (from an index: as cheap
        as the answer is long)."""
        found = [e for status in statuses for e in self._by_status.get(status, {}).values()]
        return sorted(found, key=lambda e: e.experiment_id)

    def reasoned(self, key: str, kind: type | tuple[type, ...]) -> list[ExperimentView]:
        """Experiments whose proposal's reason holds ``key`` with a value of
        ``kind`` (what a planner said about them: ``warm_start``, ``feasibility``), by id."""
        return sorted((e for e in self.experiments.values() if isinstance(e.reason.get(key), kind)), key=lambda e: e.experiment_id)

    def avoided(self) -> list[ExperimentView]:
        """Experiments whose points the planner is told to avoid: those that
        ran and failed, and those no instrument could price (``bad_cost``),
        in the order they ended."""
        return [self.experiments[eid] for eid in self._avoided]

    def vetoed(self) -> list[ExperimentView]:
        """Vetoed proposals, in the order they were vetoed: the planner keeps away from their neighbourhoods."""
        return [self.experiments[eid] for eid in self._vetoed]

    def awaiting(self) -> list[ExperimentView]:
        """Proposals held for a person's approval, by id."""
        return [e for e in self.with_status(ExperimentState.PROPOSED) if e.approval == "awaiting"]

    def approved_unsent(self) -> list[ExperimentView]:
        """Proposals a person approved or edited that are not dispatched yet, by id."""
        return [e for e in self.with_status(ExperimentState.PROPOSED) if e.approval in ("approved", "edited")]

    def requeues_owed(self) -> list[ExperimentView]:
        """Stale experiments marked for requeue whose params have not been run
        again, oldest first.

        A requeue is an experiment proposed with ``reason.requeue_of`` naming
        the stale one. It pays the debt once it is dispatched or refused (by
        limits, or for want of an instrument); one still waiting, or abandoned
        because the controller stopped before sending it (``not_dispatched``),
        does not: after a resume its params are owed again.
        """
        def settled(stale: int) -> bool:
            for child in map(self.experiments.__getitem__, self._requeues.get(stale, ())):
                never_sent = child.status == ExperimentState.ABANDONED and child.end_reason == "not_dispatched"
                if child.status == ExperimentState.PROPOSED or not never_sent:
                    return True  # waiting to be sent, or dispatched, or refused
            return False

        return [self.experiments[eid] for eid in self._owed_requeue if not settled(eid)]

    @property
    def next_experiment_id(self) -> int:
        return self._max_id + 1

    def best(
        self,
        objective: str,
        direction: str,
        target_fidelity: float | None = None,
        constraints: Sequence[OutcomeConstraint] = (),
    ) -> ExperimentView | None:
        """The completed experiment with the best finite ``objective``.

        With ``target_fidelity`` only experiments at that fidelity count; with
        ``constraints`` only experiments whose outcomes satisfy all of them.
        Kept up to date incrementally once asked for.
        """
        key = (objective, direction, target_fidelity, tuple(constraints))
        if key not in self._best:
            judge = Objective(name=objective, direction=direction)  # type: ignore[arg-type]  # (a bad direction: ValidationError)
            best: ExperimentView | None = None
            for exp in self.experiments.values():
                if _better(exp, best, judge, target_fidelity, key[3]):
                    best = exp
            self._judges[key] = judge
            self._best[key] = best
        return self._best[key]

    def pareto(self, objectives: Sequence[Objective], constraints: Sequence[OutcomeConstraint] = ()) -> list[ExperimentView]:
        """Completed, feasible experiments that no other one dominates, by id."""
        points = [
            e for e in self.experiments.values()
            if e.status == ExperimentState.COMPLETED and all(o.name in e.outcomes for o in objectives) and all(c.satisfied(e.outcomes) for c in constraints)
        ]
        if not points:
            return []
        import moocore  # (a C implementation: O(n log n) for two and three objectives)

        signed = [[o.sign * e.outcomes[o.name] for o in objectives] for e in points]
        keep = moocore.is_nondominated(signed, maximise=True, keep_weakly=True)  # (equal results: both stay on the front)
        front = [e for e, on in zip(points, keep, strict=True) if on]
        return sorted(front, key=lambda e: e.experiment_id)


def _better(exp: ExperimentView, incumbent: ExperimentView | None, objective: Objective,
            target_fidelity: float | None, constraints: tuple[OutcomeConstraint, ...] = ()) -> bool:
    """Whether completed ``exp`` beats ``incumbent`` on ``objective``."""
    if exp.status != ExperimentState.COMPLETED or objective.name not in exp.outcomes:
        return False
    if target_fidelity is not None and exp.fidelity != target_fidelity:
        return False
    if not all(c.satisfied(exp.outcomes) for c in constraints):
        return False
    value = exp.outcomes[objective.name]
    if not math.isfinite(value):
        return False
    return incumbent is None or objective.better(value, incumbent.outcomes[objective.name])
