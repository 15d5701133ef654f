"""The search space, objectives and outcome constraints, as pure pydantic data.

These models are shared by the config (``selflab.controller.config``) and by every
planner. A point is a plain ``dict[str, float | int | str]`` keyed by parameter
name. Planners work on the unit cube: :meth:`SearchSpace.from_unit` maps a
row ``u`` of shape ``(d,)`` in ``[0, 1]^d`` to a point, and
:meth:`SearchSpace.to_unit` maps back.

Example::

    space = SearchSpace(parameters=[
        FloatParameter(name="temperature", low=30, high=150, unit="degC"),
        IntParameter(name="n_layers", low=1, high=5),
        CategoricalParameter(name="solvent", choices=["water", "ethanol"]),
    ])
    space.from_unit([0.5, 0.99, 0.2])
    # {'temperature': 90.0, 'n_layers': 5, 'solvent': 'water'}
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

Value = float | int | str
Point = dict[str, Value]


def point_key(point: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A hashable key of a point, the same whatever the order of its names
    (to tell measured or pending points apart from a pool's)."""
    return tuple(sorted(point.items()))

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""A configured number: NaN and infinities are refused (pydantic error type
``finite_number``). Every float a config sets is one of these."""

_ECHO_WIDTH = 80
_echo = reprlib.Repr()
_echo.maxlevel, _echo.maxlist, _echo.maxtuple, _echo.maxdict, _echo.maxset = 2, 4, 4, 4, 4
_echo.maxstring, _echo.maxother, _echo.maxlong = 60, 60, 40


def brief(value: Any) -> str:
    """``repr(value)`` for an error message, at most 80 characters.

    Never expands a large or deeply nested value (a YAML alias bomb, a
    megabyte string): nesting, items and strings are cut short first.

    >>> brief("x" * 1000)[:12], len(brief("x" * 1000)) <= 80
    ("'xxxxxxxxxxx", True)
    >>> brief([[1, 2, 3, 4, 5]] * 3)
    '[[1, 2, 3, 4, ...], [1, 2, 3, 4, ...], [1, 2, 3, 4, ...]]'
    """
    try:
        text = _echo.repr(value)
    except Exception:  # a broken __repr__ of a user object
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _ECHO_WIDTH else text[: _ECHO_WIDTH - 3] + "..."


def or_one_line(schema: JsonSchemaValue, pattern: re.Pattern[str], example: str) -> JsonSchemaValue:
    """``schema`` (a model's JSON Schema) widened to also allow the model's
    one-line string form, which its ``mode="before"`` validator reads with
    ``pattern``, e.g. ``"yield >= 0.6"``."""
    return {"anyOf": [{"type": "string", "pattern": pattern.pattern, "examples": [example]}, schema]}


_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatParameter(_Strict):
    """A continuous parameter on ``[low, high]``, optionally searched on a log scale."""

    type: Literal["float"] = "float"
    name: str = Field(pattern=_NAME)
    low: FiniteFloat
    high: FiniteFloat
    log: bool = False
    unit: str | None = None

    @model_validator(mode="after")
    def _check_bounds(self) -> FloatParameter:
        _check_low_high(self.low, self.high, self.log)
        return self


class IntParameter(_Strict):
    """An integer parameter on ``[low, high]`` (both included)."""

    type: Literal["int"] = "int"
    name: str = Field(pattern=_NAME)
    low: int
    high: int
    log: bool = False
    unit: str | None = None

    @model_validator(mode="after")
    def _check_bounds(self) -> IntParameter:
        _check_low_high(self.low, self.high, self.log)
        return self


class CategoricalParameter(_Strict):
    """A parameter that takes one of a list of unordered choices."""

    type: Literal["categorical"] = "categorical"
    name: str = Field(pattern=_NAME)
    choices: list[str | int | float] = Field(min_length=1)
    unit: str | None = None

    @model_validator(mode="after")
    def _check_choices(self) -> CategoricalParameter:
        if len(set(map(str, self.choices))) != len(self.choices):
            raise ValueError("choices must be distinct")
        return self


def _check_low_high(low: float, high: float, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("low and high must be finite numbers")
    if low >= high:
        raise ValueError(f"low ({low:g}) must be below high ({high:g})")
    if log and low <= 0:
        raise ValueError(f"a log-scale parameter needs low > 0, got {low:g}")


Parameter = Annotated[
    Union[FloatParameter, IntParameter, CategoricalParameter], Field(discriminator="type")
]


class Objective(_Strict):
    """An outcome to maximize or minimize, or (``objective: learn``) to map.

    ``objective: learn``: the campaign wants a map of this output rather than
    its best value; the ``bo`` planner then reduces its model's integrated
    posterior variance (:mod:`selflab.planners.learn`), and ``direction`` and
    ``reference_point`` do not apply. A campaign's objectives are all
    ``optimize`` or all ``learn``.
    """

    name: str = Field(pattern=_NAME)
    direction: Literal["maximize", "minimize"] = "maximize"
    unit: str | None = None
    reference_point: FiniteFloat | None = None
    """For several objectives: the worst value still worth having, the corner of
    the hypervolume (in the objective's own units). Inferred when unset."""
    objective: Literal["optimize", "learn"] = "optimize"
    """``optimize`` (find the best value, in ``direction``) or ``learn`` (map the output: no optimum)."""

    @property
    def learn(self) -> bool:
        """Whether this output is to be mapped (``objective: learn``) rather than optimized."""
        return self.objective == "learn"

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b`` for this objective."""
        return a > b if self.direction == "maximize" else a < b

    @property
    def sign(self) -> float:
        """``+1.0`` to maximize, ``-1.0`` to minimize: ``sign * value`` grows as the value gets better."""
        return 1.0 if self.direction == "maximize" else -1.0


_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=)\s*(\S+)\s*$")


class OutcomeConstraint(_Strict):
    """A bound on an outcome, written ``"yield >= 0.6"`` or as a mapping."""

    outcome: str = Field(pattern=_NAME)
    op: Literal[">=", "<="]
    value: FiniteFloat

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, str):
            match = _CONSTRAINT.match(data)
            if not match:
                raise ValueError(
                    f"cannot read {brief(data)}: write it as 'OUTCOME >= VALUE' or 'OUTCOME <= VALUE'"
                )
            outcome, op, value = match.groups()
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"cannot read {brief(data)}: {brief(value)} is not a number") from None
            return {"outcome": outcome, "op": op, "value": number}
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return or_one_line(handler(core_schema), _CONSTRAINT, "yield >= 0.6")

    def satisfied(self, outcomes: Mapping[str, float]) -> bool:
        """Whether ``outcomes`` meet this constraint (a missing outcome does not)."""
        if self.outcome not in outcomes:
            return False
        x = outcomes[self.outcome]
        return x >= self.value if self.op == ">=" else x <= self.value

    def __str__(self) -> str:
        return f"{self.outcome} {self.op} {self.value:g}"


class SearchSpace(_Strict):
    """An ordered list of parameters; the order fixes the unit-cube columns."""

    parameters: list[Parameter] = Field(min_length=1)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    @property
    def dim(self) -> int:
        return len(self.parameters)

    def from_unit(self, u: Sequence[float]) -> Point:
        """Map ``u`` (shape ``(d,)``, each in ``[0, 1]``) to a point in the space."""
        if len(u) != self.dim:
            raise ValueError(f"expected {self.dim} coordinates, got {len(u)}")
        point: Point = {}
        for p, x in zip(self.parameters, u):
            x = min(max(float(x), 0.0), 1.0)
            if isinstance(p, CategoricalParameter):
                point[p.name] = p.choices[min(int(x * len(p.choices)), len(p.choices) - 1)]
            elif isinstance(p, IntParameter):
                # Equal-width bins over the integers keep every value equally likely.
                if p.log:  # bins of equal width in log(v) over [low, high + 1)
                    lo, hi = math.log(p.low), math.log(p.high + 1)
                    v = math.floor(math.exp(lo + x * (hi - lo)))
                else:
                    v = p.low + min(int(x * (p.high - p.low + 1)), p.high - p.low)
                point[p.name] = int(min(max(v, p.low), p.high))
            else:
                if p.log:
                    lo, hi = math.log(p.low), math.log(p.high)
                    point[p.name] = min(max(math.exp(lo + x * (hi - lo)), p.low), p.high)
                else:
                    point[p.name] = p.low + x * (p.high - p.low)
        return point

    def to_unit(self, point: Mapping[str, Value]) -> list[float]:
        """Map a point to the unit cube (categoricals to their bin centre)."""
        out: list[float] = []
        for p in self.parameters:
            v = point[p.name]
            if isinstance(p, CategoricalParameter):
                i = [str(c) for c in p.choices].index(str(v))
                out.append((i + 0.5) / len(p.choices))
            elif isinstance(p, IntParameter):  # bin centre
                if p.log:
                    lo, hi = math.log(p.low), math.log(p.high + 1)
                    out.append((math.log(int(v) + 0.5) - lo) / (hi - lo))
                else:
                    out.append((int(v) - p.low + 0.5) / (p.high - p.low + 1))
            elif p.log:
                lo, hi = math.log(p.low), math.log(p.high)
                out.append((math.log(float(v)) - lo) / (hi - lo))
            else:
                out.append((float(v) - p.low) / (p.high - p.low))
        return out

    def violations(self, point: Mapping[str, Any]) -> list[str]:
        """Why ``point`` is not in the space; empty when it is."""
        faults: list[str] = []
        for p in self.parameters:
            if p.name not in point:
                faults.append(f"{p.name} is missing")
                continue
            v = point[p.name]
            if isinstance(p, CategoricalParameter):
                if str(v) not in {str(c) for c in p.choices}:
                    faults.append(f"{p.name}={brief(v)} is not one of {brief(p.choices)}")
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                faults.append(f"{p.name}={brief(v)} is not a number")
            elif isinstance(p, IntParameter) and int(v) != v:
                faults.append(f"{p.name}={brief(v)} is not an integer")
            elif not p.low <= v <= p.high:
                faults.append(f"{p.name}={v:g} is outside [{p.low:g}, {p.high:g}]")
        extra = set(point) - set(self.names)
        if extra:
            faults.append(f"unknown parameters {sorted(extra)}")
        return faults
