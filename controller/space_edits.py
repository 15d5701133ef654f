"""Search-space edits while a campaign runs: the edits, their rules, and what
the projection keeps of them. Pure: no I/O.

A campaign's search space starts as its config's ``parameters`` and changes
only through ``space_changed`` ledger events, each with a version number
(1, 2, ...), the edit, the whole new space, who made it and why. The edits
(:class:`SpaceEdit`, ``op``):

=================  ==================================================================
``widen``          ``NAME LOW HIGH``: a numeric parameter's range grows (also frees a
                   fixed parameter)
``narrow``         ``NAME LOW HIGH``: a numeric parameter's range shrinks
``add``            ``NAME LOW HIGH`` (float, or int with ``kind``), or ``NAME C1 C2 ...``
                   (``kind: categorical``), with a required ``backfill``: the value
                   every experiment so far had
``fix``            ``NAME VALUE``: proposed only at ``VALUE`` from now on (stored as a
                   one-choice categorical)
``add_choice``     ``NAME CHOICE``: a categorical parameter gains a choice
``remove_choice``  ``NAME CHOICE``: a categorical parameter loses one
=================  ==================================================================

:func:`apply_edit` turns the space and an edit into the new space or
refuses in one line (:class:`EditRefused`); :func:`limit_faults` checks a
space against the instruments' limits with the config's own wording.
:class:`SpaceView` is the projection's part (current space, version, edits,
backfills); :func:`model_space` is the hull of the data and the current space
that the planner's model is scaled over (every past observation stays in
the model, while proposals come only from the current space), and
:func:`boundary_hits` is the boundary check (Ax's rule: more than half of the
last proposals of a parameter within 1e-6 of a bound, relative to its range).

Example::

    new = apply_edit(space, SpaceEdit(op="widen", parameter="temperature", values=[30, 180]))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from selflab.planners.protocol import Observation, Pending, PlanContext
from selflab.planners.space import CategoricalParameter, FloatParameter, IntParameter, Parameter, SearchSpace, Value, brief

EditOp = Literal["widen", "narrow", "add", "fix", "add_choice", "remove_choice"]
OPS: tuple[str, ...] = ("widen", "narrow", "add", "fix", "add_choice", "remove_choice")
BOUNDARY_WINDOW = 10
"""The boundary check looks at this many recent proposals of a parameter ..."""
BOUNDARY_MIN = 5
"""... once it has at least this many (since the last edit)."""
BOUNDARY_TOL = 1e-6
"""Within this fraction of the parameter's range of a bound counts as on it (Ax's rule)."""


class EditRefused(ValueError):
    """An edit that is not allowed; nothing was written. One line, naming the parameter."""


class SpaceEdit(BaseModel):
    """One edit of the search space (see the module docs for each ``op``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    op: EditOp
    parameter: str
    values: list[float | int | str] = []
    """widen/narrow/add (numeric): ``[low, high]``; add (categorical): the choices; fix: ``[value]``;
    add_choice/remove_choice: ``[choice]``."""
    backfill: float | int | str | None = None
    """add: the value the experiments so far had (required)."""
    kind: Literal["float", "int", "categorical"] | None = None
    """add: the new parameter's type (default: float, or categorical when a value is not a number)."""
    log: bool = False
    """add: a log-scale numeric parameter."""
    unit: str | None = None
    explore: int = Field(default=0, ge=0, le=100)
    """widen: propose this many space-filling points in the opened part of the
    range first (:mod:`selflab.controller.space_explore`); 0: leave it to the planner."""

    @model_validator(mode="after")
    def _explore_widens(self) -> SpaceEdit:
        if self.explore and self.op != "widen":
            raise ValueError(f"explore goes with widen only (not {self.op})")
        return self


def _number(value: Any, name: str, integer: bool = False) -> float | int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise EditRefused(f"{name}: {brief(value)} is not a number; nothing was written") from None
    if not math.isfinite(number):
        raise EditRefused(f"{name}: must be a finite number (got {brief(value)}); nothing was written")
    if integer:
        if number != int(number):
            raise EditRefused(f"{name} is an integer parameter: {brief(value)} is not an integer; nothing was written")
        return int(number)
    return number


def _choice(value: Any, choices: Sequence[Any]) -> Any:
    """``value`` (text from the command line) as the type of ``choices``: a number when they all are."""
    if isinstance(value, str) and choices and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if all(isinstance(c, int) for c in choices) and number == int(number) else number
    return value


def _parameter(data: dict[str, Any], name: str) -> Parameter:
    """A parameter from its fields, or the model's complaint as one line."""
    cls = {"float": FloatParameter, "int": IntParameter, "categorical": CategoricalParameter}[data["type"]]
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        message = str((err.get("ctx") or {}).get("error", err["msg"])).removeprefix("Value error, ")
        where = ".".join(str(p) for p in err["loc"])
        raise EditRefused(f"{name}{'.' + where if where else ''}: {message}; nothing was written") from None


def _numeric_def(name: str, history: Sequence[SearchSpace]) -> FloatParameter | IntParameter | None:
    """The latest numeric definition of ``name`` in the space's history (a fixed parameter's own)."""
    for space in reversed(history):
        for p in space.parameters:
            if p.name == name and isinstance(p, (FloatParameter, IntParameter)):
                return p
    return None


def fixed_value(p: Parameter, history: Sequence[SearchSpace]) -> Value | None:
    """The value a fixed parameter is held at (a one-choice categorical that was numeric, or any one-choice categorical)."""
    if isinstance(p, CategoricalParameter) and len(p.choices) == 1:
        return p.choices[0]
    return None


def apply_edit(space: SearchSpace, edit: SpaceEdit, history: Sequence[SearchSpace] = ()) -> SearchSpace:
    """The space after ``edit``; raises :class:`EditRefused` (one line naming
    the parameter) when the edit is not allowed. ``history``: the campaign's
    earlier spaces, which say what type a fixed parameter had."""
    name, values = edit.parameter, list(edit.values)
    params = list(space.parameters)
    index = next((i for i, p in enumerate(params) if p.name == name), None)
    known = ", ".join(space.names)
    if edit.op == "add":
        if index is not None:
            raise EditRefused(f"cannot add {name}: the space has a parameter {name} already; nothing was written")
        if edit.backfill is None:
            raise EditRefused(f"adding {name} needs a backfill value: the value {name} had in the experiments so far "
                              f"(selflab space: --backfill VALUE; Python: backfill=VALUE; the console: its backfill box); "
                              "nothing was written")
        kind = edit.kind or ("float" if all(_is_number(v) for v in values) else "categorical")
        if kind == "categorical":
            if not values:
                raise EditRefused(f"adding {name} needs its choices; nothing was written")
            new = _parameter({"type": "categorical", "name": name, "choices": values, "unit": edit.unit}, name)
        else:
            if len(values) != 2:
                raise EditRefused(f"adding {name} needs LOW HIGH (got {len(values)} value(s)); nothing was written")
            integer = kind == "int"
            low, high = (_number(v, name, integer) for v in values)
            _number(edit.backfill, f"{name} backfill", integer)
            new = _parameter({"type": kind, "name": name, "low": low, "high": high, "log": edit.log, "unit": edit.unit}, name)
        return SearchSpace(parameters=[*params, new])
    if index is None:
        raise EditRefused(f"unknown parameter {name!r} (the parameters are {known}); nothing was written")
    p = params[index]
    fixed = fixed_value(p, history)
    numeric = p if isinstance(p, (FloatParameter, IntParameter)) else (_numeric_def(name, history) if fixed is not None else None)
    if edit.op in ("widen", "narrow"):
        if numeric is None:
            raise EditRefused(f"{name} is categorical: {edit.op} a numeric parameter, or use add-choice/remove-choice; nothing was written")
        if len(values) != 2:
            raise EditRefused(f"{edit.op} {name} needs LOW HIGH (got {len(values)} value(s)); nothing was written")
        integer = isinstance(numeric, IntParameter)
        low, high = (_number(v, name, integer) for v in values)
        if fixed is not None:
            if edit.op == "narrow":
                raise EditRefused(f"{name} is fixed at {fixed}; widen it to a range to free it; nothing was written")
            if not low <= float(fixed) <= high:  # type: ignore[arg-type]
                raise EditRefused(f"{name} is fixed at {fixed}: a range that frees it must contain it; nothing was written")
        elif edit.op == "widen" and (low > p.low or high < p.high or (low, high) == (p.low, p.high)):  # type: ignore[union-attr]
            raise EditRefused(f"widen {name} [{p.low:g}, {p.high:g}] to [{low:g}, {high:g}]: the new range must contain the old one "  # type: ignore[union-attr]
                              f"and be wider (narrow it with narrow); nothing was written")
        elif edit.op == "narrow" and (low < p.low or high > p.high or (low, high) == (p.low, p.high)):  # type: ignore[union-attr]
            raise EditRefused(f"narrow {name} [{p.low:g}, {p.high:g}] to [{low:g}, {high:g}]: the new range must lie inside the old one "  # type: ignore[union-attr]
                              f"and be narrower (widen it with widen); nothing was written")
        params[index] = _parameter({**numeric.model_dump(), "low": low, "high": high}, name)
    elif edit.op == "fix":
        if len(values) != 1:
            raise EditRefused(f"fix {name} needs one VALUE (got {len(values)}); nothing was written")
        if numeric is not None:
            value: Any = _number(values[0], name, isinstance(numeric, IntParameter))
            if numeric.log and value <= 0:
                raise EditRefused(f"{name} is on a log scale: fix it at a value > 0; nothing was written")
        else:
            assert isinstance(p, CategoricalParameter)
            value = _choice(values[0], p.choices)
            if str(value) not in {str(c) for c in p.choices}:
                raise EditRefused(f"fix {name}: {brief(value)} is not one of its choices {brief(p.choices)}; nothing was written")
        if fixed is not None and str(fixed) == str(value):
            raise EditRefused(f"{name} is fixed at {fixed} already; nothing was written")
        params[index] = CategoricalParameter(name=name, choices=[value], unit=p.unit)
    else:  # add_choice, remove_choice
        if not isinstance(p, CategoricalParameter) or (fixed is not None and numeric is not None):
            raise EditRefused(f"{name} is numeric: {edit.op.replace('_', '-')} works on a categorical parameter; "
                              f"widen or narrow it instead; nothing was written")
        if len(values) != 1:
            raise EditRefused(f"{edit.op.replace('_', '-')} {name} needs one CHOICE (got {len(values)}); nothing was written")
        choice = _choice(values[0], p.choices)
        present = [str(c) for c in p.choices]
        if edit.op == "add_choice":
            if str(choice) in present:
                raise EditRefused(f"{name} has the choice {brief(choice)} already; nothing was written")
            choices = [*p.choices, choice]
        else:
            if str(choice) not in present:
                raise EditRefused(f"{name} has no choice {brief(choice)} (its choices are {brief(p.choices)}); nothing was written")
            if len(p.choices) == 1:
                raise EditRefused(f"cannot remove {brief(choice)}, the last choice of {name}; nothing was written")
            choices = [c for c in p.choices if str(c) != str(choice)]
        params[index] = _parameter({"type": "categorical", "name": name, "choices": choices, "unit": p.unit}, name)
    return SearchSpace(parameters=params)


def _is_number(value: Any) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def limit_faults(space: SearchSpace, limits: Mapping[str, Mapping[str, Sequence[float]]]) -> list[str]:
    """Why ``space`` reaches beyond what the instruments accept (``instrument ->
    parameter -> (low, high)``), in the config check's words
    (:func:`selflab.controller.fleet.build_fleet`); empty when it does not.

    An instrument without a limit on a parameter accepts all of it; where
    every instrument limits it, the space may not extend past the widest limit.
    """
    faults: list[str] = []
    if not limits:
        return faults
    for i, p in enumerate(space.parameters):
        bounds = _numeric_span(p)
        if bounds is None:
            continue
        low_p, high_p = bounds
        given = [(inst, lims.get(p.name)) for inst, lims in limits.items()]
        if any(lim is None for _, lim in given):
            continue
        spans = [(inst, (float(lim[0]), float(lim[1]))) for inst, lim in given if lim is not None]
        if not all(math.isfinite(lo) and math.isfinite(hi) for _, (lo, hi) in spans):
            continue
        low, high = min(lo for _, (lo, _) in spans), max(hi for _, (_, hi) in spans)
        if low_p < low or high_p > high:
            sides = ", ".join(f"{inst} accepts [{lo:g}, {hi:g}]" for inst, (lo, hi) in spans)
            faults.append(f"parameters[{i}]: {p.name} asks for [{low_p:g}, {high_p:g}] but the instruments' limits allow only "
                          f"[{low:g}, {high:g}] ({sides}); narrow the parameter or widen a limit")
    return faults


def _numeric_span(p: Parameter) -> tuple[float, float] | None:
    if isinstance(p, (FloatParameter, IntParameter)):
        return float(p.low), float(p.high)
    if len(p.choices) == 1 and _is_number(p.choices[0]) and not isinstance(p.choices[0], str):
        return float(p.choices[0]), float(p.choices[0])
    return None


# --- the projection's part ------------------------------------------------------------------


@dataclass
class SpaceView:
    """What the ledger says about the search space: the current space and its
    version, every edit, the backfills of added parameters, and the boundary
    hits reported since the last edit."""

    space: SearchSpace | None = None
    version: int = 0
    history: list[SearchSpace] = field(default_factory=list)
    """Every version's space, version 0 first."""
    edits: list[dict[str, Any]] = field(default_factory=list)
    """``{"version", "op", "parameter", "values", "backfill", "by", "reason", "at"}`` of each edit, in order."""
    backfill: dict[str, Value] = field(default_factory=dict)
    """Added parameter -> the value the experiments before its addition had."""
    since: int = 1
    """The first experiment id proposed in the current version."""
    hits: list[dict[str, Any]] = field(default_factory=list)
    """``boundary_hit`` payloads since the last edit."""

    def started(self, parameters: Any) -> None:
        """A ``campaign_started``: the config's space, until the first edit."""
        if self.version == 0 and parameters:
            try:
                self.space = SearchSpace.model_validate({"parameters": parameters})
            except ValidationError:  # (a snapshot no current selflab can read: no space)
                return
            self.history = [self.space]

    def changed(self, payload: Mapping[str, Any], at: datetime, next_id: int) -> None:
        """A ``space_changed``."""
        self.space = SearchSpace.model_validate(payload["space"])
        self.version = int(payload["version"])
        self.history.append(self.space)
        edit = dict(payload["edit"])
        if edit.get("op") == "add" and edit.get("backfill") is not None:
            self.backfill[edit["parameter"]] = edit["backfill"]
        self.edits.append({"version": self.version, **{k: edit.get(k) for k in ("op", "parameter", "values", "backfill", "explore")},
                           "by": payload.get("by", ""), "reason": payload.get("reason", ""), "at": at})
        self.since = next_id
        self.hits = []

    def filled(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with the backfill of each added parameter it lacks."""
        if not self.backfill:
            return dict(params)
        return {**{k: v for k, v in self.backfill.items() if k not in params}, **params}

    def hit_before(self, parameter: str, bound: str) -> bool:
        return any(h["parameter"] == parameter and h["bound"] == bound for h in self.hits)


def model_space(view: SpaceView, points: Iterable[Mapping[str, Any]]) -> SearchSpace | None:
    """The hull of the current space and ``points`` (every observation,
    pending and failed point, backfilled): what the planner's model scales its
    inputs over, so that no past observation falls outside it. ``None`` before
    any edit (the config's space is the model's). Each parameter keeps the
    current order; a categorical's current choices come first (so they keep
    their indices), then values only the data hold; a fixed numeric parameter
    is numeric here, over its last range and the data."""
    if view.space is None or view.version == 0:
        return None
    points = list(points)
    out: list[Parameter] = []
    for p in view.space.parameters:
        seen = [pt[p.name] for pt in points if p.name in pt]
        numeric = p if isinstance(p, (FloatParameter, IntParameter)) else _numeric_def(p.name, view.history)
        if numeric is not None:
            values = [float(v) for v in seen if _is_number(v) and not isinstance(v, str)]
            span = _numeric_span(p) or (numeric.low, numeric.high)
            extra = [] if isinstance(p, (FloatParameter, IntParameter)) else [float(numeric.low), float(numeric.high)]
            low, high = min([span[0], *values, *extra]), max([span[1], *values, *extra])
            if numeric.log:
                low = max(low, min(v for v in [span[0], *values, *extra] if v > 0))
            if low == high:
                high = low + 1.0
            data = {**numeric.model_dump(), "low": low, "high": high}
            if isinstance(numeric, IntParameter):
                data.update(low=int(math.floor(low)), high=int(math.ceil(high)))
            out.append(type(numeric).model_validate(data))
        else:
            assert isinstance(p, CategoricalParameter)
            choices = list(p.choices)
            for v in seen:
                if str(v) not in {str(c) for c in choices}:
                    choices.append(v)
            out.append(p.model_copy(update={"choices": choices}))
    return SearchSpace(parameters=out)


def on_bound(value: float, bound: float, p: FloatParameter | IntParameter) -> bool:
    """Whether ``value`` lies within :data:`BOUNDARY_TOL` of ``bound``, relative
    to the range of ``p`` (on the log scale for a log parameter)."""
    if p.log:
        if value <= 0:
            return False
        return abs(math.log(value) - math.log(bound)) <= BOUNDARY_TOL * (math.log(p.high) - math.log(p.low))
    return abs(value - bound) <= BOUNDARY_TOL * (p.high - p.low)


def boundary_hits(view: SpaceView, proposals: Sequence[Mapping[str, Any]],
                  limits: Mapping[str, Mapping[str, Sequence[float]]] | None = None) -> list[dict[str, Any]]:
    """``boundary_hit`` payloads due now: for each numeric parameter of the
    current space, a bound on which more than half of the last
    :data:`BOUNDARY_WINDOW` ``proposals`` (params, oldest first, proposed since
    the last edit; at least :data:`BOUNDARY_MIN`) sit, unless already reported
    since the last edit. The suggestion widens that side by half the range,
    within the instruments' ``limits``."""
    if view.space is None:
        return []
    found: list[dict[str, Any]] = []
    for p in view.space.parameters:
        if not isinstance(p, (FloatParameter, IntParameter)):
            continue
        window = [float(q[p.name]) for q in proposals if _is_number(q.get(p.name)) and not isinstance(q.get(p.name), str)]
        window = window[-BOUNDARY_WINDOW:]
        if len(window) < BOUNDARY_MIN:
            continue
        for bound, value in (("low", float(p.low)), ("high", float(p.high))):
            near = sum(on_bound(v, value, p) for v in window)
            if near * 2 <= len(window) or view.hit_before(p.name, bound):
                continue
            found.append(_hit(view, p, bound, value, near, len(window), limits or {}))
    return found


def _hit(view: SpaceView, p: FloatParameter | IntParameter, bound: str, value: float, near: int, n: int,
         limits: Mapping[str, Mapping[str, Sequence[float]]]) -> dict[str, Any]:
    span = float(p.high - p.low)
    given = [lims.get(p.name) for lims in limits.values()]
    widest: float | None = None
    if limits and all(lim is not None for lim in given):
        widest = min(float(lim[0]) for lim in given if lim is not None) if bound == "low" else max(
            float(lim[1]) for lim in given if lim is not None)
    target = value - span / 2 if bound == "low" else value + span / 2
    if p.log and bound == "low":
        target = value / 2
    if widest is not None:
        target = max(target, widest) if bound == "low" else min(target, widest)
    if isinstance(p, IntParameter):
        target = math.floor(target) if bound == "low" else math.ceil(target)
    low, high = (target, p.high) if bound == "low" else (p.low, target)
    if target == value:
        suggestion = f"{value:g} is the instruments' limit there: widen an instrument's limit first, then {p.name}"
    else:
        suggestion = f"selflab space CONFIG widen {p.name} {low:g} {high:g}"
    return {"parameter": p.name, "bound": bound, "value": value, "fraction": near / n, "window": n,
            "space_version": view.version, "suggestion": suggestion}


def edit_payload(view: SpaceView, edit: SpaceEdit, limits: Mapping[str, Mapping[str, Sequence[float]]], *, by: str,
                 reason: str = "", origin: str = "") -> dict[str, Any]:
    """The ``space_changed`` payload of ``edit`` on the campaign's current
    space, checked against the instruments' ``limits`` (faults the space had
    before the edit do not count); raises :class:`EditRefused` (one line) when
    the edit is not allowed."""
    if view.space is None:
        raise EditRefused("the campaign has never started, so it has no search space to edit; nothing was written")
    new = apply_edit(view.space, edit, view.history)
    before = set(limit_faults(view.space, limits))
    faults = [f for f in limit_faults(new, limits) if f not in before]
    if faults:
        raise EditRefused(f"{faults[0]}; nothing was written")
    return {"version": view.version + 1, "edit": edit.model_dump(mode="json", exclude_defaults=True) | {"op": edit.op},
            "space": new.model_dump(mode="json"), "by": by, "reason": reason, "origin": origin}


def evolved_context(view: SpaceView, context: PlanContext, observations: Sequence[Observation],
                    pending: Sequence[Pending]) -> PlanContext:
    """``context`` after search-space edits: failed points backfilled, a pool's
    candidates kept only where they lie in the current space (pool campaigns
    filter the pool again), and the model space (:func:`model_space`) of the
    observations, pending and failed points; unchanged before any edit."""
    if view.version == 0 or view.space is None:
        return context
    space = view.space
    failed = tuple(f.model_copy(update={"params": view.filled(f.params)}) for f in context.failed)
    update: dict[str, Any] = {"failed": failed}
    if context.candidates is not None:
        update["candidates"] = tuple(c for c in (view.filled(c) for c in context.candidates) if not space.violations(c))
    points = [*(o.params for o in observations), *(p.params for p in pending), *(f.params for f in failed)]
    update["model_space"] = model_space(view, points)
    return context.model_copy(update=update)


__all__ = ["OPS", "EditRefused", "SpaceEdit", "SpaceView", "apply_edit", "boundary_hits", "edit_payload", "evolved_context", "limit_faults", "model_space", "on_bound"]
