"""The results of a ``selflab bench`` grid as they come, kept in its ``--json``
file after every seed, so that ``--resume`` runs only the seeds missing.

The file has the shape ``selflab bench --json`` always wrote: one
:class:`~selflab.controller.bench.BenchResult` object, or an array of them
for several (problem, planner) pairs. It is rewritten whole after each seed
(to a temporary file, then renamed over it), so a bench killed at any moment
leaves the seeds finished so far. Seeds that failed are listed in each
result's ``failed``; a resume runs them again, with the seeds never run.

A resume refuses a file whose results were run with other settings (budget,
cost budget, batch, planner options: their seeds would not be comparable), or
that holds seeds beyond ``--seeds`` (they would be dropped).
Results in the file for problems or planners not in this grid are kept as
they are.

Example::

    store = BenchStore(problems, planners, seeds=3, settings=GridSettings(budget=10), path=Path("b.json"))
    store.load()                              # --resume
    run_grid(store.missing(), on_done=store.add, workers=2)
    store.results()
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from selflab.controller.bench import BenchResult, Problem, RunRecord, SeedFailure, aggregate
from selflab.controller.fanout import Outcome, SeedTask, grid_tasks

__all__ = ["BenchStore", "GridSettings", "StoreError"]


class StoreError(ValueError):
    """The results file cannot be resumed from; the message says why and what to do."""


class GridSettings(BaseModel):
    """What every seed of a grid shares besides its problem and planner."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    budget: int | None
    batch: int = 1
    options: dict[str, Any] = {}
    cost_budget: float | None = None


Key = tuple[str, str]
"""(problem name, planner)."""


class BenchStore:
    """The outcomes of a grid of ``problems`` × ``planners`` × seeds ``0..seeds-1``,
    written to ``path`` (``None``: kept in memory only) as they come."""

    def __init__(self, problems: Sequence[Problem], planners: Sequence[str], seeds: int, settings: GridSettings,
                 path: Path | None = None) -> None:
        self.problems, self.planners, self.seeds, self.settings, self.path = list(problems), list(planners), seeds, settings, path
        self.runs: dict[Key, dict[int, RunRecord]] = {(p.name, q): {} for p in self.problems for q in self.planners}
        self.failed: dict[Key, dict[int, SeedFailure]] = {key: {} for key in self.runs}
        self.others: list[BenchResult] = []
        """Results in the file for pairs outside this grid (kept)."""

    @property
    def total(self) -> int:
        """Seeds in the grid."""
        return len(self.runs) * self.seeds

    @property
    def finished(self) -> int:
        """Seeds with a run."""
        return sum(len(runs) for runs in self.runs.values())

    def load(self) -> int:
        """Take the finished seeds from the file (none when it does not exist); how many.

        Raises:
            StoreError: the file is not bench results, or they were run with other settings.
        """
        if self.path is None or not self.path.exists():
            return 0
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            results = TypeAdapter(list[BenchResult]).validate_python(data if isinstance(data, list) else [data])
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as exc:
            raise StoreError(f"cannot resume from {self.path}: it is not `selflab bench --json` results "
                             f"({str(exc).splitlines()[0]}); name another --json file") from None
        for result in results:
            key = (result.problem, result.planner)
            if key not in self.runs:
                self.others.append(result)
                continue
            theirs = GridSettings(budget=result.budget, batch=result.batch, options=result.options, cost_budget=result.cost_budget)
            if theirs != self.settings:
                diff = ", ".join(f"{name} {getattr(theirs, name)!r} (now {getattr(self.settings, name)!r})"
                                 for name in GridSettings.model_fields if getattr(theirs, name) != getattr(self.settings, name))
                raise StoreError(f"cannot resume from {self.path}: {result.planner} on {result.problem} was run with {diff}; "
                                 "use the same settings, or another --json file")
            beyond = max([r.seed for r in result.runs] + [f.seed for f in result.failed], default=-1)
            if beyond >= self.seeds:
                raise StoreError(f"cannot resume from {self.path}: it holds seed {beyond} of {result.planner} on {result.problem}, "
                                 f"beyond --seeds {self.seeds}; give --seeds {beyond + 1} or more, or another --json file")
            self.runs[key] = {run.seed: run for run in result.runs}
            self.failed[key] = {f.seed: f for f in result.failed if f.seed not in self.runs[key]}
        return self.finished

    def missing(self) -> list[SeedTask]:
        """The tasks of the seeds without a run (never run, or failed), in grid order."""
        s = self.settings
        return [task for task in grid_tasks(self.problems, self.planners, range(self.seeds), s.budget, s.batch, s.options, s.cost_budget)
                if task.seed not in self.runs[(task.problem.name, task.planner)]]

    def add(self, task: SeedTask, outcome: Outcome) -> None:
        """Record a seed's outcome and rewrite the file."""
        key = (task.problem.name, task.planner)
        if isinstance(outcome, RunRecord):
            self.runs[key][task.seed] = outcome
            self.failed[key].pop(task.seed, None)
        else:
            self.failed[key][task.seed] = outcome
        self.write()

    def failures(self) -> list[tuple[Key, SeedFailure]]:
        """Every failed seed of the grid, in grid order."""
        return [(key, self.failed[key][seed]) for key in self.runs for seed in sorted(self.failed[key])]

    def results(self) -> list[BenchResult]:
        """One aggregated result per (problem, planner) of the grid, in grid order."""
        s = self.settings
        return [aggregate(problem, planner, s.budget, s.batch, list(self.runs[(problem.name, planner)].values()), s.cost_budget,
                          s.options, list(self.failed[(problem.name, planner)].values()))
                for problem in self.problems for planner in self.planners]

    def write(self) -> None:
        """Write the results (and the file's others) to ``path``, atomically; nothing without a path."""
        if self.path is None:
            return
        data = [r.model_dump(mode="json") for r in [*self.results(), *self.others]]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".partial")
        temporary.write_text(json.dumps(data[0] if len(data) == 1 else data, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)
