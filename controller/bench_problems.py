"""Benchmark problems as :mod:`selflab.controller.bench` runs them: the
:class:`Problem` model and the catalogues that provide problems.

Problems come from catalogues found through the entry-point group
``selflab.problems`` (:func:`get_problem`; selflab's own is
:func:`selflab.simulators.problems.get_problem`), as plain data in the lab config's
shape; :class:`Problem` turns that data into the planners' models, so the
controller never imports a simulator.

Example::

    problem = get_problem("branin")
    problem.optimum, problem.direction   # (0.397887, 'minimize')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from selflab.planners.space import Objective, OutcomeConstraint, Parameter, Point

PROBLEM_GROUP = "selflab.problems"
"""Entry-point group of benchmark-problem catalogues. Each entry point loads a
callable ``(spec, *, objective=None, direction=None) -> problem data`` (see
:class:`ProblemData`) that raises ``LookupError`` for a name it does not know
and ``ValueError`` for bad options, with a one-line message::

    [project.entry-points."selflab.problems"]
    my_problems = "my_lab.problems:get_problem"
"""

TARGET_FIDELITY = 1.0
"""Benchmark problems' target fidelity."""


class BenchError(Exception):
    """A benchmark campaign did not finish; the message says why."""


class ProblemError(ValueError):
    """No installed catalogue knows the problem, or its options are bad; the message says which."""


class FidelityLevel(BaseModel):
    """One instrument of a multi-fidelity problem: the fidelity it serves and its cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fidelity: float
    cost: float
    driver: str
    options: dict[str, Any] = {}


class Problem(BaseModel):
    """One benchmark problem, with the planners' models.

    ``metric`` is what a benchmark reports per run: the best (feasible)
    objective value, or the hypervolume of the observed points when there are
    several objectives. ``optimum`` and ``direction`` are that metric's best
    reachable value (``None`` when unknown) and which way is better.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    parameters: list[Parameter]
    objectives: list[Objective]
    constraints: list[OutcomeConstraint] = []
    driver: str
    """``module:Class`` or an entry-point name in ``selflab.instruments``."""
    options: dict[str, Any] = {}
    metric: Literal["best", "hypervolume"] = "best"
    optimum: float | None
    direction: Literal["maximize", "minimize"]
    top: list[Point] | None = None
    """Pools only: the rows of the top 5 %."""
    levels: list[FidelityLevel] | None = None
    """Multi-fidelity problems only: one instrument per fidelity (then
    ``driver``/``options`` are the noise-free fidelity-1 instrument, the truth
    a recommendation is judged by)."""

    @property
    def multi_fidelity(self) -> bool:
        return self.levels is not None


class ProblemData(Protocol):
    """A problem as a catalogue describes it: :class:`Problem`'s fields as
    attributes, with parameters, objectives, constraints and levels as plain
    data in the lab config's shape (e.g. :class:`selflab.simulators.problems.Problem`)."""

    @property
    def name(self) -> str: ...
    @property
    def parameters(self) -> Sequence[object]: ...
    @property
    def objectives(self) -> Sequence[object]: ...
    @property
    def constraints(self) -> Sequence[object]: ...
    @property
    def driver(self) -> str: ...
    @property
    def options(self) -> Mapping[str, Any]: ...
    @property
    def metric(self) -> str: ...
    @property
    def optimum(self) -> float | None: ...
    @property
    def direction(self) -> str: ...
    @property
    def top(self) -> Sequence[Mapping[str, Any]] | None: ...
    @property
    def levels(self) -> Sequence[object] | None: ...


def as_problem(problem: Problem | ProblemData) -> Problem:
    """``problem`` as a :class:`Problem` (itself if it is one already).

    Raises:
        pydantic.ValidationError: the data does not describe a problem.
    """
    return Problem.model_validate(problem, from_attributes=True)


def get_problem(spec: str, *, objective: str | None = None, direction: str | None = None) -> Problem:
    """The problem ``spec`` from the first installed catalogue (by entry-point
    name) that knows it; ``objective`` and ``direction`` go to the catalogue.

    Raises:
        ProblemError: no catalogue knows ``spec`` (with the first one's
            message), or its options are bad.
    """
    unknown: list[str] = []
    for catalogue in sorted(entry_points(group=PROBLEM_GROUP), key=lambda ep: ep.name):
        try:
            data = catalogue.load()(spec, objective=objective, direction=direction)
        except LookupError as exc:
            unknown.append(str(exc))
            continue
        except ValueError as exc:
            raise ProblemError(str(exc)) from None
        return as_problem(data)
    raise ProblemError(unknown[0] if unknown else f"unknown problem {spec!r}: no catalogue installed in entry-point group {PROBLEM_GROUP!r}")
