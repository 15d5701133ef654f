"""What a person may do from the lab console: each action is one ledger event.

An action is a :class:`ConsoleAction`: a declared :class:`ActionSpec` (its
URL name, button label, scope and input form, a pydantic model with
``extra="forbid"``), :meth:`~ConsoleAction.available` (whether the page
offers it for a campaign or an experiment now) and
:meth:`~ConsoleAction.perform` (validate against the ledger as it is, then
append; or raise :class:`ActionRefused` having written nothing). The server
(:mod:`selflab.controller.console.app`) checks the token, the CSRF value and
the form before it calls ``perform``; an action checks only what it is about.

Wired now:

* ``stop``: ``stop_requested`` with ``emergency: false``: the controller
  dispatches nothing more and finishes the experiments in flight;
* ``emergency_stop``: ``stop_requested`` with ``emergency: true``: the
  controller aborts its experiments through ``stop()``;

both by :func:`request_stop`, the rule ``selflab stop`` follows (the
campaign must be run by a live ``selflab run``; a Python ``Study`` is not
stopped from outside).

and the human-oversight actions (:data:`OVERSIGHT_ACTIONS`, each an
:class:`OversightAction` over :class:`selflab.controller.oversight.OversightWriter`):
``approve``, ``veto`` (a reason), ``edit`` (one input per parameter and a
reason) on an experiment awaiting approval; ``result`` on an experiment
attached without its result; ``attach``, ``note``, ``pause``
and ``resume`` on the campaign; ``space`` (:class:`SpaceAction`, over
:class:`selflab.controller.space_cmd.SpaceWriter`): a search-space edit, as
``selflab space`` makes it. A lab may register its own action (or a
:class:`Planned` placeholder, answered with 501) over one of them::

    registry = default_actions()
    registry.register(VetoAction(), replace=True)   # spec.name == "veto", scope "experiment"
    app = create_app(settings, actions=registry)

Experiment-scoped actions are posted to
``/c/{campaign}/experiments/{id}/actions/{name}`` and offered on the
experiment's page and in its row of the experiments table (when
``available``); campaign-scoped ones to ``/c/{campaign}/actions/{name}`` on
the campaign's page. A form whose fields are not plain text (``edit``: one
input per parameter) names its own template in ``spec.template``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from selflab.controller.lease import active_holder
from selflab.controller.ledger import Event, Ledger, NewEvent
from selflab.controller.oversight import ActionRefused, OversightWriter
from selflab.controller.projection import CampaignState, ExperimentView
from selflab.controller.space_cmd import SpaceWriter, parse_edit
from selflab.controller.space_edits import EditRefused

Scope = Literal["campaign", "experiment"]


class ActionForm(BaseModel):
    """Base of every action's input: unknown fields refused, text stripped."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ReasonForm(ActionForm):
    """An optional reason, recorded with the event."""

    reason: str = Field(default="", max_length=500, description="reason (optional, recorded in the ledger)")


@dataclass(frozen=True)
class ActionSpec:
    """What the page and the server know of an action before it runs."""

    name: str
    """The URL segment and registry key (``[a-z_]+``)."""
    label: str
    """The button's text."""
    scope: Scope
    form: type[ActionForm]
    help: str = ""
    danger: bool = False
    """Drawn as a dangerous button (red)."""
    template: str | None = None
    """A template under ``console/templates/actions/`` that draws the form's
    fields, for forms that are not a few text fields (``None``: one text
    input per field of ``form``). It sees ``action``, ``exp`` (the
    :class:`ExperimentView`, for an experiment-scoped action), ``campaign``
    and ``who``; the form, the CSRF field and the button are drawn around it."""


@dataclass(frozen=True)
class Actor:
    """Who acts: the name given when the console was unlocked, and from where."""

    who: str
    origin: str


@dataclass(frozen=True)
class Target:
    """What an action acts on, as the console read it just before: the
    campaign's projection (never change it), whether a controller runs it
    now, the payload of its latest ``campaign_started``, and the experiment
    for an experiment-scoped action."""

    campaign: str
    state: CampaignState
    running: bool | None
    started: Mapping[str, Any] | None = None
    experiment: ExperimentView | None = None


@dataclass(frozen=True)
class ActionContext:
    """Everything :meth:`ConsoleAction.perform` gets beside its validated form."""

    ledger_url: str
    target: Target
    actor: Actor


