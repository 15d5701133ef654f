"""``selflab report``: figures of a campaign, drawn from its ledger.

Usage::

    selflab report CONFIG --out DIR
    selflab report --ledger URL [--campaign NAME] --out DIR

Writes into DIR (and prints each path):

* ``best_so_far.png``: best feasible value at the target fidelity against
  completed experiments, one panel per objective;
* ``pareto.png`` (several objectives): observed points, the feasible Pareto
  set (``CampaignState.pareto``) highlighted;
* ``gp_slices_<objective>.png``: the current GP (``planners.surrogate.fit_surrogate``)
  along each parameter through the best point, mean ± 2 sd; skipped with a
  note when the surrogate is unavailable or fewer than 3 results exist;
* ``cost_<objective>.png``: each result at the cumulative cost spent,
  coloured by fidelity, with the best so far at the target fidelity.

Everything comes from the ledger (the config snapshot of ``campaign_started``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from controller import plots
from controller.bench import best_so_far
from controller.config import LabConfig, load_config
from controller.ledger import Ledger, LedgerError
from controller.projection import CampaignState, ExperimentView
from planners.space import CategoricalParameter, IntParameter, Parameter

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
    from controller.reports import load_state

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
    if state.config is None:
        raise LedgerError(f"campaign {state.campaign!r} has no campaign_started event: nothing to report")
    config = LabConfig.model_validate(state.config)
    done = sorted(state.with_status("completed"), key=lambda e: (e.finished_at or e.proposed_at, e.experiment_id))
    target = [e for e in done if e.fidelity == config.target_fidelity and _feasible(e, config)]
    title = f"campaign {state.campaign}: {len(done)} completed"
    paths = [plots.traces_figure({f"best {o.name} ({o.direction})": _best_trace(done, config, o.name, o.direction)
                                  for o in config.objectives}, out / "best_so_far.png", title=title)]
    if len(config.objectives) > 1:
        names = [o.name for o in config.objectives]
        front = {e.experiment_id for e in state.pareto(config.objectives, config.constraints)}
        shown = [e for e in done if all(n in e.outcomes for n in names)]
        if front:
            points = np.array([[e.outcomes[n] for n in names] for e in shown], dtype=float)
            mask = np.array([e.experiment_id in front for e in shown])
            paths.append(plots.pareto_figure(points, names, mask, out / "pareto.png", title=title))
        else:
            note("Pareto front skipped: no feasible result has every objective yet")
    paths += _gp_slices(config, done, target, out, note)
    for o in config.objectives:
        cost, values, fidelity, best = _cost_series(state, config, o.name, o.direction)
        if values:
            paths.append(plots.cost_figure(cost, values, fidelity, best, out / f"cost_{o.name}.png",
                                           ylabel=o.name, title=f"{o.name} against cost spent"))
    return paths


def _feasible(exp: ExperimentView, config: LabConfig) -> bool:
    return all(c.satisfied(exp.outcomes) for c in config.constraints)


def _best_trace(done: list[ExperimentView], config: LabConfig, name: str, direction: str) -> list[float | None]:
    """Best feasible ``name`` at the target fidelity after each completed experiment."""
    return best_so_far([e.outcomes.get(name) if e.fidelity == config.target_fidelity and _feasible(e, config) else None
                        for e in done], direction)


def _cost_series(state: CampaignState, config: LabConfig, name: str,
                 direction: str) -> tuple[list[float], list[float], list[float], list[float | None]]:
    """Per completed result: cumulative cost spent (completed and failed
    experiments, in finishing order), value, fidelity, best at the target fidelity."""
    finished = sorted(state.with_status("completed", "failed"), key=lambda e: (e.finished_at or e.proposed_at, e.experiment_id))
    spent, cost, values, fidelity, best_input = 0.0, [], [], [], []
    for e in finished:
        spent += e.cost
        if e.status == "completed" and name in e.outcomes:
            cost.append(spent)
            values.append(e.outcomes[name])
            fidelity.append(e.fidelity)
            at_target = e.fidelity == config.target_fidelity and _feasible(e, config)
            best_input.append(e.outcomes[name] if at_target else None)
    return cost, values, fidelity, best_so_far(best_input, direction)


def _gp_slices(config: LabConfig, done: list[ExperimentView], target: list[ExperimentView], out: Path,
               note: Callable[[str], None]) -> list[Path]:
    """One ``gp_slices_<objective>.png`` per objective, or a note saying why not."""
    if len(done) < MIN_RESULTS_FOR_GP or not target:
        note(f"GP slices skipped: {len(done)} completed result(s), {len(target)} feasible at the target fidelity; "
             f"need at least {MIN_RESULTS_FOR_GP} and 1")
        return []
    try:
        from planners.surrogate import fit_surrogate
    except ImportError as exc:
        note(f"GP slices skipped: the GP surrogate is not available ({exc})")
        return []
    from planners.protocol import Observation

    observations = [Observation.from_result(e.params, e.outcomes, e.fidelity) for e in done]
    try:
        surrogate = fit_surrogate(config.space, config.objectives, observations, device="cpu", fidelity=config.target_fidelity)
    except Exception as exc:  # a failed fit must not cost the user the other figures
        note(f"GP slices skipped: the surrogate could not be fitted ({type(exc).__name__}: {exc})")
        return []
    first = config.objectives[0]
    pick = max if first.direction == "maximize" else min
    best = pick((e for e in target if first.name in e.outcomes), key=lambda e: e.outcomes[first.name], default=target[0])
    paths = []
    grids = {p.name: _grid(p) for p in config.parameters}
    predictions = {p.name: surrogate.predict([{**best.params, p.name: v} for v in grids[p.name]]) for p in config.parameters}
    for o in config.objectives:
        slices = [plots.Slice(parameter=p.name, x=grids[p.name], mean=np.asarray(predictions[p.name][o.name][0], dtype=float),
                              std=np.asarray(predictions[p.name][o.name][1], dtype=float), at=best.params[p.name],
                              categorical=isinstance(p, CategoricalParameter), log=bool(getattr(p, "log", False)))
                  for p in config.parameters]
        paths.append(plots.slices_figure(slices, o.name, out / f"gp_slices_{o.name}.png",
                                         title=f"GP of {o.name} through experiment {best.experiment_id}"))
    return paths


def _grid(p: Parameter) -> list[Any]:
    """Values along one parameter: every choice, every integer (up to
    :data:`SLICE_POINTS`), or evenly spaced (log-spaced for log parameters)."""
    if isinstance(p, CategoricalParameter):
        return list(p.choices)
    if isinstance(p, IntParameter):
        if p.high - p.low + 1 <= SLICE_POINTS:
            return list(range(p.low, p.high + 1))
        return sorted({int(round(v)) for v in np.linspace(p.low, p.high, SLICE_POINTS)})
    if p.log:
        return np.exp(np.linspace(math.log(p.low), math.log(p.high), SLICE_POINTS)).tolist()
    return np.linspace(p.low, p.high, SLICE_POINTS).tolist()
