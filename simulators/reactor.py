r"""A simulated isothermal plug-flow reactor with Arrhenius kinetics.

Chemistry
---------
Three elementary reactions, all first order in each reactant::

    A + B -> P      r1 = k1 [A][B]      the wanted product
    P + B -> S      r2 = k2 [P][B]      over-reaction (consecutive side product)
    A + B -> I      r3 = k3 [A][B]      competing low-temperature pathway

with :math:`k_i = A_i \exp(-E_{a,i} / (R T))`. Because :math:`E_{a,2} > E_{a,1}`
heat favours the over-reaction to S, and because :math:`E_{a,3} < E_{a,1}`
cold favours the by-product I. Without the third reaction (``a3_l_per_mol_s=0``
gives the plain two-reaction scheme) the best yield would always be at the
coldest temperature at which the reaction can finish, i.e. on the boundary of
the box; the competing pathway puts the best temperature in its interior.

The reactor is isothermal with constant density, so a plug-flow reactor is an
ODE in residence time :math:`\tau`. Since every rate is proportional to
:math:`[B]`, the substitution :math:`\theta(\tau) = \int_0^\tau [B]\,d\tau'`
(mol s / L) turns the composition into a closed form in :math:`\theta`
(:func:`composition`)::

    A = A0 exp(-(k1 + k3) θ)
    P = A0 k1 (exp(-(k1 + k3) θ) - exp(-k2 θ)) / (k2 - k1 - k3)
    I = k3 / (k1 + k3) (A0 - A)
    S = A0 - A - P - I                    (mass balance on A)
    B = B0 - (A0 - A) - S                 (one B per A converted, one more per S)

leaving one scalar, autonomous ODE :math:`d\theta/d\tau = [B](\theta)` that
LSODA (``scipy.integrate.odeint``) solves to a relative tolerance of 1e-10,
typically in well under a millisecond (:func:`solve_pfr`). The tests check it
against a direct integration of the five-species ODE.

Because all three reactions are first order in B, equivalents and
concentration only change how fast :math:`\theta` grows: the best yield at a
temperature is reached on a whole surface of (residence time, equivalents,
concentration), a ridge along which space-time yield still varies.

Low fidelity: the lumped (CSTR) model
-------------------------------------
``PlugFlowReactor(model="cstr")`` is a cheap, systematically biased stand-in
for the plug-flow model: it treats the whole reactor volume as one well-mixed
tank (a continuous stirred-tank reactor, the classic lumped approximation of
a tubular reactor). Its steady state is algebraic (:func:`solve_cstr`)::

    A = A0 / (1 + (k1 + k3) B τ)     P = k1 A B τ / (1 + k2 B τ)
    I = k3 A B τ                     S = k2 P B τ
    B = B0 - (A0 - A) - S            (one scalar equation in B, Brent's method)

Back-mixing dilutes the reactants at once to their outlet concentrations, so
at the same settings the lumped model converts less A, and the intermediate P
it makes is back-mixed into the over-reaction. Its best yield in the box is
lower and elsewhere: 0.823 at 30 min, 73 degC, 5 equivalents and 2 mol/L (on
the edge of the box) instead of 0.9155 at 87.1 degC. Measured with
:func:`selflab.simulators.multifidelity.reactor_fidelity_gap` over 1,000 uniformly
random settings in the box (seed 0, default constants):

==============================================  ===============
Pearson correlation, CSTR vs plug-flow yield    0.959
mean (CSTR - PFR) yield                         -0.063
mean / max absolute yield error                 0.110 / 0.211
CSTR yield below the PFR yield                  78.5 % of settings
solver evaluations per run, PFR / CSTR          177 / 7.9 (22x)
compute time per run, PFR / CSTR                15x to 25x
==============================================  ===============

Every setting where the lumped yield is the higher one is over-reacted: the
plug-flow exposure θ is past the peak θ* and plug flow has destroyed more P.

The lumped model is a simulation, not an experiment: its declared duration is
``overhead_s`` (default 60 s of computing, whatever the residence time), its
fidelity 0.5 and its cost 0.05, against 1200 s plus the residence time,
fidelity 1 and cost 1 for the plug-flow "robot".

Clogging: a hidden failure region
---------------------------------
``PlugFlowReactor(clogging=True)`` (off by default) adds a failure that
depends on the chemistry: the product crystallizes and blocks the line when
the inlet concentration exceeds its solubility, which doubles every 20 degC
(a van 't Hoff-like rule, :func:`solubility`)::

    c_sat(T) = solubility_30c * 2 ** ((T - 30) / solubility_doubling_c)   mol/L

with ``solubility_30c = 0.25`` mol/L and ``solubility_doubling_c = 20``
degC by default: 0.25 mol/L at 30 degC, 1 at 70, 2 (the top of the box) at
90. A run with ``concentration > c_sat(temperature)`` raises
:class:`ReactorClogged` (ledger kind ``clogged``) instead of returning a
reading. That is high concentration at low temperature, about 30 % of the box
(uniformly random settings; :func:`clogged_fraction`). The optimum stays
feasible (at 87.1 degC, up to 1.81 mol/L), but the region borders the good
settings at 60-85 degC, so a planner that only avoids the failed *points*
keeps proposing into it. The lumped (``model="cstr"``) computation never clogs.

Default constants
-----------------
=========  =====================  ==================
reaction   A_i (L mol^-1 s^-1)    E_a,i (J mol^-1)
=========  =====================  ==================
1 (P)      1.3e6                  60,000
2 (S)      1.5e14                 130,000
3 (I)      2.0e-2                 15,000
=========  =====================  ==================

At 90 degC these give k1 = 3.05e-3, k2 = 3.0e-5 and k3 = 1.39e-4 L mol^-1 s^-1.

Optimum (default constants, found numerically)
----------------------------------------------
The best reachable yield is 0.9155 at 87.1 degC. At that temperature it is
reached, for instance, at 13.8 min with 3 equivalents and [A]0 = 1 mol/L, at
13.0 min with 2 equivalents and 2 mol/L, or at 18.8 min with 4 equivalents
and 0.5 mol/L: a ridge, as explained above. The 16 corners of the box give at
most 0.616, and about 23 % of uniformly random settings exceed 0.8 (none of
20,000 exceeded 0.9155). :func:`best_yield` computes the optimum from the
closed form for any constants (see :attr:`PlugFlowReactor.optimum`).

Example::

    import asyncio
    from selflab.simulators import PlugFlowReactor

    async def main() -> None:
        reactor = PlugFlowReactor(noise_std=0.01, seed=1)
        await reactor.connect()
        params = {"residence_time": 13.8, "temperature": 87.1,
                  "equivalents": 3.0, "concentration": 1.0}
        print(await reactor.run(params))  # about {'yield': 0.92, 'space_time_yield': 8.0e2}
        print(reactor.duration(params))   # 2028.0 simulated seconds
        await reactor.close()

    asyncio.run(main())
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from selflab.instruments.errors import BadResponse, InstrumentError
from selflab.simulators.simulated import Simulation, check_non_negative, check_positive

__all__ = [
    "REACTOR_LIMITS",
    "R_GAS",
    "Kinetics",
    "Outlet",
    "PlugFlowReactor",
    "ReactorClogged",
    "best_yield",
    "clogged_fraction",
    "composition",
    "solve_cstr",
    "solubility",
    "solve_pfr",
]

R_GAS = 8.314462618
"""Molar gas constant, J mol^-1 K^-1."""

_ZERO_C = 273.15

REACTOR_LIMITS: dict[str, tuple[float, float]] = {
    "residence_time": (0.5, 30.0),  # min
    "temperature": (30.0, 150.0),  # degC
    "equivalents": (1.0, 5.0),  # B0 / A0, mol/mol
    "concentration": (0.1, 2.0),  # [A]0, mol/L
}
"""Declared safe input ranges of :class:`PlugFlowReactor` (inclusive)."""


class ReactorClogged(InstrumentError):
    """The reactor line blocked: the inlet concentration exceeded the product's
    solubility at the reactor temperature (``clogging=True``; see the module
    docstring). A failure of the chemistry at these settings, not of the
    instrument: the same settings clog again."""

    kind = "clogged"


SOLUBILITY_30C = 0.25
"""Default product solubility at 30 degC, mol/L."""
SOLUBILITY_DOUBLING_C = 20.0
"""Default temperature rise (degC) that doubles the solubility."""


def solubility(temperature_c: float, at_30c: float = SOLUBILITY_30C, doubling_c: float = SOLUBILITY_DOUBLING_C) -> float:
    """The product's solubility (mol/L) at ``temperature_c``: ``at_30c * 2 ** ((T - 30) / doubling_c)``.

    >>> solubility(30.0), solubility(70.0), solubility(90.0)
    (0.25, 1.0, 2.0)
    """
    return at_30c * 2.0 ** ((temperature_c - 30.0) / doubling_c)


def clogged_fraction(at_30c: float = SOLUBILITY_30C, doubling_c: float = SOLUBILITY_DOUBLING_C,
                     limits: Mapping[str, tuple[float, float]] = REACTOR_LIMITS, grid: int = 400) -> float:
    """The fraction of the box (uniform in temperature and concentration) where the reactor clogs.

    >>> round(clogged_fraction(), 3)
    0.305
    """
    (t_low, t_high), (c_low, c_high) = limits["temperature"], limits["concentration"]
    total = 0.0
    for j in range(grid):
        t = t_low + (t_high - t_low) * (j + 0.5) / grid
        total += min(max(c_high - max(solubility(t, at_30c, doubling_c), c_low), 0.0), c_high - c_low) / (c_high - c_low)
    return total / grid


@dataclass(frozen=True)
class Kinetics:
    """Arrhenius parameters of the three reactions.

    Pre-exponential factors ``a1``, ``a2``, ``a3`` are in L mol^-1 s^-1,
    activation energies ``ea1``, ``ea2``, ``ea3`` in J mol^-1.
    """

    a1: float = 1.3e6
    ea1: float = 60_000.0
    a2: float = 1.5e14
    ea2: float = 130_000.0
    a3: float = 2.0e-2
    ea3: float = 15_000.0

    def rate_constants(self, temperature_c: float) -> tuple[float, float, float]:
        """``(k1, k2, k3)`` in L mol^-1 s^-1 at ``temperature_c`` (degC)."""
        rt = R_GAS * (temperature_c + _ZERO_C)
        return (
            self.a1 * math.exp(-self.ea1 / rt),
            self.a2 * math.exp(-self.ea2 / rt),
            self.a3 * math.exp(-self.ea3 / rt),
        )


@dataclass(frozen=True)
class Outlet:
    """Reactor outlet concentrations in mol/L, and ``theta`` = ∫[B]dτ in mol s/L.

    ``evaluations`` counts the solver's evaluations of the right-hand side (or
    of the residual, for :func:`solve_cstr`): a machine-independent measure of
    the compute cost of the result (0 when unknown).
    """

    a: float
    b: float
    p: float
    s: float
    i: float
    theta: float
    evaluations: int = 0


def _decay_difference(fast: float, slow: float, theta: float) -> float:
    """``(exp(-fast θ) - exp(-slow θ)) / (slow - fast)`` without overflow or 0/0."""
    low = min(fast, slow)
    gap = abs(slow - fast)
    if gap * theta < 1e-12:
        return theta * math.exp(-low * theta)
    return math.exp(-low * theta) * -math.expm1(-gap * theta) / gap


def composition(theta: float, a0: float, b0: float, k1: float, k2: float, k3: float) -> Outlet:
    """Closed-form composition (mol/L) after a B-exposure ``theta`` (mol s/L).

    Args:
        theta: ∫[B]dτ, mol s / L.
        a0, b0: inlet concentrations of A and B, mol/L.
        k1, k2, k3: rate constants, L mol^-1 s^-1.
    """
    ka = k1 + k3
    a = a0 * math.exp(-ka * theta)
    p = a0 * k1 * _decay_difference(ka, k2, theta)
    converted = a0 - a
    i = k3 / ka * converted
    # Clamp round-off (|error| ~ 1e-14 mol/L) so that no concentration is negative.
    s = max(converted - p - i, 0.0)
    b = max(b0 - converted - s, 0.0)
    return Outlet(a=a, b=b, p=p, s=s, i=i, theta=theta)


def solve_pfr(
    residence_time_min: float,
    temperature_c: float,
    equivalents: float,
    concentration: float,
    kinetics: Kinetics | None = None,
) -> Outlet:
    """Outlet composition of the plug-flow reactor.

    Integrates dθ/dτ = [B](θ) with LSODA (rtol 1e-10) and evaluates the
    closed form at the outlet.

    Args:
        residence_time_min: residence time τ, min.
        temperature_c: reactor temperature, degC.
        equivalents: inlet B/A molar ratio.
        concentration: inlet [A]0, mol/L.
        kinetics: Arrhenius constants (default :class:`Kinetics`).

    Returns:
        The :class:`Outlet` concentrations, mol/L.

    >>> out = solve_pfr(13.8, 87.1, 3.0, 1.0)
    >>> round(out.p, 4)
    0.9155
    """
    from scipy.integrate import odeint  # lazy: importing scipy.integrate takes ~0.5 s

    kin = kinetics or Kinetics()
    k1, k2, k3 = kin.rate_constants(temperature_c)
    a0 = concentration
    b0 = concentration * equivalents
    ka = k1 + k3

    def exposure_rate(theta: Any, _tau: float) -> float:
        return composition(float(theta[0]), a0, b0, k1, k2, k3).b

    def exposure_jacobian(theta: Any, _tau: float) -> list[list[float]]:
        out = composition(float(theta[0]), a0, b0, k1, k2, k3)
        return [[-ka * out.a - k2 * out.p]]  # d[B]/dθ

    tau_s = residence_time_min * 60.0
    solution, info = odeint(
        exposure_rate,
        [0.0],
        [0.0, tau_s],
        Dfun=exposure_jacobian,
        rtol=1e-10,
        atol=1e-12,
        full_output=True,
    )
    if info.get("message") != "Integration successful.":
        raise BadResponse(f"reactor ODE solver failed: {info.get('message')}")
    out = composition(float(solution[-1, 0]), a0, b0, k1, k2, k3)
    return replace(out, evaluations=int(info["nfe"][-1] + info["nje"][-1]))


def solve_cstr(
    residence_time_min: float,
    temperature_c: float,
    equivalents: float,
    concentration: float,
    kinetics: Kinetics | None = None,
) -> Outlet:
    """Outlet composition of the lumped model: one well-mixed tank (CSTR).

    Solves the steady-state balances (module docstring) for the outlet [B]
    with Brent's method; every other concentration follows from it. The
    arguments are those of :func:`solve_pfr`; ``theta`` is the tank's
    B-exposure [B]out τ.

    >>> round(solve_cstr(13.8, 87.1, 3.0, 1.0).p, 3)  # the PFR gives 0.9155
    0.76
    """
    from scipy.optimize import brentq  # lazy, like scipy.integrate in solve_pfr

    kin = kinetics or Kinetics()
    k1, k2, k3 = kin.rate_constants(temperature_c)
    a0 = concentration
    b0 = concentration * equivalents
    tau_s = residence_time_min * 60.0

    def outlet(b: float) -> Outlet:
        a = a0 / (1.0 + (k1 + k3) * b * tau_s)
        p = k1 * a * b * tau_s / (1.0 + k2 * b * tau_s)
        return Outlet(a=a, b=b, p=p, s=k2 * p * b * tau_s, i=k3 * a * b * tau_s, theta=b * tau_s)

    def excess_b(b: float) -> float:  # decreasing in b: positive at 0, <= 0 at b0
        out = outlet(b)
        return b0 - (a0 - out.a) - out.s - b

    b, result = brentq(excess_b, 0.0, b0, xtol=1e-14, rtol=1e-12, full_output=True)
    if not result.converged:
        raise BadResponse(f"reactor CSTR solver failed: {result.flag}")
    return replace(outlet(b), evaluations=int(result.function_calls))


def _max_yield_at(kin: Kinetics, temperature_c: float) -> tuple[float, float]:
    """``(best yield over θ, θ at which it is reached)`` at one temperature."""
    k1, k2, k3 = kin.rate_constants(temperature_c)
    ka = k1 + k3
    if abs(k2 - ka) < 1e-12 * ka:
        theta = 1.0 / ka
    else:
        theta = math.log(k2 / ka) / (k2 - ka)
    return k1 * _decay_difference(ka, k2, theta), theta


def best_yield(
    kinetics: Kinetics | None = None,
    limits: Mapping[str, tuple[float, float]] = REACTOR_LIMITS,
) -> tuple[float, float] | None:
    """The highest yield reachable inside ``limits``, and its temperature (degC).

    At a fixed temperature the yield depends on the inputs only through
    θ = ∫[B]dτ and peaks at a known θ*, so the optimum is the maximum over
    temperature of the closed-form peak yield, provided θ* can be reached in
    the box. Reachability is proven with bounds, not assumed: θ ≤ [B]0 τ
    (B only falls) and θ ≥ [B]∞ τ at the richest corner (B falls towards
    [B]∞). Returns ``None`` when the bounds cannot prove it; the returned
    yield is then not claimed to be the optimum.
    """
    kin = kinetics or Kinetics()
    t_low, t_high = limits["temperature"]
    tau_low, tau_high = (60.0 * v for v in limits["residence_time"])
    eq_low, eq_high = limits["equivalents"]
    c_low, c_high = limits["concentration"]

    def peak(t: float) -> float:
        return _max_yield_at(kin, t)[0]

    # Coarse scan (0.5 degC), then golden-section refinement around the best.
    steps = max(int((t_high - t_low) / 0.5), 1)
    grid = [t_low + (t_high - t_low) * j / steps for j in range(steps + 1)]
    j_best = max(range(len(grid)), key=lambda j: peak(grid[j]))
    lo, hi = grid[max(j_best - 1, 0)], grid[min(j_best + 1, steps)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(60):
        m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if peak(m1) < peak(m2):
            lo = m1
        else:
            hi = m2
    t_best = max((lo + hi) / 2.0, grid[j_best], key=peak)
    y_best, theta_best = _max_yield_at(kin, t_best)

    k1, k2, k3 = kin.rate_constants(t_best)
    b_infinity = c_high * (eq_high - 2.0 + k3 / (k1 + k3))
    reachable_high = b_infinity * tau_high if b_infinity > 0 else 0.0
    reachable_low = c_low * eq_low * tau_low
    if not reachable_low <= theta_best <= reachable_high:
        return None
    return y_best, t_best


class PlugFlowReactor:
    """A simulated flow reactor making P from A and B (see the module docstring).

    Inputs (all required in ``params``):

    ===================  =========  =============  =========================
    name                 unit       limits         meaning
    ===================  =========  =============  =========================
    ``residence_time``   min        [0.5, 30]      reactor volume / flow rate
    ``temperature``      degC       [30, 150]      isothermal reactor temp.
    ``equivalents``      mol/mol    [1, 5]         inlet [B]0 / [A]0
    ``concentration``    mol/L      [0.1, 2.0]     inlet [A]0
    ===================  =========  =============  =========================

    Outputs: ``yield`` = [P]out / [A]0 (unit ``"1"``, in [0, 1]) and
    ``space_time_yield`` = mass of P leaving per reactor volume and hour
    (kg m^-3 h^-1). The measurement is the yield: Gaussian noise of standard
    deviation ``noise_std`` (yield units) is added to it and the result clipped
    to [0, 1]; the space-time yield is computed from the measured yield, so the
    two readings always agree.

    Options (keyword-only, the ``options:`` of the driver in YAML):
        model: ``"pfr"`` (default) solves the plug-flow reactor: the target
            fidelity, an experiment on the "robot" (fidelity 1, cost 1).
            ``"cstr"`` computes the lumped well-mixed approximation instead: a
            cheap, biased simulation (fidelity 0.5, cost 0.05; see the
            module docstring for its bias).
        noise_std: yield noise standard deviation, ``>= 0`` (default 0: exact).
        seed: noise seed, integer ``>= 0``.
        overhead_s: simulated seconds per experiment besides the residence time
            (set-up, equilibration, analysis), ``>= 0``; default 1200. With
            ``model="cstr"`` it is the whole duration of the computation,
            default 60.
        molar_mass_p_g_per_mol: molar mass of P, g/mol, ``> 0``; default 200.
        a1_l_per_mol_s, a2_l_per_mol_s: pre-exponential factors of reactions 1
            and 2, L mol^-1 s^-1, ``> 0``.
        a3_l_per_mol_s: pre-exponential factor of reaction 3, ``>= 0`` (0 turns
            the competing pathway off).
        ea1_j_per_mol, ea2_j_per_mol, ea3_j_per_mol: activation energies,
            J mol^-1, ``>= 0``.
        clogging: the hidden failure region (module docstring): a run above
            the solubility raises :class:`ReactorClogged`; default off.
        solubility_30c_mol_per_l: the solubility at 30 degC, ``> 0``; default 0.25.
        solubility_doubling_c: degC per doubling of the solubility, ``> 0``; default 20.

    Attributes:
        optimum: the best reachable yield of the plug-flow reactor (from
            :func:`best_yield`), whatever ``model``, or ``None`` when it cannot
            be proven for the chosen constants.
        optimum_temperature: the temperature (degC) of that optimum, or None.

    Example::

        reactor = PlugFlowReactor(noise_std=0.02, seed=7)
        asyncio.run(reactor.connect())
        asyncio.run(reactor.run({"residence_time": 10, "temperature": 80,
                                 "equivalents": 2, "concentration": 0.5}))
        PlugFlowReactor(model="cstr").fidelity  # 0.5
    """

    primary_output: str = "yield"
    direction: Literal["maximize", "minimize"] = "maximize"

    def __init__(
        self,
        *,
        model: Literal["pfr", "cstr"] = "pfr",
        noise_std: float = 0.0,
        seed: int = 0,
        overhead_s: float | None = None,
        molar_mass_p_g_per_mol: float = 200.0,
        a1_l_per_mol_s: float = Kinetics.a1,
        ea1_j_per_mol: float = Kinetics.ea1,
        a2_l_per_mol_s: float = Kinetics.a2,
        ea2_j_per_mol: float = Kinetics.ea2,
        a3_l_per_mol_s: float = Kinetics.a3,
        ea3_j_per_mol: float = Kinetics.ea3,
        clogging: bool = False,
        solubility_30c_mol_per_l: float = SOLUBILITY_30C,
        solubility_doubling_c: float = SOLUBILITY_DOUBLING_C,
    ) -> None:
        self._sim = Simulation(
            limits=REACTOR_LIMITS,
            outputs={"yield": "1", "space_time_yield": "kg/m^3/h"},
            noise_std=noise_std,
            seed=seed,
        )
        if model not in ("pfr", "cstr"):
            raise ValueError(f"model must be 'pfr' or 'cstr', got {model!r}")
        self.model: Literal["pfr", "cstr"] = model
        self._solve = solve_pfr if model == "pfr" else solve_cstr
        default_overhead = 1200.0 if model == "pfr" else 60.0
        self.overhead_s: float = check_non_negative("overhead_s", default_overhead if overhead_s is None else overhead_s)
        self.molar_mass_p_g_per_mol: float = check_positive("molar_mass_p_g_per_mol", molar_mass_p_g_per_mol)
        self.kinetics = Kinetics(
            a1=check_positive("a1_l_per_mol_s", a1_l_per_mol_s),
            ea1=check_non_negative("ea1_j_per_mol", ea1_j_per_mol),
            a2=check_positive("a2_l_per_mol_s", a2_l_per_mol_s),
            ea2=check_non_negative("ea2_j_per_mol", ea2_j_per_mol),
            a3=check_non_negative("a3_l_per_mol_s", a3_l_per_mol_s),
            ea3=check_non_negative("ea3_j_per_mol", ea3_j_per_mol),
        )
        self.clogging = bool(clogging)
        self.solubility_30c_mol_per_l: float = check_positive("solubility_30c_mol_per_l", solubility_30c_mol_per_l)
        self.solubility_doubling_c: float = check_positive("solubility_doubling_c", solubility_doubling_c)
        self.limits: dict[str, tuple[float, float]] = dict(self._sim.limits)
        self.inputs: tuple[str, ...] = tuple(self.limits)
        """The inputs ``run(params)`` reads (see :class:`~selflab.instruments.protocol.DeclaresInputs`)."""
        self.fidelity: float = 1.0 if model == "pfr" else 0.5
        self.cost: float = 1.0 if model == "pfr" else 0.05
        self.capacity: int = 1
        best = best_yield(self.kinetics, self.limits)
        self.optimum: float | None = None if best is None else best[0]
        self.optimum_temperature: float | None = None if best is None else best[1]

    @property
    def noise_std(self) -> float:
        """Standard deviation of the yield noise."""
        return self._sim.noise_std

    @property
    def seed(self) -> int:
        """Seed of the noise generator."""
        return self._sim.seed

    async def connect(self) -> None:
        """Connect; also imports the model's scipy solver so that the first run is fast."""
        if self.model == "pfr":
            import scipy.integrate  # noqa: F401
        else:
            import scipy.optimize  # noqa: F401

        self._sim.connect()

    async def close(self) -> None:
        """Disconnect; safe to call twice."""
        self._sim.close()

    async def stop(self) -> None:
        """Nothing runs for long in a simulator: a harmless no-op."""

    def describe(self) -> dict[str, str]:
        """Output name -> unit."""
        return dict(self._sim.outputs)

    def duration(self, params: Mapping[str, Any]) -> float:
        """Simulated seconds: ``overhead_s + 60 * residence_time``, or just
        ``overhead_s`` for the ``"cstr"`` computation.

        Raises:
            BadResponse: ``residence_time`` is missing or not a number.
        """
        tau = self._sim.parse(params, ("residence_time",))["residence_time"]
        return self.overhead_s + (60.0 * tau if self.model == "pfr" else 0.0)

    def clogs(self, temperature_c: float, concentration: float) -> bool:
        """Whether a run at these settings clogs (always ``False`` unless
        ``clogging`` is on and the model is the plug-flow reactor)."""
        if not self.clogging or self.model != "pfr":
            return False
        return concentration > solubility(temperature_c, self.solubility_30c_mol_per_l, self.solubility_doubling_c)

    def outlet(self, params: Mapping[str, Any]) -> Outlet:
        """Noise-free outlet composition for ``params`` under :attr:`model`
        (limits are checked, connection is not)."""
        x = self._sim.parse(params, check_limits=True)
        return self._solve(
            x["residence_time"], x["temperature"], x["equivalents"], x["concentration"], self.kinetics
        )

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Run one simulated experiment.

        Returns:
            ``{"yield": ..., "space_time_yield": ...}`` (1, kg m^-3 h^-1).

        Raises:
            InstrumentDisconnected: not connected.
            BadResponse: an input is missing or not a number.
            OutOfLimits: an input is outside :attr:`limits`.
            ReactorClogged: ``clogging`` is on and the concentration exceeds
                the solubility at the temperature (plug-flow model only).
        """
        x = self._sim.read_inputs(params)
        if self.clogs(x["temperature"], x["concentration"]):
            limit = solubility(x["temperature"], self.solubility_30c_mol_per_l, self.solubility_doubling_c)
            raise ReactorClogged(f"reactor line clogged: concentration {x['concentration']:.3g} mol/L is above the product's "
                                 f"solubility {limit:.3g} mol/L at {x['temperature']:.3g} degC; lower the concentration or raise the temperature")
        out = self._solve(
            x["residence_time"], x["temperature"], x["equivalents"], x["concentration"], self.kinetics
        )
        measured = self._sim.noisy(out.p / x["concentration"], low=0.0, high=1.0)
        # g of P per L (= kg/m^3) per hour of residence time.
        sty = measured * x["concentration"] * self.molar_mass_p_g_per_mol / (x["residence_time"] / 60.0)
        return self._sim.finish({"yield": measured, "space_time_yield": sty})
