"""Human oversight: the approval gate, the rules of each human action, and
the unfenced writer that a person's tools (the console, the CLI) use.

**The gate** (``oversight.approval`` in a config): ``off`` (proposals go
straight to the instruments), ``all`` (every proposal waits), ``flagged``
(only proposals that a :class:`ProposalFlagger` flags wait). A proposal that
waits is recorded ``proposed`` with ``awaiting_approval`` (the projection
shows it ``awaiting_approval``); it takes no instrument slot. Proposals that
await count against the runner's allowance like queued ones, so at most as
many proposals await as the instruments have free slots: the runner never
floods the ledger while nobody answers, and keeps dispatching approved work.

**The actions** (each one ledger event naming who acted; the ledger stamps
when): ``approved``, ``vetoed`` (with a reason), ``edited`` (new params,
inside the space and some instrument's limits, with a reason; it approves
the proposal, which is dispatched with the edited params while its
``proposed`` event keeps the original), ``attach_requested`` /
``attached``, ``note``, ``pause_requested`` / ``resume_requested`` and
``stop_requested``. Every rule is checked against the projection here
(:func:`check_awaiting`, :func:`check_edit`, :func:`check_attach`), by the
lease holder (:class:`selflab.controller.study.Study`) and by
:class:`OversightWriter` alike; a refused action raises
:class:`ActionRefused` (one line) and writes nothing.

**Attach from another process**: experiment ids are allocated by one process
only, the lease holder. :meth:`OversightWriter.attach` writes an
``attach_requested`` event; the holder turns each open request into an
``attached`` experiment when it next follows the ledger (a runner: within a
quarter second). When nobody holds the lease, the writer takes it for one
transaction and records the ``attached`` experiment itself.

**Vetoed points**: the planner is told them like failed points, and no later
proposal comes within ``oversight.veto_radius`` (max-coordinate distance on
the unit cube, each parameter scaled to [0, 1]) of one: :func:`keep_away`
replaces such a proposal by a seeded random point outside every vetoed box.

Example::

    writer = OversightWriter("sqlite:///runs/demo.sqlite", "demo")
    writer.veto(7, "too hot for the new reactor", by="ada")
    writer.edit(8, {"temperature": 80.0, "time": 30.0}, "cooler", by="ada")
    writer.approve(9, by="ada")
"""

from __future__ import annotations

import getpass
import logging
import os
import random
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa

from selflab.controller import lease
from selflab.controller.events import ExperimentState
from selflab.controller.ledger import Event, Ledger, LedgerError, NewEvent
from selflab.controller.ledger_errors import LeaseHeld, LedgerBusy
from selflab.controller.ledger_schema import LEASES
from selflab.controller.projection import CampaignState, ExperimentView
from selflab.controller.readings import ReadingError, clean_readings
from selflab.controller.record import StudyError
from selflab.planners.protocol import Proposal
from selflab.planners.reasons import is_extrapolating
from selflab.planners.space import CategoricalParameter, FloatParameter, IntParameter, SearchSpace, brief

log = logging.getLogger("selflab")

APPROVAL_POLICIES = ("off", "all", "flagged")


class ActionRefused(StudyError):
    """A human action refused; nothing was written. ``status`` is the HTTP
    status the console answers with (409: not now; 404: no such thing; 422:
    bad input; 501: not available)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def default_actor() -> str:
    """Who acts when nobody says: the operating system's user."""
    try:
        return getpass.getuser()
    except Exception:  # (no user name in this environment)
        return "unknown"


def origin() -> str:
    """Where an action from this process comes from."""
    return f"pid {os.getpid()} on host {socket.gethostname()!r}"


# --- flaggers ----------------------------------------------------------------------------


@runtime_checkable
class ProposalFlagger(Protocol):
    """Looks at a proposal before it is recorded and says why a person should
    approve it first (``approval: flagged``); no flags: it goes straight through."""

    def flags(self, params: Mapping[str, Any], reason: Mapping[str, Any]) -> list[str]:
        """Short reasons (``extrapolating``, ``near the limit of x on plate``), or ``[]``."""
        ...


