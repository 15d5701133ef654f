"""Drift checks (issue 18, item 4): how soon a drift is found, how often a
steady instrument raises a false alarm.

    python benchmarks/drift.py --seeds 10 --json drift.json            # the RESULTS figures
    python benchmarks/drift.py --seeds 2 --planner sobol --steps 8      # a quick look

Each campaign is the real loop: a :class:`~selflab.controller.study.Study`
on SQLite driven by the :class:`~selflab.controller.runner.Runner` on the
simulated clock, with ``drift: {every: 5, reference: incumbent,
threshold_sigma: 4, policy: warn}``. The instrument is the plug-flow
reactor simulator (maximise the yield over residence time, temperature,
equivalents and concentration; Gaussian noise of std ``--noise``, 0.01 by
default, on yields from 0 to about 0.9) whose yield readings jump by
``step`` noise stds from its 25th experiment on (:class:`SteppedReactor`: a
lamp that aged, a probe knocked out of place). No ``min_sigma`` is set: the
noise is the checks' own guess (the ``bo`` planner's noise estimate or 1 %
of the observed range, shrunk towards the reference's readings, see
:mod:`selflab.controller.drift`). The planner is ``bo`` with the light
options of ``lab_configs/reactor_demo.yaml`` or ``sobol``.

Per seed: a drift run (``--drift-budget`` experiments, 36: checks at 6, 12,
18, 24, 30 and 36) for each step size, and one drift-free run
(``--clean-budget``, 50: eight checks). Reported:

- detection: the first ``drift_suspected`` at or after experiment 25, its
  delay in experiments, and whether it came within 10 (target: 9 of 10
  seeds, at the headline step);
- false alarms: ``drift_suspected`` events in the drift-free runs (target:
  at most 1 in 10 runs), and before the onset in the drift runs;
- the baseline, measured on the same readings: the naive rule that judges
  with the sample std of the reference's earlier readings alone (no floor,
  normal threshold 4), which is what "a few sigma of its earlier readings"
  gives without care.

Prints (and with ``--json`` writes) one JSON object. It counts events, not
time: run it on a loaded machine if need be.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from selflab.controller.drift import STRATEGY, judge
from selflab.controller.ledger import Ledger
from selflab.controller.runner import Runner
from selflab.controller.study import Study
from selflab.planners.registry import make_planner
from selflab.planners.space import FloatParameter, Objective, point_key
from selflab.simulators.reactor import PlugFlowReactor

ONSET = 25
"""The first experiment whose reading is drifted."""
WITHIN = 10
"""Detection counts when the first alarm comes at most this many experiments after the onset."""
PLANNER_OPTIONS: dict[str, dict[str, Any]] = {
    "bo": {"num_restarts": 2, "raw_samples": 128, "mc_samples": 64, "maxiter": 50, "refit_below": 0}, "sobol": {}}
"""``bo`` as ``lab_configs/reactor_demo.yaml`` runs it (light, so that 120 campaigns stay affordable)."""


class SteppedReactor(PlugFlowReactor):
    """The reactor whose yield readings jump by ``step`` from its
    ``onset``-th run on: a drift injected at an experiment (one instrument,
    one experiment at a time, so its n-th run is experiment n)."""

    def __init__(self, *, step: float, onset: int = ONSET, noise_std: float = 0.01, seed: int = 0) -> None:
        super().__init__(noise_std=noise_std, seed=seed)
        self.step, self.onset, self.runs = step, onset, 0

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        reading = await super().run(params)
        self.runs += 1
        return {**reading, "yield": reading["yield"] + (self.step if self.runs >= self.onset else 0.0)}


async def campaign(seed: int, step_sigma: float, budget: int, planner: str, noise: float, folder: Path) -> dict[str, Any]:
    """One campaign; what its ledger says of its drift checks."""
    url = f"sqlite:///{folder / f'drift-{planner}-{seed}-{step_sigma:g}.sqlite'}"
    space = [FloatParameter(name="residence_time", low=0.5, high=30, log=True), FloatParameter(name="temperature", low=30, high=150),
             FloatParameter(name="equivalents", low=1, high=5), FloatParameter(name="concentration", low=0.1, high=2.0)]
    study = Study.create(f"drift-{seed}", space, [Objective(name="yield", direction="maximize")], ledger=Ledger(url),
                         planner=make_planner(planner, PLANNER_OPTIONS[planner]), seed=seed, clock="simulated",
                         drift={"every": 5, "reference": "incumbent", "threshold_sigma": 4.0, "policy": "warn"})
    with study:
        instrument = SteppedReactor(step=step_sigma * noise, noise_std=noise, seed=seed)
        await Runner(study, {"sim": instrument}, stop={"max_experiments": budget}).run()
        state = study.state
        verdicts = study.drift_verdicts()
        alarms = [int(p["experiment_id"]) for p in state.drift_suspected]
        naive = naive_alarms(state)
        floors = sorted({v.floor_source for v in verdicts if v.floor_source})
    return {"seed": seed, "step_sigma": step_sigma, "budget": budget, "checks": [v.experiment_id for v in verdicts],
            "alarms": alarms, "naive_alarms": naive, "floor_sources": floors}


def naive_alarms(state: Any) -> list[int]:
    """The baseline on the same readings: each check judged with the sample
    std of the reference's earlier readings alone (two or more; no floor),
    threshold 4, history restarted after an alarm as the real rule does."""
    checks = [state.experiments[e] for e in state.completions if state.experiments[e].reason.get("strategy") == STRATEGY]
    if not checks:
        return []
    key = point_key(checks[0].reason[STRATEGY]["reference"])
    history: list[float] = []
    alarms: list[int] = []
    for eid in state.completions:
        exp = state.experiments[eid]
        if point_key(exp.params) != key:
            continue
        value = exp.outcomes["yield"]
        if exp.reason.get("strategy") == STRATEGY and len(history) >= 2:
            verdict = judge(history, value, sigma_floor=0.0, threshold_sigma=4.0)
            if verdict.suspected:
                alarms.append(eid)
                history = [value]
                continue
        history.append(value)
    return alarms


def first_after(alarms: Sequence[int], onset: int = ONSET) -> int | None:
    return min((a for a in alarms if a >= onset), default=None)


def summarise(drift_runs: list[dict[str, Any]], clean_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Detection per step size and false alarms, for the rule and the naive baseline."""
    out: dict[str, Any] = {"by_step": {}, "clean": {}}
    for rule in ("alarms", "naive_alarms"):
        for step in sorted({r["step_sigma"] for r in drift_runs}):
            runs = [r for r in drift_runs if r["step_sigma"] == step]
            delays = [(first_after(r[rule]) or 10**6) - ONSET for r in runs]
            found = [d for d in delays if d <= WITHIN]
            out["by_step"].setdefault(f"{step:g}", {})[rule] = {
                "detected_within_10": len(found), "runs": len(runs),
                "median_delay": statistics.median(found) if found else None,
                "delays": [d if d < 10**5 else None for d in delays],
                "alarms_before_onset": sum(1 for r in runs for a in r[rule] if a < ONSET)}
        out["clean"][rule] = {"false_alarms": sum(len(r[rule]) for r in clean_runs),
                              "runs_with_a_false_alarm": sum(1 for r in clean_runs if r[rule]), "runs": len(clean_runs),
                              "checks": sum(len(r["checks"]) for r in clean_runs)}
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="selflab-drift-bench-"))
    drift_runs, clean_runs = [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for step in args.steps:
            drift_runs.append(await campaign(seed, step, args.drift_budget, args.planner, args.noise, folder))
            print(json.dumps(drift_runs[-1]), file=sys.stderr)
        clean_runs.append(await campaign(seed, 0.0, args.clean_budget, args.planner, args.noise, folder))
        print(json.dumps(clean_runs[-1]), file=sys.stderr)
    return {"planner": args.planner, "noise_std": args.noise, "onset": ONSET, "every": 5, "threshold_sigma": 4.0,
            "seeds": args.seeds, "first_seed": args.first_seed, "summary": summarise(drift_runs, clean_runs),
            "drift_runs": drift_runs, "clean_runs": clean_runs}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--planner", choices=sorted(PLANNER_OPTIONS), default="bo")
    parser.add_argument("--steps", type=float, nargs="+", default=[4.0, 6.0, 8.0], help="drift steps, in noise stds")
    parser.add_argument("--noise", type=float, default=0.01, help="the instrument's noise std (yield units)")
    parser.add_argument("--drift-budget", type=int, default=36)
    parser.add_argument("--clean-budget", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.getLogger("selflab").setLevel(logging.ERROR)
    result = asyncio.run(main_async(args))
    text = json.dumps(result["summary"], indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
