"""The campaign config's models: pure pydantic data, every model forbidding
unknown fields (:class:`LabConfig` and its parts), and the durations people
write (:func:`parse_duration`). Loading and checking a config is
:mod:`selflab.controller.config`'s job.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Annotated, Any, Literal

import pytimeparse2
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from selflab.controller.expressions import Expression
from selflab.planners.space import FiniteFloat, Objective, OutcomeConstraint, Parameter, SearchSpace, brief, or_one_line

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_ISO_DURATION = TypeAdapter(datetime.timedelta)
"""Reads ISO 8601 durations such as ``PT2H`` (pydantic's own parser)."""
_DURATION_EXAMPLES = ["90s", "30m", "2h", "3d", "1h30m", "1.5h", "PT2H", "P1DT2H"]


def not_finite(value: Any) -> str:
    """The message for a configured number that is NaN or infinite."""
    return f"must be a finite number (got {brief(value)}); NaN and infinity are not allowed"


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a string as people write durations.

    Strings are read by ``pytimeparse2`` (``"90s"``, ``"30m"``, ``"2h"``,
    ``"3d"``, ``"1h30m"``, ``"1.5h"``, ``"2 hours"``, ``"3600"``) or, when they
    start with ``P``, as ISO 8601 durations (``"PT2H"``, ``"P1DT2H"``).
    Anything else is returned as it is, for the number check that follows.

    >>> [parse_duration(text) for text in ("1h30m", "1.5h", "PT2H", "90")]
    [5400.0, 5400.0, 7200.0, 90.0]
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    seconds: float | None = None
    if text[:1] in ("P", "p"):
        try:
            seconds = _ISO_DURATION.validate_python(text.upper()).total_seconds()
        except ValidationError:
            seconds = None
    elif text:
        seconds = pytimeparse2.parse(text)  # (None for what it cannot read, e.g. 'soon', or '1e999', which overflows)
    if seconds is None:
        raise ValueError(f"cannot read duration {brief(value)}: write seconds (3600) or e.g. "
                         f"{', '.join(map(repr, _DURATION_EXAMPLES[:-1]))} or {_DURATION_EXAMPLES[-1]!r}")
    return float(seconds)


Duration = Annotated[
    FiniteFloat,
    BeforeValidator(parse_duration),
    Field(gt=0),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                              {"type": "string", "description": "a duration", "examples": _DURATION_EXAMPLES}]}),
]
"""Seconds > 0; YAML may say ``"30m"``, ``"1h30m"`` or ``"PT2H"`` (see :func:`parse_duration`)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InstrumentConfig(_Strict):
    """One instrument: a driver and how the campaign may use it.

    ``capacity``, ``fidelity`` and ``cost`` override what the driver declares;
    ``limits`` intersect with the driver's declared limits.
    """

    name: str = Field(pattern=_NAME)
    driver: str = Field(min_length=1, description="'package.module:Class' or an entry-point name in 'selflab.instruments'")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the driver class")
    capacity: int | None = Field(default=None, ge=1, description="concurrent experiments (default: the driver's, else 1)")
    fidelity: FiniteFloat | None = Field(default=None, gt=0, le=1, description="fidelity served, 1 = target (default: the driver's, else 1)")
    cost: float | str | None = Field(
        default=None, description="cost units per experiment: a number >= 0, or an expression of the parameters such as '1 + residence_time / 10' (default: the driver's, else 1)"
    )
    limits: dict[str, tuple[FiniteFloat, FiniteFloat]] = Field(default_factory=dict, description="extra safe ranges, inclusive")
    timeout: Duration = Field(default=3600.0, description="wall-clock seconds before an experiment is failed as timed out")
    max_consecutive_failures: int = Field(default=5, ge=1, description="failed experiments in a row before the instrument is taken offline")
    remote: bool = Field(default=False, description="run by `selflab worker` on the instrument's own host; `selflab run` only queues its experiments (Postgres ledger)")
    retries: int = Field(default=0, ge=0, le=10, description="extra attempts of an experiment after a timeout, disconnect or bad response")
    retry_backoff: Duration = Field(default=1.0, description="seconds before the first retry; doubles each time (wall clock only)")
    executor: Literal["local", "ray"] = Field(default="local", description="where run() executes: here, or as a Ray task on the Ray cluster "
                                              "(pip install 'selflab[ray]'; RAY_ADDRESS names a cluster, else one starts on this machine)")
    num_cpus: FiniteFloat | None = Field(default=None, gt=0, description="executor: ray only: CPUs each experiment's Ray task reserves (default 1)")
    num_gpus: FiniteFloat | None = Field(default=None, ge=0, description="executor: ray only: GPUs each experiment's Ray task reserves (default 0)")

    @model_validator(mode="after")
    def _check_executor(self) -> InstrumentConfig:
        """``num_cpus``/``num_gpus`` reserve Ray resources: only with ``executor: ray``, never with ``remote``."""
        given = [name for name in ("num_cpus", "num_gpus") if getattr(self, name) is not None]
        if given and self.executor != "ray":
            raise ValueError(f"{' and '.join(given)} reserve{'s' if len(given) == 1 else ''} Ray resources: set executor: ray, or remove {' and '.join(given)}")
        if self.executor == "ray" and self.remote:
            raise ValueError("an instrument runs either on its own host (remote: true) or as Ray tasks (executor: ray), not both")
        return self

    @field_validator("cost")
    @classmethod
    def _check_cost(cls, value: float | str | None) -> float | str | None:
        """A number (``2.5`` or ``"2.5"``) must be finite and >= 0; any other
        string must be an allowed expression (where it is evaluated is
        checked when the fleet is built)."""
        if isinstance(value, str):
            try:
                number = float(value)  # "2.5" is a number
            except ValueError:
                Expression.parse(value)  # ExpressionError is a ValueError: reported on this field
                return value
            value = number
        if value is not None and not math.isfinite(value):
            raise ValueError(not_finite(value))
        if value is not None and value < 0:
            raise ValueError(f"must be >= 0 (got {brief(value)})")
        return value

    def cost_expression(self) -> Expression | None:
        return Expression.parse(self.cost) if isinstance(self.cost, str) else None


class PlannerConfig(_Strict):
    """Which planner proposes experiments, and its options."""

    kind: str = "sobol"
    options: dict[str, Any] = Field(default_factory=dict)


class TargetRule(_Strict):
    """Stop once the best observed value of ``objective`` reaches ``value``."""

    objective: str | None = Field(default=None, description="default: the only objective")
    value: FiniteFloat


class StopRules(_Strict):
    """When the campaign ends; the first rule met stops it."""

    max_experiments: int | None = Field(default=None, ge=1, description="completed experiments")
    max_cost: FiniteFloat | None = Field(default=None, gt=0, description="total cost units spent")
    max_time: Duration | None = Field(default=None, description="campaign-clock seconds (simulated when the clock is)")
    max_wall_time: Duration | None = Field(default=None, description="real seconds, whatever the clock")
    target: TargetRule | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> StopRules:
        if not any(v is not None for v in (self.max_experiments, self.max_cost, self.max_time, self.max_wall_time)):
            raise ValueError("give at least one of max_experiments, max_cost, max_time, max_wall_time")
        return self


_CONDITION = re.compile(r"^\s*(.+)\.([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*(\S+)\s*$")


class Condition(_Strict):
    """``<instrument>.<reading> <op> <value>``, e.g. ``"hotplate.temperature > 200"``."""

    instrument: str
    reading: str
    op: Literal[">", ">=", "<", "<="]
    value: FiniteFloat

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, str):
            match = _CONDITION.match(data)
            if not match:
                raise ValueError(f"cannot read {brief(data)}: write it as 'INSTRUMENT.READING > VALUE' (or >=, <, <=)")
            instrument, reading, op, value = match.groups()
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"cannot read {brief(data)}: {brief(value)} is not a number") from None
            return {"instrument": instrument.strip(), "reading": reading, "op": op, "value": number}
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return or_one_line(handler(core_schema), _CONDITION, "hotplate.temperature > 200")

    def holds(self, value: float) -> bool:
        return {">": value > self.value, ">=": value >= self.value, "<": value < self.value, "<=": value <= self.value}[self.op]

    def __str__(self) -> str:
        return f"{self.instrument}.{self.reading} {self.op} {self.value:g}"


class Interlock(_Strict):
    """Pause dispatch while a reading is unsafe; resume when it is safe again.

    The instrument is polled with ``read()`` every ``poll`` seconds; its
    experiment results update the reading too. Experiments in flight finish.
    """

    pause_when: Condition
    resume_when: Condition | None = Field(default=None, description="default: when pause_when no longer holds")
    poll: Duration = Field(default=5.0, description="seconds between read() polls")

    @model_validator(mode="after")
    def _same_instrument(self) -> Interlock:
        if self.resume_when is not None and self.resume_when.instrument != self.pause_when.instrument:
            raise ValueError("resume_when must watch the same instrument as pause_when")
        return self


class OversightConfig(_Strict):
    """Human oversight of a running campaign (:mod:`selflab.controller.oversight`)."""

    approval: Literal["off", "all", "flagged"] = Field(
        default="off", description="off: proposals go straight to the instruments; all: every proposal awaits a person's "
        "approval; flagged: only those a flagger marks (extrapolation, closeness to an instrument limit)")
    veto_radius: float = Field(
        default=0.1, gt=0, le=0.5, description="no later proposal comes within this max-coordinate distance of a vetoed "
        "point on the unit cube (each parameter scaled to [0, 1])")
    limit_margin: float = Field(
        default=0.05, ge=0, le=0.5, description="flagged: a proposal within this fraction of a parameter's range of an "
        "instrument limit is flagged")


class DriftConfig(_Strict):
    """Drift checks (:mod:`selflab.controller.drift`): re-measure a reference
    point every ``every`` completed experiments and judge whether the readings moved."""

    every: int = Field(ge=1, description="re-measure the reference after every N completed experiments")
    reference: Literal["incumbent"] | dict[str, float | int | str] = Field(
        default="incumbent", description="incumbent: the best observed point when the first check is due (kept for every "
        "later check); or a point {parameter: value, ...} inside the space and an instrument's limits")
    threshold_sigma: FiniteFloat = Field(default=4.0, gt=0, description="a reading more than this many sigma away from the "
                                         "reference's earlier readings is a suspected drift")
    policy: Literal["warn", "pause", "recalibrate"] = Field(
        default="warn", description="warn: record drift_suspected and go on; pause: also hold dispatch until a person resumes "
        "(selflab resume); recalibrate: also offset earlier results by the measured shift for the planner")
    outcome: str | None = Field(default=None, description="the outcome compared (default: the first objective)")
    min_sigma: FiniteFloat | None = Field(default=None, gt=0, description="the smallest sigma the readings are judged with, "
                                          "in the outcome's units (default: the planner's noise estimate or 1 % of the observed range)")

    @field_validator("reference", mode="before")
    @classmethod
    def _one_reference(cls, value: Any) -> Any:
        """One line for what is neither ``incumbent`` nor a mapping (not one per member of the union)."""
        if value == "incumbent" or isinstance(value, dict):
            return value
        raise ValueError(f"must be 'incumbent' or a point {{parameter: value, ...}} (got {brief(value)})")


class WarmStartSource(_Strict):
    """An earlier, related campaign whose completed experiments warm-start this
    one (:mod:`selflab.controller.warm_sources`, :mod:`selflab.planners.warm_start`)."""

    ledger: str | None = Field(default=None, description="SQLAlchemy URL of the source's ledger, read only "
                               "(default: this campaign's own ledger)")
    campaign: str = Field(min_length=1, description="the source campaign's name in that ledger")


class LabConfig(_Strict):
    """A whole campaign."""

    name: str = Field(pattern=_NAME, max_length=100, description="campaign name; names the default ledger file")
    description: str = ""
    seed: int = Field(default=0, ge=0)
    parameters: list[Parameter] = Field(min_length=1)
    objectives: list[Objective] = Field(min_length=1)
    constraints: list[OutcomeConstraint] = Field(default_factory=list)
    instruments: list[InstrumentConfig] = Field(min_length=1)
    planner: PlannerConfig = Field(default_factory=PlannerConfig)
    stop: StopRules
    target_fidelity: FiniteFloat = Field(default=1.0, gt=0, le=1)
    clock: Literal["auto", "wall", "simulated"] = Field(
        default="auto", description="auto: simulated when every instrument declares duration() and runs in this process "
        "(not remote, not executor: ray)"
    )
    ledger: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite:///runs/<name>.sqlite")
    interlocks: list[Interlock] = Field(default_factory=list)
    oversight: OversightConfig = Field(default_factory=OversightConfig)
    warm_start: list[WarmStartSource] = Field(
        default_factory=list, description="earlier related campaigns to transfer from through a multi-task GP, matched by "
        "parameter names (planner bo; selflab.planners.warm_start)")
    drift: DriftConfig | None = Field(default=None, description="drift checks of a reference point (off when absent)")
    stale_policy: Literal["requeue", "drop"] = Field(
        default="requeue", description="experiments in flight at a crash whose outcome is unknown: run their params again, or not"
    )

    @property
    def ledger_url(self) -> str:
        return self.ledger or f"sqlite:///runs/{self.name}.sqlite"

    @property
    def space(self) -> SearchSpace:
        return SearchSpace(parameters=self.parameters)

    @property
    def outcome_names(self) -> list[str]:
        """Objectives, then constrained outcomes, each once, in config order."""
        names = [o.name for o in self.objectives]
        names += [c.outcome for c in self.constraints if c.outcome not in names]
        return names
