"""GPU retraining: where CUDA pays, measured on one host (issue 21).

One run on a GPU host measures, on its CPU and on CUDA, float64 unless said,
the median of 3 runs (fewer where the budget says so, recorded per cell):

1. **Parity**: the seeded Hartmann6 campaign of :mod:`selflab.planners.device_parity`
   (20 points, 5 proposals) on each device; proposals must agree within 1e-6
   in the unit cube.
2. **Seed-batched fits**: 64 Hartmann6 data sets of n = 100 fitted as one
   batched GP (the ``bo`` kernel, its priors, a batch of 64 hyperparameter
   sets) on CUDA, against 64 sequential :class:`SurrogateFitter` fits on the
   CPU (all cores, and one thread, the planner's default); the batched fit on
   the CPU too. Each fit's marginal log likelihood is recorded, so that a fast
   fit is also a good one.
3. **One full ``bo`` proposal** (:class:`BOPlanner` with ``device`` fixed,
   ``torch_threads: None``) at n in {500, 2000, 8000}, d = 6: qLogNEI with
   q = 1 and 8; qLogNEHVI (2 objectives) with q in {4, 16, 32}, with the
   peak GPU memory (``torch.cuda.max_memory_allocated``). ``cold``: a fresh
   planner; ``warm``: the same planner's next proposal, one observation more
   (the steady state of a running campaign). qLogNEI q = 1 at d = 20 too, for
   the ``auto`` table.
4. **Exact GP refit** (:class:`SurrogateFitter`, hyperparameters fitted on all
   n points), cold and warm-started (from a fit at n / 1.1), for n in
   {100, 500, 1000, 2000, 4000, 8000} and d in {6, 20}, and the crossover n
   from which CUDA is faster at every larger n measured.
5. **The same fit with Adam** (``fit_gpytorch_mll_torch``, a fixed number of
   steps) on CUDA, to separate the cost of scipy's host syncs (botorch #1566).
6. **Float32**: the cold refit in float32, and its crossover.
7. **``mf``** (:class:`MFPlanner`, two fidelities) at n = 2000.

Budget: the run stops within ``--budget-s`` (default 420 s, inside the
8 minutes the issue allows). Each phase has a share of it (unused time passes
on); a cell whose estimate (a smaller n of its series scaled by n^3 for fits,
n^2 for proposals) does not fit in what is left is skipped and recorded with
the reason; each cell runs in a worker process, killed when it overruns (the
cell is recorded as ``timeout``, its finished runs kept), so one slow CPU cell
cannot eat the run. The JSON and the markdown are rewritten after every cell:
a killed run leaves what it measured.

The JSON's ``device_crossover`` (``{d: n}``, ``null``: CUDA never faster) is
the table ``device: auto`` uses (:mod:`selflab.planners.device_choice`): from the
warm qLogNEI q = 1 proposals where both devices were measured at that d, else
from the float64 cold refit. ``device_choice.crossover_from_results(json)``
reads it.

Usage::

    python benchmarks/gpu.py [--device-only cpu|cuda|both] [--quick] [--json out.json] [--markdown out.md] [--budget-s 420]

``--quick``: small n, for a check that the script works (under a minute on
2 CPU cores); its timings mean nothing. The command for a device machine,
with the wheels its image lacks: ``benchmarks/RESULTS.md``, issue 21.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import botorch
import gpytorch
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.optim.fit import fit_gpytorch_mll_torch
from botorch.test_functions.synthetic import Hartmann
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from selflab.planners.bo import BOPlanner
from selflab.planners.device_choice import measured_crossover
from selflab.planners.device_parity import compare, hartmann6_campaign
from selflab.planners.encoding import Encoding
from selflab.planners.mf import MFPlanner
from selflab.planners.protocol import FidelityOption, Observation, PlanContext
from selflab.planners.space import FloatParameter, Objective, SearchSpace
from selflab.planners.surrogate import SurrogateFitter, TrainingData, build_model, numerics

Device = Literal["cpu", "cuda"]
Kind = Literal["parity", "seed_batch", "proposal", "refit", "adam", "mf"]
DTYPES = {"float64": torch.float64, "float32": torch.float32}
MIN_CELL_S = 2.0
"""A cell with less time than this left is skipped."""
KILL_GRACE_S = 5.0
"""A cell is killed this long after its allowance."""


# --------------------------------------------------------------------------- the plan


class Cell(BaseModel):
    """One measurement: a kind, a device and its sizes; ``reps`` runs at most."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    phase: str
    kind: Kind
    device: Device
    n: int = 0
    d: int = 6
    dtype: Literal["float64", "float32"] = "float64"
    mode: str = ""
    """refit: cold | warm; seed_batch: batched | sequential."""
    acquisition: str = ""
    q: int = 1
    threads: int | None = None
    """torch threads for this cell (None: the run's ``--cpu-threads``)."""
    reps: int = 3
    extra: dict[str, int | float] = Field(default_factory=dict)

    def label(self) -> str:
        parts = [self.kind, self.device, f"n={self.n}" if self.n else "", f"d={self.d}", self.dtype if self.dtype != "float64" else "",
                 self.mode, self.acquisition, f"q={self.q}" if self.kind == "proposal" else "", f"threads={self.threads}" if self.threads else ""]
        return " ".join(p for p in parts if p)


