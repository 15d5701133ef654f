"""Warm starts from an earlier campaign (issue 19): evaluations to regret <= 0.1 on Hartmann6.

    nice -n 10 python benchmarks/warm_start.py --seeds 10 --json warm_start.json --plot benchmarks/figures/warm_start.png
    python benchmarks/warm_start.py --seeds 2                       # a quick look

Per seed:

- the *source* is an earlier campaign on a related system: Hartmann6 seen
  through an input offset of +0.03 on every coordinate, an output offset of
  +1 and a 10 % multiplicative distortion, ``s(x) = H6(x + 0.03) * (1 + 0.1 cos(2 pi (x1 + x3))) + 1``,
  40 evaluations by the ``bo`` planner (seed 1000), one campaign shared by
  every target seed (last month's campaign, as a lab would have it);
- the *unrelated* source: the same 40 points with their outputs shuffled;
- four target campaigns on Hartmann6 (minimize, optimum -3.32237), each run
  until its best observed value is within 0.1 of the optimum or the budget
  (``--budget``, 40) is spent: ``cold`` (no warm start), ``warm`` (the related
  source), ``unrelated`` (the shuffled source, guard on) and
  ``unrelated_unguarded`` (the shuffled source, ``warm_start_guard: off``:
  what the guard protects against).

All arms use the ``bo`` planner with the same, reduced optimizer effort
(``--restarts``, ``--raw-samples``) and the same seed, with the planner's
default initial design (a warm start's is half the cold start's), one experiment at a time (a plain propose/observe loop: the planner sees the
source rows exactly as ``warm_start`` passes them in a campaign). A run that
does not reach the target counts as ``budget + 1``.

Targets: median evaluations of ``warm`` at least 30 % below ``cold``'s, and
``unrelated`` at most 1.1x ``cold``'s. Counts evaluations, not time.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from botorch.test_functions import Hartmann

from selflab.planners.bo import BOPlanner
from selflab.planners.protocol import Observation, PlanContext, SourceTask
from selflab.planners.space import FloatParameter, Objective, SearchSpace

OPTIMUM = -3.32237
TARGET_REGRET = 0.1
SPACE = SearchSpace(parameters=[FloatParameter(name=f"x{i}", low=0.0, high=1.0) for i in range(1, 7)])
OBJECTIVES = [Objective(name="y", direction="minimize")]
_H6 = Hartmann(dim=6)


def hartmann(p: dict[str, Any]) -> float:
    return float(_H6(torch.tensor([[float(p[f"x{i}"]) for i in range(1, 7)]], dtype=torch.float64))[0])


def related(p: dict[str, Any]) -> float:
    """Hartmann6 with an input offset, an output offset and a 10 % distortion (module docs)."""
    shifted = {k: min(1.0, float(v) + 0.03) for k, v in p.items()}
    return hartmann(shifted) * (1 + 0.1 * math.cos(2 * math.pi * (float(p["x1"]) + float(p["x3"])))) + 1.0


def campaign(f: Any, seed: int, budget: int, options: dict[str, Any], sources: tuple[SourceTask, ...] = (),
             stop_at: float | None = None) -> tuple[list[Observation], list[dict[str, Any]]]:
    """A one-at-a-time BO loop on ``f``; stops early once ``f``'s best is within ``stop_at`` of OPTIMUM."""
    planner = BOPlanner(**options)
    observations: list[Observation] = []
    reasons: list[dict[str, Any]] = []
    for step in range(budget):
        (p,) = planner.propose(SPACE, OBJECTIVES, observations, [], 1, context=PlanContext(seed=seed, step=step, warm_start=sources))
        observations.append(Observation(params=p.params, outcomes={"y": f(p.params)}))
        reasons.append(p.reason)
        if stop_at is not None and min(o.outcomes["y"] for o in observations) - OPTIMUM <= stop_at:
            break
    return observations, reasons


def evaluations_to_target(observations: list[Observation], budget: int) -> int:
    best = math.inf
    for i, o in enumerate(observations, start=1):
        best = min(best, o.outcomes["y"])
        if best - OPTIMUM <= TARGET_REGRET:
            return i
    return budget + 1


def source_campaign(args: argparse.Namespace) -> list[Observation]:
    """The earlier campaign on the related system: 40 BO evaluations (seed 1000), or with ``--source-design
    sobol`` 40 scrambled Sobol points (a screening study rather than an optimization), shared by every target
    seed (kept in ``--source-cache`` when given, so that several processes share one)."""
    cache: Path | None = args.source_cache
    if cache is not None and cache.exists():
        return [Observation.model_validate(o) for o in json.loads(cache.read_text())]
    options = {"num_restarts": args.restarts, "raw_samples": args.raw_samples, "maxiter": args.maxiter}
    if args.source_design == "sobol":
        U = torch.quasirandom.SobolEngine(6, scramble=True, seed=args.source_seed).draw(40, dtype=torch.float64)
        points = [{f"x{i}": float(u[i - 1]) for i in range(1, 7)} for u in U]
        source = [Observation(params=p, outcomes={"y": related(p)}) for p in points]
    else:
        source = campaign(related, args.source_seed, 40, options)[0]
    if cache is not None:
        cache.write_text(json.dumps([o.model_dump(mode="json") for o in source]))
    return source


