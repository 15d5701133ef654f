"""The ``Planner`` protocol and the records that cross it.

A planner is, in effect, a stateless function of the ledger's contents::

    proposals = planner.propose(space, objectives, observations, pending, n,
                                context=PlanContext(seed=7, step=12))

``observations`` are completed experiments, ``pending`` those in flight (a
planner must not propose them again), and ``context`` carries what a planner
needs beyond that: outcome constraints, the fidelities on offer with their
costs, the target fidelity, experiments that ran and failed, a seed and the
ledger position ``step`` (how many experiments were ever proposed), so that a
sequence such as Sobol carries on correctly after a resume.

Planners know nothing of instruments: the controller turns instruments into
:class:`FidelityOption` values, and routes each :class:`Proposal` to a free
instrument that serves its ``fidelity``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selflab.planners.space import Objective, OutcomeConstraint, Point, SearchSpace


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


NOISE_SUFFIX = "_sd"
"""An instrument reports the noise of output ``y`` as output ``y_sd`` (a standard deviation, same unit)."""


class Observation(_Record):
    """A completed experiment: its inputs, fidelity and measured outcomes."""

    params: Point
    outcomes: dict[str, float]
    fidelity: float = 1.0
    noise: dict[str, float] | None = None
    """Per-outcome noise standard deviation, when the instrument reports one."""

    @classmethod
    def from_result(cls, params: Point, outputs: dict[str, float], fidelity: float = 1.0) -> Observation:
        """An observation from an instrument's outputs: each finite, non-negative
        ``NAME_sd`` next to an output ``NAME`` is that output's noise.

        >>> Observation.from_result({"x": 1.0}, {"yield": 0.8, "yield_sd": 0.02}).noise
        {'yield': 0.02}
        """
        noise = {name[: -len(NOISE_SUFFIX)]: sd for name, sd in outputs.items()
                 if name.endswith(NOISE_SUFFIX) and name[: -len(NOISE_SUFFIX)] in outputs and math.isfinite(sd) and sd >= 0}
        return cls(params=params, outcomes=outputs, fidelity=fidelity, noise=noise or None)


class Pending(_Record):
    """An experiment that was dispatched and has no result yet."""

    params: Point
    fidelity: float = 1.0


class Failure(Pending):
    """A failed experiment with the kind of its failure, as the ledger records it
    (``Failed.error_kind``: ``timeout``, ``disconnected``, ``bad_response``,
    ``out_of_limits``, ``error``, or a driver's own kind such as ``clogged``).
    The controller passes these in :attr:`PlanContext.failed`; a planner that
    learns where experiments fail uses the kind to leave out failures that say
    nothing about the parameters (:mod:`selflab.planners.feasibility`)."""

    kind: str


UNINFORMATIVE_KINDS = frozenset({"timeout", "disconnected", "vetoed", "bad_cost"})
"""Failure kinds that say nothing about the chemistry at the parameters: the
instrument or its link failed (``timeout``, ``disconnected``), a person refused
the proposal (``vetoed``: the planner keeps away from its neighbourhood by
``oversight.veto_radius`` instead), or no instrument could price it
(``bad_cost``). The planner still avoids these points themselves."""


def counts(failure: Pending) -> bool:
    """Whether a failed experiment says something about its parameters: any
    :class:`Failure` but those of :data:`UNINFORMATIVE_KINDS`, and a plain
    :class:`Pending` handed over without its kind."""
    return not isinstance(failure, Failure) or failure.kind not in UNINFORMATIVE_KINDS


class FidelityOption(_Record):
    """A fidelity some instrument serves, and what one experiment there costs."""

    fidelity: float = Field(gt=0, le=1)
    cost: float = Field(ge=0)
    free: int | None = Field(default=None, ge=0)
    """Instrument slots free now at this fidelity (``None``: unknown). A
    multi-fidelity planner proposes at most this many here."""


class SourceTask(_Record):
    """The completed experiments of an earlier, related campaign that a
    campaign is warm-started from (``warm_start`` in the config): another task
    of a multi-task model, not more data of this one (:mod:`selflab.planners.warm_start`).

    ``observations`` carry this campaign's parameter names only (the controller
    matched them by name and dropped rows outside this campaign's space) and
    this campaign's modelled outcomes.
    """

    name: str
    """Where it comes from, for the record: ``campaign@ledger``."""
    observations: tuple[Observation, ...]
    dropped: int = 0
    """Source rows left out (outside this campaign's space, or without every modelled outcome)."""


class PlanContext(_Record):
    """Everything a planner may use beyond space, objectives and data."""

    seed: int = 0
    step: int = 0
    """Ledger position: how many experiments have been proposed so far."""
    constraints: tuple[OutcomeConstraint, ...] = ()
    fidelities: tuple[FidelityOption, ...] = (FidelityOption(fidelity=1.0, cost=1.0),)
    target_fidelity: float = 1.0
    failed: tuple[Pending, ...] = ()
    """Experiments that ran and failed: information, not to be repeated blindly
    (:class:`Failure` records, with the failure's kind, from the controller)."""
    candidates: tuple[Point, ...] | None = None
    """When set, the only points that may be proposed (a pool of measurable
    inputs, e.g. the unmeasured rows of a dataset); already measured and
    pending ones are removed by the controller."""
    warm_start: tuple[SourceTask, ...] = ()
    """Earlier related campaigns to transfer from (``warm_start`` in the config;
    :mod:`selflab.planners.warm_start`); planners without a multi-task model ignore them."""
    model_space: SearchSpace | None = None
    """After search-space edits: the hull of the current space and every
    observation, pending and failed point, with the same parameters in the same
    order (a categorical's current choices first). A model scales its inputs over
    it, so that no past observation falls outside; proposals still come only from
    ``space`` (see :func:`selflab.planners.evolving.search_encoding`). ``None``: ``space``."""


class Proposal(_Record):
    """One experiment the planner asks for, and why."""

    params: Point
    fidelity: float = 1.0
    reason: dict[str, Any] = Field(default_factory=dict)
    """Why it was proposed: e.g. ``{"strategy": "sobol"}`` or the acquisition
    value, predicted mean and standard deviation, and the model's fit time."""


class Recommendation(_Record):
    """The point the campaign would bet on now, at the target fidelity."""

    params: Point
    fidelity: float = 1.0
    predicted: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Outcome -> ``{"mean", "std"}`` from the planner's model, when it has one."""
    basis: str = "best_observed"
    """``best_observed`` or ``best_predicted`` (posterior mean at the target fidelity)."""


@runtime_checkable
class Recommender(Protocol):
    """A planner that can also say which point it recommends (optional)."""

    def recommend(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        observations: Sequence[Observation],
        *,
        context: PlanContext,
    ) -> Recommendation | None:
        """The best predicted point at ``context.target_fidelity``, or ``None``."""
        ...


INTERVAL_Z = 1.959963984540054
"""Half-width, in standard deviations, of the central 95 % interval of a :class:`Prediction`."""


@dataclass(frozen=True)
class Prediction:
    """A planner model's posterior of one outcome at ``n`` points, in the outcome's own units.

    ``mean``, ``std``, ``lower``, ``upper``: arrays of shape ``(n,)``. ``lower``
    and ``upper`` bound the central 95 % interval (mean ± 1.96 sd on the scale
    the model works on, mapped back to the outcome's units). For an outcome
    modelled on a warped scale (see :mod:`selflab.planners.warp`) ``mean`` is the
    posterior median and ``std`` its delta-method spread, and the interval is
    exact (a monotone warp maps quantiles to quantiles); otherwise
    ``lower = mean - 1.96 std``. ``fidelity``: the fidelity of each point (the
    model's input), or of the predictions asked for.
    """

    mean: np.ndarray
    std: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    fidelity: np.ndarray
    median: bool = False
    """Whether ``mean`` is the posterior median (an outcome modelled on a warped scale)."""


@dataclass(frozen=True)
class LeaveOneOut:
    """Leave-one-out predictions of a planner model at its own training points.

    ``observed``: the measured values (``(n,)``, the outcome's units); the
    :class:`Prediction` of each from the model conditioned on all the others
    (same hyperparameters), observation noise included, so that the 95 %
    interval should hold about 95 % of ``observed``.
    """

    observed: np.ndarray
    predicted: Prediction

    @property
    def coverage(self) -> float:
        """Fraction of ``observed`` inside ``[lower, upper]`` (NaN with no points)."""
        return interval_coverage(self.observed, self.predicted.lower, self.predicted.upper)


def interval_coverage(observed: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Fraction of ``observed`` inside ``[lower, upper]`` (bounds included); NaN when empty.

    >>> interval_coverage(np.array([0.0, 1.0, 5.0]), np.array([-1.0, 1.0, 0.0]), np.array([1.0, 2.0, 4.0]))
    0.6666666666666666
    """
    observed = np.asarray(observed, dtype=float)
    if observed.size == 0:
        return math.nan
    return float(np.mean((observed >= np.asarray(lower, dtype=float)) & (observed <= np.asarray(upper, dtype=float))))


@runtime_checkable
class Predictor(Protocol):
    """A planner that can show its fitted model (optional): the one it proposes with.

    Both methods fit (or reuse) exactly the model ``propose`` would fit on
    these data and this context (the same fidelities, warps, pool scale and
    hyperparameter fit), and answer in the outcomes' own units, per modelled
    outcome (objectives, then constrained outcomes). They return ``{}`` when
    the planner would not model these data yet (too few observations), and
    raise when the fit fails.
    """

    def predict(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        observations: Sequence[Observation],
        points: Sequence[Point],
        *,
        context: PlanContext,
    ) -> dict[str, Prediction]:
        """The posterior (no observation noise) at ``points``, at ``context.target_fidelity``."""
        ...

    def leave_one_out(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        observations: Sequence[Observation],
        *,
        context: PlanContext,
    ) -> dict[str, LeaveOneOut]:
        """Each training point predicted from all the others (observation noise included)."""
        ...


@runtime_checkable
class Planner(Protocol):
    """Proposes experiments from the campaign's data so far.

    A planner may set ``blocking = False`` when ``propose`` takes microseconds;
    otherwise (the default) the controller calls it in a worker thread so that
    instruments keep running while it fits its models. A planner that chooses
    fidelities sets ``multi_fidelity = True``; others are offered only the slots
    of instruments at the target fidelity (or the highest served). A planner
    that takes ``planner.options`` names their pydantic model as the class
    attribute ``options_model`` (``selflab schema`` reads it) and validates
    them with :func:`parse_options`.
    """

    def propose(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        observations: Sequence[Observation],
        pending: Sequence[Pending],
        n: int,
        *,
        context: PlanContext,
    ) -> list[Proposal]:
        """Return exactly ``n`` proposals (a batch when ``n > 1``)."""
        ...


@runtime_checkable
class MultiFidelity(Protocol):
    """A planner that says whether it chooses the fidelity of each proposal
    (``multi_fidelity = True``): it is offered every online instrument's
    slots, at every fidelity. Others are offered only the slots of the
    instruments at the target fidelity (or the highest served)."""

    multi_fidelity: bool


@runtime_checkable
class DeclaresBlocking(Protocol):
    """A planner that says whether ``propose`` (and ``recommend``) take long
    enough to need a worker thread (``blocking = True``, the default for a
    planner that does not say) or take microseconds (``blocking = False``)."""

    blocking: bool


OptionsT = TypeVar("OptionsT", bound=BaseModel)


class OptionsError(ValueError):
    """``planner.options`` that the planner's options model refuses, with every fault.

    ``str()`` names the planner and the first bad option in one line, e.g.
    ``bo planner option 'beta': Input should be greater than 0``; ``errors``
    holds pydantic's error details of every bad option, and ``model`` the
    options model that refused them, for a caller that reports each one (the
    config loader words them as it words its own fields).
    """

    def __init__(self, kind: str, model: type[BaseModel], errors: Sequence[Mapping[str, Any]]) -> None:
        self.kind = kind
        self.model = model
        self.errors: list[Mapping[str, Any]] = list(errors)
        first = self.errors[0]
        where = ".".join(str(part) for part in first["loc"]) or "options"
        super().__init__(f"{kind} planner option {where!r}: {first['msg']}")

    def __reduce__(self) -> tuple[Any, ...]:  # (to cross a process boundary whole)
        return type(self), (self.kind, self.model, self.errors)


def parse_options(model: type[OptionsT], kind: str, options: Mapping[str, Any]) -> OptionsT:
    """A planner's ``planner.options`` validated by its options ``model``.

    Raises :class:`OptionsError` (a ``ValueError``) naming the planner and the
    first bad option in one line (the config loader adds where to look, and
    reports every bad option), e.g.
    ``bo planner option 'beta': Input should be greater than 0``.
    """
    try:
        return model(**options)
    except ValidationError as exc:
        raise OptionsError(kind, model, exc.errors()) from None