class CellResult(BaseModel):
    """What one cell gave: its runs (each with ``wall_s``, the run's whole time, and its figures)."""

    model_config = ConfigDict(extra="forbid")

    cell: Cell
    status: Literal["ok", "timeout", "skipped", "error"]
    runs: list[dict[str, Any]] = Field(default_factory=list)
    note: str = ""
    allowance_s: float | None = None

    def median(self, key: str = "seconds") -> float | None:
        values = [r[key] for r in self.runs if isinstance(r.get(key), (int, float))]
        return statistics.median(values) if values else None

    def first(self, key: str) -> Any:
        return self.runs[0].get(key) if self.runs else None


@dataclass(frozen=True)
class Sizes:
    refit_n: tuple[int, ...]
    dims: tuple[int, ...]
    proposal_n: tuple[int, ...]
    nei_q: tuple[int, ...]
    nehvi_q: tuple[int, ...]
    mf_n: int
    seeds: int
    seed_n: int
    adam_steps: int
    adam_cpu_max_n: int
    parity: tuple[int, int]
    reps: int


FULL = Sizes(refit_n=(100, 500, 1000, 2000, 4000, 8000), dims=(6, 20), proposal_n=(500, 2000, 8000), nei_q=(1, 8), nehvi_q=(4, 16, 32),
             mf_n=2000, seeds=64, seed_n=100, adam_steps=100, adam_cpu_max_n=1000, parity=(20, 5), reps=3)
QUICK = Sizes(refit_n=(40, 120), dims=(6, 20), proposal_n=(20, 40), nei_q=(1, 2), nehvi_q=(1,), mf_n=16, seeds=4, seed_n=20,
              adam_steps=20, adam_cpu_max_n=120, parity=(20, 1), reps=1)

PHASES: tuple[tuple[str, float], ...] = (
    ("parity", 0.12), ("seed_batch", 0.25), ("proposals", 0.55), ("refit", 0.82), ("adam", 0.87), ("float32", 0.94), ("mf", 1.0),
)
"""Each phase and the share of the budget spent when it must end (cumulative:
unused time passes on), counted from the worker's start."""
CELL_SHARE = 0.45
"""One cell gets at most this share of its phase's span (at least ``MIN_CELL_S``), so that one slow cell leaves room for the next."""


def plan(sizes: Sizes, devices: Sequence[Device]) -> list[Cell]:
    """Every cell, in the order run: within a phase the figures the issue's
    "done when" names first, CUDA before the CPU at each size."""
    cells: list[Cell] = []
    gpu_first = [d for d in ("cuda", "cpu") if d in devices]
    reps = sizes.reps
    start, proposals = sizes.parity
    for dev in gpu_first:
        cells.append(Cell(phase="parity", kind="parity", device=dev, n=start, reps=1, extra={"proposals": proposals}))
    if len(gpu_first) == 1:  # (one device: the campaign twice on it, a check of the check)
        cells.append(Cell(phase="parity", kind="parity", device=gpu_first[0], n=start, mode="repeat", reps=1, extra={"proposals": proposals}))
    seed = {"seeds": sizes.seeds}
    if "cuda" in devices:
        cells.append(Cell(phase="seed_batch", kind="seed_batch", device="cuda", n=sizes.seed_n, mode="batched", reps=reps, extra=seed))
    if "cpu" in devices:
        # (one run of 64 sequential fits: its per-fit median is in the run)
        cells.append(Cell(phase="seed_batch", kind="seed_batch", device="cpu", n=sizes.seed_n, mode="sequential", reps=1, extra=seed))
        cells.append(Cell(phase="seed_batch", kind="seed_batch", device="cpu", n=sizes.seed_n, mode="sequential", threads=1, reps=1,
                          extra=seed))
        cells.append(Cell(phase="seed_batch", kind="seed_batch", device="cpu", n=sizes.seed_n, mode="batched", reps=reps, extra=seed))
    prop = partial(Cell, phase="proposals", kind="proposal", reps=reps)
    order: list[tuple[str, int, int, list[Device]]] = [("qlognei", sizes.nei_q[0], 6, gpu_first)]
    order.append(("qlognehvi", sizes.nehvi_q[-1], 6, [d for d in gpu_first if d == "cuda"]))  # (the memory figure)
    order += [("qlognei", q, 6, gpu_first) for q in sizes.nei_q[1:]]
    order += [("qlognehvi", q, 6, gpu_first) for q in sizes.nehvi_q[:-1]]
    order.append(("qlognehvi", sizes.nehvi_q[-1], 6, [d for d in gpu_first if d == "cpu"]))
    order += [("qlognei", sizes.nei_q[0], d, gpu_first) for d in sizes.dims if d != 6]
    for acq, q, d, devs in order:
        for n in sizes.proposal_n:
            cells += [prop(device=dev, n=n, d=d, acquisition=acq, q=q) for dev in devs]
    for n in sizes.refit_n:
        for d in sizes.dims:
            for mode in ("cold", "warm"):
                cells += [Cell(phase="refit", kind="refit", device=dev, n=n, d=d, mode=mode, reps=reps) for dev in gpu_first]
    for n in sizes.refit_n:
        for d in sizes.dims:
            cells += [Cell(phase="adam", kind="adam", device=dev, n=n, d=d, reps=reps, extra={"steps": sizes.adam_steps})
                      for dev in gpu_first if dev == "cuda" or n <= sizes.adam_cpu_max_n]
    for n in sizes.refit_n:
        for d in sizes.dims:
            cells += [Cell(phase="float32", kind="refit", device=dev, n=n, d=d, dtype="float32", mode="cold", reps=reps) for dev in gpu_first]
    cells += [Cell(phase="mf", kind="mf", device=dev, n=sizes.mf_n, reps=reps) for dev in gpu_first]
    return cells


