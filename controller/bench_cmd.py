"""``selflab bench``: planners against a benchmark problem, over seeds.

Usage::

    selflab bench --problem P[,P2...] --planner Q[,Q2...] (--budget N | --cost-budget C) --seeds S [--batch q]
                  [--options JSON] [--json FILE [--resume]] [--plot FILE.png] [--objective COLUMN --direction maximize|minimize]
                  [--workers N] [--executor process|ray] [--ray-address ADDR]

Problems: those of the installed catalogues (:func:`selflab.controller.bench.get_problem`;
selflab's own: :mod:`selflab.simulators.problems`, ``pool:PATH.csv`` with
``--objective``). Planners: random, sobol, bo, ax, mf, plain (:mod:`selflab.planners.plain`). Each seed is a real
campaign (:mod:`selflab.controller.bench`). ``--workers N`` runs N seeds at
a time over planners × problems × seeds (:mod:`selflab.controller.fanout`):
on local worker processes (``--executor process``, the default), or as Ray
tasks (``--executor ray``: a Ray started here, or the cluster at
``--ray-address``; ``pip install 'selflab[ray]'``). Each seed's record is
the same whichever way it runs. A seed that fails (its worker died, its
campaign stopped early) is listed in the JSON's ``failed`` with the reason
and the exit code is 1; the ``--json`` file is rewritten after every seed,
and ``--resume`` runs only the seeds it lacks (:mod:`selflab.controller.bench_store`). ``--options`` gives one planner its
``planner.options`` (a JSON object, e.g. ``'{"kernel": "rbf"}'``; recorded
in the JSON as ``options``). ``--budget`` caps experiments,
``--cost-budget`` cost units (give either or both). Prints one summary line
per planner; ``--json`` writes the results (one object, or an array for
several results). ``--plot`` draws the regret of the best so far (median
and interquartile band, log scale; the best value where the optimum is
unknown) against evaluations, or, for a multi-fidelity problem,
the recommendation regret against cumulative cost (several problems: one
file each, ``FILE-problem.png``). Progress shows the seeds done out of the
total with a time estimate: a live bar on a terminal, else a line per seed
on stderr. Bad input: one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selflab.controller.bench import BenchResult, Problem, ProblemError, SeedFailure, get_problem, regret_against_cost, regret_trace
from selflab.controller.bench_store import BenchStore, GridSettings, StoreError
from selflab.controller.fanout import Outcome, SeedTask, prepare_workers, run_grid
from selflab.instruments.ray_task import RayUnavailable, require_ray

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BENCH_PLANNERS = ("random", "sobol", "bo", "ax", "mf", "plain")
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 (got {text})")
    return value


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand."""
    p = subparsers.add_parser("bench", help="benchmark planners on problems over seeds (simulated campaigns)")
    p.add_argument("--problem", required=True, metavar="P", help="branin, hartmann6, reactor, gramacy, branin_currin, p3ht, perovskite, autoam, "
                   "augmented_hartmann, augmented_branin, reactor_multifidelity, carburizing or pool:PATH.csv; several joined by commas")
    p.add_argument("--planner", required=True, metavar="Q", help=f"one of {', '.join(BENCH_PLANNERS)}, or several joined by commas")
    p.add_argument("--budget", type=_positive, metavar="N", help="experiments per campaign")
    p.add_argument("--cost-budget", type=_positive_float, metavar="C", help="cost units per campaign (multi-fidelity problems; with or instead of --budget)")
    p.add_argument("--seeds", required=True, type=_positive, metavar="S", help="campaigns per planner and problem (seeds 0..S-1)")
    p.add_argument("--batch", type=_positive, default=1, metavar="q", help="experiments in flight at once (default 1)")
    p.add_argument("--options", metavar="JSON", help="the planner's options, a JSON object (one planner only), e.g. '{\"kernel\": \"rbf\"}'")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON (rewritten after every seed)")
    p.add_argument("--resume", action="store_true", help="run only the seeds the --json file lacks (never run, or failed)")
    p.add_argument("--plot", metavar="FILE.png", help="draw the regret of the best so far against evaluations (log scale)")
    p.add_argument("--objective", metavar="COLUMN", help="pool:PATH.csv only: the objective column")
    p.add_argument("--direction", choices=("maximize", "minimize"), help="pool:PATH.csv only (default maximize)")
    p.add_argument("--workers", type=_positive, default=1, metavar="N", help="seeds run at once (default 1: one after the other, here)")
    p.add_argument("--executor", choices=("process", "ray"), default="process",
                   help="process: local worker processes (default); ray: Ray tasks (pip install 'selflab[ray]')")
    p.add_argument("--ray-address", metavar="ADDR", help="--executor ray: the cluster to use, e.g. ray://head:10001 (default: RAY_ADDRESS, else a Ray started here)")
    p.set_defaults(handler=handle)


