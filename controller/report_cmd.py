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
* ``prequential_<outcome>.png`` (results proposed with a prediction): each
  result against what the model that proposed it predicted, with its 90 %
  interval; the histogram of the scores ``z`` with the standard normal
  curve; and the rolling 90 % coverage against the band below which the
  campaign records ``miscalibrated`` (:mod:`selflab.controller.plot_calibration`).
  A planner that records no prediction (``random``, ``sobol``) gets a note instead;
* ``cost_<objective>.png``: each result at the cumulative cost spent, coloured
  by fidelity when there are several, with the best so far at the target fidelity;
* ``actions.csv`` (when people acted): every approve, veto, edit, attach,
  note, pause, resume and stop request, with when, who, on which experiment
  and why.

Everything comes from the ledger (the config snapshot of ``campaign_started``)
and the planner that config names.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selflab.controller import plots
from selflab.controller.bench import hypervolume_curve
from selflab.controller.config import load_config
from selflab.controller.ledger import Ledger
from selflab.controller.projection import CampaignState
from selflab.controller.report_data import completed, config_of, counted, feasible, front_of, reference_point, results_of
from selflab.controller.report_model import (
    MIN_RESULTS_FOR_GP,
    SLICE_POINTS,
    ModelView,
    calibration_of,
    floor,
    grid,
    model_figures,
    model_of,
    model_view,
    observations_of,
    plan_context,
    pool_of_config,
    prequential_figures,
    recommended,
    slice_point,
    slices_of,
)

__all__ = [
    "MIN_RESULTS_FOR_GP", "SLICE_POINTS", "ModelView", "calibration_of", "completed", "config_of", "counted", "feasible",
    "floor", "front_of", "grid", "handle", "model_figures", "model_of", "model_view", "observations_of", "plan_context",
    "pool_of_config", "prequential_figures", "recommended", "reference_point", "register", "results_of", "slice_point", "slices_of", "write_report",
]
"""(The data and the model behind the figures live in :mod:`selflab.controller.report_data` and
:mod:`selflab.controller.report_model`; they are named here too.)"""


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
        paths += model_figures(model, state, config, out, note)
    paths += prequential_figures(state, config, out, note)
    for panel in panels:
        if len(panel.values):
            paths.append(plots.save(plots.cost_figure(panel, title=f"{panel.name} against cost spent"), out / f"cost_{panel.name}.png"))
    if state.actions:
        paths.append(write_actions(state, out / "actions.csv"))
    return paths


def write_actions(state: CampaignState, path: Path) -> Path:
    """``actions.csv``: every person's action on the campaign (approve, veto,
    edit, attach, note, pause, resume, stop), in ledger order, with who acted,
    when, on which experiment and why."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["at", "action", "experiment_id", "by", "text"])
        writer.writeheader()
        for action in state.actions:
            writer.writerow({"at": action["at"].isoformat(), "action": action["action"], "experiment_id": action["experiment_id"],
                             "by": action["by"], "text": action["text"]})
    return path