# --------------------------------------------------------------------------- problems


def _space(d: int) -> SearchSpace:
    return SearchSpace(parameters=[FloatParameter(name=f"x{i}", low=0.0, high=1.0) for i in range(d)])


def _f(X: Tensor) -> Tensor:
    """``n x d`` unit-cube rows -> ``n`` values to minimize: Hartmann6 at d = 6,
    else a Hartmann-like sum of four Gaussian wells with seeded centres and widths."""
    d = X.shape[-1]
    if d == 6:
        return Hartmann(dim=6)(X)
    g = torch.Generator().manual_seed(d)
    alpha = torch.tensor([1.0, 1.2, 3.0, 3.2], dtype=X.dtype)
    A = 0.5 + 17.5 * torch.rand(4, d, generator=g, dtype=X.dtype) / d * 6
    P = torch.rand(4, d, generator=g, dtype=X.dtype)
    return -(alpha * torch.exp(-(A * (X[..., None, :] - P) ** 2).sum(-1))).sum(-1)


def _points(n: int, d: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n x d`` uniform points and their noisy values (float64, CPU)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=torch.float64)
    return X, _f(X) + 0.01 * torch.randn(n, generator=g, dtype=torch.float64)


def _training(n: int, d: int, seed: int, dtype: torch.dtype, device: torch.device) -> tuple[Encoding, TrainingData]:
    X, y = _points(n, d, seed)
    like = {"dtype": dtype, "device": device}
    Y = y[:, None].to(**like)
    return Encoding(_space(d), dtype=dtype, device=device), TrainingData(X.to(**like), Y, torch.full_like(Y, math.nan))


def _observations(n: int, d: int, two_objectives: bool) -> list[Observation]:
    X, y = _points(n, d, seed=1)
    y2 = ((X - 0.7) ** 2).sum(-1)  # (a second objective at odds with the first)
    out = []
    for i, row in enumerate(X.tolist()):
        outcomes = {"y1": float(y[i]), "y2": float(y2[i])} if two_objectives else {"y": float(y[i])}
        out.append(Observation(params={f"x{j}": v for j, v in enumerate(row)}, outcomes=outcomes))
    return out


def _mll(model: Model) -> float:
    """The fitted GP's marginal log likelihood per point (priors included; the mean over a batch)."""
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    try:
        with torch.no_grad(), numerics(threads=None):
            inputs = model.train_inputs
            value = mll(model(*inputs), model.train_targets, *inputs)
        return float(value.mean())
    finally:
        model.eval()


def _batched_gp(X: Tensor, y: Tensor) -> SingleTaskGP:
    """One GP over a batch of ``S`` data sets (``S x n x d``, ``S x n x 1``): the
    ``bo`` planner's Matern-5/2 kernel and priors (``surrogate.build_model``), one
    hyperparameter set per data set."""
    S, _, d = X.shape
    batch = torch.Size([S])
    covar = ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=d, batch_shape=batch, lengthscale_prior=GammaPrior(3.0, 6.0)),
                        batch_shape=batch, outputscale_prior=GammaPrior(2.0, 0.15))
    bounds = torch.stack([torch.zeros(d), torch.ones(d)]).to(X)
    model = SingleTaskGP(X, y, covar_module=covar, input_transform=Normalize(d=d, bounds=bounds),
                         outcome_transform=Standardize(m=1, batch_shape=batch))
    return model.to(X)


