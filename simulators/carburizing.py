r"""Gas carburizing of a steel part: a 1-D nonlinear diffusion PDE, solved on
a fine grid so that one run takes about a second of real CPU.

Physics
-------
Carbon diffuses from the furnace atmosphere into austenite. The carbon
content :math:`C(x, t)` (wt %) at depth :math:`x` obeys

.. math:: \partial_t C = \partial_x \big(D(C, T)\, \partial_x C\big)

with the diffusivity of Tibbetts (1980),
:math:`D = 4.7\times10^{-5} \exp(-1.6\,C) \exp(-(37000 - 6600\,C) / (R T))`
m²/s (:math:`R` = 1.987 cal/mol/K). At the surface the atmosphere gives
carbon at the rate :math:`\beta (C_p - C_s)` (mass-transfer coefficient
:math:`\beta`, carbon potential :math:`C_p`); the core, ``depth_mm`` below,
takes no flux. The part starts at ``core_carbon`` everywhere.

A *boost-diffuse* cycle holds the furnace at ``temperature`` with the
carbon potential ``carbon_potential`` for ``boost_time`` hours, then at
``diffuse_potential`` (default 0.8 wt %) for ``diffuse_time`` hours, so that
carbon soaks in without leaving too much at the surface.

Outputs:

* ``case_depth`` (mm): the depth at which carbon falls to 0.4 wt %
  (``case_carbon``), the hardened case;
* ``surface_carbon`` (wt %): too high and the surface holds carbides and
  retained austenite;
* ``cycle_time`` (h): ``boost_time + diffuse_time``.

The classic question (the ``carburizing`` benchmark problem): the shortest
cycle that gives a case of at least 0.8 mm with no more than 0.85 wt % at
the surface (about 3 h, at the hottest and richest settings).

Numerics
--------
Finite volumes on ``grid_points`` nodes, backward Euler in time with the
diffusivity taken at the previous step (one tridiagonal solve per step,
``scipy.linalg.solve_banded``), ``time_steps`` steps over the whole cycle
whatever its length, so every run costs the same. The defaults (1,500
nodes, 16,000 steps) take about a second of one core; halving either halves
it (the case depth agrees with a grid twice as fine in both to 1e-4 mm). A run happens in a worker thread, so the event loop stays free, and
``stop()`` (or cancelling ``run()``) ends it at the next step.

It declares ``duration(params)``: the cycle's own length in seconds, as the
furnace would take, so that offline campaigns run on a simulated clock.

Example::

    import asyncio
    from selflab.simulators.carburizing import CarburizingFurnace

    async def main() -> None:
        furnace = CarburizingFurnace()
        await furnace.connect()
        print(await furnace.run({"temperature": 925, "carbon_potential": 1.1, "boost_time": 3, "diffuse_time": 1}))
        await furnace.close()

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from selflab.instruments.errors import InstrumentError
from selflab.simulators.simulated import Simulation, check_positive

__all__ = ["CARBURIZING_LIMITS", "CarburizingFurnace", "carbon_profile", "case_depth"]

CARBURIZING_LIMITS: dict[str, tuple[float, float]] = {
    "temperature": (880.0, 960.0),  # degC
    "carbon_potential": (0.9, 1.3),  # wt %, during the boost
    "boost_time": (0.5, 4.0),  # h
    "diffuse_time": (0.0, 3.0),  # h
}
"""Inputs and their safe ranges."""

R_CAL = 1.987
"""Gas constant, cal/(mol K) (Tibbetts' activation energies are in cal/mol)."""


def diffusivity(carbon: np.ndarray, kelvin: float) -> np.ndarray:
    """Carbon diffusivity in austenite, m²/s, at ``carbon`` wt % (Tibbetts 1980)."""
    return 4.7e-5 * np.exp(-1.6 * carbon - (37000.0 - 6600.0 * carbon) / (R_CAL * kelvin))


class _Stopped(Exception):
    """The run was stopped between two time steps."""


def carbon_profile(temperature: float, stages: list[tuple[float, float]], *, depth_mm: float = 4.0, grid_points: int = 1500,
                   time_steps: int = 16000, core_carbon: float = 0.2, beta_m_per_s: float = 1.5e-7,
                   stop: threading.Event | None = None) -> np.ndarray:
    """Carbon (wt %) at ``grid_points`` evenly spaced depths from the surface
    to ``depth_mm``, after the ``stages``: ``(hours, carbon potential)`` each,
    at ``temperature`` degC. ``time_steps`` are shared among the stages by
    their length (at least one each).

    Raises:
        _Stopped: ``stop`` was set.
    """
    from scipy.linalg import solve_banded

    kelvin = temperature + 273.15
    h = depth_mm * 1e-3 / (grid_points - 1)
    total = sum(hours for hours, _ in stages)
    carbon = np.full(grid_points, core_carbon)
    band = np.zeros((3, grid_points))
    for hours, potential in stages:
        if hours <= 0:
            continue
        steps = max(1, round(time_steps * hours / total))
        dt = hours * 3600.0 / steps
        gain = 2.0 * beta_m_per_s * dt / h
        for _ in range(steps):
            if stop is not None and stop.is_set():
                raise _Stopped
            d = diffusivity(carbon, kelvin)
            r = 0.5 * (d[1:] + d[:-1]) * dt / h**2  # at the faces between nodes
            band[1, 1:-1] = 1.0 + r[:-1] + r[1:]
            band[1, 0] = 1.0 + gain + 2.0 * r[0]  # surface half-cell: flux beta (Cp - Cs) in
            band[1, -1] = 1.0 + 2.0 * r[-1]  # core half-cell: no flux
            band[0, 1:] = -r
            band[0, 1] = -2.0 * r[0]
            band[2, :-1] = -r
            band[2, -2] = -2.0 * r[-1]
            rhs = carbon.copy()
            rhs[0] += gain * potential
            carbon = solve_banded((1, 1), band, rhs, overwrite_ab=False, overwrite_b=True, check_finite=False)
    return carbon


def case_depth(carbon: np.ndarray, depth_mm: float, level: float = 0.4) -> float:
    """Depth (mm) at which the profile first falls to ``level`` wt % (linear
    between nodes); 0 when the surface is below it, ``depth_mm`` when nowhere is."""
    below = np.nonzero(carbon <= level)[0]
    if len(below) == 0:
        return depth_mm
    i = int(below[0])
    if i == 0:
        return 0.0
    h = depth_mm / (len(carbon) - 1)
    a, b = carbon[i - 1], carbon[i]
    return float(h * (i - 1 + (a - level) / (a - b)))


class CarburizingFurnace:
    """A boost-diffuse gas-carburizing cycle, simulated (see the module docstring).

    Inputs: ``temperature`` (degC), ``carbon_potential`` (wt %),
    ``boost_time`` and ``diffuse_time`` (h); outputs ``case_depth`` (mm),
    ``surface_carbon`` (wt %) and ``cycle_time`` (h).

    Options (keyword-only):
        grid_points: nodes from the surface to ``depth_mm`` (>= 20; default 1500).
        time_steps: backward-Euler steps per cycle (>= 10; default 16000).
        depth_mm: depth of the modelled slab, mm (default 4).
        core_carbon: carbon of the untreated steel, wt % (default 0.2).
        diffuse_potential: carbon potential while diffusing, wt % (default 0.8).
        beta_m_per_s: surface mass-transfer coefficient, m/s (default 1.5e-7).
        case_carbon: the carbon content that defines the case depth, wt % (default 0.4).
        noise_std: Gaussian noise on ``case_depth``, mm (default 0).
        seed: noise seed.
    """

    primary_output: str = "cycle_time"
    direction: Literal["maximize", "minimize"] = "minimize"
    optimum: float | None = None

    def __init__(self, *, grid_points: int = 1500, time_steps: int = 16000, depth_mm: float = 4.0, core_carbon: float = 0.2,
                 diffuse_potential: float = 0.8, beta_m_per_s: float = 1.5e-7, case_carbon: float = 0.4,
                 noise_std: float = 0.0, seed: int = 0) -> None:
        for name, value, least in (("grid_points", grid_points, 20), ("time_steps", time_steps, 10)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        self.grid_points, self.time_steps = grid_points, time_steps
        self.depth_mm = check_positive("depth_mm", depth_mm)
        self.core_carbon = check_positive("core_carbon", core_carbon)
        self.diffuse_potential = check_positive("diffuse_potential", diffuse_potential)
        self.beta_m_per_s = check_positive("beta_m_per_s", beta_m_per_s)
        self.case_carbon = check_positive("case_carbon", case_carbon)
        self._sim = Simulation(limits=CARBURIZING_LIMITS, outputs={"case_depth": "mm", "surface_carbon": "wt%", "cycle_time": "h"},
                               noise_std=noise_std, seed=seed)
        self.limits: dict[str, tuple[float, float]] = dict(self._sim.limits)
        self.inputs: tuple[str, ...] = tuple(self.limits)
        self.capacity: int = 1
        self.fidelity: float = 1.0
        self.cost: float = 1.0
        self._stops: set[threading.Event] = set()

    async def connect(self) -> None:
        """Connect (nothing to open)."""
        self._sim.connect()

    async def close(self) -> None:
        """Stop any run and disconnect; safe to call twice."""
        await self.stop()
        self._sim.close()

    async def stop(self) -> None:
        """End every run at its next time step (it raises :class:`InstrumentError`)."""
        for event in list(self._stops):
            event.set()

    def describe(self) -> dict[str, str]:
        """Output name -> unit."""
        return dict(self._sim.outputs)

    def duration(self, params: Mapping[str, Any]) -> float:
        """The cycle's length, seconds (``boost_time + diffuse_time`` hours)."""
        x = self._sim.parse(params, ("boost_time", "diffuse_time"))
        return 3600.0 * (x["boost_time"] + x["diffuse_time"])

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Simulate one cycle (in a worker thread).

        Raises:
            InstrumentDisconnected: not connected.
            BadResponse: an input is missing or not a number.
            OutOfLimits: an input is outside :attr:`limits`.
            InstrumentError: stopped by :meth:`stop`.
        """
        x = self._sim.read_inputs(params)
        stop = threading.Event()
        self._stops.add(stop)
        try:
            carbon = await asyncio.to_thread(self._solve, x, stop)
        except asyncio.CancelledError:
            stop.set()
            raise
        except _Stopped:
            raise InstrumentError("stopped: the carburizing run was aborted by stop()") from None
        finally:
            self._stops.discard(stop)
        depth = case_depth(carbon, self.depth_mm, self.case_carbon)
        return self._sim.finish({"case_depth": self._sim.noisy(depth, low=0.0), "surface_carbon": float(carbon[0]),
                                 "cycle_time": x["boost_time"] + x["diffuse_time"]})

    def _solve(self, x: dict[str, float], stop: threading.Event) -> np.ndarray:
        stages = [(x["boost_time"], x["carbon_potential"]), (x["diffuse_time"], self.diffuse_potential)]
        carbon = carbon_profile(x["temperature"], stages, depth_mm=self.depth_mm, grid_points=self.grid_points,
                                time_steps=self.time_steps, core_carbon=self.core_carbon, beta_m_per_s=self.beta_m_per_s, stop=stop)
        if not np.all(np.isfinite(carbon)):
            raise InstrumentError("the carburizing solve diverged (a reading is not finite)")
        return carbon

