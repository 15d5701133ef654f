"""Ledger event kinds, experiment states, and the payload of each kind
(pydantic, ``extra="forbid"``), and the event records themselves.

The ledger is a sequence of events; each has a ``kind`` (:class:`EventKind`)
and a payload of the matching model below (:func:`payload_model`).
Experiment events carry an ``experiment_id``:

====================  =======================================================
``proposed``          the planner asked for it (params, fidelity, reason)
``dispatched``        sent to an instrument (cost charged here)
``completed``         finished with readings (terminal)
``failed``            ran and failed; the failure is information (terminal)
``abandoned``         did not run, or was aborted: refused by limits, never
                      dispatched before a stop, or aborted by Ctrl-C (terminal)
``stale``             was in flight when the controller died (terminal)
``attached``          chosen and run by a person or another tool, recorded
                      whole: it enters the ledger completed (or, without its
                      result yet, running: a result comes with ``completed``)
``approved``          a person let a proposal awaiting approval be dispatched
``vetoed``            a person refused it, with a reason (terminal: it ends
                      ``abandoned``, reason ``vetoed``; the planner keeps away)
``edited``            a person changed its parameters (which approves it); the
                      ``proposed`` event keeps the original
====================  =======================================================

Human oversight (:mod:`selflab.controller.oversight`) writes ``approved``,
``vetoed``, ``edited``, ``note``, ``attach_requested`` (an experiment of a
person's own, which the campaign's lease holder records as ``attached``),
``pause_requested`` / ``resume_requested`` and ``stop_requested``, all
unfenced (epoch NULL): a person acts from any process while a runner holds
the lease, and the runner obeys by following the ledger.

Campaign events: ``campaign_started`` (config snapshot, package version, seed;
``resumed`` on a resume), ``campaign_stopped`` (reason),
``instrument_offline`` / ``instrument_online``, and ``paused`` / ``resumed``
(an interlock held dispatch, with the rule and the reading),
``recommended`` (the point the campaign would bet on now at the target
fidelity, recorded whenever it changes), ``note`` and ``stop_requested``;
``miscalibrated`` / ``calibration_restored`` (the planner's model of an
outcome left or re-entered the calibrated band, with its rolling figures:
:class:`CalibrationVerdict`, :mod:`selflab.controller.model_health`);
``drift_suspected`` (a drift check's reading of the reference point moved:
:class:`DriftSuspected`, :mod:`selflab.controller.drift`).

An experiment's state (:class:`ExperimentState`) is named after the event
that put it there. Both enums are :class:`enum.StrEnum`: a member equals,
hashes and prints as its string, so code that compares with strings keeps
working and the ledger stores the same text as before.

Build an event with its typed payload where it is made::

    NewEvent(campaign="demo", kind=EventKind.COMPLETED, experiment_id=3,
             payload=Completed(outcomes={"yield": 0.61}))
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from selflab.planners.calibration import CalibrationBand


class EventKind(StrEnum):
    """Every kind of ledger event; the value is what the ledger stores."""

    PROPOSED = "proposed"
    DISPATCHED = "dispatched"
    COMPLETED = "completed"
    FAILED = "failed"
    ABANDONED = "abandoned"
    STALE = "stale"
    ATTACHED = "attached"
    CAMPAIGN_STARTED = "campaign_started"
    CAMPAIGN_STOPPED = "campaign_stopped"
    INSTRUMENT_OFFLINE = "instrument_offline"
    INSTRUMENT_ONLINE = "instrument_online"
    PAUSED = "paused"
    RESUMED = "resumed"
    RECOMMENDED = "recommended"
    NOTE = "note"
    STOP_REQUESTED = "stop_requested"
    APPROVED = "approved"
    VETOED = "vetoed"
    EDITED = "edited"
    ATTACH_REQUESTED = "attach_requested"
    PAUSE_REQUESTED = "pause_requested"
    RESUME_REQUESTED = "resume_requested"
    MISCALIBRATED = "miscalibrated"
    CALIBRATION_RESTORED = "calibration_restored"
    SPACE_CHANGED = "space_changed"
    BOUNDARY_HIT = "boundary_hit"
    DRIFT_SUSPECTED = "drift_suspected"


class ExperimentState(StrEnum):
    """Where an experiment stands: ``proposed -> dispatched -> completed |
    failed | abandoned | stale``, or ``proposed -> abandoned`` when it never
    ran (an attached experiment starts ``completed``)."""

    PROPOSED = "proposed"
    DISPATCHED = "dispatched"
    COMPLETED = "completed"
    FAILED = "failed"
    ABANDONED = "abandoned"
    STALE = "stale"

    @property
    def terminal(self) -> bool:
        """Whether nothing more can happen to the experiment."""
        return self in TERMINAL_STATES


TERMINAL_STATES: frozenset[ExperimentState] = frozenset(
    {ExperimentState.COMPLETED, ExperimentState.FAILED, ExperimentState.ABANDONED, ExperimentState.STALE}
)
EXPERIMENT_KINDS: tuple[EventKind, ...] = (
    EventKind.PROPOSED, EventKind.DISPATCHED, EventKind.COMPLETED, EventKind.FAILED, EventKind.ABANDONED,
    EventKind.STALE, EventKind.ATTACHED, EventKind.APPROVED, EventKind.VETOED, EventKind.EDITED,
)
"""Kinds that carry an ``experiment_id``."""
TERMINAL_KINDS: tuple[EventKind, ...] = (EventKind.COMPLETED, EventKind.FAILED, EventKind.ABANDONED, EventKind.STALE)
"""Kinds that end an experiment (the first one wins)."""
CAMPAIGN_KINDS: tuple[EventKind, ...] = tuple(k for k in EventKind if k not in EXPERIMENT_KINDS)
KINDS: tuple[EventKind, ...] = EXPERIMENT_KINDS + CAMPAIGN_KINDS


class Payload(BaseModel):
    """Base of every event payload (see :func:`payload_model`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CampaignStarted(Payload):
    config: dict[str, Any]
    version: str
    seed: int
    clock: Literal["wall", "simulated"]
    resumed: bool = False
    host: str = ""
    pid: int = 0
    process_started: float = 0.0
    """The controller's process creation time (seconds since the epoch): with
    ``host`` and ``pid`` it proves which process runs the campaign, since a pid
    is reused once its process exits (0: not recorded)."""
    epoch: int = 0
    """The lease epoch the controller took (:mod:`selflab.controller.lease`); 0: before leases."""
    controller: Literal["run", "study"] = "run"
    """``run``: the campaign loop (``selflab run``), which ``selflab stop`` may
    signal; ``study``: a Python :class:`selflab.controller.study.Study`, which it must not."""


class CampaignStopped(Payload):
    reason: str
    """Short code: ``max_experiments``, ``max_cost``, ``max_time``,
    ``max_wall_time``, ``target``, ``interrupted``, ``terminated``, ``emergency_stop``,
    ``no_instruments``, ``planner_error``, ``planner_exhausted``, ``refusals``,
    ``error``, ``closed`` (a :class:`selflab.controller.study.Study` was closed)."""
    detail: str = ""


class InstrumentState(Payload):
    reason: str = ""


class Interlocked(Payload):
    rule: str
    reading: str
    value: float


class Recommended(Payload):
    params: dict[str, float | int | str]
    fidelity: float = 1.0
    predicted: dict[str, dict[str, float]] = Field(default_factory=dict)
    observed: dict[str, float] | None = None
    basis: str = "best_observed"
    experiment_id: int | None = None
    """The experiment that measured it, when the recommendation is an observed point."""


class Proposed(Payload):
    params: dict[str, float | int | str]
    fidelity: float = 1.0
    planner: str = ""
    reason: dict[str, Any] = Field(default_factory=dict)
    awaiting_approval: bool = Field(default=False, exclude_if=lambda held: not held)
    """Held for a person's approval (``oversight.approval``): not dispatched
    until ``approved`` or ``edited``, and never if ``vetoed``."""
    flags: list[str] = Field(default_factory=list, exclude_if=lambda flags: not flags)
    """Left out of the stored payload while false or empty, so a campaign without
    oversight writes the same ``proposed`` payload as before. Why a flagger held it (``oversight.approval: flagged``)."""


class Dispatched(Payload):
    cost: float = 0.0
    slot: int = 0
    expected_duration_s: float | None = None


class Completed(Payload):
    outcomes: dict[str, float]
    duration_s: float | None = None
    recovered: bool = False
    """Reported after a restart by the instrument, which finished it while the
    controller was down."""
    by: str = Field(default="", exclude_if=lambda who: not who)
    """A person who gave the result of their own attached experiment later
    (``selflab result``); left out of the stored payload when empty."""
    origin: str = Field(default="", exclude_if=lambda where: not where)


class Failed(Payload):
    error_kind: str
    """``timeout``, ``disconnected``, ``bad_response``, ``out_of_limits`` or ``error``."""
    message: str


class Abandoned(Payload):
    reason: str
    """``out_of_limits``, ``outside_space``, ``not_dispatched``, ``no_instrument``,
    or the stop that aborted it: ``interrupted``, ``terminated``, ``emergency_stop``, ``error``."""
    message: str = ""


class Attached(Payload):
    """An experiment a person or another tool chose and ran, recorded whole
    (:meth:`selflab.controller.study.Study.attach`): it enters the ledger completed."""

    params: dict[str, float | int | str]
    outcomes: dict[str, float]
    fidelity: float = 1.0
    by: str = ""
    """Who attached it (a person, a tool)."""
    message: str = ""
    request: int | None = None
    """The ``attach_requested`` event it fulfils (written from another process), if any."""
    pending: bool = False
    """Recorded without its result: it runs until a ``completed`` (or ``failed``) event ends it."""

    @field_validator("outcomes", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class Approved(Payload):
    """A person let a proposal awaiting approval be dispatched as proposed."""

    by: str
    origin: str = ""
    reason: str = ""


class Vetoed(Payload):
    """A person refused a proposal awaiting approval; it is never dispatched,
    and the planner keeps away from its neighbourhood."""

    by: str
    reason: str
    origin: str = ""


class Edited(Payload):
    """A person changed a proposal's parameters (inside the space and some
    instrument's limits) and so approved it; it is dispatched with ``params``."""

    params: dict[str, float | int | str]
    original: dict[str, float | int | str]
    """The parameters the planner proposed (also in the ``proposed`` event)."""
    by: str
    reason: str = ""
    origin: str = ""


class AttachRequested(Payload):
    """A person's experiment, asked to be recorded from another process; the
    holder of the campaign's lease turns it into an ``attached`` experiment
    (so experiment ids are allocated by one process only)."""

    params: dict[str, float | int | str]
    outcomes: dict[str, float] | None = None
    """``None``: not measured yet (recorded running; a result comes later)."""
    fidelity: float = 1.0
    by: str
    message: str = ""
    origin: str = ""


class HoldRequested(Payload):
    """A person paused (``pause_requested``) or resumed (``resume_requested``)
    dispatch: the runner sends nothing new while paused; what runs finishes."""

    by: str
    reason: str = ""
    origin: str = ""


class StopRequested(Payload):
    """A person asked the running controller to stop (``selflab stop``, from any
    host): it reads the request from the ledger, so no signal is needed."""

    emergency: bool = True
    """Abort the experiments in flight through ``stop()`` (else: finish them, dispatch nothing more)."""
    by: str = ""
    """Who asked: ``selflab stop``, a person's name, a tool."""
    origin: str = ""
    """Where from: ``pid N on host H``."""
    reason: str = ""


class Note(Payload):
    """A remark on the campaign (:meth:`selflab.controller.study.Study.note`)."""

    text: str
    by: str = ""


class Stale(Payload):
    message: str = ""
    requeue: bool = False
    """Its params are owed a new run (``stale_policy: requeue``): a ledger fact,
    so a controller that dies before running them again still owes them
    after the next resume (:meth:`selflab.controller.projection.CampaignState.requeues_owed`)."""


class CalibrationVerdict(Payload):
    """Payload of ``miscalibrated`` and ``calibration_restored``: one outcome's
    rolling prequential figures when the verdict changed, and the band they
    were judged by (:mod:`selflab.controller.model_health`)."""

    outcome: str
    experiment_id: int
    """The result whose score changed the verdict."""
    window: int
    n_scored: int
    """Results of this outcome scored so far."""
    z_mean: float
    z_spread: float
    """Root mean square of the last ``window`` z (1: calibrated)."""
    coverage90: float
    """Fraction of the last ``window`` results inside their 90 % intervals."""
    beyond3: float
    overconfidence: float | None = None
    """Nats of evidence of overconfidence in the last ``window`` z (:attr:`~selflab.planners.calibration.CalibrationStats.overconfidence`;
    ``None`` in events recorded before Session 11)."""
    band: CalibrationBand


class SpaceEditRecord(Payload):
    """One search-space edit (:mod:`selflab.controller.space_edits`)."""

    op: Literal["widen", "narrow", "add", "fix", "add_choice", "remove_choice"]
    parameter: str
    values: list[float | int | str] = Field(default_factory=list)
    backfill: float | int | str | None = None
    """add: the value the experiments before it had."""
    kind: Literal["float", "int", "categorical"] | None = None
    log: bool = False
    unit: str | None = None
    explore: int = Field(default=0, exclude_if=lambda n: not n)
    """widen: space-filling points owed in the opened range (:mod:`selflab.controller.space_explore`);
    left out of the stored payload when 0."""


class SpaceChanged(Payload):
    """A person edited the search space (``selflab space``, ``Study.edit_space``):
    proposals come only from ``space`` from now on; every past observation stays
    in the model (:mod:`selflab.controller.space_edits`)."""

    version: int = Field(ge=1)
    """1 for the first edit, then 2, ... (0: the config's space)."""
    edit: SpaceEditRecord
    space: dict[str, Any]
    """The whole new space: ``{"parameters": [...]}`` (a :class:`selflab.planners.space.SearchSpace`)."""
    by: str
    reason: str = ""
    origin: str = ""


class BoundaryHit(Payload):
    """Most recent proposals of a parameter sit on one of its bounds (more than
    half of the last 10 within 1e-6 of it, relative to the range): widening it may help."""

    parameter: str
    bound: Literal["low", "high"]
    value: float
    fraction: float
    window: int
    space_version: int = 0
    suggestion: str = ""
    """The command that widens it, e.g. ``selflab space CONFIG widen x6 0 0.75``."""



class DriftSuspected(Payload):
    """A drift check's reading of the reference point moved more than
    ``threshold_sigma`` from the reference's earlier readings
    (:mod:`selflab.controller.drift`); ``policy`` says what followed."""

    outcome: str
    reference: dict[str, float | int | str]
    """The reference point's parameters."""
    experiment_id: int
    """The drift check whose reading raised it."""
    earlier_ids: list[int]
    """The experiments of the earlier readings it was judged against."""
    earlier_mean: float
    earlier_std: float | None = None
    """Sample std of the earlier readings (``None``: only one)."""
    sigma: float
    """The sigma judged with: the larger of ``earlier_std`` and ``sigma_floor``
    (``min_sigma``), or their blend when the floor is a guess (:func:`selflab.controller.drift.judge`)."""
    sigma_floor: float
    floor_source: str = ""
    """``min_sigma``, ``planner_noise`` or ``outcome_range``."""
    new_reading: float
    shift: float
    """``new_reading - earlier_mean``, in the outcome's units."""
    shift_sigma: float
    """The shift over ``sigma * sqrt(1 + 1/n)`` (signed)."""
    threshold_sigma: float
    policy: Literal["warn", "pause", "recalibrate"]
    in_control_through: int | None = None
    """The last earlier reading's experiment: the drift came after it."""

PAYLOADS: dict[str, type[Payload]] = {
    EventKind.CAMPAIGN_STARTED: CampaignStarted,
    EventKind.CAMPAIGN_STOPPED: CampaignStopped,
    EventKind.INSTRUMENT_OFFLINE: InstrumentState,
    EventKind.INSTRUMENT_ONLINE: InstrumentState,
    EventKind.PAUSED: Interlocked,
    EventKind.RESUMED: Interlocked,
    EventKind.RECOMMENDED: Recommended,
    EventKind.PROPOSED: Proposed,
    EventKind.DISPATCHED: Dispatched,
    EventKind.COMPLETED: Completed,
    EventKind.FAILED: Failed,
    EventKind.ABANDONED: Abandoned,
    EventKind.STALE: Stale,
    EventKind.ATTACHED: Attached,
    EventKind.NOTE: Note,
    EventKind.STOP_REQUESTED: StopRequested,
    EventKind.APPROVED: Approved,
    EventKind.VETOED: Vetoed,
    EventKind.EDITED: Edited,
    EventKind.ATTACH_REQUESTED: AttachRequested,
    EventKind.PAUSE_REQUESTED: HoldRequested,
    EventKind.RESUME_REQUESTED: HoldRequested,
    EventKind.MISCALIBRATED: CalibrationVerdict,
    EventKind.CALIBRATION_RESTORED: CalibrationVerdict,
    EventKind.SPACE_CHANGED: SpaceChanged,
    EventKind.BOUNDARY_HIT: BoundaryHit,
    EventKind.DRIFT_SUSPECTED: DriftSuspected,
}
"""Kind -> the model of its payload (string keys work: a kind equals its value)."""


def payload_model(kind: str) -> type[Payload]:
    """The payload model of event ``kind`` (an :class:`EventKind` or its string).

    Raises:
        ValueError: ``kind`` is not an event kind.
    """
    try:
        return PAYLOADS[kind]
    except KeyError:
        raise ValueError(f"unknown event kind {kind!r}; the kinds are {', '.join(EventKind)}") from None


def _known_kind(value: Any) -> Any:
    if isinstance(value, str) and value not in PAYLOADS:
        raise ValueError(f"unknown event kind {value!r}")
    return value


class NewEvent(BaseModel):
    """An event to append; ``at`` defaults to now on the wall clock.

    ``payload`` is the kind's payload model (:func:`payload_model`), which is
    checked against ``kind`` here, or the same as a plain mapping, which the
    ledger checks when it appends.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    campaign: str
    if TYPE_CHECKING:  # what a caller may pass: the validators below make the member and the mapping
        kind: EventKind | str
    else:
        kind: EventKind
    experiment_id: int | None = None
    instrument: str | None = None
    at: datetime | None = None
    if TYPE_CHECKING:
        payload: dict[str, Any] | Payload = {}
    else:
        payload: dict[str, Any] = {}

    _kind = field_validator("kind", mode="before")(_known_kind)

    @field_validator("payload", mode="before")
    @classmethod
    def _typed_payload(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, Payload):
            return value
        kind = info.data.get("kind")
        if kind is not None and type(value) is not PAYLOADS[kind]:
            raise ValueError(f"a {kind} event takes a {PAYLOADS[kind].__name__} payload, not {type(value).__name__}")
        return value.model_dump(mode="json")


class Event(BaseModel):
    """An event read back from the ledger, with its position ``id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: int
    campaign: str
    kind: EventKind
    experiment_id: int | None
    instrument: str | None
    at: datetime
    recorded_at: datetime
    payload: dict[str, Any]

    _kind = field_validator("kind", mode="before")(_known_kind)

    def typed_payload(self) -> Payload:
        """The payload as its kind's model (fields a newer selflab added are dropped)."""
        model = PAYLOADS[self.kind]
        return model.model_validate({k: v for k, v in self.payload.items() if k in model.model_fields})
