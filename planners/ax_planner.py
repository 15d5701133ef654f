"""The ``ax`` planner: Ax's own Bayesian optimisation behind selflab's Planner protocol.

Each call builds a fresh ``ax.Client`` from the call's arguments, so the
planner is stateless (a pure function of ``observations``, ``pending``,
``context``), as the protocol asks; nothing is cached between calls. The cost
is Ax's model fit on every call, which is what a user of Ax pays anyway.

Mapping onto Ax 1.x (``Client.configure_experiment`` /
``configure_optimization`` / ``configure_generation_strategy``):

* float and int parameters -> ``RangeParameterConfig`` (``scaling="log"``
  for log-scale ones); categoricals -> unordered ``ChoiceParameterConfig``
  over the choices' strings (mapped back to the original choices).
* objectives -> Ax's objective string (``-m`` for minimised ones; several
  objectives make a multi-objective experiment); an objective's
  ``reference_point`` becomes Ax's objective threshold.
* ``context.constraints`` -> Ax outcome constraints (``m >= v``).
* observations at the proposed fidelity -> completed trials; ``pending`` ->
  running trials, so Ax does not propose them again; ``context.failed`` ->
  failed trials. Observations at other fidelities are left out (Ax here is
  single-fidelity).
* Phases are chosen here, not by Ax's transition rules: while fewer than
  ``initial_points`` experiments are observed or pending, Ax's Sobol node
  proposes (seeded by ``(seed, step)``, so a resumed campaign proposes the
  same points); after that only Ax's modular BoTorch node (``MBM``, Ax's
  default GP and acquisition) does.
* A pool (``context.candidates``): each Ax point is replaced by the nearest
  unused candidate in the unit cube.

Ax's INFO logging and its warnings are silenced.

Example::

    planner = AxPlanner(initial_points=4)
    proposals = planner.propose(space, objectives, observations, pending, n=2,
                                context=PlanContext(seed=1, step=len(observations)))
    proposals[0].reason   # {'strategy': 'ax', 'generation_node': 'MBM', 'model': 'BoTorch', ...}
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from selflab.planners.baselines import nearest_unused, offered_fidelity
from selflab.planners.protocol import Observation, Pending, PlanContext, Proposal, parse_options
from selflab.planners.space import CategoricalParameter, FloatParameter, IntParameter, Objective, Point, SearchSpace


class AxOptions(BaseModel):
    """Options of the ``ax`` planner (``planner: {kind: ax, options: {...}}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    initial_points: int = Field(default=5, ge=1, description="Sobol experiments before Ax's GP takes over")


def _import_ax() -> Any:
    """``ax`` with its INFO logging silenced (it logs while importing, too);
    raises ``ImportError`` saying what to install when ax-platform is missing."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        import ax
    except ImportError as exc:
        raise ImportError(
            f"planner kind 'ax' needs ax-platform, which does not import here ({exc}); "
            "install it with: pip install 'selflab[ax]'"
        ) from exc
    finally:
        logging.disable(previous)
    for handler in logging.getLogger("ax").handlers:
        handler.setLevel(logging.WARNING)
    return ax


class AxPlanner:
    """Ax (``ax.Client``) as a selflab planner; see the module docstring."""

    kind = "ax"
    options_model = AxOptions
    blocking = True

    def __init__(self, **options: Any) -> None:
        self.options = parse_options(AxOptions, self.kind, options)
        _import_ax()

    def propose(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        observations: Sequence[Observation],
        pending: Sequence[Pending],
        n: int,
        *,
        context: PlanContext,
    ) -> list[Proposal]:
        if n <= 0:
            return []
        fidelity = offered_fidelity(context)
        seen = [o for o in observations if o.fidelity == fidelity]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client, codec = self._client(space, objectives, seen, pending, context)
            trials = client.get_next_trials(max_trials=n)
        proposals = []
        for index, params in trials.items():
            run = client._experiment.trials[index].generator_runs[0]
            reason = {"strategy": "ax", "generation_node": getattr(run, "_generation_node_name", None),
                      "model": getattr(run, "_generator_key", None)}
            if run.fit_time is not None:
                reason["fit_seconds"] = run.fit_time
            proposals.append(Proposal(params=codec.decode(params), fidelity=fidelity, reason=reason))
        if context.candidates is not None:
            proposals = _snap(space, proposals, context.candidates)
        return proposals

    def _client(self, space: SearchSpace, objectives: Sequence[Objective], seen: Sequence[Observation],
                pending: Sequence[Pending], context: PlanContext) -> tuple[Any, _Codec]:
        ax = _import_ax()
        from ax.api.configs import ChoiceParameterConfig, RangeParameterConfig

        codec = _Codec(space, objectives, context)
        seed = (context.seed * 1_000_003 + context.step) % 2**31
        client = ax.Client(random_seed=seed)
        configs: list[Any] = []
        for p in codec.varying:
            if isinstance(p, CategoricalParameter):
                configs.append(ChoiceParameterConfig(name=p.name, values=[str(c) for c in p.choices],
                                                     parameter_type="str", is_ordered=False))
            else:
                configs.append(RangeParameterConfig(name=p.name, bounds=(p.low, p.high),
                                                    parameter_type="int" if isinstance(p, IntParameter) else "float",
                                                    scaling="log" if p.log else "linear"))
        client.configure_experiment(parameters=configs)
        client.configure_optimization(objective=codec.objective, outcome_constraints=codec.constraints or None)
        if len(seen) + len(pending) < self.options.initial_points or not seen:
            client.configure_generation_strategy(method="random_search", initialization_random_seed=seed)
        else:
            client.configure_generation_strategy(method="fast", initialization_budget=0, initialize_with_center=False)
        for obs in seen:
            index = client.attach_trial(codec.encode(obs.params))
            client.complete_trial(index, raw_data=codec.data(obs.outcomes, obs.noise))
        for failed in context.failed:
            index = client.attach_trial(codec.encode(failed.params))
            client.mark_trial_failed(index)
        for p in pending:
            client.attach_trial(codec.encode(p.params))
        return client, codec


class _Codec:
    """selflab names and values <-> Ax's: metrics as ``m0, m1, ...`` (Ax parses
    expressions, and outcome names such as ``yield`` are Python keywords),
    categorical choices as strings, single-choice parameters held fixed."""

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], context: PlanContext) -> None:
        self.space = space
        self.varying = [p for p in space.parameters if not (isinstance(p, CategoricalParameter) and len(p.choices) == 1)]
        self.fixed = {p.name: p.choices[0] for p in space.parameters if isinstance(p, CategoricalParameter) and len(p.choices) == 1}
        names = [o.name for o in objectives] + [c.outcome for c in context.constraints]
        self.alias = {name: f"m{i}" for i, name in enumerate(dict.fromkeys(names))}
        self.objective = ", ".join(("" if o.direction == "maximize" else "-") + self.alias[o.name] for o in objectives)
        self.constraints = [f"{self.alias[c.outcome]} {c.op} {c.value!r}" for c in context.constraints]
        if len(objectives) > 1:
            self.constraints += [f"{self.alias[o.name]} {'>=' if o.direction == 'maximize' else '<='} {o.reference_point!r}"
                                 for o in objectives if o.reference_point is not None]

    def encode(self, params: Point) -> dict[str, Any]:
        return {p.name: str(params[p.name]) if isinstance(p, CategoricalParameter) else params[p.name] for p in self.varying}

    def decode(self, params: Any) -> Point:
        point: Point = dict(self.fixed)
        for p in self.varying:
            v = params[p.name]
            if isinstance(p, CategoricalParameter):
                point[p.name] = next(c for c in p.choices if str(c) == str(v))
            elif isinstance(p, IntParameter):
                point[p.name] = int(min(max(round(float(v)), p.low), p.high))
            else:
                assert isinstance(p, FloatParameter)
                point[p.name] = min(max(float(v), p.low), p.high)
        return {name: point[name] for name in self.space.names}

    def data(self, outcomes: dict[str, float], noise: dict[str, float] | None = None) -> dict[str, float | tuple[float, float]]:
        """Ax's raw data: the mean, or ``(mean, sem)`` where the instrument reported the noise."""
        noise = noise or {}
        return {alias: (float(outcomes[name]), float(noise[name])) if name in noise else float(outcomes[name])
                for name, alias in self.alias.items() if name in outcomes}


def _snap(space: SearchSpace, proposals: list[Proposal], candidates: Sequence[Point]) -> list[Proposal]:
    """Each proposal moved to the nearest still-unused candidate (unit-cube distance)."""
    points = nearest_unused(space, [space.to_unit(p.params) for p in proposals], candidates)
    return [p.model_copy(update={"params": point}) for p, point in zip(proposals, points)]
