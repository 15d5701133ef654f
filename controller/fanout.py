"""Many benchmark seeds at once: planners × problems × seeds, here, on local
worker processes, or on a Ray cluster.

Each :class:`SeedTask` is one campaign (:func:`selflab.controller.bench.run_seed`),
so a seed gives the same record whichever way it runs. :func:`run_grid`
runs a list of them and hands each outcome to a callback as it comes: a
:class:`~selflab.controller.bench.RunRecord`, or a
:class:`~selflab.controller.bench.SeedFailure` with the reason (the campaign
stopped early, the code raised, or the worker died).

* ``workers=1`` (and ``executor="process"``): one after the other, in this process.
* ``executor="process"``: ``workers`` worker processes (the standard
  library's ``concurrent.futures``), each with ``cpus // workers`` threads.
  Each worker process is a pool of its own, so a worker that dies (killed,
  out of memory) fails only the seed it ran and is replaced. Workers are
  forked from multiprocessing's fork server, which imports torch, botorch
  and the grid's planners once (:func:`prepare_workers`; ``spawn`` where
  there is no fork server), so a worker starts in milliseconds instead of
  spending 2-4 s of CPU on imports; start the server early with
  :func:`prepare_workers` and it imports while the caller does its own set-up.
  A worker ends within a second of the grid's own process (:func:`_start_worker`):
  killing ``selflab bench`` leaves no worker finishing its seed unseen.
* ``executor="ray"``: Ray tasks of one CPU and one thread each, at most
  ``workers`` at a time, on the cluster at ``ray_address`` (``None``:
  ``RAY_ADDRESS``, else a Ray started here and shut down at the end). Ray
  does not retry a task whose worker died; it is a failed seed.

On parallel workers the tasks start longest first (:func:`longest_first`:
model-based planners, bigger budgets and dimensions before model-free ones),
so that no long seed starts last and runs alone; records do not depend on
the order.

Threads are set explicitly in every worker (:func:`selflab.instruments.ray_task.bound_threads`):
the OpenMP/MKL/OpenBLAS variables and torch's thread count.

Example::

    tasks = grid_tasks([get_problem("branin")], ["sobol", "random"], range(3), budget=10)
    run_grid(tasks, on_done=lambda task, outcome: print(task.label, outcome), workers=2)
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from typing import Any, Literal

import psutil
from pydantic import BaseModel, ConfigDict

from selflab.controller.bench import BenchError, Problem, RunRecord, SeedFailure, run_seed
from selflab.instruments.ray_task import THREAD_VARIABLES, bound_threads, connect_ray, ray_error, require_ray
from selflab.planners.registry import MODEL_FREE, planner_module

__all__ = ["GridExecutor", "Outcome", "SeedTask", "expected_work", "grid_tasks", "local_cpus", "longest_first", "prepare_workers",
           "run_grid", "run_task", "worker_preload"]

GridExecutor = Literal["process", "ray"]
Outcome = RunRecord | SeedFailure
DoneFn = Callable[["SeedTask", Outcome], None]
"""Called in the calling process with each task and its outcome, as each finishes."""
ExperimentsFn = Callable[["SeedTask", int], None]
"""Called with a task and its completed experiments so far (in-process runs only)."""

RAY_TASK_CPUS = 1
"""CPUs (and threads) each Ray task of a grid reserves."""

WORKER_PRELOAD = (
    "selflab.controller.fanout",
    "selflab.simulators.benchmarks",
    # torch imports these (and sympy, ~1 s) lazily at the first
    # ``torch.broadcast_shapes``, which every botorch input transform calls:
    "torch.fx.experimental.symbolic_shapes",
)
"""Modules every grid worker needs, imported once by the fork server (only
imports: the server runs no torch operation, so forking it is safe)."""


class SeedTask(BaseModel):
    """One seed of one planner on one problem: the arguments of :func:`~selflab.controller.bench.run_seed`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    problem: Problem
    planner: str
    seed: int
    budget: int | None
    batch: int = 1
    options: dict[str, Any] = {}
    cost_budget: float | None = None

    @property
    def label(self) -> str:
        return f"{self.planner} on {self.problem.name}, seed {self.seed}"