@runtime_checkable
class ConsoleAction(Protocol):
    """One write action of the console (see the module's docstring)."""

    @property
    def spec(self) -> ActionSpec: ...

    def available(self, target: Target) -> bool:
        """Whether the page offers the action for ``target`` now (the server
        still lets :meth:`perform` decide)."""
        ...

    def perform(self, context: ActionContext, form: ActionForm) -> str:
        """Append the action's event(s) and return a one-line message for the
        person; or raise :class:`ActionRefused`, having written nothing."""
        ...


class ActionRegistry:
    """The console's actions by name."""

    def __init__(self) -> None:
        self._actions: dict[str, ConsoleAction] = {}

    def register(self, action: ConsoleAction, *, replace: bool = False) -> None:
        """Add ``action``; ``replace`` to put it over one of the same name (a
        :class:`Planned` placeholder)."""
        if not isinstance(action, ConsoleAction):
            raise TypeError(f"{action!r} is not a ConsoleAction (spec, available(), perform())")
        name = action.spec.name
        if not name.replace("_", "").isalpha() or not name.islower():
            raise ValueError(f"action name {name!r}: lower-case letters and _ only (it is a URL segment)")
        if name in self._actions and not replace:
            raise ValueError(f"action {name!r} is registered already; pass replace=True to put another over it")
        self._actions[name] = action

    def get(self, name: str) -> ConsoleAction | None:
        return self._actions.get(name)

    def offered(self, scope: Scope, target: Target) -> list[ConsoleAction]:
        """The actions of ``scope`` the page offers for ``target`` now, in registration order."""
        return [a for a in self._actions.values() if a.spec.scope == scope and a.available(target)]

    def __iter__(self) -> Iterator[ConsoleAction]:
        return iter(list(self._actions.values()))


# --- stop and emergency stop (wired) -----------------------------------------------------


def request_stop(ledger_url: str, campaign: str, started: Mapping[str, Any] | None, *, emergency: bool, by: str,
                 origin: str, reason: str = "") -> Event:
    """Ask the controller running ``campaign`` to stop, through the ledger (a
    ``stop_requested`` event: any host, no signal), as ``selflab stop`` does.

    Refused, writing nothing, when no live controller holds the campaign's
    lease, or when its latest start (``started``, the ``campaign_started``
    payload) was a Python ``Study``, which does not read stop requests."""
    writer = Ledger(ledger_url)  # (it appends one unfenced event; it takes no lease)
    try:
        holder = active_holder(writer, campaign)
        if holder is None:
            raise ActionRefused(f"campaign {campaign!r} is not running; nothing was requested "
                                "(resume it with selflab run CONFIG --resume)")
        if started is not None and started.get("controller", "run") != "run":
            raise ActionRefused(f"campaign {campaign!r} is driven by a Python Study ({holder}), not by selflab run; "
                                "nothing was requested: stop it from that program")
        [event] = writer.append([NewEvent(campaign=campaign, kind="stop_requested", payload={
            "emergency": emergency, "by": by, "origin": origin, "reason": reason})])
        return event
    finally:
        writer.close()


@dataclass(frozen=True)
class StopAction:
    """``stop`` (finish what runs, dispatch nothing more) or ``emergency_stop``
    (abort what runs through ``stop()``)."""

    emergency: bool

    @property
    def spec(self) -> ActionSpec:
        if self.emergency:
            return ActionSpec("emergency_stop", "Emergency stop", "campaign", ReasonForm, danger=True,
                              help="abort the experiments in flight through their instruments' stop(); the campaign stays resumable")
        return ActionSpec("stop", "Stop", "campaign", ReasonForm,
                          help="dispatch nothing more; the experiments in flight finish; the campaign stays resumable")

    def available(self, target: Target) -> bool:
        return bool(target.running)

    def perform(self, context: ActionContext, form: ActionForm) -> str:
        assert isinstance(form, ReasonForm)
        target = context.target
        event = request_stop(context.ledger_url, target.campaign, target.started, emergency=self.emergency,
                             by=context.actor.who, origin=context.actor.origin, reason=form.reason)
        what = "emergency stop" if self.emergency else "stop"
        return f"{what} requested for campaign {target.campaign!r} (ledger event {event.id}); the controller obeys within a second"


# --- human oversight (wired: selflab.controller.oversight) --------------------------------


class NoForm(ActionForm):
    """No input."""


