"""Batches and plates (issue 22): the figures of its targets, as ratios in one run.

    python benchmarks/plates.py plates --problem hartmann6 --seeds 10 --out plates/     # q = 24, 4 plates, bo / sobol / ax
    python benchmarks/plates.py plates --problem reactor --seeds 10 --budget 96 --out plates/
    python benchmarks/plates.py batch --seeds 20 --out batch/       # q = 4 on 4 slots (52) against sequential bo (40)
    python benchmarks/plates.py timing --n 96 --q 24 --repeats 3    # one plate proposal, seconds (run it on a quiet machine)

``plates`` and ``batch`` run ``selflab bench`` once per planner (each a real
simulated campaign per seed; ``--options`` for a ``bo`` variant, e.g.
``--variant greedy='{"batch_strategy": "greedy"}'``), each into
``OUT/<problem>-<name>.json`` with ``--resume``, so a rerun of the same
command only runs the seeds still missing. They then print a Markdown table
of median regrets and their ratios to the baselines of the same run:

- ``plates``: each planner's median regret against Sobol plates' (target
  <= 1/3) and Ax's batch (target <= 1), the median seconds of a proposal;
- ``batch``: q = 4 after 52 evaluations against sequential ``bo`` after 40
  (target <= 1) and the simulated makespans' ratio (target <= 1/3).

``timing`` times one ``bo`` plate (``q`` points at ``n`` uniformly random
Hartmann6 observations), each batch strategy, ``--repeats`` times, and prints
the medians: the plate target is <= 10 s at n = 96, q = 24. The seconds mean
something only on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def bench(problem: str, planner: str, budget: int, batch: int, seeds: int, path: Path, options: str | None, workers: int) -> dict[str, Any]:
    """Run (or resume) one ``selflab bench`` into ``path``; its result."""
    cmd = ["selflab", "bench", "--problem", problem, "--planner", planner, "--budget", str(budget), "--batch", str(batch),
           "--seeds", str(seeds), "--json", str(path), "--workers", str(workers)]
    if options:
        cmd += ["--options", options]
    if path.exists():
        cmd.append("--resume")
    print("$ " + " ".join(cmd if not options else [*cmd[: cmd.index("--options") + 1], f"'{options}'", *cmd[cmd.index("--options") + 2:]]),
          file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def _variants(specs: list[str]) -> list[tuple[str, str, str | None]]:
    """``NAME=JSON`` -> ``(name, "bo", JSON)``."""
    out = []
    for spec in specs:
        name, _, options = spec.partition("=")
        out.append((name, "bo", options or None))
    return out


def _row(name: str, r: dict[str, Any], baselines: dict[str, float | None]) -> str:
    regret = r["median_regret"]
    ratios = [f"{regret / b:.3g}" if b and regret is not None else "n/a" for b in baselines.values()]
    per_seed = ", ".join(f"{run['regret']:.3g}" for run in r["runs"])
    return (f"| {name} | {r['seeds']} | {regret:.4g} | {' | '.join(ratios)} | {r['median_proposal_seconds']:.3g} "
            f"| {r['median_makespan_seconds'] / 60:.3g} | {per_seed} |")


def plates(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [("sobol", "sobol", None), ("ax", "ax", None), ("bo", "bo", None), *_variants(args.variant)]
    runs = [r for r in runs if r[0] in args.planners or r[0] not in ("sobol", "ax", "bo")]
    results = {name: bench(args.problem, planner, args.budget, args.batch, args.seeds, out / f"{args.problem}-{name}.json", options, args.workers)
               for name, planner, options in runs}
    baselines = {k: results[k]["median_regret"] for k in ("sobol", "ax") if k in results}
    print(f"\n{args.problem}, q = {args.batch}, {args.budget} evaluations ({args.budget // args.batch} plates), {args.seeds} seeds\n")
    print(f"| planner | seeds | median regret | {' | '.join(f'/ {k}' for k in baselines)} | median proposal s | makespan min | regret per seed |")
    print("|---" * (6 + len(baselines)) + "|")
    for name, r in results.items():
        print(_row(name, r, baselines))


def batch(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seq = bench(args.problem, "bo", args.sequential_budget, 1, args.seeds, out / f"{args.problem}-sequential.json", None, args.workers)
    results = {f"q = {args.batch} (bo defaults)": bench(args.problem, "bo", args.budget, args.batch, args.seeds,
                                                         out / f"{args.problem}-q{args.batch}.json", None, args.workers)}
    for name, planner, options in _variants(args.variant):
        results[name] = bench(args.problem, planner, args.budget, args.batch, args.seeds, out / f"{args.problem}-q{args.batch}-{name}.json",
                              options, args.workers)
    base = {"sequential": seq["median_regret"]}
    print(f"\n{args.problem}: sequential bo ({args.sequential_budget} evaluations) against q = {args.batch} "
          f"({args.budget} evaluations), {args.seeds} seeds\n")
    print("| run | seeds | median regret | / sequential | median proposal s | makespan min | regret per seed |")
    print("|---|---|---|---|---|---|---|")
    print(_row(f"sequential ({args.sequential_budget})", seq, base))
    for name, r in results.items():
        print(_row(name, r, base) + f" makespan / sequential {r['median_makespan_seconds'] / seq['median_makespan_seconds']:.3g}")


def timing(args: argparse.Namespace) -> None:
    import torch
    from botorch.test_functions import Hartmann

    from selflab.planners.bo import BOPlanner
    from selflab.planners.protocol import Observation, PlanContext
    from selflab.planners.space import FloatParameter, Objective, SearchSpace

    space = SearchSpace(parameters=[FloatParameter(name=f"x{i}", low=0.0, high=1.0) for i in range(6)])
    X = torch.rand(args.n, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = Hartmann(dim=6)(X)
    observations = [Observation(params={f"x{i}": float(r[i]) for i in range(6)}, outcomes={"y": float(v)}) for r, v in zip(X, y)]
    seconds: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for strategy in args.strategies:
            planner = BOPlanner(batch_strategy=strategy)
            started = time.perf_counter()
            planner.propose(space, [Objective(name="y", direction="minimize")], observations, [], args.q,
                            context=PlanContext(seed=0, step=args.n))
            seconds.setdefault(strategy, []).append(time.perf_counter() - started)
    for strategy, s in seconds.items():
        print(f"q = {args.q}, n = {args.n}, batch_strategy {strategy}: median {statistics.median(s):.2f} s "
              f"over {len(s)} ({', '.join(f'{x:.2f}' for x in s)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("plates")
    p.add_argument("--problem", default="hartmann6")
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--budget", type=int, default=96)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--planners", default="sobol,ax,bo", help="baselines and bo with its defaults, joined by commas")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=JSON", help="a bo variant with these options")
    p.add_argument("--out", default="plates")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(run=plates)
    b = sub.add_parser("batch")
    b.add_argument("--problem", default="hartmann6")
    b.add_argument("--batch", type=int, default=4)
    b.add_argument("--budget", type=int, default=52)
    b.add_argument("--sequential-budget", type=int, default=40)
    b.add_argument("--seeds", type=int, default=20)
    b.add_argument("--variant", action="append", default=[], metavar="NAME=JSON")
    b.add_argument("--out", default="batch")
    b.add_argument("--workers", type=int, default=1)
    b.set_defaults(run=batch)
    t = sub.add_parser("timing")
    t.add_argument("--n", type=int, default=96)
    t.add_argument("--q", type=int, default=24)
    t.add_argument("--repeats", type=int, default=3)
    t.add_argument("--strategies", nargs="+", default=["auto", "thompson", "greedy"])
    t.set_defaults(run=timing)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