class ExtrapolationFlagger:
    """Flags a proposal whose reason says the model extrapolates there: the
    ``bo`` planner's verdict under ``reason["extrapolation"]``, read by
    :func:`selflab.planners.reasons.is_extrapolating` (see
    :mod:`selflab.planners.extrapolation`), or a boolean ``extrapolating`` at
    the top of the reason (another planner's)."""

    def flags(self, params: Mapping[str, Any], reason: Mapping[str, Any]) -> list[str]:
        found = is_extrapolating(reason) or reason.get("extrapolating") is True
        return ["extrapolating"] if found else []


class LimitFlagger:
    """Flags a proposal within ``margin`` (a fraction of the parameter's
    range) of a limit of an instrument that accepts it, or of the space's bounds
    when no instrument declares one."""

    def __init__(self, space: SearchSpace, limits: Mapping[str, Mapping[str, Sequence[float]]], margin: float = 0.05) -> None:
        self.space, self.limits, self.margin = space, limits, margin

    def flags(self, params: Mapping[str, Any], reason: Mapping[str, Any]) -> list[str]:
        found: list[str] = []
        spans = {p.name: (float(p.low), float(p.high)) for p in self.space.parameters
                 if isinstance(p, (FloatParameter, IntParameter))}
        for instrument, limits in (self.limits or {"": {}}).items():
            if not within_limits(params, limits):
                continue
            for name, (low, high) in spans.items():
                lo, hi = limits.get(name, (low, high))
                value, gap = float(params[name]), self.margin * (high - low)
                if value - float(lo) < gap or float(hi) - value < gap:
                    where = f" on {instrument}" if instrument and name in limits else ""
                    found.append(f"near the limit of {name}{where}")
        return sorted(set(found))


def within_limits(params: Mapping[str, Any], limits: Mapping[str, Sequence[float]]) -> bool:
    return all(name not in params or float(lo) <= float(params[name]) <= float(hi) for name, (lo, hi) in limits.items())


def default_flaggers(space: SearchSpace, config: Mapping[str, Any] | None) -> list[ProposalFlagger]:
    """The flaggers of ``approval: flagged``: extrapolation, and closeness to an instrument limit."""
    oversight = (config or {}).get("oversight") or {}
    return [ExtrapolationFlagger(), LimitFlagger(space, instrument_limits(config), float(oversight.get("limit_margin", 0.05)))]


def gate(policy: str, flaggers: Sequence[ProposalFlagger], proposal: Proposal) -> tuple[bool, list[str]]:
    """Whether ``proposal`` awaits approval under ``policy``, and its flags."""
    if policy == "off":
        return False, []
    flags = sorted({f for flagger in flaggers for f in flagger.flags(proposal.params, proposal.reason)})
    return (True, flags) if policy == "all" else (bool(flags), flags)


# --- vetoed neighbourhoods ----------------------------------------------------------------


def near(space: SearchSpace, point: Mapping[str, Any], others: Sequence[Mapping[str, Any]], radius: float) -> bool:
    """Whether ``point`` lies within ``radius`` (max-coordinate distance on the unit cube) of one of ``others``."""
    u = space.to_unit(point)
    return any(max(abs(a - b) for a, b in zip(u, space.to_unit(o))) < radius for o in others)


def keep_away(space: SearchSpace, proposals: Sequence[Proposal], vetoed: Sequence[Mapping[str, Any]], radius: float,
              seed: int) -> list[Proposal]:
    """``proposals`` with each one near a vetoed point replaced by a seeded
    random point outside every vetoed box (dropped when none is found in 1000
    draws: the vetoes cover the space)."""
    if not vetoed:
        return list(proposals)
    rng = random.Random(seed)
    kept: list[Proposal] = []
    for proposal in proposals:
        if not near(space, proposal.params, vetoed, radius):
            kept.append(proposal)
            continue
        for _ in range(1000):
            point = space.from_unit([rng.random() for _ in range(space.dim)])
            if not near(space, point, vetoed, radius):
                kept.append(Proposal(params=point, fidelity=proposal.fidelity, reason={
                    "strategy": "veto_avoidance", "replaced": dict(proposal.reason), "veto_radius": radius}))
                break
    return kept


