"""Benchmark problems: a search space, objectives, an instrument that evaluates
them without noise, and the best value there is to find.

=================  ==========================================  =======================
name               what                                        reported metric
=================  ==========================================  =======================
``branin``         botorch Branin, 2-D, minimize ``y``         best ``y`` (opt 0.397887)
``hartmann6``      botorch Hartmann, 6-D, minimize ``y``       best ``y`` (opt -3.32237)
``reactor``        plug-flow reactor, 4-D, maximize ``yield``  best yield (opt ~0.9155)
``reactor_clog``   the reactor with a hidden failure region:   best yield (opt ~0.9155)
                   it clogs (fails, kind ``clogged``) at high
                   concentration and low temperature, ~30 % of
                   the box (``simulators.reactor``: clogging)
``gramacy``        botorch ConstrainedGramacy, 2-D, minimize   best feasible ``y``
                   ``y`` subject to ``c1 >= 0``, ``c2 >= 0``   (opt 0.5998)
``branin_currin``  botorch BraninCurrin, 2-D, minimize both    hypervolume w.r.t. (18, 6)
                   ``branin`` and ``currin``                   (opt 59.36)
``p3ht``           Liang et al. 2021 pool, maximize            best measured (pool max)
                   conductivity
``perovskite``     Liang et al. 2021 pool, minimize            best measured (pool min)
                   instability index
``autoam``         Liang et al. 2021 pool, maximize score      best measured (pool max)
``pool:PATH.csv``  any CSV: one objective column, every        best measured
                   other column an input
``carburizing``    gas carburizing (1-D diffusion PDE, ~1 s     best feasible cycle
                   of CPU per run), 4-D, minimize              time (optimum unknown)
                   ``cycle_time`` s.t. ``case_depth >= 0.8``,
                   ``surface_carbon <= 0.85``
=================  ==========================================  =======================

Multi-fidelity problems (:attr:`Problem.levels`: one instrument per fidelity,
each at its own cost; the target fidelity is 1):

==========================  ==========================================  ==========================
name                        fidelities (cost units per experiment)      reported metric
==========================  ==========================================  ==========================
``augmented_hartmann``      botorch AugmentedHartmann, 6-D, minimize:   best ``y`` at fidelity 1
                            0.5 (0.1), 0.75 (0.3), 1 (1)                (opt -3.32237)
``augmented_branin``        botorch AugmentedBranin, 2-D, minimize:     best ``y`` at fidelity 1
                            0.5 (0.1), 0.75 (0.3), 1 (1)                (opt 0.397887)
``reactor_multifidelity``   the reactor: lumped CSTR model at 0.5       best yield at fidelity 1
                            (0.05), plug-flow reactor at 1 (1)          (opt ~0.9155)
``reactor_biased``          the reactor: a plug-flow simulation with    best yield at fidelity 1
                            mis-fitted kinetics at 0.5 (0.05), the      (opt ~0.9155)
                            plug-flow reactor at 1 (1); the cheap
                            optimum is displaced (see below)
``reactor_biased_cC``       the same, the cheap level at cost ``C``     best yield at fidelity 1
                            (``0 < C < 1``, e.g. ``reactor_biased_c0.2``:
                            a cost ratio of 5)
==========================  ==========================================  ==========================

``reactor_biased`` (issue 22): the cheap level is the exact plug-flow model
with the over-reaction's activation energy fitted 4 % low
(:data:`BIASED_EA2_J_PER_MOL`, 125 kJ/mol against 130): the simulation
believes heat costs less product than it does, so its optimum is displaced
to 73.8 degC (best yield 0.853) from the plant's 87.1 degC (0.9155); the
right shape everywhere, in the wrong place. A 60 s computation, like the
lumped model.

A single-fidelity planner (``bo``, ``ax``, ``random``, ``sobol``) only uses
the fidelity-1 instrument of such a problem; ``mf`` uses them all.

The parameters, objectives and constraints are plain data in the lab config's
own shape (``{"name": "x1", "type": "float", "low": -5, "high": 10}``), so a
problem turns into a lab config directly; simulators know nothing of the
planners' types. The controller finds :func:`get_problem` through the
entry-point group ``selflab.problems`` and builds the planners' models from
the data (see :mod:`selflab.controller.bench`). Each
simulated experiment takes :data:`DURATION_S` simulated seconds (the reactor
its own residence time plus overhead), so makespans are comparable.

Example::

    problem = get_problem("gramacy")
    problem.driver, problem.optimum, problem.direction   # ('selflab.simulators.problems:BotorchInstrument', 0.5998, 'minimize')
    get_problem("pool:data.csv", objective="yield", direction="maximize").parameters
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from selflab.simulators.simulated import Simulation, check_non_negative

__all__ = ["BIASED_COSTS", "BIASED_EA2_J_PER_MOL", "DATA", "DURATION_S", "BotorchInstrument", "Constraint", "FidelityLevel", "FloatParameter", "Objective", "Problem",
           "ProblemError", "UnknownProblem", "get_problem", "problem_names"]

DURATION_S = 60.0
"""Simulated seconds per experiment of the test-function and pool problems."""

DATA = Path(__file__).resolve().parent / "data" / "liang2021"
"""The bundled Liang et al. (2021) datasets."""

BIASED_EA2_J_PER_MOL = 125_000.0
"""``reactor_biased``: the cheap simulation's activation energy of the over-reaction (the plant's: 130,000)."""

BIASED_COSTS = (0.05, 0.2)
"""``reactor_biased`` (0.05) and ``reactor_biased_c0.2``: the cheap level's costs listed by :func:`problem_names`."""