def _fail(message: str) -> int:
    print(f"selflab bench: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _settings(args: argparse.Namespace, planners: list[str]) -> GridSettings | str:
    """The grid's settings, or what is wrong with them."""
    from selflab.planners.registry import make_planner

    options: dict[str, Any] = {}
    if args.options is not None:
        try:
            options = json.loads(args.options)
        except json.JSONDecodeError as exc:
            return f"--options is not JSON: {exc}"
        if not isinstance(options, dict):
            return "--options must be a JSON object, e.g. '{\"kernel\": \"rbf\"}'"
        if len(planners) > 1:
            return "--options applies to one planner; run each planner with its own --options"
    for kind in planners:
        try:
            make_planner(kind, options)
        except ImportError as exc:
            return f"planner {kind!r} is not available: {exc}"
        except (TypeError, ValueError) as exc:
            return f"--options: {exc}"
    return GridSettings(budget=args.budget, batch=args.batch, options=options, cost_budget=args.cost_budget)


def handle(args: argparse.Namespace) -> int:
    """Run the benchmark; the exit code."""
    from selflab.controller.progress import setup_logging

    if args.budget is None and args.cost_budget is None:
        return _fail("give --budget N (experiments), --cost-budget C (cost units), or both")
    planners = _names(args.planner)
    unknown = [q for q in planners if q not in BENCH_PLANNERS]
    if not planners or unknown:
        return _fail(f"unknown planner {', '.join(map(repr, unknown)) or repr(args.planner)}; choose from {', '.join(BENCH_PLANNERS)}")
    problems: list[Problem] = []
    try:
        for spec in _names(args.problem) or [args.problem]:
            problems.append(get_problem(spec, objective=args.objective, direction=args.direction))
    except ProblemError as exc:
        return _fail(str(exc))
    if len({p.name for p in problems}) < len(problems):
        return _fail(f"--problem names a problem twice: {args.problem}")
    if args.ray_address and args.executor != "ray":
        return _fail("--ray-address needs --executor ray")
    if args.resume and not args.json:
        return _fail("--resume needs --json FILE, the results of the run to resume")
    if args.executor == "ray":
        try:
            require_ray()
        except RayUnavailable as exc:
            return _fail(f"--executor ray: {exc}")
    prepare_workers(args.workers, args.executor, planners)  # (the workers' imports run beside the checks below)
    settings = _settings(args, planners)
    if isinstance(settings, str):
        return _fail(settings)
    store = BenchStore(problems, planners, args.seeds, settings, Path(args.json) if args.json else None)
    if args.resume:
        try:
            store.load()
        except StoreError as exc:
            return _fail(str(exc))
    console = setup_logging(quiet=True, debug=getattr(args, "debug", False))
    try:
        with SeedProgress(console, store.total, store.finished) as progress:
            def done(task: SeedTask, outcome: Outcome) -> None:
                store.add(task, outcome)
                progress.seed_done(task, outcome)

            run_grid(store.missing(), on_done=done, workers=args.workers, executor=args.executor, ray_address=args.ray_address,
                     progress=progress.experiments)
    except RayUnavailable as exc:
        print(f"selflab bench: --executor ray: {exc}", file=sys.stderr)
        return EXIT_FAILED
    results = store.results()
    for result in results:
        print(_summary(result), flush=True)
    if store.path is not None:
        store.write()
        print(f"wrote {store.path}", file=sys.stderr)
    if args.plot:
        for problem in problems:
            mine = [r for r in results if r.problem == problem.name and r.runs]
            if mine:
                print(f"wrote {_plot(problem, mine, _plot_path(args.plot, problem.name, len(problems)))}", file=sys.stderr)
    failures = store.failures()
    if failures:
        (_, first), more = failures[0], len(failures) - 1
        listed = f"; and {more} more{', listed in the JSON' if store.path else ''}" if more else ""
        again = "rerun the same command with --resume to run them again" if store.path else "add --json FILE to keep the results and resume"
        print(f"selflab bench: {len(failures)} of {store.total} seeds failed ({first.reason}{listed}); {again}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _plot_path(path: str, problem: str, problems: int) -> str:
    """``--plot``'s path, or with several problems ``STEM-problem.SUFFIX``."""
    if problems == 1:
        return path
    target = Path(path)
    return str(target.with_name(f"{target.stem}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', problem)}{target.suffix or '.png'}"))


def _plot(problem: Problem, results: list[BenchResult], path: str) -> Path:
    from selflab.controller.plots import save

    return save(bench_plot(problem, results), path)


def bench_plot(problem: Problem, results: list[BenchResult]) -> Figure:
    """The ``--plot`` figure: regret of the best so far against evaluations (log
    scale; the best value itself where the optimum is unknown), or for a
    multi-fidelity problem the recommendation's regret against cost."""
    from selflab.controller.plots import bench_figure, cost_regret_figure

    title = f"{problem.name}: median and IQR over {results[0].seeds} seeds"
    if problem.multi_fidelity and problem.optimum is not None:
        return cost_regret_figure({r.planner: regret_against_cost(r) for r in results}, title=title,
                                  ylabel=f"regret of the recommended {problem.objectives[0].name} (fidelity 1)")
    metric = "hypervolume" if problem.metric == "hypervolume" else f"best {problem.objectives[0].name}"
    if problem.optimum is None:
        return bench_figure({r.planner: [run.trace for run in r.runs] for r in results}, title=title, ylabel=metric)
    series = {r.planner: [regret_trace(problem, run.trace) for run in r.runs] for r in results}
    return bench_figure(series, title=title, ylabel=f"regret of the {metric} (log scale)", log=True)


def _summary(r: BenchResult) -> str:
    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.6g}"

    text = (f"{r.problem} {r.planner}: median {'hypervolume' if r.metric == 'hypervolume' else 'best'} {num(r.median_best)}"
            f", regret {num(r.median_regret)}, proposal {num(r.median_proposal_seconds)} s"
            f" ({num(r.median_step_seconds)} s with the recommendations' fits)"
            f", makespan {r.median_makespan_seconds / 3600:.3g} h, cost {r.median_cost:.4g}"
            f" ({r.seeds} seeds, budget {r.budget if r.budget is not None else '-'}"
            f"{'' if r.cost_budget is None else f', cost budget {r.cost_budget:g}'}, batch {r.batch})")
    if r.median_recommendation_regret is not None:
        text += f", recommendation regret {num(r.median_recommendation_regret)}"
    if r.evaluations_to_80pct_top5 is not None:
        text += f", 80% of top-5% after {r.evaluations_to_80pct_top5} evaluations (seed-averaged)"
    return text


class SeedProgress:
    """Seeds done out of the total, with a time estimate: a live bar on a
    terminal, else one line per seed on stderr.

    ``seed_done(task, outcome)`` counts a seed; ``experiments(task, n)`` shows
    the experiments of a seed running here.
    """

    def __init__(self, console: Any, total: int, done: int = 0) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console, self.total, self.done, self.failed = console, total, done, 0
        self.enabled = console.is_terminal
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("seeds"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)
        self.task = self.progress.add_task("bench", total=total, completed=done)
        self.started, self.first = time.monotonic(), done

    def __enter__(self) -> SeedProgress:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def experiments(self, task: SeedTask, completed: int) -> None:
        if self.enabled:
            self.progress.update(self.task, description=f"{task.label}: {completed} experiments")

    def seed_done(self, task: SeedTask, outcome: Outcome) -> None:
        self.done += 1
        failed = isinstance(outcome, SeedFailure)
        self.failed += failed
        if self.enabled:
            note = f" ({self.failed} failed so far)" if self.failed else ""
            self.progress.update(self.task, completed=self.done, description=f"{task.label}: {'failed' if failed else 'done'}{note}")
        else:
            print(f"bench: {self.done}/{self.total} seeds done ({task.label}: {'failed' if failed else 'finished'}){self._eta()}",
                  file=sys.stderr, flush=True)

    def _eta(self) -> str:
        ran, left = self.done - self.first, self.total - self.done
        if ran <= 0 or left <= 0:
            return ""
        return f", about {_duration((time.monotonic() - self.started) / ran * left)} left"


def _duration(seconds: float) -> str:
    """``seconds`` as ``1h02m``, ``3m05s`` or ``12s``."""
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