# --------------------------------------------------------------------------- the worker's runners


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _repeat(cell: Cell, deadline: float, once: Callable[[int], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Up to ``cell.reps`` runs; stops early when another would end after ``deadline`` (``time.perf_counter``)."""
    for r in range(cell.reps):
        t0 = time.perf_counter()
        out = once(r)
        out["wall_s"] = time.perf_counter() - t0
        yield out
        if time.perf_counter() + out["wall_s"] > deadline:
            return


def run_parity(cell: Cell, deadline: float) -> Iterator[dict[str, Any]]:
    def once(r: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        rows = hartmann6_campaign(cell.device, start=cell.n, proposals=int(cell.extra["proposals"]))
        return {"seconds": time.perf_counter() - t0, "proposals": rows}

    yield from _repeat(cell, deadline, once)


def run_seed_batch(cell: Cell, deadline: float) -> Iterator[dict[str, Any]]:
    dev, S, n = torch.device(cell.device), int(cell.extra["seeds"]), cell.n
    data = [_points(n, 6, seed) for seed in range(S)]
    X = torch.stack([x for x, _ in data]).to(dev)
    Y = torch.stack([y for _, y in data]).unsqueeze(-1).to(dev)

    def sequential(r: int) -> dict[str, Any]:
        _sync(dev)
        t0 = time.perf_counter()
        models, each = [], []
        for s in range(S):
            t1 = time.perf_counter()
            enc = Encoding(_space(6), device=dev)
            models.append(SurrogateFitter().fit(enc, ["y"], TrainingData(X[s], Y[s], torch.full_like(Y[s], math.nan))).model)
            each.append(time.perf_counter() - t1)
        _sync(dev)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "per_fit_median_s": statistics.median(each), "mll": statistics.fmean(_mll(m) for m in models)}

    def batched(r: int) -> dict[str, Any]:
        model = _batched_gp(X, Y)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        _sync(dev)
        t0 = time.perf_counter()
        with numerics(threads=None):
            fit_gpytorch_mll(mll, max_attempts=3)
        _sync(dev)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "mll": _mll(model)}

    yield from _repeat(cell, deadline, batched if cell.mode == "batched" else sequential)


def run_refit(cell: Cell, deadline: float) -> Iterator[dict[str, Any]]:
    dev, dtype = torch.device(cell.device), DTYPES[cell.dtype]
    enc, data = _training(cell.n, cell.d, 0, dtype, dev)
    base = SurrogateFitter(fit_max_points=cell.n, refit_below=0)
    if cell.mode == "warm":  # (a fit at n / 1.1 points, so that n is a warm refit from its hyperparameters)
        m = math.floor(cell.n / 1.1)
        base.fit(enc, ["y"], TrainingData(data.X[:m], data.Y[:m], data.Yvar[:m]))

    def once(r: int) -> dict[str, Any]:
        fitter = copy.deepcopy(base)
        _sync(dev)
        t0 = time.perf_counter()
        surrogate = fitter.fit(enc, ["y"], data)
        _sync(dev)
        seconds = time.perf_counter() - t0
        out: dict[str, Any] = {"seconds": seconds, "refit": surrogate.refit}
        if dev.type == "cuda" or cell.n <= 2000:
            out["mll"] = _mll(surrogate.model)
        return out

    yield from _repeat(cell, deadline, once)


def run_adam(cell: Cell, deadline: float) -> Iterator[dict[str, Any]]:
    dev, steps = torch.device(cell.device), int(cell.extra["steps"])
    enc, data = _training(cell.n, cell.d, 0, torch.float64, dev)

    def once(r: int) -> dict[str, Any]:
        model = build_model(enc, data.X, data.Y, None)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        _sync(dev)
        t0 = time.perf_counter()
        with numerics(threads=None):
            fit_gpytorch_mll(mll, optimizer=fit_gpytorch_mll_torch, max_attempts=1,
                             optimizer_kwargs={"step_limit": steps, "stopping_criterion": None,
                                               "optimizer": partial(torch.optim.Adam, lr=0.1)})
        _sync(dev)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "steps": steps, "mll": _mll(model)}

    yield from _repeat(cell, deadline, once)


def run_proposal(cell: Cell, deadline: float) -> Iterator[dict[str, Any]]:
    dev, n = torch.device(cell.device), cell.n
    two = cell.acquisition == "qlognehvi"
    observations = _observations(n + 1, cell.d, two)
    objectives = ([Objective(name="y1", direction="minimize"), Objective(name="y2", direction="minimize")] if two
                  else [Objective(name="y", direction="minimize")])
    space = _space(cell.d)

    def once(r: int) -> dict[str, Any]:
        planner = BOPlanner(device=cell.device, torch_threads=None)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        _sync(dev)
        t0 = time.perf_counter()
        cold = planner.propose(space, objectives, observations[:n], [], cell.q, context=PlanContext(seed=r, step=n))
        _sync(dev)
        t1 = time.perf_counter()
        warm = planner.propose(space, objectives, observations, [], cell.q, context=PlanContext(seed=r, step=n + 1))
        _sync(dev)
        t2 = time.perf_counter()
        reason, later = cold[0].reason, warm[0].reason
        return {
            "seconds": t1 - t0, "warm_s": t2 - t1,
            "peak_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
            "strategy": reason["strategy"], "device": reason["device"], "refit": reason["refit"], "warm_refit": later["refit"],
            "fit_s": reason["fit_seconds"], "acquisition_s": reason.get("acquisition_seconds"),
            "batch": sorted({p.reason.get("batch", {}).get("strategy", "single") for p in cold}), "error": reason.get("error"),
        }

    yield from _repeat(cell, deadline, once)


def run_mf(cell: Cell, deadline: float) -> Iterator[dict[str, Any]]:
    dev, n = torch.device(cell.device), cell.n
    X, y = _points(n + 1, 6, seed=2)
    observations = []
    for i, row in enumerate(X.tolist()):
        fidelity = 1.0 if i % 4 == 3 else 0.5
        value = float(y[i]) + (1 - fidelity) * 0.5 * sum(row)  # (the cheap level is biased)
        observations.append(Observation(params={f"x{j}": v for j, v in enumerate(row)}, outcomes={"y": value}, fidelity=fidelity))
    levels = (FidelityOption(fidelity=0.5, cost=0.1), FidelityOption(fidelity=1.0, cost=1.0))
    objectives = [Objective(name="y", direction="minimize")]

    def once(r: int) -> dict[str, Any]:
        planner = MFPlanner(device=cell.device, torch_threads=None)
        _sync(dev)
        t0 = time.perf_counter()
        cold = planner.propose(_space(6), objectives, observations[:n], [], 1, context=PlanContext(seed=r, step=n, fidelities=levels))
        _sync(dev)
        t1 = time.perf_counter()
        planner.propose(_space(6), objectives, observations, [], 1, context=PlanContext(seed=r, step=n + 1, fidelities=levels))
        _sync(dev)
        reason = cold[0].reason
        return {"seconds": t1 - t0, "warm_s": time.perf_counter() - t1, "strategy": reason["strategy"], "device": reason["device"],
                "error": reason.get("error")}

    yield from _repeat(cell, deadline, once)


RUNNERS: dict[str, Callable[[Cell, float], Iterator[dict[str, Any]]]] = {
    "parity": run_parity, "seed_batch": run_seed_batch, "proposal": run_proposal, "refit": run_refit, "adam": run_adam, "mf": run_mf,
}


def _warm_up(devices: Sequence[Device]) -> dict[str, float | str]:
    """Seconds of a first small fit and proposal per device (CUDA's context,
    kernels and handles start here, not in the first timed cell), or the error
    that stopped it (the cells then record their own)."""
    out: dict[str, float | str] = {}
    for name in devices:
        dev = torch.device(name)
        t0 = time.perf_counter()
        try:
            enc, data = _training(30, 6, 0, torch.float64, dev)
            SurrogateFitter().fit(enc, ["y"], data)
            BOPlanner(device=name, num_restarts=2, raw_samples=32).propose(
                _space(6), [Objective(name="y", direction="minimize")], _observations(12, 6, False), [], 1, context=PlanContext(step=12))
            _sync(dev)
            out[name] = time.perf_counter() - t0
        except Exception as exc:  # any failure: said in the host info, the run goes on
            out[name] = f"{type(exc).__name__}: {exc}"
    return out


def _worker(conn: Connection, threads: int, devices: list[Device]) -> None:
    """The worker process: warm up, then run each cell it is sent, sending each run as it ends."""
    torch.set_num_threads(threads)
    info: dict[str, Any] = {"torch_threads": threads, "warm_up_s": _warm_up(devices)}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)}
    conn.send(("ready", info))
    while True:
        message = conn.recv()
        if message is None:
            return
        cell, deadline = Cell.model_validate(message[0]), time.perf_counter() + float(message[1])
        torch.set_num_threads(cell.threads or threads)
        try:
            for run in RUNNERS[cell.kind](cell, deadline):
                conn.send(("run", run))
            conn.send(("done", None))
        except Exception as exc:  # any failure of a cell: recorded with its cell, the run goes on
            if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
                torch.cuda.empty_cache()
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"))
        finally:
            torch.set_num_threads(threads)


# --------------------------------------------------------------------------- the main process


class Worker:
    """A worker process (:func:`_worker`) that can be killed when a cell overruns."""

    def __init__(self, threads: int, devices: Sequence[Device]) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, threads, list(devices)), daemon=True)
        self.process.start()
        child.close()
        self.info: dict[str, Any] = {}

    def ready(self, timeout: float) -> bool:
        try:
            if not self.conn.poll(timeout):
                return False
            kind, info = self.conn.recv()
        except (EOFError, OSError):  # (it died starting: e.g. an import that fails there)
            return False
        self.info = info
        return kind == "ready"

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)


class Bench:
    """Runs the plan within the budget and keeps the JSON and markdown up to date."""

    def __init__(self, args: argparse.Namespace, devices: list[Device], sizes: Sizes) -> None:
        self.args, self.devices, self.sizes = args, devices, sizes
        self.started = time.perf_counter()
        self.deadline = self.started + args.budget_s
        self.results: list[CellResult] = []
        self.worker: Worker | None = None
        self.workers_started = 0
        self.worker_info: dict[str, Any] = {}
        self.stopped: str | None = None

    def left(self, until: float) -> float:
        return min(until, self.deadline) - time.perf_counter()

    def run(self) -> None:
        cells = plan(self.sizes, self.devices)
        try:
            self._worker()  # (its start and warm-up come off the top, not off the first phase)
            ready = time.perf_counter()
            begin = ready
            for phase, share in PHASES:
                until = ready + share * (self.deadline - ready)
                cap = max(MIN_CELL_S, CELL_SHARE * (until - begin))
                for cell in (c for c in cells if c.phase == phase):
                    if phase not in self.args.phases:
                        continue
                    self.results.append(self.run_cell(cell, until, cap))
                    self.write()
                begin = until
        finally:
            if self.worker is not None:
                try:
                    self.worker.conn.send(None)
                except OSError:
                    pass
                self.worker.kill()
            self.write()

    def _worker(self) -> Worker | None:
        if self.worker is not None and self.worker.process.is_alive():
            return self.worker
        self.worker = Worker(self.args.cpu_threads, self.devices)
        self.workers_started += 1
        if not self.worker.ready(max(self.left(self.deadline), 1.0)):
            self.worker.kill()
            self.worker = None
            return None
        self.worker_info = self.worker.info
        return self.worker

    def run_cell(self, cell: Cell, until: float, cap: float) -> CellResult:
        skip = self._skip(cell, until)
        if skip is not None:
            return CellResult(cell=cell, status="skipped", note=skip)
        worker = self._worker()
        left = min(self.left(until), cap)
        if worker is None or left < MIN_CELL_S:
            return CellResult(cell=cell, status="skipped", note="the worker process did not start (its error is on stderr)" if worker is None else
                              f"budget: {max(left, 0):.0f} s left in phase {cell.phase}")
        print(f"[{time.perf_counter() - self.started:6.1f} s] {cell.label()} (up to {left:.0f} s)", flush=True)
        worker.conn.send((cell.model_dump(), left))
        kill_at = time.perf_counter() + left + KILL_GRACE_S
        runs: list[dict[str, Any]] = []
        while True:
            wait = kill_at - time.perf_counter()
            if wait <= 0 or not worker.conn.poll(wait):
                worker.kill()
                self.worker = None
                return CellResult(cell=cell, status="timeout", runs=runs, allowance_s=left,
                                  note=f"stopped after {left + KILL_GRACE_S:.0f} s with {len(runs)} of {cell.reps} runs done")
            try:
                kind, payload = worker.conn.recv()
            except EOFError:
                worker.kill()
                self.worker = None
                return CellResult(cell=cell, status="error", runs=runs, allowance_s=left, note="the worker process died")
            if kind == "run":
                runs.append(payload)
            elif kind == "done":
                note = "" if len(runs) == cell.reps else f"{len(runs)} of {cell.reps} runs: another would have passed the budget"
                return CellResult(cell=cell, status="ok", runs=runs, allowance_s=left, note=note)
            else:
                print(f"    error: {str(payload).splitlines()[0]}", flush=True)
                return CellResult(cell=cell, status="error", runs=runs, allowance_s=left, note=str(payload))

    def _skip(self, cell: Cell, until: float) -> str | None:
        """Why ``cell`` is not run (``None``: run it): its series already
        stopped fitting, or its estimate passes the time left."""
        prefit = 0.0
        if cell.kind == "refit" and cell.mode == "warm":  # (a warm cell first fits at n / 1.1 points, about a cold fit)
            cold = _find(self.results, phase=cell.phase, kind="refit", device=cell.device, n=cell.n, d=cell.d, dtype=cell.dtype, mode="cold")
            if cold is not None and (cold.status != "ok" or not cold.runs):
                return f"the cold fit at n={cell.n} that it starts from did not finish ({cold.status})"
            prefit = statistics.median(r["wall_s"] for r in cold.runs) if cold is not None else 0.0
        series = [r for r in self.results if _series(r.cell) == _series(cell) and r.cell.n < cell.n]
        if not series or cell.kind not in ("refit", "adam", "proposal"):
            return None
        last = max(series, key=lambda r: r.cell.n)
        if last.status in ("timeout", "skipped", "error") or not last.runs:
            return f"n={last.cell.n} of this series did not finish ({last.status}), so neither will n={cell.n}"
        one = statistics.median(r["wall_s"] for r in last.runs)
        # (below 1000 points fixed costs dominate and the time grows slower than the algebra's n^3 or n^2)
        power = (3 if cell.kind in ("refit", "adam") else 2) - (1 if last.cell.n < 1000 else 0)
        estimate = prefit + one * (cell.n / last.cell.n) ** power
        left = self.left(until)
        if estimate > left:
            return (f"estimated {estimate:.0f} s for one run (n={last.cell.n} took {one:.1f} s"
                    f"{f', plus {prefit:.0f} s to fit the start' if prefit else ''}) > {max(left, 0):.0f} s left in phase {cell.phase}")
        return None

    def report(self) -> dict[str, Any]:
        return {
            "script": "benchmarks/gpu.py", "argv": sys.argv[1:], "quick": self.args.quick, "budget_s": self.args.budget_s,
            "elapsed_s": round(time.perf_counter() - self.started, 1), "devices": self.devices,
            "host": {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
                     "torch": torch.__version__, "botorch": botorch.__version__, "gpytorch": gpytorch.__version__,
                     "workers_started": self.workers_started, **self.worker_info},
            **summarize(self.results, self.sizes),
            "cells": [r.model_dump() for r in self.results],
        }

    def write(self) -> None:
        report = self.report()
        if self.args.json:
            _atomic(Path(self.args.json), json.dumps(report, indent=1, default=str))
        if self.args.markdown:
            _atomic(Path(self.args.markdown), markdown(report))


def _series(cell: Cell) -> tuple[Any, ...]:
    """Cells that differ only in n."""
    return (cell.phase, cell.kind, cell.device, cell.d, cell.dtype, cell.mode, cell.acquisition, cell.q, cell.threads)


def _atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --------------------------------------------------------------------------- summaries


def _find(results: Sequence[CellResult], **match: Any) -> CellResult | None:
    for r in results:
        if all(getattr(r.cell, k) == v for k, v in match.items()):
            return r
    return None


def _seconds(r: CellResult | None, key: str = "seconds") -> tuple[float | None, str]:
    """A cell's median and how to read it: ``""`` measured, ``">"`` a lower bound (timed out), ``"-"`` none."""
    if r is None:
        return None, "-"
    value = r.median(key)
    if value is not None:
        return value, ""
    if r.status == "timeout" and r.allowance_s is not None:
        return r.allowance_s, ">"
    return None, "-"


def _pair_rows(results: Sequence[CellResult], ns: Sequence[int], key: str = "seconds", **match: Any) -> list[tuple[int, float | None, float | None]]:
    """``(n, cpu_s, cuda_s)`` for :func:`measured_crossover`; a timed-out CPU
    cell counts as its allowance (a lower bound) only where CUDA was faster still."""
    rows = []
    for n in ns:
        cpu, how = _seconds(_find(results, device="cpu", n=n, **match), key)
        gpu, gpu_how = _seconds(_find(results, device="cuda", n=n, **match), key)
        if gpu_how:
            gpu = None
        if how == ">" and (gpu is None or gpu >= (cpu or 0)):
            cpu = None
        rows.append((n, cpu, gpu))
    return rows


def summarize(results: Sequence[CellResult], sizes: Sizes) -> dict[str, Any]:
    """The tables and figures the issue asks for, from the cells measured so far."""
    out: dict[str, Any] = {}
    runs = [r for r in results if r.cell.kind == "parity" and r.status == "ok" and r.runs]
    if len(runs) == 2:
        a, b = sorted(runs, key=lambda r: (r.cell.device != "cpu", r.cell.mode))
        out["parity"] = compare(a.first("proposals"), b.first("proposals"), (a.cell.device, b.cell.device)).model_dump()
    crossover: dict[str, dict[str, dict[str, int | None]]] = {}
    for phase, dtype, modes in (("refit", "float64", ("cold", "warm")), ("float32", "float32", ("cold",))):
        for d in sizes.dims:
            for mode in modes:
                rows = _pair_rows(results, sizes.refit_n, phase=phase, kind="refit", d=d, dtype=dtype, mode=mode)
                if any(c is not None and g is not None for _, c, g in rows):
                    crossover.setdefault(dtype, {}).setdefault(str(d), {})[mode] = measured_crossover(rows)
    out["refit_crossover"] = crossover
    table: dict[str, int | None] = {}
    basis: dict[str, str] = {}
    for d in sizes.dims:
        rows = _pair_rows(results, sizes.proposal_n, key="warm_s", kind="proposal", d=d, acquisition="qlognei", q=1)
        if any(c is not None and g is not None for _, c, g in rows):
            table[str(d)] = measured_crossover(rows)
            basis[str(d)] = f"bo proposal, qLogNEI q=1, warm, n in {list(sizes.proposal_n)}"
        elif crossover.get("float64", {}).get(str(d), {}).get("cold", "absent") != "absent":
            table[str(d)] = crossover["float64"][str(d)]["cold"]
            basis[str(d)] = f"exact GP refit, float64, cold, n in {list(sizes.refit_n)}"
    if table:
        out["device_crossover"] = table
        out["device_crossover_basis"] = basis
    seq = [r for r in results if r.cell.kind == "seed_batch" and r.cell.mode == "sequential" and r.median() is not None]
    batched = _find(results, kind="seed_batch", device="cuda", mode="batched")
    if seq and batched is not None and batched.median() is not None:
        best = min(seq, key=lambda r: r.median() or math.inf)
        out["seed_batch_speedup"] = {"sequential_cpu_s": best.median(), "sequential_threads": best.cell.threads or "all",
                                     "batched_cuda_s": batched.median(), "speedup": (best.median() or 0) / (batched.median() or math.inf),
                                     "target": 10.0}
    big = max(sizes.proposal_n)
    gpu = _find(results, kind="proposal", device="cuda", n=big, d=6, acquisition="qlognei", q=1)
    if gpu is not None and gpu.median() is not None:
        out["proposal_target"] = {"n": big, "d": 6, "cuda_cold_s": gpu.median(), "cuda_warm_s": gpu.median("warm_s"), "target_s": 2.0}
    return out


def _fmt(value: float | None, how: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{how}{value:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    """The tables of ``report`` (see :meth:`Bench.report`) as markdown."""
    results = [CellResult.model_validate(c) for c in report["cells"]]
    sizes = QUICK if report["quick"] else FULL
    host = report["host"]
    lines = [f"# benchmarks/gpu.py: {'QUICK CHECK, timings meaningless' if report['quick'] else 'GPU retraining (issue 21)'}", "",
             f"`python benchmarks/gpu.py {' '.join(report['argv'])}`; {report['elapsed_s']} s of a {report['budget_s']} s budget; "
             f"devices {', '.join(report['devices'])}; GPU: {host.get('gpu', {}).get('name', 'none')}; {host['cpu_count']} CPU cores, "
             f"torch {host['torch']} ({host.get('torch_threads')} threads), botorch {host['botorch']}, gpytorch {host['gpytorch']}; "
             f"warm-up {host.get('warm_up_s')}. Seconds, median of the runs (runs in the JSON); `>x`: stopped after x s; "
             "`-`: not run (the JSON says why).", ""]
    if "parity" in report:
        p = report["parity"]
        lines += [f"**Parity** (Hartmann6, {sizes.parity[0]} points, {sizes.parity[1]} proposals, {' vs '.join(p['devices'])}): largest difference "
                  f"{p['max_abs_diff']:.2e} in the unit cube, {'within' if p['within'] else 'NOT within'} {p['tol']:g}.", ""]
    if "proposal_target" in report:
        t = report["proposal_target"]
        met = "met" if min(t["cuda_cold_s"], t["cuda_warm_s"] or math.inf) <= t["target_s"] else "missed"
        lines += [f"**Target: a proposal at n = {t['n']}, d = 6 on CUDA in <= 2 s**: cold {t['cuda_cold_s']:.2f} s, warm "
                  f"{_fmt(t['cuda_warm_s'])} s ({met}).", ""]
    if "seed_batch_speedup" in report:
        s = report["seed_batch_speedup"]
        lines += [f"**Target: 64 seed-batched fits >= 10x faster than 64 sequential CPU fits**: {s['sequential_cpu_s']:.2f} s "
                  f"(CPU, {s['sequential_threads']} threads) / {s['batched_cuda_s']:.2f} s (CUDA, one batched GP) = "
                  f"**{s['speedup']:.1f}x** ({'met' if s['speedup'] >= 10 else 'missed'}).", ""]
    if "device_crossover" in report:
        lines += [f"**`device: auto` table** (`device_crossover`, paste into `planners/device_choice.py` CROSSOVER): "
                  f"`{json.dumps(report['device_crossover'])}`; basis {json.dumps(report['device_crossover_basis'])}.", ""]
    # seed batch
    rows = [r for r in results if r.cell.kind == "seed_batch"]
    if rows:
        lines += ["## Seed-batched fits", "", f"{sizes.seeds} data sets of n = {sizes.seed_n}, d = 6.", "",
                  "| how | device | threads | s | MLL per point | note |", "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r.cell.mode} | {r.cell.device} | {r.cell.threads or 'all'} | {_fmt(*_seconds(r))} | {_fmt(r.median('mll'), '', 3)} "
                         f"| {r.status} {r.note} |")
        lines.append("")
    # proposals
    rows = [r for r in results if r.cell.kind == "proposal"]
    if rows:
        lines += ["## One full `bo` proposal", "", "cold: a fresh planner; warm: its next proposal, one observation more.", "",
                  "| acquisition | q | d | n | CPU cold | CUDA cold | CPU warm | CUDA warm | CUDA peak GiB | note |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        keys = sorted({(r.cell.acquisition, r.cell.q, r.cell.d, r.cell.n) for r in rows})
        for acq, q, d, n in keys:
            cpu = _find(rows, acquisition=acq, q=q, d=d, n=n, device="cpu")
            gpu = _find(rows, acquisition=acq, q=q, d=d, n=n, device="cuda")
            notes = "; ".join(f"{r.cell.device}: {r.status} {r.note} {r.first('strategy') or ''} {r.first('batch') or ''}".strip()
                              for r in (cpu, gpu) if r is not None and (r.status != "ok" or r.note or r.first("strategy") != "bo"))
            lines.append(f"| {acq} | {q} | {d} | {n} | {_fmt(*_seconds(cpu))} | {_fmt(*_seconds(gpu))} | {_fmt(*_seconds(cpu, 'warm_s'))} "
                         f"| {_fmt(*_seconds(gpu, 'warm_s'))} | {_fmt(gpu.median('peak_gib') if gpu else None)} | {notes} |")
        lines.append("")
    # refit
    for phase, dtype, modes in (("refit", "float64", ("cold", "warm")), ("float32", "float32", ("cold",))):
        rows = [r for r in results if r.cell.phase == phase]
        if not rows:
            continue
        lines += [f"## Exact GP refit, {dtype}", "", "CPU / CUDA seconds (all n points fitted); crossover: the smallest n from which "
                  "CUDA is faster at every larger n measured.", ""]
        head = [f"d={d} {mode} {dev}" for d in sizes.dims for mode in modes for dev in ("CPU", "CUDA")]
        lines += ["| n | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
        for n in sizes.refit_n:
            cells = [_fmt(*_seconds(_find(rows, n=n, d=d, mode=mode, device=dev))) for d in sizes.dims for mode in modes for dev in ("cpu", "cuda")]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        cross = report.get("refit_crossover", {}).get(dtype, {})
        lines += ["", "Crossover n: " + ", ".join(f"d={d} {mode}: {cross.get(str(d), {}).get(mode, '-')}" for d in sizes.dims for mode in modes), ""]
    rows = [r for r in results if r.cell.kind == "adam"]
    if rows:
        lines += ["## The fit with Adam (fixed steps) against scipy L-BFGS", "", "| n | d | device | Adam s | Adam MLL | L-BFGS cold s | L-BFGS MLL |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            lbfgs = _find(results, phase="refit", kind="refit", n=r.cell.n, d=r.cell.d, mode="cold", device=r.cell.device)
            lines.append(f"| {r.cell.n} | {r.cell.d} | {r.cell.device} | {_fmt(*_seconds(r))} | {_fmt(r.median('mll'), '', 3)} | "
                         f"{_fmt(*_seconds(lbfgs))} | {_fmt(lbfgs.median('mll') if lbfgs else None, '', 3)} |")
        lines.append("")
    rows = [r for r in results if r.cell.kind == "mf"]
    if rows:
        lines += ["## `mf` proposal", "", "| n | device | cold s | warm s | note |", "|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r.cell.n} | {r.cell.device} | {_fmt(*_seconds(r))} | {_fmt(*_seconds(r, 'warm_s'))} | {r.status} {r.note} |")
        lines.append("")
    skipped = [r for r in results if r.status != "ok" or r.note]
    if skipped:
        lines += ["## Cells not run in full", ""] + [f"- {r.cell.label()}: {r.status}: {r.note.splitlines()[0] if r.note else ''}"
                                                     for r in skipped] + [""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device-only", choices=("cpu", "cuda", "both"), default=None,
                        help="devices to measure (default: both when torch sees CUDA, else cpu)")
    parser.add_argument("--quick", action="store_true", help="small n: check that the script works (timings meaningless)")
    parser.add_argument("--json", default=None, help="write the results here (rewritten after every cell)")
    parser.add_argument("--markdown", default=None, help="write the tables here (rewritten after every cell)")
    parser.add_argument("--budget-s", type=float, default=None, help="wall-clock budget in seconds (default 420; --quick 110)")
    parser.add_argument("--phases", default=",".join(p for p, _ in PHASES),
                        help="comma-separated phases to run (default: all): " + ", ".join(p for p, _ in PHASES))
    parser.add_argument("--cpu-threads", type=int, default=None,
                        help="torch threads of the CPU cells (default: every core; --quick: 1, as on a shared machine)")
    args = parser.parse_args(argv)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(args.phases) - {p for p, _ in PHASES}
    if unknown:
        parser.error(f"--phases: unknown {', '.join(sorted(unknown))}; known: {', '.join(p for p, _ in PHASES)}")
    if args.cpu_threads is None:
        args.cpu_threads = 1 if args.quick else os.cpu_count() or 1
    if args.budget_s is None:
        args.budget_s = 110.0 if args.quick else 420.0
    cuda = torch.cuda.is_available()
    choice = args.device_only or ("both" if cuda else "cpu")
    if choice in ("cuda", "both") and not cuda:
        parser.error(f"--device-only {choice}: torch sees no CUDA device")
    devices: list[Device] = ["cpu", "cuda"] if choice == "both" else [choice]
    bench = Bench(args, devices, QUICK if args.quick else FULL)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # (Bench.run's finally kills the worker and writes what was measured)

    signal.signal(signal.SIGTERM, stop)
    bench.run()
    print(markdown(bench.report()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