TOP_FRACTION = 0.05
"""Pools: the top set is the best 5 % of the (averaged) rows."""

_POOLS: dict[str, tuple[str, str, Literal["maximize", "minimize"]]] = {
    "p3ht": ("P3HT_dataset.csv", "Conductivity (measured) (S/cm)", "maximize"),
    "perovskite": ("Perovskite_dataset.csv", "Instability index", "minimize"),
    "autoam": ("AutoAM_dataset.csv", "Score", "maximize"),
}

_FUNCTIONS: dict[str, tuple[str, int, tuple[str, ...], tuple[str, ...]]] = {
    # name: (botorch class, dimension, objective outputs, constraint-slack outputs)
    "constrained_gramacy": ("botorch.test_functions.synthetic:ConstrainedGramacy", 2, ("y",), ("c1", "c2")),
    "branin_currin": ("botorch.test_functions.multi_objective:BraninCurrin", 2, ("branin", "currin"), ()),
}


class ProblemError(ValueError):
    """An unknown problem, or bad options for one; the message says which."""


class UnknownProblem(ProblemError, LookupError):
    """No problem has that name (also a ``LookupError``, so that a caller
    asking several catalogues can tell it from bad options)."""


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatParameter(_Data):
    """A continuous parameter, as a lab config's ``parameters:`` item."""

    name: str
    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False
    unit: str | None = None


class Objective(_Data):
    """An output to minimize or maximize, as a lab config's ``objectives:`` item."""

    name: str
    direction: Literal["maximize", "minimize"]
    reference_point: float | None = None


class Constraint(_Data):
    """A bound on an output (``c1 >= 0``), as a lab config's ``constraints:`` item."""

    outcome: str
    op: Literal[">=", "<="]
    value: float


class FidelityLevel(BaseModel):
    """One instrument of a multi-fidelity problem: the fidelity it serves and its cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fidelity: float
    cost: float
    driver: str
    options: dict[str, Any] = {}


class Problem(BaseModel):
    """One benchmark problem, as pure data.

    ``metric`` is what a benchmark reports per run: the best (feasible)
    objective value, or the hypervolume of the observed points when there are
    several objectives. ``optimum`` and ``direction`` are that metric's best
    reachable value (``None`` when unknown) and which way is better.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    parameters: list[FloatParameter]
    objectives: list[Objective]
    constraints: list[Constraint] = []
    driver: str
    """``module:Class`` or an entry-point name in ``selflab.instruments``."""
    options: dict[str, Any] = {}
    metric: Literal["best", "hypervolume"] = "best"
    optimum: float | None
    direction: Literal["maximize", "minimize"]
    top: list[dict[str, float]] | None = None
    """Pools only: the rows of the top 5 % (see :meth:`PoolInstrument.top`)."""
    levels: list[FidelityLevel] | None = None
    """Multi-fidelity problems only: one instrument per fidelity (then
    ``driver``/``options`` are the noise-free fidelity-1 instrument, the truth
    a recommendation is judged by)."""

    @property
    def multi_fidelity(self) -> bool:
        return self.levels is not None