# --- the rules of each action ---------------------------------------------------------------


def instrument_limits(config: Mapping[str, Any] | None) -> dict[str, dict[str, tuple[float, float]]]:
    """Instrument name -> its declared limits, from a config snapshot."""
    found: dict[str, dict[str, tuple[float, float]]] = {}
    for inst in (config or {}).get("instruments") or []:
        limits = inst.get("limits") or {}
        found[str(inst.get("name", ""))] = {k: (float(v[0]), float(v[1])) for k, v in limits.items()}
    return found


def space_of(state: CampaignState) -> SearchSpace:
    """The campaign's current search space: its latest ``campaign_started``
    snapshot's, as edited since (``space_changed``)."""
    if state.config is None:
        raise ActionRefused(f"campaign {state.campaign!r} has never started; nothing was written", 404)
    return state.space_view.space or SearchSpace.model_validate({"parameters": state.config["parameters"]})


def outcome_names(config: Mapping[str, Any]) -> list[str]:
    names = [o["name"] for o in config.get("objectives", [])]
    return names + [c["outcome"] for c in config.get("constraints", []) if isinstance(c, Mapping) and c.get("outcome") not in names]


def check_awaiting(state: CampaignState, eid: Any, action: str) -> ExperimentView:
    """The experiment ``eid`` if a person may ``action`` it now (it awaits approval)."""
    exp = state.experiments.get(eid) if isinstance(eid, int) and not isinstance(eid, bool) else None
    if exp is None:
        last = state.next_experiment_id - 1
        raise ActionRefused(f"cannot {action} experiment {eid!r}: campaign {state.campaign!r} has no such experiment "
                            f"(its experiments are 1..{last}); nothing was written", 404)
    if not exp.awaiting_approval:
        why = {"vetoed": "it was vetoed already", "approved": "it was approved already", "edited": "it was edited (and so approved) already",
               "": "it never awaited approval"}.get(exp.approval, "")
        raise ActionRefused(f"cannot {action} experiment {eid}: it is {exp.shown_status}" + (f" ({why})" if why else "")
                            + "; only a proposal awaiting approval can be approved, vetoed or edited; nothing was written")
    return exp


