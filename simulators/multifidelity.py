"""Multi-fidelity simulators: one problem served at several levels of trust and cost.

A low fidelity is cheaper and less trustworthy; fidelity 1 is the target.
Each instrument here serves one fidelity (``fidelity``) at one ``cost`` per
experiment, so a campaign puts one instrument per level in its config.

* :class:`AugmentedHartmannInstrument`, :class:`AugmentedBraninInstrument`:
  botorch's augmented test functions, evaluated at ``(x, s)`` where ``s`` is
  the instrument's fidelity; at ``s = 1`` they equal Hartmann6 and Branin.
  Lowering ``s`` reweights one term, a small, smooth, systematic bias. For
  AugmentedHartmann at its minimiser: -3.32237 (s = 1), -3.31213 (0.75),
  -3.30190 (0.5); over 2,000 uniform points the correlation with s = 1 is
  0.99997 at s = 0.5. For AugmentedBranin at (pi, 2.275): 0.397887, 0.45877,
  0.64141; correlation with s = 1 is 0.91 at s = 0.5 (0.98 at 0.75).
* ``PlugFlowReactor(model="cstr")`` (:mod:`selflab.simulators.reactor`): a physics
  model with a real fidelity knob, the lumped well-mixed approximation of the
  plug-flow reactor, about 20x cheaper to compute and biased by physics, not
  by noise. :func:`reactor_fidelity_gap` measures its bias against the exact
  model; the numbers are in the reactor's module docstring.

Default costs per fidelity (:data:`DEFAULT_COSTS`) are 0.1, 0.3 and 1 cost
units at 0.5, 0.75 and 1; the declared duration is ``3600 * cost`` simulated
seconds unless ``duration_s`` says otherwise.

Example::

    import asyncio
    from selflab.simulators.multifidelity import AugmentedHartmannInstrument

    async def main() -> None:
        cheap = AugmentedHartmannInstrument(fidelity=0.5)   # cost 0.1, 360 s
        await cheap.connect()
        x = {"x1": 0.20169, "x2": 0.150011, "x3": 0.476874,
             "x4": 0.275332, "x5": 0.311652, "x6": 0.6573}
        print(await cheap.run(x))   # {'y': -3.3019...}; -3.32237 at fidelity 1
        await cheap.close()

    asyncio.run(main())
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from selflab.simulators.benchmarks import _TestFunctionInstrument
from selflab.simulators.reactor import REACTOR_LIMITS, Kinetics, solve_cstr, solve_pfr
from selflab.simulators.simulated import check_non_negative, check_positive

if TYPE_CHECKING:
    from botorch.test_functions.synthetic import SyntheticTestFunction

__all__ = [
    "DEFAULT_COSTS",
    "AugmentedBraninInstrument",
    "AugmentedHartmannInstrument",
    "FidelityGap",
    "reactor_fidelity_gap",
]

DEFAULT_COSTS: dict[float, float] = {0.5: 0.1, 0.75: 0.3, 1.0: 1.0}
"""Fidelity -> cost units per experiment, when the ``cost`` option is not given."""


class _AugmentedInstrument(_TestFunctionInstrument):
    """A benchmark instrument whose function takes the fidelity as its last input.

    Options (keyword-only):
        fidelity: the fidelity ``s`` served, in (0, 1]; default 1 (the target).
        cost: cost units per experiment, ``>= 0``; default from
            :data:`DEFAULT_COSTS` (required for a fidelity not listed there).
        noise_std: standard deviation of Gaussian noise added to ``y``, ``>= 0``.
        seed: noise seed, integer ``>= 0``.
        duration_s: simulated seconds per experiment, ``>= 0``; default
            ``3600 * cost``.
    """

    def __init__(
        self,
        *,
        fidelity: float = 1.0,
        cost: float | None = None,
        noise_std: float = 0.0,
        seed: int = 0,
        duration_s: float | None = None,
    ) -> None:
        served = check_positive("fidelity", fidelity)
        if served > 1.0:
            raise ValueError(f"fidelity must be <= 1, got {fidelity!r}")
        if cost is None:
            if served not in DEFAULT_COSTS:
                known = ", ".join(f"{f:g}" for f in DEFAULT_COSTS)
                raise ValueError(f"cost has no default at fidelity {served:g} (only at {known}); give the cost option")
            cost = DEFAULT_COSTS[served]
        price = check_non_negative("cost", cost)
        super().__init__(noise_std=noise_std, seed=seed, duration_s=3600.0 * price if duration_s is None else duration_s)
        self.fidelity = served
        self.cost = price

    def _point(self, x: Mapping[str, float]) -> list[float]:
        """The design inputs followed by the fidelity ``s``."""
        return [*super()._point(x), self.fidelity]


class AugmentedHartmannInstrument(_AugmentedInstrument):
    """botorch's ``AugmentedHartmann`` at this instrument's fidelity.

    Inputs ``x1`` .. ``x6``, each in [0, 1]; output ``y`` (unit ``"1"``), to
    be minimised. At fidelity 1 it is Hartmann6, minimum -3.32237 at (0.20169,
    0.150011, 0.476874, 0.275332, 0.311652, 0.6573); at fidelity ``s`` the
    weight of its first term is ``1 - 0.1 (1 - s)``. Options: see
    :class:`_AugmentedInstrument` (``fidelity``, ``cost``, ``noise_std``,
    ``seed``, ``duration_s``).

    Example::

        robot = AugmentedHartmannInstrument()                # fidelity 1, cost 1, 3600 s
        proxy = AugmentedHartmannInstrument(fidelity=0.75)   # cost 0.3, 1080 s
    """

    _LIMITS: ClassVar[dict[str, tuple[float, float]]] = {f"x{i}": (0.0, 1.0) for i in range(1, 7)}
    optimum: float | None = -3.32237

    def _build(self) -> SyntheticTestFunction:
        from botorch.test_functions.multi_fidelity import AugmentedHartmann

        return AugmentedHartmann()


class AugmentedBraninInstrument(_AugmentedInstrument):
    """botorch's ``AugmentedBranin`` at this instrument's fidelity.

    Inputs ``x1`` in [-5, 10] and ``x2`` in [0, 15]; output ``y`` (unit
    ``"1"``), to be minimised. At fidelity 1 it is Branin, minimum 0.397887 at
    (-pi, 12.275), (pi, 2.275) and (9.42478, 2.475); at fidelity ``s`` the
    quadratic coefficient is ``5.1 / (4 pi^2) - 0.1 (1 - s)``. Options: see
    :class:`_AugmentedInstrument`.

    Example::

        AugmentedBraninInstrument(fidelity=0.5, noise_std=0.1, seed=3)  # cost 0.1
    """

    _LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}
    optimum: float | None = 0.397887

    def _build(self) -> SyntheticTestFunction:
        from botorch.test_functions.multi_fidelity import AugmentedBranin

        return AugmentedBranin()


@dataclass(frozen=True)
class FidelityGap:
    """How the reactor's lumped (CSTR) yield differs from the plug-flow yield.

    Yields are fractions of [A]0 (unit ``"1"``); errors are low minus high.
    """

    n: int
    """Settings compared."""
    correlation: float
    """Pearson correlation of the low- and high-fidelity yields."""
    mean_error: float
    """Mean of (CSTR - PFR) yield: the systematic bias."""
    mean_abs_error: float
    max_abs_error: float
    fraction_below: float
    """Share of settings where the CSTR yield is below the PFR yield."""
    evaluation_ratio: float
    """Mean solver evaluations per run, PFR over CSTR (machine-independent)."""
    time_ratio: float
    """Compute time per run, PFR over CSTR, on this machine (informative only)."""


def reactor_fidelity_gap(n: int = 1000, seed: int = 0, kinetics: Kinetics | None = None) -> FidelityGap:
    """Compare ``solve_cstr`` with ``solve_pfr`` at ``n`` uniformly random settings.

    The settings are drawn uniformly from :data:`~selflab.simulators.reactor.REACTOR_LIMITS`
    with ``numpy.random.default_rng(seed)``.

    >>> gap = reactor_fidelity_gap(n=200)
    >>> gap.correlation > 0.9 and gap.mean_error < 0
    True
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n!r}")
    low, high = (np.array(bounds) for bounds in zip(*REACTOR_LIMITS.values(), strict=True))
    settings = low + (high - low) * np.random.default_rng(seed).random((n, len(REACTOR_LIMITS)))
    runs: dict[str, tuple[np.ndarray, float, float]] = {}
    for name, solve in (("pfr", solve_pfr), ("cstr", solve_cstr)):
        started = time.perf_counter()
        # REACTOR_LIMITS lists the inputs in the order of the solvers' arguments.
        outlets = [solve(*map(float, row), kinetics) for row in settings]
        seconds = time.perf_counter() - started
        yields = np.array([out.p for out in outlets]) / settings[:, 3]
        runs[name] = (yields, float(np.mean([out.evaluations for out in outlets])), seconds)
    (exact, exact_evals, exact_s), (lumped, lumped_evals, lumped_s) = runs["pfr"], runs["cstr"]
    error = lumped - exact
    return FidelityGap(
        n=n,
        correlation=float(np.corrcoef(lumped, exact)[0, 1]),
        mean_error=float(error.mean()),
        mean_abs_error=float(np.abs(error).mean()),
        max_abs_error=float(np.abs(error).max()),
        fraction_below=float(np.mean(error < 0)),
        evaluation_ratio=exact_evals / lumped_evals,
        time_ratio=exact_s / lumped_s if lumped_s > 0 else math.inf,
    )
