"""An instrument whose ``run()`` runs as a Ray task, so that an expensive
simulator (finite elements, DFT, molecular dynamics) spreads its experiments
over a Ray cluster.

A lab config asks for it per instrument (``executor: ray``, see
:class:`selflab.controller.config.InstrumentConfig`)::

    instruments:
      - name: furnace
        driver: carburizing          # any driver importable on the cluster's nodes
        executor: ray
        num_cpus: 1                  # what each experiment's task reserves
        num_gpus: 0

The wrapper (:func:`ray_task_instrument`) keeps the driver built here for
what the controller asks between experiments (``limits``, ``describe()``,
``duration()``, ``inputs``, ``candidates()``, ``fidelity``, ``cost``) and
runs each experiment as one Ray task that builds the driver from its name
and options on a worker (:func:`selflab.instruments.registry.build_driver`),
connects it, runs it and closes it. So the driver must be importable on the
cluster's nodes, and whatever it keeps between runs (a noise generator's
stream, a cache) starts afresh each experiment.

* **Capacity** comes from the resources: how many tasks of ``num_cpus`` CPUs
  and ``num_gpus`` GPUs the cluster holds at once (a ``capacity`` in the
  config overrides it, and then nothing connects to Ray before the campaign
  does).
* **Stopping**: cancelling ``run()`` (the campaign's stop, emergency stop or
  timeout) and ``stop()`` map to ``ray.cancel(force=True)``: the worker
  running the experiment is killed and the experiment ends ``abandoned``.
* **A task that dies** (its worker killed, out of memory, its node lost)
  raises :class:`~selflab.instruments.errors.InstrumentDisconnected` with
  Ray's reason: a failed experiment, never a lost one. Ray does not retry
  it (``max_retries=0``); the instrument's own ``retries`` policy applies.
* **Threads**: a task runs with as many threads as the CPUs it reserves
  (:func:`bound_threads`).
* **Not forwarded**: ``read()`` (:class:`~selflab.instruments.protocol.Readable`)
  and ``outcome_of()`` (:class:`~selflab.instruments.protocol.Remembering`).
  The driver built here runs nothing, so it has no live readings for an
  interlock to watch and remembers no outcome; each task's driver is gone
  when its task ends. So an interlock cannot watch a Ray instrument (the
  config check says so), and an experiment in flight when the controller
  dies ends ``stale`` (and is requeued by ``stale_policy: requeue``) rather
  than recovered.

Ray is optional (``pip install 'selflab[ray]'``): it is imported when an
instrument is built with ``executor: ray``, never before. :func:`connect_ray`
joins the cluster named by ``RAY_ADDRESS`` (Ray's own variable), or starts
one on this machine.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from selflab.instruments.errors import InstrumentDisconnected, InstrumentError, OutOfLimits
from selflab.instruments.protocol import (
    DeclaresInputs,
    Describable,
    HasCost,
    HasFidelity,
    Pooled,
    Timed,
    declared_limits,
    limit_violations,
)
from selflab.instruments.registry import DriverError, build_driver

__all__ = ["RAY_INSTALL", "RayTaskInstrument", "RayUnavailable", "bound_threads", "connect_ray", "ray_error", "ray_task_instrument",
           "require_ray", "resource_capacity"]

RAY_INSTALL = "pip install 'selflab[ray]'"
"""How to install Ray with the versions selflab supports."""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""Environment variables that bound the numeric libraries' thread pools."""


class RayUnavailable(DriverError):
    """Ray is not installed, or the cluster cannot be reached; the message says what to do."""


