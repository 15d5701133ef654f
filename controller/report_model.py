"""The planner's model as ``selflab report`` and the console show it: the
campaign planner's own (a :class:`selflab.planners.protocol.Predictor`), or
the ``bo`` planner's for a planner without one; its posterior along each
parameter through the recommended point (:func:`slices_of`) and its
leave-one-out calibration (:func:`calibration_of`), and the figures of both
(:func:`model_figures`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selflab.controller import plots
from selflab.controller.config import ConfigError, LabConfig, build_planner
from selflab.controller.model_health import predictions
from selflab.controller.projection import CampaignState, ExperimentView
from selflab.controller.report_data import completed, counted, has_finite
from selflab.controller.study import failures
from selflab.planners.calibration import DEFAULT_BAND, ScoredObservation
from selflab.planners.protocol import Observation, PlanContext, Predictor, Recommendation, Recommender
from selflab.planners.registry import make_planner
from selflab.planners.space import CategoricalParameter, IntParameter, Objective, Parameter, Point

MIN_RESULTS_FOR_GP = 3
SLICE_POINTS = 60


def model_of(config: LabConfig) -> tuple[Predictor, bool, str]:
    """The model to show: the campaign planner's own (a :class:`Predictor`), or
    for a planner without one the ``bo`` planner's; whether it is the
    planner's own, and how a title names it."""
    kind = config.planner.kind
    try:
        planner = build_planner(config)
    except ConfigError:
        planner = None
    if isinstance(planner, Predictor):
        return planner, True, f"the {kind} planner's model"
    fallback = make_planner("bo", {})
    assert isinstance(fallback, Predictor)
    return fallback, False, f"the bo planner's model (the {kind} planner has none)"


def plan_context(state: CampaignState, config: LabConfig, pool: Sequence[Point] | None = None) -> PlanContext:
    """What the planner is told beyond the data when it recommends now (as the
    campaign tells it): seed, ledger position, constraints, target fidelity,
    failed points, and the unmeasured points of a pool."""
    context = PlanContext(seed=config.seed, step=state.next_experiment_id - 1, constraints=tuple(config.constraints),
                          target_fidelity=config.target_fidelity, failed=failures(state))
    if pool is not None:
        measured = {_key(e.params) for e in completed(state)}
        context = context.model_copy(update={"candidates": tuple(p for p in pool if _key(p) not in measured)})
    return context


def _key(params: Point) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


def pool_of_config(config: LabConfig) -> list[Point] | None:
    """The pool of candidates the campaign's instruments offer (``None`` when
    none restricts its inputs to a pool); builds the drivers, connects none."""
    from selflab.controller.campaign import pool_of
    from selflab.controller.fleet import build_fleet

    return pool_of(build_fleet(config))


def observations_of(state: CampaignState) -> list[Observation]:
    """The planner's observations: completed experiments in the order their
    results came, with their proposals' predictions (as :meth:`Study.observations
    <selflab.controller.study.Study.observations>` gives them)."""
    return [ScoredObservation.of(Observation.from_result(e.params, e.outcomes, e.fidelity), e.reason) for e in completed(state)]


@dataclass(frozen=True)
class ModelView:
    """The planner's model as the report shows it: the planner (or the ``bo``
    stand-in, ``own = False``), how titles name it, the observations and
    context it is given, and its recommendation now (one objective)."""

    planner: Predictor
    own: bool
    named: str
    observations: list[Observation]
    context: PlanContext
    recommendation: Recommendation | None