def need_text(text: str, what: str, action: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ActionRefused(f"{action} needs {what}; nothing was written", 422)
    return text.strip()


def check_edit(state: CampaignState, exp: ExperimentView, params: Mapping[str, Any]) -> dict[str, Any]:
    """The edited params, typed, if they lie in the space and inside the
    limits of some instrument (when the campaign declares instruments)."""
    space = space_of(state)
    point = coerce(space, params)
    faults = space.violations(point)
    if faults:
        raise ActionRefused(f"cannot edit experiment {exp.experiment_id} to {brief(point)}: {'; '.join(faults)}; nothing was written", 422)
    limits = instrument_limits(state.config)
    if limits and not any(within_limits(point, lim) for lim in limits.values()):
        said = "; ".join(f"{name}: " + ", ".join(f"{k} in [{lo:g}, {hi:g}]" for k, (lo, hi) in lim.items()) for name, lim in limits.items())
        raise ActionRefused(f"cannot edit experiment {exp.experiment_id} to {brief(point)}: outside every instrument's limits "
                            f"({said}); nothing was written", 422)
    return point


def coerce(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` (numbers may come as text from a form) with each value of
    its parameter's type; unknown or missing names refused."""
    names = set(space.names)
    unknown = sorted(set(params) - names)
    missing = sorted(names - set(params))
    if unknown or missing:
        raise ActionRefused(("unknown parameter(s) " + ", ".join(unknown) if unknown else "missing parameter(s) " + ", ".join(missing))
                            + f" (the parameters are {', '.join(space.names)}); nothing was written", 422)
    point: dict[str, Any] = {}
    for p in space.parameters:
        value = params[p.name]
        try:
            if isinstance(p, CategoricalParameter):
                point[p.name] = next((c for c in p.choices if str(c) == str(value)), value)
            elif isinstance(p, IntParameter):
                point[p.name] = int(float(value))
            else:
                point[p.name] = float(value)
        except (TypeError, ValueError):
            raise ActionRefused(f"parameter {p.name}: {brief(value)} is not a number; nothing was written", 422) from None
    return point


def check_attach(state: CampaignState, params: Mapping[str, Any], outcomes: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, float] | None]:
    """Typed params and clean outcomes (``None``: no result yet) of an experiment to attach."""
    space = space_of(state)
    point = coerce(space, params)
    faults = space.violations(point)
    if faults:
        raise ActionRefused(f"cannot attach {brief(point)}: {'; '.join(faults)}; nothing was written", 422)
    if outcomes is None:
        return point, None
    assert state.config is not None
    outcomes = {k: _number(v) for k, v in outcomes.items()}  # (a form or the command line gives text)
    try:
        return point, clean_readings(outcomes, outcome_names(state.config), "the attached experiment", parameters=space.names)
    except ReadingError as exc:
        raise ActionRefused(f"{exc}; nothing was written", 422) from None


def approve_event(state: CampaignState, eid: Any, *, by: str = "", reason: str = "") -> NewEvent:
    """The ``approved`` event of proposal ``eid``, which must await approval
    (:class:`ActionRefused` otherwise); one rule for :class:`OversightWriter`
    and :class:`selflab.controller.study.Study`."""
    check_awaiting(state, eid, "approve")
    return NewEvent(campaign=state.campaign, kind="approved", experiment_id=eid,
                    payload={"by": by or default_actor(), "reason": reason, "origin": origin()})


def veto_event(state: CampaignState, eid: Any, reason: str, *, by: str = "") -> NewEvent:
    """The ``vetoed`` event of proposal ``eid`` (awaiting approval; a reason is required)."""
    check_awaiting(state, eid, "veto")
    why = need_text(reason, "a reason", "a veto")
    return NewEvent(campaign=state.campaign, kind="vetoed", experiment_id=eid,
                    payload={"by": by or default_actor(), "reason": why, "origin": origin()})


def edit_event(state: CampaignState, eid: Any, params: Mapping[str, Any], reason: str, *, by: str = "") -> NewEvent:
    """The ``edited`` event of proposal ``eid`` (awaiting approval; a reason is
    required; ``params`` inside the space and some instrument's limits)."""
    exp = check_awaiting(state, eid, "edit")
    why = need_text(reason, "a reason", "an edit")
    point = check_edit(state, exp, params)
    return NewEvent(campaign=state.campaign, kind="edited", experiment_id=eid, payload={
        "params": point, "original": dict(exp.params), "by": by or default_actor(), "reason": why, "origin": origin()})


def check_result(state: CampaignState, eid: Any, outcomes: Mapping[str, Any]) -> dict[str, float]:
    """Clean outcomes for attached experiment ``eid``, which must still await its result."""
    exp = state.experiments.get(eid) if isinstance(eid, int) else None
    if exp is None:
        raise ActionRefused(f"cannot give a result: campaign {state.campaign!r} has no such experiment {eid!r}; nothing was written", 404)
    if not exp.attached or exp.status != ExperimentState.DISPATCHED:
        what = "it is not an attached experiment (the instrument gives its result)" if not exp.attached else f"it is {exp.shown_status}"
        raise ActionRefused(f"cannot give a result to experiment {eid}: {what}; nothing was written")
    assert state.config is not None
    readings = {k: _number(v) for k, v in outcomes.items()}
    try:
        return clean_readings(readings, outcome_names(state.config), f"experiment {eid}", parameters=space_of(state).names)
    except ReadingError as exc:
        raise ActionRefused(f"{exc}; nothing was written", 422) from None


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def fulfil_attach_requests(state: CampaignState, campaign: str, at: Any) -> list[NewEvent]:
    """``attached`` events for the open ``attach_requested`` events, numbered
    from the next free id (only the lease holder may write them)."""
    events, eid = [], state.next_experiment_id
    for request, p in sorted(state.attach_requests.items()):
        outcomes = p.get("outcomes")
        events.append(NewEvent(campaign=campaign, kind="attached", experiment_id=eid, at=at, payload={
            "params": p["params"], "outcomes": outcomes or {}, "fidelity": p.get("fidelity", 1.0), "by": p.get("by", ""),
            "message": p.get("message", ""), "request": request, "pending": outcomes is None}))
        eid += 1
    return events


# --- what status and export show -------------------------------------------------------------


def oversight_cells(exp: ExperimentView) -> dict[str, Any]:
    """The export's oversight columns (:data:`selflab.controller.columns.OVERSIGHT_COLUMNS`) of one experiment."""
    import json

    return {"approval": exp.approval or None,
            "original_params": json.dumps(exp.original_params, sort_keys=True) if exp.original_params is not None else None}


def oversight_status(state: CampaignState, last: int = 10) -> dict[str, Any]:
    """``selflab status``'s ``oversight`` part: proposals awaiting approval,
    whether a person paused dispatch, open attach requests and the last actions."""
    return {"awaiting_approval": [e.experiment_id for e in state.awaiting()],
            "paused_by": state.hold.get("by") if state.hold is not None else None,
            "attach_requests": len(state.attach_requests),
            "vetoed": len(state.vetoed()),
            "last_actions": [{**a, "at": a["at"].isoformat()} for a in state.actions[-last:]]}


def format_oversight(data: Mapping[str, Any]) -> str:
    """The human-readable lines of :func:`oversight_status`."""
    waiting = data["awaiting_approval"]
    lines = [f"oversight  {len(waiting)} awaiting approval" + (f" ({', '.join(map(str, waiting))})" if waiting else "")
             + f", {data['vetoed']} vetoed" + (f"; PAUSED by {data['paused_by']}" if data["paused_by"] else "")
             + (f"; {data['attach_requests']} attach request(s) open" if data["attach_requests"] else "")]
    for a in data["last_actions"]:
        on = f" experiment {a['experiment_id']}" if a["experiment_id"] is not None else ""
        lines.append(f"  {a['at'][:19]}  {a['action']}{on} by {a['by'] or '?'}" + (f": {a['text']}" if a["text"] else ""))
    return "\n".join(lines)


# --- the unfenced writer ----------------------------------------------------------------------


class OversightWriter:
    """A person's actions on a campaign from any process, with or without the
    campaign's lease: each is checked against the ledger as it stands and
    appended unfenced (epoch NULL), in one write transaction, so two people
    cannot both veto one proposal."""

    def __init__(self, ledger: Ledger | str, campaign: str) -> None:
        self._own = not isinstance(ledger, Ledger)
        self.ledger = ledger if isinstance(ledger, Ledger) else Ledger(ledger)  # (create=False would open SQLite read-only)
        self.campaign = campaign

    def close(self) -> None:
        if self._own:
            self.ledger.close()

    def __enter__(self) -> OversightWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def state(self) -> CampaignState:
        return CampaignState.replay(self.campaign, self.ledger.events(self.campaign))

    def _write(self, build: Any) -> Event:
        """Replay, check and append in one write transaction (``build(state) -> NewEvent``;
        a database session cut meanwhile records the action once: :meth:`Ledger.write`)."""

        def body(conn: sa.Connection) -> list[Event]:
            state = self.state()
            if state.starts == 0:
                raise ActionRefused(f"the ledger {self.ledger.display_url} holds no campaign {self.campaign!r}; nothing was written", 404)
            return self.ledger.insert_events(conn, [build(state)])

        [event] = self.ledger.write(body) or []
        return event

    def approve(self, eid: int, *, by: str = "", reason: str = "") -> Event:
        return self._write(lambda state: approve_event(state, eid, by=by, reason=reason))

    def veto(self, eid: int, reason: str, *, by: str = "") -> Event:
        return self._write(lambda state: veto_event(state, eid, reason, by=by))

    def edit(self, eid: int, params: Mapping[str, Any], reason: str, *, by: str = "") -> Event:
        return self._write(lambda state: edit_event(state, eid, params, reason, by=by))

    def note(self, text: str, *, by: str = "") -> Event:
        return self._write(lambda state: NewEvent(campaign=self.campaign, kind="note", payload={
            "text": need_text(text, "some text", "a note"), "by": by or default_actor()}))

    def pause(self, reason: str = "", *, by: str = "") -> Event:
        def build(state: CampaignState) -> NewEvent:
            if state.hold is not None:
                raise ActionRefused(f"campaign {self.campaign!r} is paused already (by {state.hold.get('by', '')}); nothing was written")
            return NewEvent(campaign=self.campaign, kind="pause_requested", payload={"by": by or default_actor(), "reason": reason, "origin": origin()})
        return self._write(build)

    def resume(self, reason: str = "", *, by: str = "") -> Event:
        def build(state: CampaignState) -> NewEvent:
            if state.hold is None:
                raise ActionRefused(f"campaign {self.campaign!r} is not paused; nothing was written")
            return NewEvent(campaign=self.campaign, kind="resume_requested", payload={"by": by or default_actor(), "reason": reason, "origin": origin()})
        return self._write(build)

    def result(self, eid: int, outcomes: Mapping[str, Any], *, by: str = "") -> Event:
        """Give the result of an attached experiment recorded without one
        (``completed``, naming who gave it)."""
        def build(state: CampaignState) -> NewEvent:
            readings = check_result(state, eid, outcomes)
            return NewEvent(campaign=self.campaign, kind="completed", experiment_id=eid, instrument=state.experiments[eid].instrument,
                            payload={"outcomes": readings, "by": by or default_actor(), "origin": origin()})
        return self._write(build)

    def attach(self, params: Mapping[str, Any], outcomes: Mapping[str, Any] | None = None, *, fidelity: float = 1.0,
               by: str = "", message: str = "") -> Event:
        """Ask for a person's experiment to be recorded (``attach_requested``).
        The lease holder records it ``attached``; when nobody holds the lease
        this writer takes it for one transaction and records it itself.
        Returns the ``attached`` event when it was recorded here, else the request."""
        def build(state: CampaignState) -> NewEvent:
            point, readings = check_attach(state, params, outcomes)
            return NewEvent(campaign=self.campaign, kind="attach_requested", payload={
                "params": point, "outcomes": readings, "fidelity": fidelity, "by": by or default_actor(), "message": message,
                "origin": origin()})
        request = self._write(build)
        return self._fulfil_without_holder() or request

    def _fulfil_without_holder(self) -> Event | None:
        """Record open attach requests as ``attached`` when no controller holds
        the lease (taking it for this one transaction). ``None`` when a live
        controller holds it (it records them within a second) or the ledger
        could not be written (a session cut twice, say: the requests stay
        open, and the next controller to start records them)."""

        def body(conn: sa.Connection) -> list[Event] | None:
            epoch = lease.acquire(conn, self.campaign, 10.0)
            written = self.ledger.insert_events(conn, fulfil_attach_requests(self.state(), self.campaign, None))
            conn.execute(sa.update(LEASES).where(LEASES.c.campaign == self.campaign, LEASES.c.epoch == epoch).values(released=True))
            return written or None  # (the lease taken and released again: nothing that matters was written)

        try:
            written = self.ledger.write(body, lock_wait_s=5.0)  # (a person is not kept waiting on a stuck writer)
        except (LeaseHeld, LedgerBusy):  # (a live controller: it records the requests)
            return None
        except LedgerError as exc:
            log.warning("campaign %s: the attach request is recorded; recording it as attached failed (%s), "
                        "so the next controller to start will", self.campaign, exc)
            return None
        return written[-1] if written else None


__all__ = ["APPROVAL_POLICIES", "ActionRefused", "ExtrapolationFlagger", "LimitFlagger", "OversightWriter", "ProposalFlagger",
           "approve_event", "check_attach", "check_awaiting", "check_edit", "check_result", "edit_event", "veto_event", "default_actor", "default_flaggers", "fulfil_attach_requests", "gate",
           "keep_away", "near"]
