"""``selflab report``: figures of a campaign, drawn from its ledger and its planner's model.

Usage::

    selflab report CONFIG --out DIR
    selflab report --ledger URL [--campaign NAME] --out DIR

Writes into DIR (and prints each path):

* ``best_so_far.png``: every result against its completion number (results
  at other fidelities hollow, infeasible ones crossed), and the best so far
  over the feasible results at the target fidelity, one panel per objective;
  with several objectives a last panel with the hypervolume trace;
* ``pareto.png`` (several objectives): the results coloured by completion
  order, the feasible Pareto set (``CampaignState.pareto``) ringed, and the
  hypervolume's reference point (each objective's ``reference_point``, else
  inferred as the planners infer it);
* ``gp_slices_<objective>.png``: the planner's own model (the one that made
  the proposals: :class:`selflab.planners.protocol.Predictor`, e.g. the ``mf``
  planner's GP over every fidelity, at the target fidelity; a pool's rank
  scale and the objective's warp included) along each parameter through the
  recommended point (several objectives: the best feasible result of that
  objective), with its 95 % interval and the results projected onto the
  parameter. A planner without a model (``random``, ``sobol``, ``ax``) is
  shown the ``bo`` planner's model of the same data, and the title says so.
  Skipped with a note when fewer than 3 results exist;
* ``calibration_<objective>.png`` (a planner with its own model): its
  leave-one-out predictions against the observed values, with 95 % intervals
  and the fraction of results inside them;
* ``cost_<objective>.png``: each result at the cumulative cost spent, coloured
  by fidelity when there are several, with the best so far at the target fidelity.

Everything comes from the ledger (the config snapshot of ``campaign_started``)
and the planner that config names.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selflab.controller import plots
from selflab.controller.bench import best_so_far, hypervolume_curve
from selflab.controller.config import ConfigError, LabConfig, build_planner, load_config
from selflab.controller.ledger import Ledger, LedgerError
from selflab.controller.projection import CampaignState, ExperimentView
from selflab.planners.protocol import Observation, PlanContext, Predictor, Recommendation, Recommender
from selflab.planners.registry import make_planner
from selflab.planners.space import CategoricalParameter, IntParameter, Objective, Parameter, Point

MIN_RESULTS_FOR_GP = 3
SLICE_POINTS = 60


def register(subparsers: Any) -> None:
    """Add the ``report`` subcommand."""
    p = subparsers.add_parser("report", help="draw a campaign's figures (PNG) from its ledger")
    p.add_argument("config", metavar="CONFIG", nargs="?")
    p.add_argument("--ledger", metavar="URL", help="read this ledger (instead of, or overriding, the config's)")
    p.add_argument("--campaign", metavar="NAME", help="which campaign, when the ledger holds several")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for the PNG files")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Draw the figures; the exit code (bad config or ledger: the CLI's exit 2)."""
    from selflab.controller.reports import load_state

    if args.config is None and args.ledger is None:
        print("selflab report: give a CONFIG or --ledger URL", file=sys.stderr)
        return 2
    url, campaign = args.ledger, args.campaign
    if args.config is not None:
        config = load_config(args.config)
        url, campaign = url or config.ledger_url, campaign or config.name
    ledger = Ledger(url, create=False)
    try:
        state = load_state(ledger, campaign)
    finally:
        ledger.close()
    for path in write_report(state, Path(args.out), note=lambda text: print(f"note: {text}", file=sys.stderr)):
        print(path)
    return 0


def write_report(state: CampaignState, out: Path, note: Callable[[str], None] = print) -> list[Path]:
    """Draw every figure of ``state`` into ``out``; the paths written."""
    config = config_of(state)
    done = completed(state)
    title = f"campaign {state.campaign}: {len(done)} completed"
    model = model_view(state, config, note)
    panels = [results_of(state, config, o.name, recommended=recommended(state, model, o.name)) for o in config.objectives]
    hypervolume = None
    front = front_of(state, config) if len(config.objectives) > 1 else None
    if front is not None:
        hypervolume = hypervolume_curve(front.points, front.feasible, [o.direction for o in config.objectives], front.reference)
    paths = [plots.save(plots.results_figure(panels, title=title, hypervolume=hypervolume), out / "best_so_far.png")]
    if front is not None:
        if front.pareto.any():
            paths.append(plots.save(plots.pareto_figure(front, title=title), out / "pareto.png"))
        else:
            note("Pareto front skipped: no feasible result has every objective yet")
    if model is not None:
        paths += _model_figures(model, state, config, out, note)
    for panel in panels:
        if len(panel.values):
            paths.append(plots.save(plots.cost_figure(panel, title=f"{panel.name} against cost spent"), out / f"cost_{panel.name}.png"))
    return paths


def config_of(state: CampaignState) -> LabConfig:
    """The campaign's config, from its ``campaign_started`` snapshot."""
    if state.config is None:
        raise LedgerError(f"campaign {state.campaign!r} has no campaign_started event: nothing to report")
    return LabConfig.model_validate(state.config)


def completed(state: CampaignState) -> list[ExperimentView]:
    """Completed experiments (attached ones too), in the order their results came."""
    return [state.experiments[eid] for eid in state.completions]