def model_view(state: CampaignState, config: LabConfig, note: Callable[[str], None] = print) -> ModelView | None:
    """The model behind the slices and the calibration, or ``None`` (with a
    note) when too few results exist or its fit fails."""
    done = completed(state)
    target = [e for e in done if counted(e, config)]
    if len(done) < MIN_RESULTS_FOR_GP or not target:
        note(f"GP slices skipped: {len(done)} completed result(s), {len(target)} feasible at the target fidelity; "
             f"need at least {MIN_RESULTS_FOR_GP} and 1")
        return None
    planner, own, named = model_of(config)
    try:
        pool = pool_of_config(config)
    except Exception as exc:  # (drivers that cannot be built here: the model is shown without their pool)
        note(f"the instruments could not be built to read a pool of candidates ({type(exc).__name__}: {exc})")
        pool = None
    observations, context = observations_of(state), plan_context(state, config, pool)
    recommendation = None
    if len(config.objectives) == 1 and isinstance(planner, Recommender):
        try:
            recommendation = planner.recommend(config.space, config.objectives, observations, context=context)
        except Exception as exc:  # a failed fit must not cost the user the other figures
            note(f"model figures skipped: the planner's model could not be fitted ({type(exc).__name__}: {exc})")
            return None
    return ModelView(planner, own, named, observations, context, recommendation)


def recommended(state: CampaignState, model: ModelView | None, name: str) -> tuple[float, float] | None:
    """The current recommendation's predicted ``(mean, std)`` of ``name``: the
    planner's own, made now on every result; else the campaign's last recorded
    one (``None`` when that was the best observation, not a prediction)."""
    if model is not None and model.own and model.recommendation is not None:
        predicted: dict[str, Any] | None = model.recommendation.predicted.get(name)
    else:
        predicted = ((state.recommendation or {}).get("predicted") or {}).get(name)
    if not predicted or predicted.get("mean") is None or predicted.get("std") is None:
        return None
    return float(predicted["mean"]), float(predicted["std"])


def slice_point(model: ModelView, state: CampaignState, config: LabConfig, objective: Objective) -> tuple[Point, str] | None:
    """Where ``objective``'s slices cross: the model's recommendation (one
    objective), else the best feasible result at the target fidelity; and how to name it."""
    if model.recommendation is not None:
        return model.recommendation.params, "the recommended point"
    best = state.best(objective.name, objective.direction, config.target_fidelity, config.constraints)
    if best is None:
        return None
    return best.params, f"experiment {best.experiment_id} (best feasible {objective.name})"


def slices_of(planner: Predictor, config: LabConfig, observations: Sequence[Observation], context: PlanContext,
              point: Point, outcome: str) -> tuple[list[plots.Slice], bool]:
    """The model's posterior of ``outcome`` along each parameter through
    ``point`` (whose own value is on every grid), from one ``predict`` call;
    and whether the centre line is the posterior median (a warped outcome)."""
    grids = {p.name: grid(p, point[p.name]) for p in config.parameters}
    points = [{**point, name: v} for name, values in grids.items() for v in values]
    prediction = planner.predict(config.space, config.objectives, observations, points, context=context)[outcome]
    shown = [o for o in observations if outcome in o.outcomes and math.isfinite(o.outcomes[outcome])]
    ok = np.array([all(c.satisfied(o.outcomes) for c in config.constraints) for o in shown], dtype=bool)
    slices, start = [], 0
    for p in config.parameters:
        part = slice(start, start + len(grids[p.name]))
        start = part.stop
        slices.append(plots.Slice(
            parameter=p.name, x=grids[p.name], mean=prediction.mean[part], lower=prediction.lower[part],
            upper=prediction.upper[part], at=point[p.name], categorical=isinstance(p, CategoricalParameter),
            log=not isinstance(p, CategoricalParameter) and p.log, unit=p.unit, observed_x=[o.params[p.name] for o in shown],
            observed_y=np.array([o.outcomes[outcome] for o in shown], dtype=float),
            observed_fidelity=np.array([o.fidelity for o in shown], dtype=float), observed_feasible=ok,
        ))
    return slices, prediction.median


def calibration_of(planner: Predictor, config: LabConfig, observations: Sequence[Observation],
                   context: PlanContext) -> dict[str, plots.Calibration]:
    """Leave-one-out predictions of each objective by the planner's model, against the observed values."""
    found = planner.leave_one_out(config.space, config.objectives, observations, context=context)
    units = {o.name: o.unit for o in config.objectives}
    return {name: plots.Calibration(name=name, unit=units[name], observed=loo.observed, mean=loo.predicted.mean,
                                    lower=loo.predicted.lower, upper=loo.predicted.upper, fidelity=loo.predicted.fidelity,
                                    coverage=loo.coverage)
            for name, loo in found.items() if name in units}