def grid_tasks(problems: Sequence[Problem], planners: Sequence[str], seeds: Iterable[int], budget: int | None, batch: int = 1,
               options: Mapping[str, Any] | None = None, cost_budget: float | None = None) -> list[SeedTask]:
    """Every (problem, planner, seed), in that order."""
    seeds = list(seeds)
    return [SeedTask(problem=problem, planner=planner, seed=seed, budget=budget, batch=batch, options=dict(options or {}),
                     cost_budget=cost_budget) for problem in problems for planner in planners for seed in seeds]


def expected_work(task: SeedTask) -> float:
    """A rough, relative guess at a task's CPU time, to start the longest
    first: a model-based planner refits a GP each step (about ``budget``
    fits, each growing with the data and the dimension), a model-free one
    costs almost nothing beside the simulator."""
    budget = task.budget if task.budget is not None else 50
    per_step = 0.01 if task.planner in MODEL_FREE else float(len(task.problem.parameters))
    return budget * budget * per_step / max(1, task.batch)


def longest_first(tasks: Sequence[SeedTask]) -> list[SeedTask]:
    """``tasks`` in the order to start them on parallel workers: longest
    expected first (so that no long seed starts last and runs alone while
    the other workers idle), ties in grid order."""
    return sorted(tasks, key=expected_work, reverse=True)


def run_task(task: SeedTask, progress: ExperimentsFn | None = None) -> Outcome:
    """Run one seed here; a failure is returned, not raised."""
    callback = None if progress is None else (lambda seed, completed: progress(task, completed))
    try:
        return run_seed(task.problem, task.planner, task.budget, task.seed, task.batch, callback, task.options, task.cost_budget)
    except BenchError as exc:
        return SeedFailure(seed=task.seed, reason=str(exc))
    except Exception as exc:  # the planner's or a simulator's own bug: this seed fails, the grid goes on
        return SeedFailure(seed=task.seed, reason=f"{task.label}: {type(exc).__name__}: {exc}")


def _run_bounded(task: SeedTask, threads: int) -> Outcome:
    """:func:`run_task` in a worker, with ``threads`` threads."""
    bound_threads(threads, load_torch=True)
    return run_task(task)


def local_cpus() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on every platform)
        return os.cpu_count() or 1


def worker_preload(planners: Iterable[str]) -> list[str]:
    """The modules the fork server imports for a grid of ``planners``:
    :data:`WORKER_PRELOAD` and each planner's module (botorch with a
    model-based one)."""
    return [*WORKER_PRELOAD, *sorted({planner_module(kind) for kind in planners})]