def require_ray() -> ModuleType:
    """The ``ray`` module. Raises :class:`RayUnavailable` naming the install command."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable(f"Ray is not installed ({exc}); install it with: {RAY_INSTALL}") from None
    return ray


def connect_ray(address: str | None = None) -> ModuleType:
    """The ``ray`` module, connected: to the cluster at ``address`` (``None``:
    ``RAY_ADDRESS``, else a new local one), unless this process is connected already.

    A local start takes several seconds and some 800 MB; no dashboard.

    Raises:
        RayUnavailable: Ray is not installed, or the cluster cannot be reached.
    """
    ray = require_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or os.environ.get("RAY_ADDRESS") or "this machine"
            raise RayUnavailable(f"cannot start or reach the Ray cluster at {where}: {exc}") from None
    return ray


def bound_threads(n: int, *, load_torch: bool = False) -> None:
    """Let this process's numeric libraries use ``n`` threads: the OpenMP/MKL/
    OpenBLAS variables (for libraries loaded later) and torch's intra-op
    threads (when torch is loaded, or ``load_torch``)."""
    n = max(1, int(n))
    for name in THREAD_VARIABLES:
        os.environ[name] = str(n)
    if load_torch or "torch" in sys.modules:
        import torch

        torch.set_num_threads(n)


def _run_in_worker(driver: str, options: dict[str, Any], params: dict[str, Any], threads: int) -> dict[str, float]:
    """One experiment, on a Ray worker: build the driver, connect, run, close."""
    bound_threads(threads)

    async def once() -> dict[str, float]:
        instrument = build_driver(driver, options)
        await instrument.connect()
        try:
            return dict(await instrument.run(params))
        finally:
            await instrument.close()

    return asyncio.run(once())


@functools.cache
def _remote_run(ray: ModuleType) -> Any:
    """:func:`_run_in_worker` as a Ray remote function (made once per process)."""
    return ray.remote(max_retries=0)(_run_in_worker)


def resource_capacity(resources: Mapping[str, float], num_cpus: float, num_gpus: float) -> int:
    """How many tasks of ``num_cpus`` CPUs and ``num_gpus`` GPUs fit in ``resources`` at once.

    >>> resource_capacity({"CPU": 16.0, "GPU": 2.0}, 4, 1)
    2
    """
    fits = [math.floor(resources.get("CPU", 0.0) / num_cpus + 1e-9)] if num_cpus > 0 else []
    fits += [math.floor(resources.get("GPU", 0.0) / num_gpus + 1e-9)] if num_gpus > 0 else []
    return min(fits) if fits else 1


class RayTaskInstrument:
    """Runs the experiments of the driver ``driver`` (with ``options``) as Ray
    tasks; ``local`` is that driver built here (see the module docstring).

    Built by :func:`ray_task_instrument`, which adds the optional members
    ``local`` has (``describe()``, ``duration()``, ``inputs``, ``candidates()``).
    """

    def __init__(self, local: Any, driver: str, options: Mapping[str, Any], *, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, capacity: int = 1) -> None:
        self.local, self.driver, self.options = local, driver, dict(options)
        self.num_cpus, self.num_gpus = float(num_cpus), float(num_gpus)
        self.capacity: int = capacity
        self.limits = declared_limits(local)
        self.fidelity: float = float(local.fidelity) if isinstance(local, HasFidelity) else 1.0
        self.cost: float = float(local.cost) if isinstance(local, HasCost) else 1.0
        self._ray: ModuleType | None = None
        self._running: set[Any] = set()

    async def connect(self) -> None:
        """Join the Ray cluster (:func:`connect_ray`).

        Raises:
            InstrumentDisconnected: Ray is not installed or unreachable, or
                no node can ever hold one task's resources.
        """
        try:
            ray = connect_ray()
        except RayUnavailable as exc:
            raise InstrumentDisconnected(str(exc)) from None
        resources = ray.cluster_resources()
        if resource_capacity(resources, self.num_cpus, self.num_gpus) < 1:
            raise InstrumentDisconnected(_never_fits(resources, self.num_cpus, self.num_gpus))
        self._ray = ray

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Run one experiment as a Ray task and return its readings.

        Raises:
            InstrumentDisconnected: not connected, or the task died (its worker
                or node was lost); the message says how.
            OutOfLimits: ``params`` is outside the declared limits (nothing is sent).
            InstrumentError: whatever the driver raised on the worker, or the
                task was cancelled by :meth:`stop`.
        """
        ray = self._ray
        if ray is None:
            raise InstrumentDisconnected("not connected to Ray: call connect() first")
        faults = limit_violations(params, self.limits)
        if faults:
            raise OutOfLimits("; ".join(faults))
        threads = max(1, math.floor(self.num_cpus))
        task = _remote_run(ray).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, name=f"selflab:{self.driver}")
        ref = task.remote(self.driver, self.options, dict(params), threads)
        self._running.add(ref)
        try:
            return dict(await ref)
        except asyncio.CancelledError:
            ray.cancel(ref, force=True)
            raise
        except ray.exceptions.RayTaskError as exc:  # the driver raised: its own error, as a local run would
            cause = exc.cause
            raise (cause if isinstance(cause, Exception) else InstrumentError(ray_error(exc))) from None
        except ray.exceptions.TaskCancelledError:
            raise InstrumentError("stopped: its Ray task was cancelled (stop())") from None
        except ray.exceptions.RayError as exc:  # the worker, its node or the object died
            raise InstrumentDisconnected(f"its Ray task died ({ray_error(exc)})") from None
        finally:
            self._running.discard(ref)

    async def stop(self) -> None:
        """Cancel every experiment this instrument runs (``ray.cancel``, force: the workers are killed)."""
        ray = self._ray
        for ref in list(self._running):
            if ray is not None:
                ray.cancel(ref, force=True)

    async def close(self) -> None:
        """Cancel what still runs and leave the cluster to others; safe to call twice."""
        await self.stop()
        self._ray = None


