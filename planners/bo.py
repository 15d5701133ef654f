"""Bayesian optimization: GP surrogates, a botorch acquisition, one optimizer.

``BOPlanner`` joins three small modules by tensors: :mod:`selflab.planners.surrogate`
fits the GPs, :mod:`selflab.planners.acquisition` builds the acquisition function and
:mod:`selflab.planners.optimize` maximizes it. :mod:`selflab.planners.encoding` maps points to
tensor rows and back.

A campaign's first ``n_init`` proposals (default :func:`default_n_init`:
``max(5, d)``, half that with ``warm_start`` sources, rounded down to whole
rounds when several experiments run at once; ledger position ``context.step``) come from :class:`~selflab.planners.baselines.SobolPlanner`
(``"sobol_init"``), as does any call with fewer than two usable observations
or with fewer than ``n_init`` results or failures (with several experiments
in flight the first model waits for results, not just proposals);
the very first one is the centre of the space (``center_first``, as in Ax's
default design), the rest scrambled Sobol points.
After that, only observations at ``context.target_fidelity`` are modelled,
and proposals are made at :func:`~selflab.planners.baselines.offered_fidelity`.

Pending experiments and failed ones both enter the acquisition as
``X_pending``: a failed experiment is information ("do not repeat this
blindly") but no outcome to model, so it is treated like one in flight and
neither it nor its close neighbourhood is proposed again. A proposal that
still lands within ``1e-3`` (unit-cube scale, every coordinate) of a pending,
failed or earlier-in-batch point is replaced by the best point of a Sobol
candidate set that keeps away from them.

A batch of several points (``n > 1``) is built as :mod:`selflab.planners.batch`
says (``batch_strategy``): by default sequential greedy qLogNEI below
``plate_from`` (8) points, and a plate from there: ``batch_head`` (4) greedy
points, the rest by pathwise Thompson sampling (one q = 24 plate in seconds,
not the minutes of 24 greedy points). Each proposal of a batch says which
strategy made it and its rank (``"batch": {"strategy", "rank", "size"}``).

With a pool (``context.candidates``), numeric inputs are modelled on the
pool's rank scale (``pool_scale: rank``, see :mod:`selflab.planners.pool_scale`)
or linearly; under ``pool_scale: auto`` (the default) each proposal fits
both and keeps the more likely (:func:`choose_pool_scale`, recorded in the
reason as ``"pool_scale"``). ``propose`` and ``recommend`` run on the chosen
scale and answer with the pool's own rows.
With a pool and one objective (no outcome constraints, no failed experiment
for ``failures: learn`` to weigh), ``acquisition: auto`` (the default)
scores the candidates by UCB at mean + 2 std rather than qLogNEI
(:func:`pool_acquisition`); the reason says
so (``"acquisition": "ucb"``, ``"beta"``, ``"acquisition_rule"``). Above
``large_data`` observations, for one point with nothing pending, ``auto``
uses analytic log-EI (``"acquisition": "logei"``, :func:`large_data_logei`).

A fitting problem never escapes ``propose``: when every fitting attempt fails
(see :mod:`selflab.planners.surrogate`) the batch comes from Sobol with strategy
``"fallback_sobol"`` and the error in the reason.

Each proposal's GP work runs on the CPU or the GPU (``device``), chosen per
proposal by its number of observations (:mod:`selflab.planners.device_choice`:
``auto`` is the GPU only from the measured CUDA crossover on); a GPU
out-of-memory error makes the proposal again on the CPU. The reason says
where and why (``"device"``, ``"device_reason"``).

The GPs' numeric inputs use a scaled Matern-5/2 kernel with Gamma(3, 6)
lengthscale priors (``kernel: matern``) rather than botorch's current default,
the dimension-scaled RBF that Ax also uses (``kernel: rbf``); ``kernel: auto``
fits both and keeps the better leave-one-out fit. Hartmann6, 40 evaluations,
30 seeds: median regret 0.0016 (matern), 0.0044 (auto), 0.033 (rbf). With a
pool of candidates the Matern's lengthscales have no prior
(``lengthscale_prior: auto``), so that pool columns which do not matter can
drop out (the Liang p3ht pool: 56 -> 43 evaluations to 80 % of its top rows;
see :meth:`BOPlanner._prior`, :func:`selflab.planners.surrogate.build_model` and
``benchmarks/RESULTS.md``). Each proposal's reason names the kernel of each
outcome (``"kernel"``) and its lengthscale prior (``"lengthscale_prior"``:
``gamma``, ``none`` or ``dimension_scaled`` for ``rbf``).

The planner is stateless by contract; it only caches the last fit's
hyperparameters (per outcome) to warm-start the next one.

Trust (issue 18). Each BO proposal's reason also says how far to trust it:
``predicted`` holds, per outcome, the mean and latent std the proposal was
chosen with and ``noise_std`` the model's noise std there (``calibration``
the ``std_scale`` applied), so that its result can be scored against them
(the prequential z of :mod:`selflab.planners.calibration`); ``extrapolation`` flags a point beyond the
data (:mod:`selflab.planners.extrapolation`; rule: ``extrapolation`` option);
``loo`` holds leave-one-out figures of a model whose hyperparameters were
optimized on exactly these data (a full or warm fit, in this call or in an
earlier one on the same data, such as the campaign's recommendation: the
surrogate's ``made_by``, in the reason as ``fitted_by``, beside ``refit``,
what this call did): z mean and spread, 90 % coverage, R², rank
correlation; ``None`` for a model conditioned on data it was not fitted to;
``calibration`` and ``feasibility`` say what the two options below did.

- ``calibration: rescale`` (default ``none``): the model's std is multiplied
  by the spread of the raw prequential scores of the last
  ``calibration_window`` results before acquisition
  (:meth:`~selflab.planners.surrogate.Surrogate.rescaled`). It needs results
  that carry their proposal's prediction
  (:class:`~selflab.planners.calibration.ScoredObservation`); plain
  observations leave the factor at 1.
- ``failures: learn`` (the default; ``avoid`` keeps away from the failed
  points alone): once an experiment has failed, a Gaussian-process classifier
  of completed against failed experiments weights the acquisition by the
  probability of success (:mod:`selflab.planners.feasibility`). It weights
  log-scale acquisitions (qLogNEI, qLogNEHVI, log-EI): with ``acquisition:
  ucb`` or ``ts`` set, or ``objective: learn``, the planner avoids the failed
  points only, and the reason says why; ``failures: learn`` set explicitly
  beside ``acquisition: ucb`` or ``ts`` is refused. Failures the ledger says
  were timeouts or disconnections do not count
  (:class:`~selflab.planners.protocol.Failure` carries the kind).

Its model can be looked at (:class:`~selflab.planners.protocol.Predictor`, what
``selflab report`` draws): :meth:`BOPlanner.predict` gives the posterior of
the model ``propose`` fits (target-fidelity data, the objective's warp, a
pool's chosen scale) at any points, in the outcomes' own units, and
:meth:`BOPlanner.leave_one_out` its closed-form leave-one-out predictions
(:func:`selflab.planners.surrogate.loo_predictive`, the formula ``kernel: auto``
scores its fits with).

Example (config)::

    planner:
      kind: bo
      options: {acquisition: qlognei, num_restarts: 8, raw_samples: 256}
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from botorch.exceptions.errors import BotorchError
from botorch.utils.sampling import manual_seed
from linear_operator.utils.errors import NanError, NotPSDError
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

from selflab.planners.acquisition import build_acquisition, scalarized_objective, thompson_select
from selflab.planners.baselines import SobolPlanner, nearest_unused, offered_fidelity
from selflab.planners.batch import BatchStrategy, hybrid_batch, resolve, thompson_batch
from selflab.planners.calibration import LooStats, raw_scores, rescale_factor
from selflab.planners.device_choice import DeviceChoice, DevicePolicy
from selflab.planners.encoding import Encoding
from selflab.planners.evolving import search_encoding
from selflab.planners.extrapolation import ExtrapolationRule, extrapolation_flags
from selflab.planners.feasibility import Feasibility, FeasibilityWeighted, encoded_failures, fit_feasibility
from selflab.planners.learn import learn_acquisition, learning
from selflab.planners.optimize import maximize, too_close
from selflab.planners.pool_scale import RankScale
from selflab.planners.protocol import (
    LeaveOneOut,
    Observation,
    Pending,
    PlanContext,
    Prediction,
    Proposal,
    Recommendation,
    counts,
    parse_options,
)
from selflab.planners.space import Objective, Point, SearchSpace
from selflab.planners.surrogate import (
    LengthscalePrior,
    Surrogate,
    SurrogateError,
    SurrogateFitter,
    TrainingData,
    log_likelihood_per_point,
    modelled_outcomes,
    numerics,
)
from selflab.planners.warm_start import GuardMode, guarded, single_task
from selflab.planners.warp import Warp, fit_warp

_NUMERIC_ERRORS = (SurrogateError, BotorchError, NotPSDError, NanError, torch.linalg.LinAlgError, FloatingPointError)
"""Numerical failures after fitting (e.g. a posterior that is not positive definite) also fall back to Sobol."""
_GUARD_CANDIDATES = 512
NO_MODEL = DeviceChoice(torch.device("cpu"), "no model (Sobol points): nothing ran on a GPU")
"""The device of an initial-design proposal's reason."""