class NeedReason(ActionForm):
    reason: str = Field(min_length=1, max_length=500, description="reason (required, recorded in the ledger)")


class EditForm(ActionForm):
    """New parameter values (posted as ``p_NAME`` fields) and a reason."""

    reason: str = Field(min_length=1, max_length=500, description="reason (required)")
    params: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _collect(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            params = {k[2:]: v for k, v in data.items() if isinstance(k, str) and k.startswith("p_")}
            data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("p_"))}
            if params:
                data["params"] = params
        return data


class AttachForm(ActionForm):
    params: str = Field(min_length=1, max_length=2000, description="parameters: x=0.3 z=0.6")
    outcomes: str = Field(default="", max_length=2000, description="result (optional): y=0.9")
    message: str = Field(default="", max_length=500, description="remark (optional)")


class ResultForm(ActionForm):
    outcomes: str = Field(min_length=1, max_length=2000, description="result: y=0.9")


class NoteForm(ActionForm):
    text: str = Field(min_length=1, max_length=2000, description="note")


def _pairs(text: str, what: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in text.replace(",", " ").split():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ActionRefused(f"{what}: {item!r} is not NAME=VALUE; nothing was written", 422)
        found[name] = value
    return found


@dataclass(frozen=True)
class OversightAction:
    """approve, veto, edit, result (experiment scope), attach, note, pause, resume
    (campaign scope): one unfenced event each, through
    :class:`~selflab.controller.oversight.OversightWriter`, which checks it
    against the ledger in the same write transaction."""

    name: str

    @property
    def spec(self) -> ActionSpec:
        label, scope, text = OVERSIGHT_ACTIONS[self.name]
        form: type[ActionForm] = {"approve": ReasonForm, "veto": NeedReason, "edit": EditForm, "attach": AttachForm,
                                  "result": ResultForm, "note": NoteForm, "pause": ReasonForm, "resume": ReasonForm}[self.name]
        return ActionSpec(self.name, label, scope, form, help=text, danger=self.name == "veto",
                          template="edit.html" if self.name == "edit" else None)

    def available(self, target: Target) -> bool:
        if self.name == "result":
            exp = target.experiment
            return exp is not None and exp.attached and not exp.terminal
        if self.spec.scope == "experiment":
            return target.experiment is not None and target.experiment.awaiting_approval
        if self.name == "pause":
            return target.state.hold is None and target.state.starts > 0
        if self.name == "resume":
            return target.state.hold is not None
        return target.state.starts > 0

    def perform(self, context: ActionContext, form: ActionForm) -> str:
        target, who = context.target, context.actor.who
        eid = target.experiment.experiment_id if target.experiment is not None else 0
        with OversightWriter(context.ledger_url, target.campaign) as writer:
            if isinstance(form, EditForm):
                event = writer.edit(eid, form.params, form.reason, by=who)
            elif isinstance(form, NeedReason):
                event = writer.veto(eid, form.reason, by=who)
            elif isinstance(form, AttachForm):
                outcomes = _pairs(form.outcomes, "outcomes") if form.outcomes else None
                event = writer.attach(_pairs(form.params, "params"), outcomes, by=who, message=form.message)
            elif isinstance(form, ResultForm):
                event = writer.result(eid, _pairs(form.outcomes, "outcomes"), by=who)
            elif isinstance(form, NoteForm):
                event = writer.note(form.text, by=who)
            else:
                assert isinstance(form, ReasonForm)
                act = {"approve": lambda: writer.approve(eid, by=who, reason=form.reason),
                       "pause": lambda: writer.pause(form.reason, by=who),
                       "resume": lambda: writer.resume(form.reason, by=who)}[self.name]
                event = act()
        on = f" experiment {event.experiment_id}" if event.experiment_id is not None else ""
        return f"{event.kind}{on} by {who} (ledger event {event.id})"


OVERSIGHT_ACTIONS: dict[str, tuple[str, Scope, str]] = {
    "approve": ("Approve", "experiment", "let the proposal be dispatched as proposed"),
    "veto": ("Veto", "experiment", "refuse the proposal, with a reason; it and its neighbourhood are not proposed again"),
    "edit": ("Edit", "experiment", "change the proposal's parameters inside the limits, with a reason"),
    "attach": ("Attach an experiment", "campaign", "record an experiment of your own, with or without its result"),
    "result": ("Give its result", "experiment", "the result of an experiment attached without one"),
    "note": ("Note", "campaign", "write a note into the ledger"),
    "pause": ("Pause", "campaign", "dispatch nothing more until resumed; experiments in flight finish"),
    "resume": ("Resume", "campaign", "dispatch again after a pause"),
}
"""The human-oversight actions of issue 17: name -> (label, scope, help),
each an :class:`OversightAction`."""


# --- search-space edits (wired: selflab.controller.space_cmd) ------------------------------


class SpaceForm(ActionForm):
    """One search-space edit, in ``selflab space``'s words (:func:`~selflab.controller.space_cmd.parse_edit`)."""

    op: str = Field(min_length=1, max_length=20, description="edit: widen, narrow, add, fix, add-choice, remove-choice")
    parameter: str = Field(min_length=1, max_length=100, description="parameter")
    values: str = Field(default="", max_length=2000, description="values: low high, a value, or choices")
    backfill: str = Field(default="", max_length=200, description="add: its value in the experiments so far (required)")
    kind: Literal["", "float", "int", "categorical"] = Field(default="", description="add: type (default: float, or categorical for words)")
    log: Literal["", "on"] = Field(default="", description="add: log scale")
    explore: str = Field(default="", max_length=3, description="widen: space-filling points in the opened range first (optional)")
    reason: str = Field(default="", max_length=500, description="reason (optional, recorded in the ledger)")


@dataclass(frozen=True)
class SpaceAction:
    """``space``: widen or narrow a bound, add a parameter (with its backfill),
    fix one, add or remove a categorical choice: one ``space_changed`` event,
    checked against the instruments' limits by the same rules as ``selflab
    space`` (:class:`~selflab.controller.space_cmd.SpaceWriter`). A running
    campaign proposes from the new space within a second."""

    @property
    def spec(self) -> ActionSpec:
        return ActionSpec("space", "Edit the search space", "campaign", SpaceForm, template="space.html",
                          help="each edit is a new version of the space; every result so far stays in the model")

    def available(self, target: Target) -> bool:
        return target.state.starts > 0

    def perform(self, context: ActionContext, form: ActionForm) -> str:
        assert isinstance(form, SpaceForm)
        target, who = context.target, context.actor.who
        words = [form.op, form.parameter, *form.values.replace(",", " ").split()]
        try:
            explore = int(form.explore) if form.explore else 0
        except ValueError:
            raise ActionRefused(f"explore: {form.explore!r} is not a whole number; nothing was written", 422) from None
        try:
            edit = parse_edit(words, form.backfill or None, form.kind or None, form.log == "on", explore)
            with SpaceWriter(context.ledger_url, target.campaign) as writer:
                event = writer.edit(edit, by=who, reason=form.reason)
        except EditRefused as exc:
            raise ActionRefused(str(exc), 422) from None
        return f"space_changed v{event.payload['version']}: {' '.join(words)} by {who} (ledger event {event.id})"


@dataclass(frozen=True)
class Planned:
    """A placeholder for an action not wired yet: never offered, and answered with 501."""

    name: str
    label: str = ""
    scope: Scope = "campaign"

    @property
    def spec(self) -> ActionSpec:
        return ActionSpec(self.name, self.label or self.name, self.scope, ActionForm)

    def available(self, target: Target) -> bool:
        return False

    def perform(self, context: ActionContext, form: ActionForm) -> str:
        raise ActionRefused(f"the {self.name!r} action is not available in this selflab yet; nothing was written", 501)


def default_actions() -> ActionRegistry:
    """The actions ``selflab console`` serves: stop, emergency stop, every
    human-oversight action (:class:`OversightAction`, :data:`OVERSIGHT_ACTIONS`)
    and search-space edits (:class:`SpaceAction`). A lab
    puts its own over any of them (``register(..., replace=True)``), or a
    :class:`Planned` placeholder to switch one off (answered with 501)."""
    registry = ActionRegistry()
    registry.register(StopAction(emergency=False))
    registry.register(StopAction(emergency=True))
    for name in OVERSIGHT_ACTIONS:
        registry.register(OversightAction(name))
    registry.register(SpaceAction())
    return registry


def origin_of(client_host: str | None) -> str:
    """Where an action came from, as the ledger records it."""
    return f"selflab console on host {socket.gethostname()!r}" + (f" (browser at {client_host})" if client_host else "")