def one_seed(seed: int, args: argparse.Namespace, source_obs: list[Observation]) -> dict[str, Any]:
    options = {"num_restarts": args.restarts, "raw_samples": args.raw_samples, "maxiter": args.maxiter}
    shuffled = [o.outcomes["y"] for o in source_obs]
    random.Random(seed).shuffle(shuffled)
    unrelated_obs = [Observation(params=o.params, outcomes={"y": y}) for o, y in zip(source_obs, shuffled)]
    arms = {
        "cold": ((), options),
        "warm": ((SourceTask(name="related", observations=tuple(source_obs)),), options),
        "unrelated": ((SourceTask(name="shuffled", observations=tuple(unrelated_obs)),), options),
        "unrelated_unguarded": ((SourceTask(name="shuffled", observations=tuple(unrelated_obs)),), {**options, "warm_start_guard": "off"}),
    }
    out: dict[str, Any] = {"seed": seed}
    for arm, (sources, arm_options) in arms.items():
        if arm not in args.arms:
            continue
        observations, reasons = campaign(hartmann, seed, args.budget, arm_options, sources, stop_at=TARGET_REGRET)
        warm = [r.get("warm_start") for r in reasons if r.get("warm_start")]
        out[arm] = {
            "evaluations": evaluations_to_target(observations, args.budget),
            "best_regret": min(o.outcomes["y"] for o in observations) - OPTIMUM,
            "transfer_used": sum(bool(w["used"]) for w in warm),
            "model_steps": len(warm),
            "correlation": [w["correlation"][w["sources"][0]]["y"] if w["correlation"] else None for w in warm],
        }
        print(f"seed {seed} {arm}: {out[arm]['evaluations']} evaluations (transfer on {out[arm]['transfer_used']}/{len(warm)} model steps)",
              file=sys.stderr, flush=True)
    return out


def summary(runs: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    med = {arm: statistics.median(r[arm]["evaluations"] for r in runs) for arm in arms if all(arm in r for r in runs)}
    out: dict[str, Any] = {"median_evaluations": med}
    if "cold" in med:
        out["ratio_to_cold"] = {arm: med[arm] / med["cold"] for arm in med if arm != "cold"}
        if "warm" in med:
            out["warm_saving"] = 1 - med["warm"] / med["cold"]
            out["target_warm_30pct_fewer"] = out["warm_saving"] >= 0.3
        if "unrelated" in med:
            out["target_unrelated_within_1.1x"] = med["unrelated"] <= 1.1 * med["cold"]
    return out


def plot(runs: list[dict[str, Any]], arms: list[str], path: Path, source_seed: int, budget: int, source_design: str = "bo") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    data = [[r[arm]["evaluations"] for r in runs] for arm in arms]
    ax.boxplot(data, showmeans=False)
    ax.set_xticks(range(1, len(arms) + 1), arms)
    for i, values in enumerate(data, start=1):
        ax.scatter([i + random.Random(j).uniform(-0.12, 0.12) for j in range(len(values))], values, s=12, alpha=0.6)
    ax.set_ylabel(f"evaluations to regret <= {TARGET_REGRET}\n({budget + 1}: not reached in {budget})")
    source = f"40-point {source_design} campaign" if source_design == "bo" else "40-point Sobol screening"
    ax.set_title(f"Hartmann6 warm start from a related {source} (source seed {source_seed}), {len(runs)} seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--raw-samples", type=int, default=128)
    parser.add_argument("--maxiter", type=int, default=30)
    parser.add_argument("--arms", nargs="+", default=["cold", "warm", "unrelated"],
                        help="of cold, warm, unrelated, unrelated_unguarded")
    parser.add_argument("--source-seed", type=int, default=1000, help="the seed of the source campaign")
    parser.add_argument("--source-design", choices=["bo", "sobol"], default="bo",
                        help="how the source's 40 points were chosen: a bo campaign (default) or a Sobol screening design")
    parser.add_argument("--source-cache", type=Path, help="JSON file holding the source campaign (written when absent)")
    parser.add_argument("--merge", type=Path, nargs="+", help="summarize (and plot) the runs of these --json files instead of running")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.merge:
        by_seed: dict[int, dict[str, Any]] = {}
        for path in args.merge:  # (one seed's arms may come from several files)
            for r in json.loads(path.read_text())["runs"]:
                by_seed.setdefault(r["seed"], {}).update(r)
        runs = [by_seed[seed] for seed in sorted(by_seed)]
    else:
        source = source_campaign(args)
        print(f"source campaign: best {min(o.outcomes['y'] for o in source):.3f}", file=sys.stderr, flush=True)
        runs = [one_seed(seed, args, source) for seed in range(args.first_seed, args.first_seed + args.seeds)]
    result = {"command": " ".join(sys.argv), "runs": runs, "summary": summary(runs, args.arms)}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    if args.plot:
        plot(runs, args.arms, args.plot, args.source_seed, args.budget, args.source_design)
    return 0


if __name__ == "__main__":
    sys.exit(main())