def feasible(exp: ExperimentView, config: LabConfig) -> bool:
    """Whether ``exp`` meets every outcome constraint."""
    return all(c.satisfied(exp.outcomes) for c in config.constraints)


def counted(exp: ExperimentView, config: LabConfig) -> bool:
    """Whether a best so far counts ``exp``: feasible and at the target fidelity."""
    return exp.fidelity == config.target_fidelity and feasible(exp, config)


def _finite(exp: ExperimentView, name: str) -> bool:
    return name in exp.outcomes and math.isfinite(exp.outcomes[name])


def results_of(state: CampaignState, config: LabConfig, name: str, *, recommended: tuple[float, float] | None = None) -> plots.Results:
    """Objective ``name``'s results in the order they came, with the cost spent
    when each came in (completed and failed experiments, in finishing order),
    the best so far over the counted ones (:func:`counted`), and the
    recommendation's predicted ``(mean, std)`` when given."""
    objective = next(o for o in config.objectives if o.name == name)
    finished = sorted(state.with_status("completed", "failed"), key=lambda e: (e.finished_position, e.experiment_id))
    by_id = {e.experiment_id: e for e in completed(state) if _finite(e, name)}
    spent, cost_at = 0.0, {}
    for e in finished:
        spent += e.cost
        cost_at[e.experiment_id] = spent
    for eid in by_id:
        cost_at.setdefault(eid, spent)  # (an attached result costs nothing and may have no finishing position)
    shown = list(by_id.values())
    counts = np.array([counted(e, config) for e in shown], dtype=bool)
    values = np.array([e.outcomes[name] for e in shown], dtype=float)
    return plots.Results(
        name=name, unit=objective.unit, direction=objective.direction, values=values,
        fidelity=np.array([e.fidelity for e in shown], dtype=float),
        feasible=np.array([feasible(e, config) for e in shown], dtype=bool), counted=counts,
        best=best_so_far([float(v) if c else None for v, c in zip(values, counts)], objective.direction),
        cost=np.array([cost_at[e.experiment_id] for e in shown], dtype=float), target_fidelity=config.target_fidelity,
        recommended=recommended,
    )


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


def front_of(state: CampaignState, config: LabConfig) -> plots.Front:
    """The results that have every objective (completion order), which count
    for the hypervolume (:func:`counted`), the Pareto set, and the reference point."""
    names = [o.name for o in config.objectives]
    shown = [e for e in completed(state) if all(_finite(e, n) for n in names)]
    points = np.array([[e.outcomes[n] for n in names] for e in shown], dtype=float).reshape(-1, len(names))
    ok = np.array([counted(e, config) for e in shown], dtype=bool)
    pareto = {e.experiment_id for e in state.pareto(config.objectives, config.constraints)}
    return plots.Front(
        names=names, units=[o.unit for o in config.objectives], points=points, feasible=ok,
        pareto=np.array([e.experiment_id in pareto for e in shown], dtype=bool),
        reference=reference_point(config.objectives, points, ok),
        reference_given=[o.reference_point is not None for o in config.objectives],
    )


def reference_point(objectives: Sequence[Objective], points: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """The hypervolume corner in the objectives' units: each objective's
    ``reference_point``, else inferred as :func:`selflab.planners.acquisition.reference_point`
    infers it (botorch's ``infer_reference_point`` over the Pareto front of the
    ``usable`` points, all of them when none is: the nadir less 10 % of the
    front's range)."""
    import torch
    from botorch.utils.multi_objective.hypervolume import infer_reference_point
    from botorch.utils.multi_objective.pareto import is_non_dominated

    sign = np.array([1.0 if o.direction == "maximize" else -1.0 for o in objectives])
    given = np.array([np.nan if o.reference_point is None else o.reference_point for o in objectives], dtype=float)
    if not np.isnan(given).any() or not len(points):
        return given
    Y = torch.tensor(points[usable] if usable.any() else points, dtype=torch.float64) * torch.tensor(sign)
    inferred = infer_reference_point(Y[is_non_dominated(Y)]).numpy() * sign
    return np.where(np.isnan(given), inferred, given)


# --- the planner's model -------------------------------------------------------------------


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
    and the unmeasured points of a pool."""
    context = PlanContext(seed=config.seed, step=state.next_experiment_id - 1, constraints=tuple(config.constraints),
                          target_fidelity=config.target_fidelity)
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
    """The planner's observations: completed experiments in the order their results came."""
    return [Observation.from_result(e.params, e.outcomes, e.fidelity) for e in completed(state)]


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
            log=bool(getattr(p, "log", False)), unit=p.unit, observed_x=[o.params[p.name] for o in shown],
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


def _model_figures(model: ModelView, state: CampaignState, config: LabConfig, out: Path, note: Callable[[str], None]) -> list[Path]:
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


def floor(done: Sequence[ExperimentView], name: str) -> float | None:
    """0 when every result of ``name`` is non-negative (a yield, a concentration:
    a band below 0 is the model's, not the quantity's), else ``None``."""
    values = [e.outcomes[name] for e in done if _finite(e, name)]
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