LOG_SCALE_ACQUISITIONS = ("auto", "qlognei")
"""``acquisition`` settings whose values are log-scale, which ``failures: learn``'s log probability of success can weight."""


class BOOptions(BaseModel):
    """``planner.options`` of ``kind: bo``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    acquisition: Literal["auto", "qlognei", "ucb", "ts"] = Field(
        "auto", description="qlognei (qLogNoisyExpectedImprovement), ucb (with beta), ts (Thompson sampling), or auto: qlognei, "
        "except ucb with beta 4 (mean + 2 std) when choosing from a pool of candidates for one objective without outcome "
        "constraints or a failed experiment for failures: learn to weigh (pool_acquisition), and analytic log-EI for one "
        "point with nothing pending above large_data observations (large_data_logei)"
    )
    beta: float = Field(2.0, gt=0, description="acquisition: ucb: the exploration weight (botorch's beta: mean + sqrt(beta) std)")
    n_init: int | None = Field(
        None, ge=1, description="Sobol points before the first model; default max(5, d), half that (at least 2) with warm_start "
        "sources, rounded down to whole rounds with several slots (default_n_init)"
    )
    center_first: bool = Field(True, description="the campaign's first point is the centre of the space (a pool: the row nearest it)")
    num_restarts: int = Field(12, ge=1, description="optimizer restarts")
    raw_samples: int = Field(1024, ge=1, description="random points scored to choose the restarts")
    maxiter: int = Field(100, ge=1, description="L-BFGS-B iterations per restart")
    mc_samples: int = Field(128, ge=1, description="quasi-Monte-Carlo samples of the acquisition")
    ts_candidates: int = Field(1024, ge=1, description="Sobol candidates for Thompson sampling")
    refit_growth: float = Field(0.1, ge=0, description="refit hyperparameters when the data grew by this fraction")
    refit_below: int = Field(200, ge=0, description="below this many points, fit hyperparameters afresh on every call")
    warm_maxiter: int = Field(30, ge=1, description="L-BFGS iterations of a warm-started refit")
    fit_max_points: int = Field(500, ge=2, description="at most this many points to fit hyperparameters on")
    large_data: int = Field(500, ge=1, description="above this many observations: at most 8 restarts and 512 raw samples")
    pool_scale: Literal["rank", "linear", "auto"] = Field(
        "auto", description="with a pool of candidates: model numeric inputs on the pool's rank scale (selflab.planners.pool_scale), "
        "linearly, or auto: at each proposal the one whose fitted GP has the higher marginal likelihood (choose_pool_scale)"
    )
    nei_baseline: int = Field(
        100, ge=1, description="above large_data observations: qLogNEI's baseline is this many best observed points"
    )
    outcome_warp: Literal["auto", "none"] = Field(
        "auto", description="one objective: model it on a fitted Box-Cox or Yeo-Johnson scale when that compresses its bad end (selflab.planners.warp)"
    )
    kernel: Literal["auto", "matern", "rbf"] = Field(
        "matern", description="GP covariance of numeric inputs: Matern-5/2 with Gamma lengthscale priors, botorch's (and Ax's) "
        "dimension-scaled RBF, or auto: both fitted, the better leave-one-out fit kept (selflab.planners.surrogate.build_model)"
    )
    lengthscale_prior: Literal["auto", "gamma", "none"] = Field(
        "auto", description="the Matern kernel's lengthscale prior: Gamma(3, 6), none (maximum likelihood, so an input that does "
        "not matter can drop out), or auto: none when choosing from a pool of candidates, gamma otherwise (kernel: rbf has its own)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where the GP work runs: cpu, cuda, or auto: cuda only when there is one and the proposal's "
        "observations reach the CUDA crossover of device_crossover; chosen per proposal (selflab.planners.device_choice)"
    )
    device_crossover: dict[int, NonNegativeInt | None] | None = Field(
        None, description="device: auto: {d: n}, the observations from which the GPU is faster at d input columns (None: "
        "never); default: the table in selflab.planners.device_choice (benchmarks/gpu.py measures it)"
    )
    torch_threads: int | None = Field(
        1, ge=1, description="torch intra-op threads while proposing (None: leave torch's setting); see surrogate.numerics"
    )
    calibration: Literal["none", "rescale"] = Field(
        "none", description="rescale: multiply the model's std by the spread of its recent prequential scores before "
        "acquisition, so that its intervals hold what they claim (selflab.planners.calibration)"
    )
    calibration_window: int = Field(10, ge=2, description="calibration: rescale: the last this many scored results set the factor")
    failures: Literal["avoid", "learn"] = Field(
        "learn", description="avoid: failed points are kept away from, like pending ones; learn (the default): also weight the "
        "acquisition by the probability of success of a classifier fitted to completed and failed experiments, once one has "
        "failed (selflab.planners.feasibility; log-scale acquisitions only: with acquisition ucb or ts, avoid)"
    )
    extrapolation: ExtrapolationRule = Field(
        default_factory=ExtrapolationRule, description="when a proposal is flagged extrapolating (selflab.planners.extrapolation)"
    )
    batch_strategy: BatchStrategy = Field(
        "auto", description="how a batch of several points is built (selflab.planners.batch): greedy (sequential qLogNEI), "
        "thompson (pathwise Thompson sampling), hybrid (batch_head greedy points, the rest Thompson), or auto: greedy below "
        "plate_from points, hybrid from there"
    )
    plate_from: int = Field(8, ge=2, description="batch_strategy: auto: batches of at least this many points are plates (hybrid)")
    batch_head: int = Field(4, ge=1, description="batch_strategy: hybrid: this many greedy points head the batch")

    warm_start_guard: GuardMode = Field(
        "loo", description="with warm_start sources: loo: use the multi-task model only when its leave-one-out fit of this "
        "campaign's data beats the single-task model's (guard against negative transfer); off: always (selflab.planners.warm_start)"
    )

    @model_validator(mode="after")
    def _learn_needs_log_acquisition(self) -> BOOptions:
        if "failures" in self.model_fields_set and self.failures == "learn" and self.acquisition not in LOG_SCALE_ACQUISITIONS:
            raise ValueError(f"failures: learn weights qlognei's log-scale acquisition; with acquisition: {self.acquisition} "
                             "use failures: avoid")
        return self

    def failure_mode(self, learning_objective: bool) -> tuple[Literal["avoid", "learn"], str | None]:
        """How failures are used: ``failures`` as set, except ``avoid`` where the
        classifier's weight cannot apply (``acquisition: ucb`` or ``ts``, whose
        values are not log-scale; ``objective: learn``), with the reason why."""
        if self.failures == "avoid":
            return "avoid", None
        if self.acquisition not in LOG_SCALE_ACQUISITIONS:
            return "avoid", f"acquisition: {self.acquisition} is not log-scale, so the probability of success cannot weight it"
        if learning_objective:
            return "avoid", "objective: learn reduces the model's variance; it has no acquisition to weight"
        return "learn", None


class BOPlanner:
    """GP-based Bayesian optimization (see module docs); options: :class:`BOOptions`."""

    kind = "bo"
    options_model = BOOptions
    blocking = True

    def __init__(self, **options: Any) -> None:
        self.options = parse_options(BOOptions, self.kind, options)
        o = self.options
        self.devices = DevicePolicy(o.device, o.device_crossover)
        """Each proposal's device (:mod:`selflab.planners.device_choice`)."""
        self._fitter = SurrogateFitter(refit_growth=o.refit_growth, refit_below=o.refit_below, warm_maxiter=o.warm_maxiter, fit_max_points=o.fit_max_points,
                                        kernel=o.kernel)
        self._linear_fitter = SurrogateFitter(refit_growth=o.refit_growth, refit_below=o.refit_below, warm_maxiter=o.warm_maxiter,
                                              fit_max_points=o.fit_max_points, kernel=o.kernel)
        """``pool_scale: auto``: the fits on the pool's linear scale (each scale keeps its own warm cache)."""

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
        scale, fitter, choice = self._pool_scale(space, objectives, observations, pending, n, context)
        if scale is None:
            proposals = self._propose(space, objectives, observations, pending, n, context, fitter)
        else:
            ranked_observations, ranked_pending, ranked_context = _on_scale(scale, observations, pending, context)
            ranked = self._propose(scale.space, objectives, ranked_observations, ranked_pending, n, ranked_context, fitter)
            proposals = [p.model_copy(update={"params": scale.original(p.params)}) for p in ranked]
        if choice is None:
            return proposals
        return [p.model_copy(update={"reason": {**p.reason, "pool_scale": choice}}) for p in proposals]

    def _propose(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        observations: Sequence[Observation],
        pending: Sequence[Pending],
        n: int,
        context: PlanContext,
        fitter: SurrogateFitter,
    ) -> list[Proposal]:
        model_space = context.model_space or space  # (after space edits: over every observation)
        outcomes = modelled_outcomes(objectives, context.constraints)
        data = TrainingData.from_observations(Encoding(model_space), outcomes, observations, context.target_fidelity)
        if self._initial(space, data.n, n, pending, context):
            return self._sobol(space, objectives, observations, pending, n, context, "sobol_init", data.n, device=NO_MODEL)

        def attempt(choice: DeviceChoice) -> list[Proposal]:
            on = data.to(choice.device)
            try:
                with numerics(self.options.torch_threads), manual_seed(_mix(context.seed, context.step)):
                    surrogate = self._fit(fitter, model_space, objectives, on, context, choice.device)
                    warm = guarded(surrogate, on, context.warm_start, guard=self.options.warm_start_guard) if context.warm_start else None
                    if warm is not None:  # (warm start: the multi-task model, unless the guard keeps the cold-start one)
                        surrogate = warm[0]
                    return self._bo(surrogate, objectives, observations, pending, n, context, space=space,
                                    warm=None if warm is None else warm[1], device_reason=choice.reason)
            except _NUMERIC_ERRORS as exc:
                error = f"{type(exc).__name__}: {exc}"
                return self._sobol(space, objectives, observations, pending, n, context, "fallback_sobol", data.n, error=error,
                                   device=choice)

        return self.devices.run(data.n, data.X.shape[-1], n, attempt)

    def recommend(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        observations: Sequence[Observation],
        *,
        context: PlanContext,
    ) -> Recommendation | None:
        """The measured point at the target fidelity with the best posterior
        mean (predicted feasible under the outcome constraints), one objective.

        It judges by the model rather than by the noisy reading, so a lucky
        measurement does not become the recommendation. ``None`` before there
        is a model or with several objectives. With a pool in
        ``context.candidates`` it models on the same scale as :meth:`propose`.
        """
        if len(objectives) != 1 or objectives[0].learn:  # (objective: learn has no optimum)
            return None
        points = [o.params for o in observations if o.fidelity == context.target_fidelity]
        try:
            fitted = self._model(space, objectives, observations, context)
            if fitted is None or not points:
                return None
            surrogate, scale = fitted
            on_scale = points if scale is None else scale.forward_all(points)
            with numerics(self.options.torch_threads):
                predicted = surrogate.predict(on_scale)
        except _NUMERIC_ERRORS:
            return None
        objective = objectives[0]
        sign = 1.0 if objective.direction == "maximize" else -1.0
        best, best_value = None, -math.inf
        for i in range(len(points)):
            if not all(c.satisfied({c.outcome: float(predicted[c.outcome][0][i])}) for c in context.constraints):
                continue
            value = sign * float(predicted[objective.name][0][i])
            if value > best_value:
                best, best_value = i, value
        if best is None:
            return None
        return Recommendation(
            params=points[best],
            fidelity=context.target_fidelity,
            predicted={k: {"mean": float(m[best]), "std": float(sd[best])} for k, (m, sd) in predicted.items()},
            basis="best_predicted",
        )

    def predict(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        observations: Sequence[Observation],
        points: Sequence[Point],
        *,
        context: PlanContext,
    ) -> dict[str, Prediction]:
        """The posterior of the model :meth:`propose` fits (target-fidelity data,
        the objective's warp, the pool's rank scale) at ``points``, per modelled
        outcome, in original units (:class:`~selflab.planners.protocol.Predictor`);
        ``{}`` with fewer than two usable observations. Raises when the fit fails."""
        fitted = self._model(space, objectives, observations, context)
        if fitted is None:
            return {}
        surrogate, scale = fitted
        on_scale = list(points) if scale is None else scale.forward_all(points)
        return surrogate.prediction(surrogate.encoding.encode(on_scale), context.target_fidelity)

    def leave_one_out(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        observations: Sequence[Observation],
        *,
        context: PlanContext,
    ) -> dict[str, LeaveOneOut]:
        """Leave-one-out predictions of the model :meth:`propose` fits, at its
        training points (:class:`~selflab.planners.protocol.Predictor`)."""
        fitted = self._model(space, objectives, observations, context)
        return {} if fitted is None else fitted[0].leave_one_out(context.target_fidelity)

    def _model(
        self, space: SearchSpace, objectives: Sequence[Objective], observations: Sequence[Observation], context: PlanContext
    ) -> tuple[Surrogate, RankScale | None] | None:
        """The fitted model of the observations at the target fidelity, as
        :meth:`propose` fits it, and the pool's rank scale it works on (``None``
        without a pool); ``None`` with fewer than two usable observations."""
        scale, fitter, _ = self._pool_scale(space, objectives, observations, (), 1, context)
        if scale is not None:
            observations, _, context = _on_scale(scale, observations, (), context)
            space = scale.space
        model_space = context.model_space or space
        outcomes = modelled_outcomes(objectives, context.constraints)
        data = TrainingData.from_observations(Encoding(model_space), outcomes, observations, context.target_fidelity)
        if data.n < 2:
            return None

        def attempt(choice: DeviceChoice) -> Surrogate:
            with numerics(self.options.torch_threads), manual_seed(_mix(context.seed, context.step)):
                return self._fit(fitter, model_space, objectives, data.to(choice.device), context, choice.device)

        return self.devices.run(data.n, data.X.shape[-1], 1, attempt), scale

    def _pool_scale(
        self, space: SearchSpace, objectives: Sequence[Objective], observations: Sequence[Observation], pending: Sequence[Pending],
        n: int, context: PlanContext,
    ) -> tuple[RankScale | None, SurrogateFitter, dict[str, Any] | None]:
        """The scale the model works on: the pool's rank scale (every candidate,
        measured, pending and failed point) or ``None`` (linear; also without a
        pool), the fitter that keeps that scale's fits, and under ``pool_scale:
        auto`` the choice for the reason (``None`` otherwise, and before the first model)."""
        o = self.options
        if context.candidates is None or o.pool_scale == "linear":
            return None, self._fitter, None
        known = [*context.candidates, *(obs.params for obs in observations), *(p.params for p in (*pending, *context.failed))]
        rank = RankScale.of(space, known) if known else None
        if o.pool_scale == "rank" or rank is None:
            return rank, self._fitter, None
        model_space = context.model_space or space
        outcomes = modelled_outcomes(objectives, context.constraints)
        linear = TrainingData.from_observations(Encoding(model_space), outcomes, observations, context.target_fidelity)
        if self._initial(space, linear.n, n, pending, context):
            return rank, self._fitter, None
        ranked_observations, _, ranked_context = _on_scale(rank, observations, (), context)
        ranked = TrainingData.from_observations(Encoding(rank.space), outcomes, ranked_observations, context.target_fidelity)
        scores: dict[str, float] = {}
        try:  # (on the CPU, seeded as a proposal's fit: each stays in its fitter's cache for the proposal or recommendation that follows)
            for kind, fitter, fit_space, data, fit_context in (("rank", self._fitter, rank.space, ranked, ranked_context),
                                                                ("linear", self._linear_fitter, model_space, linear, context)):
                with numerics(o.torch_threads), manual_seed(_mix(context.seed, context.step)):
                    scores[kind] = log_likelihood_per_point(self._fit(fitter, fit_space, objectives, data, fit_context))
        except _NUMERIC_ERRORS:  # (a scale that cannot be fitted: the rank scale, whose own fit then reports the error)
            return rank, self._fitter, None
        return choose_pool_scale(rank, scores, self._fitter, self._linear_fitter)

    def _fit(self, fitter: SurrogateFitter, model_space: SearchSpace, objectives: Sequence[Objective], data: TrainingData,
             context: PlanContext, device: torch.device | str = "cpu") -> Surrogate:
        """The GP of ``data`` as every path of this planner fits it (the
        objective's warp, the lengthscale prior), by ``fitter``, so that a
        proposal, a recommendation and the pool-scale choice share its cache.
        The caller holds :func:`numerics` and the seed."""
        outcomes = modelled_outcomes(objectives, context.constraints)
        return fitter.fit(Encoding(model_space, device=device), outcomes, data, self._warps(objectives, data, context), self._prior(context))

    def _initial(self, space: SearchSpace, n_data: int, n: int, pending: Sequence[Pending], context: PlanContext) -> bool:
        """Whether this proposal still belongs to the initial design (no model yet)."""
        warm = any(source.observations for source in context.warm_start)  # (a source whose rows all lay outside the space tells nothing)
        n_init = self.options.n_init or default_n_init(space.dim, n + len(pending), warm=warm)
        # (with several experiments in flight, the first model waits for n_init results, not n_init proposals:
        # Hartmann6, 4 slots, 10 seeds: median regret 0.196 -> 0.141)
        return context.step < n_init or n_data < 2 or n_data + len(context.failed) < n_init

    def _prior(self, context: PlanContext) -> LengthscalePrior:
        """The Matern lengthscale prior: as configured, or under ``auto`` none
        with a pool of candidates (its inputs are every recorded column, some
        of which may not matter) and Gamma(3, 6) otherwise.

        Measured (``benchmarks/RESULTS.md``, session 6; 20 seeds, evaluations
        to 80 % of the top-5 % rows): p3ht 56 -> 43, autoam 22 -> 23,
        perovskite 46 -> 44 with no prior; on Hartmann6 (a box, every input
        matters) no prior lost badly (seed 0: regret 1.48 against 0.068)."""
        if self.options.lengthscale_prior != "auto":
            return self.options.lengthscale_prior
        return "none" if context.candidates is not None else "gamma"

    def _search_effort(self, n: int) -> dict[str, int]:
        """Restarts and raw samples of the acquisition optimizer: as configured,
        capped at 8 and 512 above ``large_data`` observations, where scoring one
        point costs O(n^2) (n = 1000, 6-D: 2.27 s -> 1.61 s a proposal on a
        loaded 2-core CPU, same acquisition optimum found in 3 of 3 tries)."""
        o = self.options
        if n > o.large_data:
            return {"num_restarts": min(o.num_restarts, 8), "raw_samples": min(o.raw_samples, 512)}
        return {"num_restarts": o.num_restarts, "raw_samples": o.raw_samples}

    def _warps(self, objectives: Sequence[Objective], data: TrainingData, context: PlanContext) -> list[Warp | None]:
        """A fitted warp for a single objective (outcome 0) under ``outcome_warp: auto``,
        unless an outcome constraint reads that objective (its threshold is in
        original units); none otherwise."""
        o = objectives[0]
        if (self.options.outcome_warp == "none" or len(objectives) != 1 or o.learn
                or any(c.outcome == o.name for c in context.constraints)):
            return []
        return [fit_warp(data.Y[:, 0], o.direction)]

    def _bo(
        self, surrogate: Surrogate, objectives: Sequence[Objective], observations: Sequence[Observation], pending: Sequence[Pending],
        n: int, context: PlanContext, *, space: SearchSpace | None = None, warm: dict[str, Any] | None = None, device_reason: str,
    ) -> list[Proposal]:
        o, enc = self.options, surrogate.encoding
        # (after search-space edits the model spans every observation; proposals come only from the current space)
        search = search_encoding(enc, space) if context.model_space is not None and space is not None else enc
        X_avoid = enc.encode([p.params for p in (*pending, *context.failed)])
        pool = enc.encode(list(context.candidates)) if context.candidates is not None else None
        seed = _mix(context.seed, context.step)
        started = time.perf_counter()
        calibration = self._calibration(surrogate, observations)
        model = surrogate.rescaled([calibration["std_scale"][out] for out in surrogate.outcomes]) if calibration["std_scale"] else surrogate
        feasibility, feasibility_reason = self._feasibility(enc, observations, context, learning(objectives))
        kind, beta = self._acquisition_kind(objectives, context, pool is not None, weighted=feasibility is not None)
        if kind == "qlognei" and large_data_logei(self.options, objectives, context, surrogate.data.n, n, len(X_avoid), feasibility is not None,
                                                  float_or_pool=search.continuous or pool is not None):
            kind = "logei"
        info: dict[str, Any]
        if learning(objectives):  # (objective: learn: qNIPV, batches jointly; selflab.planners.learn)
            acqf, name, info = learn_acquisition(model, objectives, seed=seed, pool=pool)
            X, values = maximize(acqf, search, n, X_pending=X_avoid, candidates=pool, maxiter=o.maxiter,
                                 **self._search_effort(surrogate.data.n))
            X, values, _ = self._keep_apart(acqf, search, X, values, X_avoid, pool is None, seed)
            labels = ["joint"] * len(X)  # (qNIPV optimizes the batch jointly)
        elif kind == "ts":
            objective, info = scalarized_objective(model, objectives, context.constraints, seed)
            choices = pool if pool is not None else sobol_candidates(search, o.ts_candidates, seed)
            choices = choices[~too_close(enc, choices, X_avoid)]
            if not len(choices):
                raise BotorchError("no Thompson-sampling candidate keeps away from the pending points")
            idx, values = thompson_select(model, objective, choices, min(n, len(choices)))
            X, name = choices[idx], "ts"
            labels = ["thompson_candidates"] * len(X)
        else:
            acqf, name, info = build_acquisition(
                model, objectives, context.constraints, kind, beta=beta, mc_samples=o.mc_samples, seed=seed,
                baseline_max=o.nei_baseline if surrogate.data.n > o.large_data else None,
            )
            if kind == "ucb":
                info = {**info, "beta": beta}
                if o.acquisition == "auto":
                    info["acquisition_rule"] = "auto: ucb (mean + 2 std) on a pool of candidates"
            elif kind == "logei":
                info["acquisition_rule"] = (f"auto: analytic log-EI above large_data ({o.large_data}) observations for one point "
                                            "with nothing pending (qLogNEI samples the point jointly with its baseline)")
            if feasibility is not None:
                acqf = FeasibilityWeighted(acqf, feasibility)
            strategy = resolve(o.batch_strategy, n, plate_from=o.plate_from, surrogate=model, pool=pool is not None,
                               learn_failures=feasibility is not None)
            if strategy == "greedy":
                X, values = maximize(
                    acqf, search, n, X_pending=X_avoid, candidates=pool,
                    maxiter=o.maxiter, around_best=kind == "logei", **self._search_effort(surrogate.data.n),
                )
                labels = ["greedy"] * len(X)
            else:  # (selflab.planners.batch: one objective's SingleTaskGP, continuous inputs, no pool)
                X, values, labels = self._batch(strategy, acqf, model, objectives, context, search, n, X_avoid, seed)
            before = X
            X, values, replaced = self._keep_apart(acqf, search, X, values, X_avoid, pool is None, seed)
            labels = [label if torch.equal(a, b) else "near_duplicate_replaced" for label, a, b in zip(labels, before, X)]
            if replaced:
                info = {**info, "replaced_near_duplicates": replaced}
        acq_seconds = time.perf_counter() - started
        mean, std = model.stats(X)
        noise = model.noise_std(X)
        flags = extrapolation_flags(single_task(surrogate), X, o.extrapolation)
        p_success = feasibility.prob(X) if feasibility is not None else None
        loo = self._loo(surrogate, context) if surrogate.made_by in ("full", "warm") else None
        fidelity = offered_fidelity(context)
        proposals = []
        for i, point in enumerate(search.decode(X)):
            reason = {
                "strategy": "bo",
                "acquisition": "pathwise_ts" if labels[i] == "thompson" else name,
                "acquisition_value": _number(values[i]),
                "predicted": {out: {"mean": _number(mean[i, j]), "std": _number(std[i, j])} for j, out in enumerate(surrogate.outcomes)},
                "noise_std": {out: _number(noise[i, j]) for j, out in enumerate(surrogate.outcomes)},
                "fit_seconds": surrogate.fit_seconds,
                "acquisition_seconds": acq_seconds,
                "n_observations": surrogate.data.n,
                "device": str(enc.device),
                "device_reason": device_reason,
                "refit": surrogate.refit,
                "fitted_by": surrogate.made_by,
                **_warp_reason(surrogate),
                "kernel": dict(zip(surrogate.outcomes, surrogate.kernels)),
                "lengthscale_prior": {out: "dimension_scaled" if k == "rbf" else surrogate.lengthscale_prior
                                      for out, k in zip(surrogate.outcomes, surrogate.kernels)},
                "extrapolation": flags[i],
                "calibration": calibration,
                "feasibility": {**feasibility_reason, "p_success": None if p_success is None else _number(p_success[i])},
                "loo": loo,
                **info,
                **({"warm_start": warm} if warm is not None else {}),
            }
            if n > 1:
                reason["batch"] = {"strategy": labels[i], "rank": i, "size": len(X)}
            proposals.append(Proposal(params=point, fidelity=fidelity, reason=reason))
        return proposals

    def _acquisition_kind(self, objectives: Sequence[Objective], context: PlanContext,
                          pool: bool, *, weighted: bool) -> tuple[Literal["qlognei", "ucb", "ts"], float]:
        """The acquisition and UCB's beta this proposal uses: ``acquisition`` as
        set, or under ``auto`` :func:`pool_acquisition`'s choice (``weighted``:
        a success classifier weights this proposal, which needs a log-scale
        acquisition)."""
        o = self.options
        if o.acquisition != "auto":
            return o.acquisition, o.beta
        return pool_acquisition(pool and len(objectives) == 1 and not context.constraints and not weighted, o.beta)

    def _batch(
        self, strategy: str, acqf: Any, model: Surrogate, objectives: Sequence[Objective], context: PlanContext, enc: Encoding,
        n: int, X_avoid: torch.Tensor, seed: int,
    ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """A batch by ``thompson`` or ``hybrid`` (:mod:`selflab.planners.batch`): points, values, each row's strategy."""
        o = self.options
        objective, _ = scalarized_objective(model, objectives, context.constraints, seed)
        if strategy == "thompson":
            X, values = thompson_batch(model, objective, enc, n, X_avoid=X_avoid, seed=seed, maxiter=o.maxiter)
            return X, values, ["thompson"] * n
        return hybrid_batch(acqf, model, objective, enc, n, o.batch_head, X_avoid=X_avoid, seed=seed, maxiter=o.maxiter,
                            **self._search_effort(model.data.n))

    def _calibration(self, surrogate: Surrogate, observations: Sequence[Observation]) -> dict[str, Any]:
        """``calibration: rescale``: the factor of each outcome's std (from the
        raw prequential scores of its last ``calibration_window`` scored
        results; see :mod:`selflab.planners.calibration`), for the reason; ``std_scale`` is
        ``None`` when not rescaling."""
        o = self.options
        if o.calibration != "rescale":
            return {"mode": o.calibration, "std_scale": None, "n_scored": None}
        scores = {out: raw_scores(observations, out) for out in surrogate.outcomes}
        return {"mode": "rescale", "std_scale": {out: rescale_factor(z, o.calibration_window) for out, z in scores.items()},
                "n_scored": {out: len(z) for out, z in scores.items()}}

    def _feasibility(
        self, enc: Encoding, observations: Sequence[Observation], context: PlanContext, learning_objective: bool
    ) -> tuple[Feasibility | None, dict[str, Any]]:
        """``failures: learn``: the success classifier of completed (at the target
        fidelity) against failed experiments that count (``None`` without such a
        failure, or when its fit fails), and what the reason says about it: the
        mode in use (:meth:`BOOptions.failure_mode`, and why when it is not the one set)."""
        counted = sum(1 for f in context.failed if counts(f))
        mode, why = self.options.failure_mode(learning_objective)
        reason: dict[str, Any] = {"mode": mode, "failures_counted": counted, "failures_ignored": len(context.failed) - counted}
        if why is not None:
            reason["why_not_learn"] = why
        if mode != "learn" or not counted:
            return None, reason
        completed = enc.encode([ob.params for ob in observations if ob.fidelity == context.target_fidelity])
        try:
            return fit_feasibility(enc, completed, encoded_failures(enc, context.failed)), reason
        except Exception as exc:  # any failure of the classifier's fit: no weighting, said in the reason
            return None, {**reason, "error": f"{type(exc).__name__}: {exc}"}

    @staticmethod
    def _loo(surrogate: Surrogate, context: PlanContext) -> dict[str, Any] | None:
        """Leave-one-out figures of each outcome's freshly fitted model (:class:`~selflab.planners.calibration.LooStats`)."""
        try:
            loo = surrogate.leave_one_out(context.target_fidelity)
        except _NUMERIC_ERRORS:
            return None
        return {out: LooStats.of(l.observed, l.predicted.mean, l.predicted.std).as_reason() for out, l in loo.items()}

    def _keep_apart(
        self, acqf: Any, enc: Encoding, X: torch.Tensor, values: torch.Tensor, X_avoid: torch.Tensor, free: bool, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Replace rows of ``X`` too close to ``X_avoid`` or to an earlier row
        by the best Sobol candidate that keeps away from all of them."""
        replaced = 0
        rows, vals = list(X), list(values)
        for i in range(len(rows)):
            others = torch.cat([X_avoid, torch.stack(rows[:i])]) if i else X_avoid
            if not too_close(enc, rows[i][None], others)[0]:
                continue
            choices = sobol_candidates(enc, _GUARD_CANDIDATES, seed + i + 1)
            choices = choices[~too_close(enc, choices, others)]
            if free and len(choices):  # (a pool is never near-duplicate: the controller removes used points)
                x, v = maximize(acqf, enc, 1, X_pending=others, candidates=choices)
                rows[i], vals[i] = x[0], v[0]
                replaced += 1
        return torch.stack(rows), torch.stack(vals), replaced

    def _sobol(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        observations: Sequence[Observation],
        pending: Sequence[Pending],
        n: int,
        context: PlanContext,
        strategy: str,
        n_observations: int,
        *,
        error: str | None = None,
        device: DeviceChoice,
    ) -> list[Proposal]:
        """Sobol proposals; ``device``: where the model that failed ran (``fallback_sobol``), or :data:`NO_MODEL`."""
        base = SobolPlanner().propose(space, objectives, observations, pending, n, context=context)
        if strategy == "sobol_init" and self.options.center_first and context.step == 0 and base:
            base[0] = base[0].model_copy(update={"params": center_of(space, context.candidates), "reason": {"strategy": "center", "index": 0}})
        return [p.model_copy(update={"reason": model_free_reason(p.reason, strategy, n_observations, device, error)}) for p in base]


POOL_UCB_BETA = 4.0
"""``acquisition: auto`` on a pool: UCB's beta (mean + 2 std)."""


def pool_acquisition(single_objective_pool: bool, beta: float) -> tuple[Literal["qlognei", "ucb"], float]:
    """``acquisition: auto``: UCB with :data:`POOL_UCB_BETA` when choosing
    from a pool of candidates for one objective (no outcome constraints, and
    no success classifier to weight it: ``failures: learn`` once an experiment
    has failed), else qLogNEI (with ``beta`` unused).

    Why UCB on a pool: a pool campaign is scored by how many of the best rows
    it measures (AF(0.8): 80 % of the top 5 %), and once the best rows so far
    are found, qLogNEI's expected improvement over them sends the next
    evaluations to far, uncertain rows, while the upper bound keeps
    collecting the good region's next-best rows. Measured on 13 measured
    pools (the Liang three and ten Olympus tables, ``benchmarks/pools.py``,
    ``benchmarks/RESULTS.md``, Session 12), against the plain botorch
    baseline in the same run.

    >>> pool_acquisition(True, 2.0), pool_acquisition(False, 2.0)
    (('ucb', 4.0), ('qlognei', 2.0))
    """
    return ("ucb", POOL_UCB_BETA) if single_objective_pool else ("qlognei", beta)


def choose_pool_scale(rank: RankScale, scores: Mapping[str, float], rank_fitter: SurrogateFitter,
                      linear_fitter: SurrogateFitter) -> tuple[RankScale | None, SurrogateFitter, dict[str, Any]]:
    """``pool_scale: auto``: the scale whose fitted GP of the objective has the
    higher marginal log likelihood per observation (``scores``: ``{"rank": ...,
    "linear": ...}``, the same outcomes and warp on both, so they compare; a
    tie keeps the rank scale). Returns the scale (``None``: linear), its
    fitter, and the reason's record.

    Why: the rank scale spreads a column's crowded values apart (on p3ht,
    where a few dopant levels crowd the low end, it beats the linear scale,
    Session 3), and it bends a smooth response where the values are already
    even (colors_n9, snar); the data say which, as they grow. Offline, on 30
    random rows of each of 13 measured pools, the likelihood preferred rank on
    p3ht and perovskite and linear on colors_n9, snar, benzylation, autoam and
    hplc (benchmarks/RESULTS.md, Session 13). The record reads, e.g.,
    ``{"chosen": "linear", "log_likelihood_per_point": {"rank": -1.2, "linear": -0.9}}``.
    """
    chosen = "linear" if scores["linear"] > scores["rank"] else "rank"
    record = {"chosen": chosen, "log_likelihood_per_point": {k: round(float(v), 4) for k, v in scores.items()}}
    return (None, linear_fitter, record) if chosen == "linear" else (rank, rank_fitter, record)


def large_data_logei(options: BOOptions, objectives: Sequence[Objective], context: PlanContext, n_observations: int, q: int,
                     avoided: int, feasibility: bool, *, float_or_pool: bool) -> bool:
    """``acquisition: auto`` on more than ``large_data`` observations: analytic
    log-EI (``logei``, :func:`~selflab.planners.acquisition.build_acquisition`)
    instead of qLogNEI, for one point of one objective (not ``objective:
    learn``) without outcome constraints, with nothing pending or failed to
    keep away from (analytic EI cannot condition on them) and no ``failures:
    learn``, on all-float inputs (its restarts start around the best points,
    :func:`~selflab.planners.optimize.maximize`'s ``around_best``) or a pool.
    At that size the incumbent's posterior mean is near its value, so
    qLogNEI's joint sampling of the baseline adds cost, not information:
    on six 600-point Hartmann6 data sets both chose the same point (to 1e-3),
    the optimizer in 0.55x the time (benchmarks/RESULTS.md, Session 13).
    """
    return (options.acquisition == "auto" and n_observations > options.large_data and q == 1 and len(objectives) == 1
            and not objectives[0].learn and not context.constraints and avoided == 0 and not feasibility and float_or_pool)


def default_n_init(dim: int, slots: int = 1, warm: bool = False) -> int:
    """Sobol points before the first model: ``max(5, dim)``, or with
    ``warm`` (``warm_start`` sources: the source already tells the model the
    function's shape and scales) half that, at least 2; with ``slots > 1``
    experiments at once (those asked for plus those in flight), rounded down
    to whole rounds of ``slots``, at least one round, so that the round after
    the initial design already comes from the model.

    Measured (Hartmann6, 4 slots, 52 evaluations, 30 seeds, matern kernel):
    ``n_init`` 6 (two Sobol rounds, 8 points) 0.0008 median regret, 21 of 30
    seeds in the global basin; one round of 4 points 0.0006, 24 of 30, and
    ahead on each set of 10 seeds (seeds 0-9: 0.0605 against 0.0005).
    With a warm start (``benchmarks/warm_start.py``, 10 seeds, evaluations to
    regret 0.1; benchmarks/RESULTS.md, Session 16): 3 points instead of 6 took
    a Sobol-screened related source from 20 to 18 (cold start 27.5) and a
    related ``bo`` campaign from 12 to 9.5, while a shuffled (unrelated)
    source stayed below the cold start's count.

    >>> default_n_init(6), default_n_init(6, slots=4), default_n_init(6, slots=3), default_n_init(2, slots=8), default_n_init(6, warm=True)
    (6, 4, 6, 8, 3)
    """
    base = max(5, dim) if not warm else max(2, (max(5, dim) + 1) // 2)
    return base if slots <= 1 else max(slots, base // slots * slots)


def center_of(space: SearchSpace, candidates: Sequence[Point] | None = None) -> Point:
    """The middle of the space (on each parameter's own scale: geometric for
    log-scale ones, the middle choice of a categorical), or the candidate
    nearest to it in the unit cube."""
    middle = space.from_unit([0.5] * space.dim)
    return nearest_unused(space, [space.to_unit(middle)], candidates)[0] if candidates else middle


def model_free_reason(
    reason: dict[str, Any], strategy: str, n_observations: int, device: DeviceChoice, error: str | None = None
) -> dict[str, Any]:
    """A Sobol proposal's reason with every model key present (and empty), so
    that all of a planner's reasons have the same fields; ``device``: where
    the model that failed ran (``fallback_sobol``), or :data:`NO_MODEL`."""
    return {
        **reason, "strategy": strategy, "acquisition": None, "acquisition_value": None, "predicted": {}, "fit_seconds": 0.0,
        "n_observations": n_observations, "device": str(device.device), "device_reason": device.reason, "refit": None,
        "fitted_by": None, "kernel": {}, "lengthscale_prior": {},
        "noise_std": {}, "extrapolation": None, "calibration": None, "feasibility": None, "loo": None, **({"error": error} if error else {}),
    }


def sobol_candidates(enc: Encoding, n: int, seed: int) -> torch.Tensor:
    """``n x d`` valid encoded points from a scrambled Sobol sequence."""
    U = torch.quasirandom.SobolEngine(enc.dim, scramble=True, seed=seed).draw(n, dtype=enc.dtype)
    return enc.from_unit(U)


def _mix(seed: int, step: int) -> int:
    """One seed from the campaign seed and the ledger position."""
    return (seed * 1_000_003 + step) % (2**31 - 1)


def _number(x: torch.Tensor | float) -> float | None:
    """A JSON-safe float (``None`` for NaN or infinity)."""
    value = float(x)
    return value if math.isfinite(value) else None


def _on_scale(
    scale: RankScale, observations: Sequence[Observation], pending: Sequence[Pending], context: PlanContext
) -> tuple[list[Observation], list[Pending], PlanContext]:
    """Observations, pending points and context (the pool's candidates, failed points) with params on ``scale``."""
    def move(records: Sequence[Any]) -> list[Any]:
        return [r.model_copy(update={"params": ranked}) for r, ranked in zip(records, scale.forward_all([r.params for r in records]))]

    candidates = tuple(scale.forward_all(list(context.candidates or ())))
    return move(observations), move(pending), context.model_copy(update={"candidates": candidates, "failed": tuple(move(context.failed)),
                                                                        "model_space": None})  # (the rank scale spans every known point)


def _warp_reason(surrogate: Surrogate) -> dict[str, dict[str, float]]:
    """``{"box_cox": {outcome: lam}}`` and/or ``{"yeo_johnson": {outcome: lam}}`` for the warped outcomes."""
    out: dict[str, dict[str, float]] = {}
    for name, warp in zip(surrogate.outcomes, surrogate.warps):
        if warp is not None:
            out.setdefault(warp.name, {})[name] = warp.lam
    return out
