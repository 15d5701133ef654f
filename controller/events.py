"""Ledger event kinds and their payloads (pydantic, ``extra="forbid"``).

The ledger is a sequence of events; each has a ``kind`` and a payload of the
matching model below. Experiment events carry an ``experiment_id``:

====================  =======================================================
``proposed``          the planner asked for it (params, fidelity, reason)
``dispatched``        sent to an instrument (cost charged here)
``completed``         finished with readings (terminal)
``failed``            ran and failed; the failure is information (terminal)
``abandoned``         did not run, or was aborted: refused by limits, never
                      dispatched before a stop, or aborted by Ctrl-C (terminal)
``stale``             was in flight when the controller died (terminal)
====================  =======================================================

Campaign events: ``campaign_started`` (config snapshot, package version, seed;
``resumed`` on a resume), ``campaign_stopped`` (reason),
``instrument_offline`` / ``instrument_online``, and ``paused`` / ``resumed``
(an interlock held dispatch, with the rule and the reading), and
``recommended`` (the point the campaign would bet on now at the target
fidelity, recorded whenever it changes).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EXPERIMENT_KINDS = ("proposed", "dispatched", "completed", "failed", "abandoned", "stale", "attached")
TERMINAL_KINDS = ("completed", "failed", "abandoned", "stale")
CAMPAIGN_KINDS = ("campaign_started", "campaign_stopped", "instrument_offline", "instrument_online", "paused", "resumed", "recommended",
                  "note", "stop_requested")
KINDS = EXPERIMENT_KINDS + CAMPAIGN_KINDS


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CampaignStarted(_Payload):
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


class CampaignStopped(_Payload):
    reason: str
    """Short code: ``max_experiments``, ``max_cost``, ``max_time``,
    ``max_wall_time``, ``target``, ``interrupted``, ``terminated``, ``emergency_stop``,
    ``no_instruments``, ``planner_error``, ``planner_exhausted``, ``refusals``,
    ``error``, ``closed`` (a :class:`selflab.controller.study.Study` was closed)."""
    detail: str = ""


class InstrumentState(_Payload):
    reason: str = ""


class Interlocked(_Payload):
    rule: str
    reading: str
    value: float


class Recommended(_Payload):
    params: dict[str, float | int | str]
    fidelity: float = 1.0
    predicted: dict[str, dict[str, float]] = Field(default_factory=dict)
    observed: dict[str, float] | None = None
    basis: str = "best_observed"
    experiment_id: int | None = None
    """The experiment that measured it, when the recommendation is an observed point."""


class Proposed(_Payload):
    params: dict[str, float | int | str]
    fidelity: float = 1.0
    planner: str = ""
    reason: dict[str, Any] = Field(default_factory=dict)


class Dispatched(_Payload):
    cost: float = 0.0
    slot: int = 0
    expected_duration_s: float | None = None


class Completed(_Payload):
    outcomes: dict[str, float]
    duration_s: float | None = None
    recovered: bool = False
    """Reported after a restart by the instrument, which finished it while the
    controller was down."""


class Failed(_Payload):
    error_kind: str
    """``timeout``, ``disconnected``, ``bad_response``, ``out_of_limits`` or ``error``."""
    message: str


class Abandoned(_Payload):
    reason: str
    """``out_of_limits``, ``outside_space``, ``not_dispatched``, ``no_instrument``,
    or the stop that aborted it: ``interrupted``, ``terminated``, ``emergency_stop``, ``error``."""
    message: str = ""


class Attached(_Payload):
    """An experiment a person or another tool chose and ran, recorded whole
    (:meth:`selflab.controller.study.Study.attach`): it enters the ledger completed."""

    params: dict[str, float | int | str]
    outcomes: dict[str, float]
    fidelity: float = 1.0
    by: str = ""
    """Who attached it (a person, a tool)."""
    message: str = ""


class StopRequested(_Payload):
    """A person asked the running controller to stop (``selflab stop``, from any
    host): it reads the request from the ledger, so no signal is needed."""

    emergency: bool = True
    """Abort the experiments in flight through ``stop()`` (else: finish them, dispatch nothing more)."""
    by: str = ""
    """Who asked: ``selflab stop``, a person's name, a tool."""
    origin: str = ""
    """Where from: ``pid N on host H``."""
    reason: str = ""


class Note(_Payload):
    """A remark on the campaign (:meth:`selflab.controller.study.Study.note`)."""

    text: str
    by: str = ""


class Stale(_Payload):
    message: str = ""
    requeue: bool = False
    """Its params are owed a new run (``stale_policy: requeue``): a ledger fact,
    so a controller that dies before running them again still owes them
    after the next resume (:meth:`selflab.controller.projection.CampaignState.requeues_owed`)."""


PAYLOADS: dict[str, type[_Payload]] = {
    "campaign_started": CampaignStarted,
    "campaign_stopped": CampaignStopped,
    "instrument_offline": InstrumentState,
    "instrument_online": InstrumentState,
    "paused": Interlocked,
    "resumed": Interlocked,
    "recommended": Recommended,
    "proposed": Proposed,
    "dispatched": Dispatched,
    "completed": Completed,
    "failed": Failed,
    "abandoned": Abandoned,
    "stale": Stale,
    "attached": Attached,
    "note": Note,
    "stop_requested": StopRequested,
}