class BotorchInstrument:
    """A botorch test problem with several outputs, as a noise-free instrument.

    ``function="constrained_gramacy"``: inputs ``x1, x2`` in [0, 1]; outputs
    ``y`` (minimize) and the constraint slacks ``c1``, ``c2`` (feasible when
    ``>= 0``). ``function="branin_currin"``: inputs ``x1, x2`` in [0, 1];
    outputs ``branin`` and ``currin`` (both minimized). botorch is imported on
    ``connect()``.

    Options: ``function``, ``duration_s`` (simulated seconds, ``>= 0``).
    """

    fidelity: float = 1.0
    cost: float = 1.0
    capacity: int = 1

    def __init__(self, *, function: str, duration_s: float = 0.0) -> None:
        if function not in _FUNCTIONS:
            raise ValueError(f"function must be one of {', '.join(_FUNCTIONS)}, got {function!r}")
        self.function = function
        self._target, dim, self._objectives, self._slacks = _FUNCTIONS[function]
        self.duration_s = check_non_negative("duration_s", duration_s)
        outputs = {name: "1" for name in (*self._objectives, *self._slacks)}
        self._sim = Simulation(limits={f"x{i}": (0.0, 1.0) for i in range(1, dim + 1)}, outputs=outputs)
        self.limits: dict[str, tuple[float, float]] = dict(self._sim.limits)
        self._problem: Any = None

    async def connect(self) -> None:
        """Build the botorch problem (first time) and connect."""
        if self._problem is None:
            module, _, name = self._target.partition(":")
            self._problem = getattr(importlib.import_module(module), name)()
        self._sim.connect()

    async def close(self) -> None:
        """Disconnect; safe to call twice."""
        self._sim.close()

    async def stop(self) -> None:
        """A harmless no-op: nothing runs for long."""

    def describe(self) -> dict[str, str]:
        """Output name -> unit."""
        return dict(self._sim.outputs)

    def duration(self, params: Mapping[str, Any]) -> float:
        """Simulated seconds per experiment: the ``duration_s`` option."""
        return self.duration_s

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Objective values and constraint slacks at ``params`` (no noise)."""
        import torch

        x = self._sim.read_inputs(params)
        point = torch.tensor([[x[n] for n in self.limits]], dtype=torch.float64)
        with torch.no_grad():
            values = self._problem.evaluate_true(point).reshape(-1).tolist()
            if self._slacks:
                values += self._problem.evaluate_slack_true(point).reshape(-1).tolist()
        return self._sim.finish(dict(zip((*self._objectives, *self._slacks), values)))


def problem_names() -> list[str]:
    """The named problems (``pool:PATH.csv`` comes on top of these)."""
    return ["augmented_branin", "augmented_hartmann", "autoam", "branin", "branin_currin", "carburizing", "gramacy", "hartmann6",
            "p3ht", "perovskite", "reactor", "reactor_biased", *(f"reactor_biased_c{c:g}" for c in BIASED_COSTS[1:]), "reactor_clog",
            "reactor_multifidelity"]


def get_problem(spec: str, *, objective: str | None = None, direction: str | None = None) -> Problem:
    """The problem named ``spec``, or a pool from ``pool:PATH.csv``.

    ``objective`` (a CSV column) and ``direction`` apply to ``pool:`` specs
    only; ``direction`` defaults to ``"maximize"``.

    Raises:
        UnknownProblem: an unknown name.
        ProblemError: a missing file or column, options given where they
            do not apply.
    """
    if spec.startswith("pool:"):
        if not objective:
            raise ProblemError(f"{spec}: give the objective column with --objective COLUMN")
        return _pool(spec, Path(spec.removeprefix("pool:")), objective, direction or "maximize")
    if objective is not None or direction is not None:
        raise ProblemError(f"--objective and --direction apply to pool:PATH.csv problems only, not {spec!r}")
    if spec in _POOLS:
        file, column, way = _POOLS[spec]
        return _pool(spec, DATA / file, column, way)
    unit = [FloatParameter(name="x1", low=0, high=1), FloatParameter(name="x2", low=0, high=1)]
    timed = {"duration_s": DURATION_S}
    if spec == "branin":
        return Problem(name=spec, parameters=[FloatParameter(name="x1", low=-5, high=10), FloatParameter(name="x2", low=0, high=15)],
                       objectives=[Objective(name="y", direction="minimize")], driver="branin", options=timed,
                       optimum=0.397887, direction="minimize")
    if spec == "hartmann6":
        return Problem(name=spec, parameters=[FloatParameter(name=f"x{i}", low=0, high=1) for i in range(1, 7)],
                       objectives=[Objective(name="y", direction="minimize")], driver="hartmann6", options=timed,
                       optimum=-3.32237, direction="minimize")
    if spec in ("augmented_hartmann", "augmented_branin"):
        from selflab.simulators.multifidelity import DEFAULT_COSTS

        base = get_problem("hartmann6" if spec == "augmented_hartmann" else "branin")
        levels = [FidelityLevel(fidelity=f, cost=c, driver=spec, options={"fidelity": f, "cost": c})
                  for f, c in sorted(DEFAULT_COSTS.items())]
        return base.model_copy(update={"name": spec, "driver": spec, "options": {"fidelity": 1.0}, "levels": levels})
    if spec == "reactor_biased" or spec.startswith("reactor_biased_c"):
        cost = BIASED_COSTS[0] if spec == "reactor_biased" else _biased_cost(spec)
        plant = get_problem("reactor_multifidelity")
        simulation = {"model": "pfr", "ea2_j_per_mol": BIASED_EA2_J_PER_MOL, "overhead_s": 60.0}
        levels = [FidelityLevel(fidelity=0.5, cost=cost, driver="reactor", options=simulation),
                  FidelityLevel(fidelity=1.0, cost=1.0, driver="reactor", options={"model": "pfr"})]
        return plant.model_copy(update={"name": spec, "levels": levels})
    if spec in ("reactor", "reactor_multifidelity", "reactor_clog"):
        from selflab.simulators.reactor import REACTOR_LIMITS, PlugFlowReactor

        units = {"residence_time": "min", "temperature": "degC", "equivalents": None, "concentration": "mol/L"}
        parameters = [FloatParameter(name=n, low=lo, high=hi, log=n == "residence_time", unit=units[n])
                      for n, (lo, hi) in REACTOR_LIMITS.items()]
        reactor = Problem(name=spec, parameters=parameters, objectives=[Objective(name="yield", direction="maximize")],
                          driver="reactor", optimum=PlugFlowReactor().optimum, direction="maximize")
        if spec == "reactor":
            return reactor
        if spec == "reactor_clog":
            return reactor.model_copy(update={"name": spec, "options": {"clogging": True}})
        # The lumped model is a 60 s computation (fidelity 0.5, cost 0.05); the
        # plug-flow reactor itself (its own residence time plus overhead) is the target.
        levels = [FidelityLevel(fidelity=0.5, cost=0.05, driver="reactor", options={"model": "cstr"}),
                  FidelityLevel(fidelity=1.0, cost=1.0, driver="reactor", options={"model": "pfr"})]
        return reactor.model_copy(update={"options": {"model": "pfr"}, "levels": levels})
    if spec == "carburizing":
        from selflab.simulators.carburizing import CARBURIZING_LIMITS

        return Problem(name=spec, parameters=[FloatParameter(name=n, low=lo, high=hi) for n, (lo, hi) in CARBURIZING_LIMITS.items()],
                       objectives=[Objective(name="cycle_time", direction="minimize")],
                       constraints=[Constraint(outcome="case_depth", op=">=", value=0.8), Constraint(outcome="surface_carbon", op="<=", value=0.85)],
                       driver="carburizing", optimum=None, direction="minimize")
    if spec == "gramacy":
        return Problem(name=spec, parameters=unit, objectives=[Objective(name="y", direction="minimize")],
                       constraints=[Constraint(outcome="c1", op=">=", value=0), Constraint(outcome="c2", op=">=", value=0)],
                       driver="selflab.simulators.problems:BotorchInstrument", options={"function": "constrained_gramacy", **timed},
                       optimum=0.5998, direction="minimize")
    if spec == "branin_currin":
        from botorch.test_functions.multi_objective import BraninCurrin

        ref = BraninCurrin._ref_point
        return Problem(name=spec, parameters=unit,
                       objectives=[Objective(name="branin", direction="minimize", reference_point=ref[0]),
                                   Objective(name="currin", direction="minimize", reference_point=ref[1])],
                       driver="selflab.simulators.problems:BotorchInstrument", options={"function": "branin_currin", **timed},
                       metric="hypervolume", optimum=float(BraninCurrin._max_hv), direction="maximize")
    raise UnknownProblem(f"unknown problem {spec!r}; choose one of {', '.join(problem_names())} or pool:PATH.csv")


def _biased_cost(spec: str) -> float:
    """The cheap level's cost of ``reactor_biased_cC``."""
    text = spec.removeprefix("reactor_biased_c")
    try:
        cost = float(text)
    except ValueError:
        raise ProblemError(f"{spec}: the cost after reactor_biased_c must be a number in (0, 1), e.g. reactor_biased_c0.2") from None
    if not 0 < cost < 1:
        raise ProblemError(f"{spec}: the cheap level's cost must be in (0, 1) (the plant's is 1), got {text}")
    return cost


def _pool(name: str, path: Path, objective: str, direction: str) -> Problem:
    from selflab.simulators.pool import PoolInstrument

    if direction not in ("maximize", "minimize"):
        raise ProblemError(f"--direction must be maximize or minimize, not {direction!r}")
    options = {"csv": str(path), "objective": objective, "direction": direction, "duration_s": DURATION_S}
    try:
        pool = PoolInstrument(**options)
    except ValueError as exc:
        raise ProblemError(str(exc)) from None
    return Problem(
        name=name,
        parameters=[FloatParameter(name=n, low=lo, high=hi) for n, (lo, hi) in pool.limits.items()],
        objectives=[Objective(name=pool.primary_output, direction=pool.direction)],
        driver="selflab.simulators.pool:PoolInstrument",
        options=options,
        optimum=pool.optimum,
        direction=pool.direction,
        top=pool.top(TOP_FRACTION),
    )