def prepare_workers(workers: int, executor: GridExecutor, planners: Iterable[str]) -> None:
    """Start what ``workers`` local grid workers are forked from, now: call it
    first, and the fork server imports torch, botorch and ``planners``'
    modules on another core while this process does its own set-up (a grid
    of 12 short seeds on 2 cores: 28 -> 24.5 s). Does nothing for one
    worker, for Ray (a Ray worker is a fresh process; starting Ray early and
    preloading its workers was measured and gained nothing), or where there
    is no fork server; harmless to call again (the first call's modules stay)."""
    if executor == "process" and workers > 1:
        _worker_context(max(1, local_cpus() // workers), planners)


def _worker_context(threads: int, planners: Iterable[str]) -> BaseContext:
    """The multiprocessing context local workers start from: the fork server
    (started here if it is not running, with ``threads`` as the numeric
    libraries' thread variables, read when they load), else ``spawn``."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(worker_preload(planners))
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return context


def run_grid(tasks: Sequence[SeedTask], *, on_done: DoneFn, workers: int = 1, executor: GridExecutor = "process",
             ray_address: str | None = None, progress: ExperimentsFn | None = None) -> None:
    """Run ``tasks`` (see the module docstring), calling ``on_done`` with each outcome.

    ``progress`` hears of each completed experiment when tasks run in this
    process (``workers=1``, ``executor="process"``).

    Raises:
        ValueError: ``workers < 1``.
        selflab.instruments.ray_task.RayUnavailable: ``executor="ray"`` and Ray
            is not installed or the cluster cannot be reached.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if executor == "ray":
        _run_ray(longest_first(tasks), on_done, workers, ray_address)
    elif workers == 1:
        for task in tasks:
            on_done(task, run_task(task, progress))
    else:
        _run_processes(longest_first(tasks), on_done, workers, max(1, local_cpus() // workers))


def _run_processes(tasks: Sequence[SeedTask], on_done: DoneFn, workers: int, threads: int) -> None:
    """``workers`` one-process pools, each running one task at a time."""
    context = _worker_context(threads, {task.planner for task in tasks})
    queue = deque(tasks)
    slots: list[ProcessPoolExecutor | None] = [None] * workers
    running: dict[Future[Outcome], tuple[int, SeedTask]] = {}
    try:
        while queue or running:
            busy = {slot for slot, _ in running.values()}
            for slot in range(workers):
                if queue and slot not in busy:
                    pool = slots[slot]
                    if pool is None:
                        pool = slots[slot] = ProcessPoolExecutor(1, mp_context=context, initializer=_start_worker,
                                                                 initargs=(threads, os.getpid()))
                    task = queue.popleft()
                    running[pool.submit(_run_bounded, task, threads)] = (slot, task)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: running[f][0]):
                slot, task = running.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    outcome = SeedFailure(seed=task.seed, reason=f"{task.label}: its worker process died while it ran "
                                          "(killed, or out of memory); rerun it with --resume")
                    _close(slots[slot])
                    slots[slot] = None
                on_done(task, outcome)
    except BaseException:
        for pool in slots:
            _close(pool)
        raise
    for pool in slots:
        _close(pool, wait=True)


PARENT_POLL_S = 1.0
"""Seconds between a grid worker's checks that the grid's process is still there."""


def _start_worker(threads: int, grid_pid: int) -> None:
    """A grid worker's initializer: ``threads`` threads, and a daemon thread
    that ends the worker (exit status 1) once the grid's process ``grid_pid``
    is gone. Its parent is the fork server, which outlives a killed grid only
    until it notices; without this a worker would run its seed to the end,
    unseen, on cores the next run wants."""
    bound_threads(threads)
    try:
        grid = psutil.Process(grid_pid)  # (pid and start time: a reused pid is not the grid)
    except psutil.NoSuchProcess:
        os._exit(1)
    threading.Thread(target=_end_with, args=(grid,), name="grid-watch", daemon=True).start()


def _end_with(grid: psutil.Process) -> None:
    while grid.is_running():
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _close(pool: ProcessPoolExecutor | None, wait: bool = False) -> None:
    """Shut ``pool`` down: at once, dropping what it has not started (``wait``: after its worker exits)."""
    if pool is not None:
        pool.shutdown(wait=wait, cancel_futures=True)


def _run_ray(tasks: Sequence[SeedTask], on_done: DoneFn, workers: int, address: str | None) -> None:
    """At most ``workers`` Ray tasks at a time."""
    started_here = not require_ray().is_initialized()
    ray = connect_ray(address)
    remote = ray.remote(num_cpus=RAY_TASK_CPUS, max_retries=0)(_run_bounded)
    queue = deque(tasks)
    running: dict[Any, SeedTask] = {}
    try:
        while queue or running:
            while queue and len(running) < workers:
                task = queue.popleft()
                running[remote.options(name=f"selflab:bench:{task.label}").remote(task, RAY_TASK_CPUS)] = task
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                task = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # (run_task returns failures; this is Ray's own trouble with the task)
                    outcome = SeedFailure(seed=task.seed, reason=f"{task.label}: {type(exc.cause).__name__}: {exc.cause}")
                except ray.exceptions.RayError as exc:  # its worker or node died
                    outcome = SeedFailure(seed=task.seed, reason=f"{task.label}: its Ray worker died ({ray_error(exc)}); "
                                          "rerun it with --resume")
                on_done(task, outcome)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