def model_figures(model: ModelView, state: CampaignState, config: LabConfig, out: Path, note: Callable[[str], None]) -> list[Path]:
    """``gp_slices_<objective>.png`` and ``calibration_<objective>.png``, or a note saying why not."""
    done = completed(state)
    paths = []
    try:
        for o in config.objectives:
            found = slice_point(model, state, config, o)
            if found is None:
                continue
            point, where = found
            slices, median = slices_of(model.planner, config, model.observations, model.context, point, o.name)
            fig = plots.slices_figure(slices, o.name, unit=o.unit, target_fidelity=config.target_fidelity, median=median,
                                      floor=floor(done, o.name),
                                      title=f"{model.named}: {o.name} at fidelity {config.target_fidelity:g}, through {where}")
            paths.append(plots.save(fig, out / f"gp_slices_{o.name}.png"))
        if not model.own:
            note(f"calibration skipped: the {config.planner.kind} planner has no model of its own to check")
            return paths
        for name, calibration in calibration_of(model.planner, config, model.observations, model.context).items():
            fig = plots.calibration_figure(calibration, title=f"{model.named}: leave-one-out {name}", floor=floor(done, name))
            paths.append(plots.save(fig, out / f"calibration_{name}.png"))
    except Exception as exc:  # a failed fit must not cost the user the other figures
        note(f"model figures skipped: the planner's model could not be fitted ({type(exc).__name__}: {exc})")
    return paths


def prequential_figures(state: CampaignState, config: LabConfig, out: Path, note: Callable[[str], None]) -> list[Path]:
    """``prequential_<outcome>.png`` (:mod:`selflab.controller.plot_calibration`)
    for each modelled outcome with results proposed with a prediction, or a
    note saying why there is none."""
    from selflab.controller.plot_calibration import prequential_figure

    done = completed(state)
    names = [o.name for o in config.objectives]
    names += [c.outcome for c in config.constraints if c.outcome not in names]
    units = {o.name: o.unit for o in config.objectives}
    band = DEFAULT_BAND
    paths = []
    for name in names:
        found = predictions(done, name)
        if not len(found.z):
            note(f"prequential calibration of {name} skipped: no result was proposed with a prediction of it "
                 f"(the {config.planner.kind} planner records none)")
            continue
        verdict = "miscalibrated now" if name in state.miscalibrated else "not marked miscalibrated"
        fig = prequential_figure(found, band=band, unit=units.get(name),
                                 title=f"{name}: {len(found.z)} results scored against the model that proposed them ({verdict})")
        paths.append(plots.save(fig, out / f"prequential_{name}.png"))
    return paths


def floor(done: Sequence[ExperimentView], name: str) -> float | None:
    """0 when every result of ``name`` is non-negative (a yield, a concentration:
    a band below 0 is the model's, not the quantity's), else ``None``."""
    values = [e.outcomes[name] for e in done if has_finite(e, name)]
    return 0.0 if values and min(values) >= 0 else None


def grid(p: Parameter, at: Any = None) -> list[Any]:
    """Values along one parameter: every choice, every integer (up to
    :data:`SLICE_POINTS`), or evenly spaced (log-spaced for log parameters);
    numeric grids include ``at`` (the slice's own point) when given."""
    if isinstance(p, CategoricalParameter):
        return list(p.choices)
    if isinstance(p, IntParameter):
        if p.high - p.low + 1 <= SLICE_POINTS:
            values = list(range(p.low, p.high + 1))
        else:
            values = sorted({int(round(v)) for v in np.linspace(p.low, p.high, SLICE_POINTS)})
        return sorted(set(values) | ({int(at)} if at is not None else set()))
    if p.log:
        values = np.exp(np.linspace(math.log(p.low), math.log(p.high), SLICE_POINTS)).tolist()
    else:
        values = np.linspace(p.low, p.high, SLICE_POINTS).tolist()
    return sorted(set(values) | ({float(at)} if at is not None else set()))
