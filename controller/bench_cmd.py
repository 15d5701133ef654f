"""``selflab bench``: planners against a benchmark problem, over seeds.

Usage::

    selflab bench --problem P --planner Q[,Q2...] (--budget N | --cost-budget C) --seeds S [--batch q]
                  [--options JSON] [--json FILE] [--plot FILE.png] [--objective COLUMN --direction maximize|minimize]

Problems: those of the installed catalogues (:func:`selflab.controller.bench.get_problem`;
selflab's own: :mod:`selflab.simulators.problems`, ``pool:PATH.csv`` with
``--objective``). Planners: random, sobol, bo, ax, mf. Each seed is a real
campaign (:mod:`selflab.controller.bench`). ``--options`` gives one planner its
``planner.options`` (a JSON object, e.g. ``'{"kernel": "rbf"}'``; recorded
in the JSON as ``options``). ``--budget`` caps experiments,
``--cost-budget`` cost units (give either or both). Prints one summary line
per planner; ``--json`` writes the results (one object, or an array for
several planners). ``--plot`` draws the regret of the best so far (median
and interquartile band, log scale; the best value where the optimum is
unknown) against evaluations, or, for a multi-fidelity problem,
the recommendation regret against cumulative cost. A live progress bar shows
on a terminal. Bad input: one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selflab.controller.bench import BenchError, BenchResult, Problem, ProblemError, get_problem, regret_against_cost, regret_trace, run_bench

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BENCH_PLANNERS = ("random", "sobol", "bo", "ax", "mf")
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
    p = subparsers.add_parser("bench", help="benchmark planners on a problem over seeds (simulated campaigns)")
    p.add_argument("--problem", required=True, metavar="P", help="branin, hartmann6, reactor, gramacy, branin_currin, p3ht, perovskite, autoam, "
                   "augmented_hartmann, augmented_branin, reactor_multifidelity or pool:PATH.csv")
    p.add_argument("--planner", required=True, metavar="Q", help=f"one of {', '.join(BENCH_PLANNERS)}, or several joined by commas")
    p.add_argument("--budget", type=_positive, metavar="N", help="experiments per campaign")
    p.add_argument("--cost-budget", type=_positive_float, metavar="C", help="cost units per campaign (multi-fidelity problems; with or instead of --budget)")
    p.add_argument("--seeds", required=True, type=_positive, metavar="S", help="campaigns per planner (seeds 0..S-1)")
    p.add_argument("--batch", type=_positive, default=1, metavar="q", help="experiments in flight at once (default 1)")
    p.add_argument("--options", metavar="JSON", help="the planner's options, a JSON object (one planner only), e.g. '{\"kernel\": \"rbf\"}'")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw the regret of the best so far against evaluations (log scale)")
    p.add_argument("--objective", metavar="COLUMN", help="pool:PATH.csv only: the objective column")
    p.add_argument("--direction", choices=("maximize", "minimize"), help="pool:PATH.csv only (default maximize)")
    p.set_defaults(handler=handle)


def _fail(message: str) -> int:
    print(f"selflab bench: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def handle(args: argparse.Namespace) -> int:
    """Run the benchmark; the exit code."""
    from selflab.controller.progress import setup_logging
    from selflab.planners.registry import make_planner

    if args.budget is None and args.cost_budget is None:
        return _fail("give --budget N (experiments), --cost-budget C (cost units), or both")
    planners = [q.strip() for q in args.planner.split(",") if q.strip()]
    unknown = [q for q in planners if q not in BENCH_PLANNERS]
    if not planners or unknown:
        return _fail(f"unknown planner {', '.join(map(repr, unknown)) or repr(args.planner)}; choose from {', '.join(BENCH_PLANNERS)}")
    try:
        problem = get_problem(args.problem, objective=args.objective, direction=args.direction)
    except ProblemError as exc:
        return _fail(str(exc))
    options: dict[str, Any] = {}
    if args.options is not None:
        try:
            options = json.loads(args.options)
        except json.JSONDecodeError as exc:
            return _fail(f"--options is not JSON: {exc}")
        if not isinstance(options, dict):
            return _fail("--options must be a JSON object, e.g. '{\"kernel\": \"rbf\"}'")
        if len(planners) > 1:
            return _fail("--options applies to one planner; run each planner with its own --options")
    for kind in planners:
        try:
            make_planner(kind, options)
        except ImportError as exc:
            return _fail(f"planner {kind!r} is not available: {exc}")
        except (TypeError, ValueError) as exc:
            return _fail(f"--options: {exc}")
    console = setup_logging(quiet=True, debug=getattr(args, "debug", False))
    results: list[BenchResult] = []
    try:
        with _ProgressBar(console, len(planners) * args.seeds * args.budget if args.budget else None) as advance:
            for kind in planners:
                result = run_bench(problem, kind, args.budget, args.seeds, args.batch, progress=advance(kind),
                                   options=options, cost_budget=args.cost_budget)
                results.append(result)
                print(_summary(result), flush=True)
    except BenchError as exc:
        print(f"selflab bench: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        data = [r.model_dump(mode="json") for r in results]
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data[0] if len(data) == 1 else data, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {path}", file=sys.stderr)
    if args.plot:
        print(f"wrote {_plot(problem, results, args.plot)}", file=sys.stderr)
    return EXIT_OK


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
            f", makespan {r.median_makespan_seconds / 3600:.3g} h, cost {r.median_cost:.4g}"
            f" ({r.seeds} seeds, budget {r.budget if r.budget is not None else '-'}"
            f"{'' if r.cost_budget is None else f', cost budget {r.cost_budget:g}'}, batch {r.batch})")
    if r.median_recommendation_regret is not None:
        text += f", recommendation regret {num(r.median_recommendation_regret)}"
    if r.evaluations_to_80pct_top5 is not None:
        text += f", 80% of top-5% after {r.evaluations_to_80pct_top5} evaluations (seed-averaged)"
    return text


class _ProgressBar:
    """A rich progress bar over all evaluations on a terminal; silent otherwise.

    Entering gives ``advance(planner) -> callback(seed, completed)``.
    """

    def __init__(self, console: Any, total: int | None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.enabled = console.is_terminal
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.task = self.progress.add_task("bench", total=total)
        self.done: dict[tuple[str, int], int] = {}

    def __enter__(self) -> Any:
        if self.enabled:
            self.progress.start()
        return self.advance

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def advance(self, planner: str) -> Any:
        def callback(seed: int, completed: int) -> None:
            self.done[(planner, seed)] = completed
            if self.enabled:
                self.progress.update(self.task, completed=sum(self.done.values()),
                                     description=f"{planner} seed {seed}")
        return callback