class _Describes(RayTaskInstrument):
    def describe(self) -> Mapping[str, str]:
        """The driver's outputs and units."""
        return dict(self.local.describe())


class _Timed(RayTaskInstrument):
    def duration(self, params: Mapping[str, Any]) -> float:
        """The driver's declared seconds for ``params``."""
        return float(self.local.duration(params))


class _Pooled(RayTaskInstrument):
    def candidates(self) -> Sequence[Mapping[str, Any]]:
        """The driver's pool."""
        return list(self.local.candidates())


class _DeclaresInputs(RayTaskInstrument):
    @property
    def inputs(self) -> Sequence[str]:
        """The inputs the driver reads."""
        return tuple(self.local.inputs)


_MEMBERS: tuple[tuple[type, type], ...] = (
    (Describable, _Describes), (Timed, _Timed), (Pooled, _Pooled), (DeclaresInputs, _DeclaresInputs))
"""Optional protocol of the driver -> the wrapper class that forwards it."""


@functools.cache
def _composed(members: tuple[type, ...]) -> type[RayTaskInstrument]:
    return type("RayTaskInstrument", (*members, RayTaskInstrument), {"__doc__": RayTaskInstrument.__doc__}) if members else RayTaskInstrument


def ray_task_instrument(local: Any, driver: str, options: Mapping[str, Any], *, num_cpus: float | None = None,
                        num_gpus: float | None = None, capacity: int | None = None) -> RayTaskInstrument:
    """``local`` (the driver ``driver`` built with ``options``) with its
    experiments run as Ray tasks of ``num_cpus`` CPUs (default 1) and
    ``num_gpus`` GPUs (default 0), with the optional members ``local`` has.

    ``capacity`` ``None``: as many tasks as the cluster holds at once, which
    connects to Ray now (:func:`connect_ray`).

    Raises:
        RayUnavailable: Ray is not installed, or (capacity from the resources)
            the cluster cannot be reached or never holds one task.
    """
    cpus, gpus = 1.0 if num_cpus is None else float(num_cpus), 0.0 if num_gpus is None else float(num_gpus)
    require_ray()
    if capacity is None:
        resources = connect_ray().cluster_resources()
        capacity = resource_capacity(resources, cpus, gpus)
        if capacity < 1:
            raise RayUnavailable(_never_fits(resources, cpus, gpus))
    members = tuple(wrapper for protocol, wrapper in _MEMBERS if isinstance(local, protocol))
    return _composed(members)(local, driver, options, num_cpus=cpus, num_gpus=gpus, capacity=capacity)


def _never_fits(resources: Mapping[str, float], num_cpus: float, num_gpus: float) -> str:
    return (f"the Ray cluster has {resources.get('CPU', 0.0):g} CPUs and {resources.get('GPU', 0.0):g} GPUs: a task of "
            f"num_cpus={num_cpus:g}, num_gpus={num_gpus:g} never fits; lower num_cpus/num_gpus or add nodes")


def ray_error(exc: BaseException) -> str:
    """A Ray exception in one line: its type and the first line of its message."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
