"""Multi-fidelity Bayesian optimization: one GP over every fidelity, a cost-aware
acquisition that chooses both the point and the fidelity.

Built from the same parts as :class:`~selflab.planners.bo.BOPlanner`:

- **Model.** :class:`~selflab.planners.surrogate.SurrogateFitter` with
  ``multi_fidelity=True``: one ``SingleTaskMultiFidelityGP`` on all
  observations, whatever their fidelity, with the fidelity as a last input
  column (``n x (d + 1)``, a ``data_fidelities`` column). The same refit policy
  (full / warm / conditioned / cached) and the same robustness: a failed fit is
  retried from default hyperparameters, then with a raised noise floor (many
  near-duplicate cheap points); if all fail, the batch is Sobol at the target
  fidelity with strategy ``"fallback_sobol"``, never an exception.
- **Cost model.** The cost of each offered fidelity (``context.fidelities``),
  exact at each level (:func:`~selflab.planners.acquisition.fidelity_cost_model`).
- **Acquisition** (:func:`~selflab.planners.acquisition.build_mf_acquisition`):
  ``mfmes`` (default, multi-fidelity max-value entropy), ``gibbon`` or ``mfkg``
  (multi-fidelity knowledge gradient, one-shot; all-float spaces without a
  pool only, otherwise ``mfmes`` is used). Values are information about the
  target-fidelity optimum per unit cost.
- **Choosing the fidelity.** With at most ``max_discrete_fidelities`` levels on
  offer, the acquisition is maximized over the design with the fidelity held
  at each level in turn (:func:`~selflab.planners.optimize.maximize` with
  ``fidelity=``), and the level with the best value per unit cost wins. With
  more levels, the fidelity is one more continuous column between the lowest
  and highest offered, and the result is snapped to the nearest offered level.
  Only offered fidelities are ever proposed.
- **Batches and pending experiments.** Sequential greedy: each batch element
  is chosen as above on the model conditioned on the pending experiments (at
  their own fidelities), the failed ones and the earlier batch elements, each
  believed at its posterior mean ("kriging believer"). The posterior variance,
  which drives the information gain, is exact after such conditioning, and it
  costs one model update, where botorch's fantasy models (``X_pending``) make
  every acquisition call ``num_fantasies`` times as expensive (measured in a
  campaign with four cheap instruments busy: 5-20 s per proposal, against
  about 1 s). A point within ``1e-3`` (unit cube, every design coordinate) of
  one of those is replaced by the best of a Sobol candidate set that keeps
  away from them.
- **Never stuck at the cheapest fidelity** (Ax #475). Information per unit
  cost moves up by itself once the cheap fidelity has little left to say about
  the target optimum. In addition, a rule guarantees target evaluations:
  whenever the cost spent or committed at the target fidelity (completed and
  pending experiments, priced by the cost model) is below ``min_target_share``
  of the cost spent at all fidelities, and no target experiment is pending
  (nor earlier in the batch), the next proposal is made at the target (the
  acquisition still chooses the point); the reason says
  ``"target_share_rule": true``. The pending condition keeps one target
  experiment going without flooding the target instruments: cheap instruments
  usually spend cost faster than the target ones can, so a share alone would
  force every proposal to a target instrument that has no free slot. While
  the target instrument is busy the cheap ones keep running, and the share
  is not a floor: on ``reactor_multifidelity`` (a plant experiment about 40
  minutes, a model run about 80 s) a cost budget of 10 ends with 4 plant
  experiments and 120 model runs whatever ``min_target_share`` is. Idling the
  cheap instrument instead (while the share is short, or while the next
  target experiment is worth more per unit cost) was measured and gave 5-7
  plant experiments and no better recommendation (benchmarks/RESULTS.md,
  Session 17), so it was not kept.
- **A biased cheap fidelity** (issue 22; ``target_model: discrepancy``,
  opt-in: on ``reactor_multifidelity`` its first measurement, 2 seeds, ended
  at a recommendation regret of 0.035, worse than the joint GP's 0.029, so
  ``joint`` stays the default; ``benchmarks/RESULTS.md``, issue 22). Beside the joint GP, the target is modelled as the cheap model
  plus a learned difference (:mod:`selflab.planners.mf_discrepancy`: a GP on the
  cheap data, and a GP on the target observations' residuals from it), as
  soon as there are two target and two cheap observations. It trusts target
  data where they exist and follows the cheap model's shape elsewhere, where
  the joint GP's fidelity kernel keeps pulling the target prediction toward
  the cheap optimum. It changes three things, each said in the reason:
  (1) a target proposal made while no other target experiment is pending
  goes to this model's log-EI choice (``target_point: "discrepancy_logei"``;
  otherwise ``"acquisition"``); (2) a cheap proposal stands only while a cheap
  experiment can still buy its cost share of the target uncertainty at that
  point: the low model's share of the posterior variance there must be at
  least ``cost_cheap / cost_target``; if not, the proposal moves to the target
  (``fidelity_rule: "cheap_stops_paying"``) or, with the target instrument
  busy, none is made (the cheap instrument idles: the batch is shorter); so
  the target's share of the cost grows as the cheap fidelity stops paying;
  (3) the recommendation is this model's best target mean. The reason's
  ``discrepancy`` holds the variance share, the cost ratio, ``cheap_pays``,
  the log-EI and, for a target point, the mean's two parts. ``target_model:
  joint`` (the default) is the joint GP alone, as before issue 22.
- **Initial design.** The first ``n_init`` proposals (ledger position
  ``context.step``; default ``max(4, 2 d)``), and any call with fewer than two
  usable observations, follow the scrambled Sobol sequence of ``(seed,
  step)``; proposal ``k`` goes to the target fidelity when ``k %
  init_target_every == init_target_every - 1`` and otherwise cycles through the
  cheaper offered levels, cheapest first (``0.5, 0.75, 0.5, 1, 0.75, ...``).
- **Recommendation.** :meth:`MFPlanner.recommend` maximizes the posterior mean
  at the target fidelity (of the discrepancy model when there is one, above;
  else of the joint GP) over the design space (``recommend_over="space"``;
  the optimizer's result is compared with the observed designs projected to the
  target, and the better one is kept) or over the observed designs only
  (``"observed"``, for pool campaigns).
- **Reasons.** As :class:`~selflab.planners.bo.BOPlanner`'s (``strategy: "mf"``),
  plus ``fidelity`` and ``cost`` of the proposal, ``acquisition_value`` (the
  acquisition's value, e.g. information gain), ``cost_aware_value`` (that per
  unit cost, what the fidelities were compared on), ``candidates_by_fidelity``
  (the best cost-aware value found at each fidelity tried) and
  ``target_share_rule`` (and ``discrepancy``, ``fidelity_rule``, ``target_point``:
  see above); ``predicted`` is the posterior at the proposed point
  and fidelity (and ``noise_std`` the model's noise std there, so that the
  result can be scored against it: :mod:`selflab.planners.calibration`), and ``extrapolation``
  its flags (:mod:`selflab.planners.extrapolation`; the distance counts the design
  inputs, the std ratio is at the proposed fidelity).
- **Showing the model** (:class:`~selflab.planners.protocol.Predictor`, for
  ``selflab report``): :meth:`MFPlanner.predict` is this GP's posterior at the
  target fidelity, :meth:`MFPlanner.leave_one_out` its leave-one-out
  predictions of every observation at its own fidelity; where
  :meth:`MFPlanner.recommend` hands over to the :class:`~selflab.planners.bo.BOPlanner`,
  so do they.
- **Outside multi-fidelity** (one fidelity on offer, several objectives, or
  outcome constraints): the planner delegates to a :class:`~selflab.planners.bo.BOPlanner`
  with the same optimizer options, which models the target fidelity only.

Example (config)::

    planner:
      kind: mf
      options: {acquisition: mfmes, num_restarts: 4, raw_samples: 128}
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from botorch.acquisition import AcquisitionFunction, PosteriorMean
from botorch.models.model import Model
from botorch.utils.sampling import manual_seed
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from selflab.planners.acquisition import build_mf_acquisition, fidelity_cost_model
from selflab.planners.baselines import SobolPlanner, offered_fidelity
from selflab.planners.bo import _NUMERIC_ERRORS, NO_MODEL, BOPlanner, _mix, _number, model_free_reason, sobol_candidates
from selflab.planners.device_choice import DeviceChoice, DevicePolicy
from selflab.planners.encoding import Encoding
from selflab.planners.extrapolation import extrapolation_flags
from selflab.planners.mf_discrepancy import DiscrepancyFitters, DiscrepancyModel, best_predicted, cheap_pays, fit_discrepancy, target_candidate
from selflab.planners.optimize import maximize, maximize_by_level, too_close
from selflab.planners.protocol import FidelityOption, LeaveOneOut, Observation, Pending, PlanContext, Prediction, Proposal, Recommendation, parse_options
from selflab.planners.space import Objective, Point, SearchSpace
from selflab.planners.surrogate import Surrogate, SurrogateFitter, TrainingData, numerics

_GUARD_CANDIDATES = 512
log = logging.getLogger(__name__)


class MFOptions(BaseModel):
    """``planner.options`` of ``kind: mf``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    acquisition: Literal["mfmes", "gibbon", "mfkg"] = "mfmes"
    n_init: int | None = Field(None, ge=1, description="Sobol points before the first model; default max(4, 2 d)")
    init_target_every: int = Field(4, ge=1, description="every this many initial points, one is at the target fidelity")
    min_target_share: float = Field(0.25, ge=0, lt=1, description="below this share of the cost spent at the target fidelity, the next "
                                    "proposal goes to the target when no target experiment is pending; a cheap instrument still runs while the "
                                    "target one is busy, so the share can end lower (module docs)")
    num_restarts: int = Field(4, ge=1, description="optimizer restarts, per fidelity")
    raw_samples: int = Field(128, ge=1, description="random points scored to choose the restarts, per fidelity")
    maxiter: int = Field(50, ge=1, description="L-BFGS-B iterations per restart")
    candidate_set_size: int = Field(1000, ge=1, description="Sobol points on which mfmes and gibbon sample the target maximum")
    num_fantasies: int = Field(16, ge=1, description="fantasy models: pending points (mfmes, gibbon) or lookahead (mfkg)")
    max_discrete_fidelities: int = Field(5, ge=1, description="more offered levels than this: a continuous fidelity column")
    recommend_over: Literal["space", "observed"] = "space"
    refit_growth: float = Field(0.1, ge=0, description="refit hyperparameters when the data grew by this fraction")
    warm_maxiter: int = Field(30, ge=1, description="L-BFGS iterations of a warm-started refit")
    fit_max_points: int = Field(500, ge=2, description="at most this many points to fit hyperparameters on")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where the GP work runs: cpu, cuda, or auto: cuda only when there is one and the proposal's "
        "observations reach the CUDA crossover (d counts the fidelity column); per proposal (selflab.planners.device_choice)"
    )
    device_crossover: dict[int, NonNegativeInt | None] | None = Field(
        None, description="device: auto: {d: n} from which the GPU is faster (None: never); default: the table in "
        "selflab.planners.device_choice"
    )
    torch_threads: int | None = Field(1, ge=1, description="torch intra-op threads while proposing; see surrogate.numerics")
    target_model: Literal["discrepancy", "joint"] = Field(
        "joint", description="target points, the cheap-or-target rule and the recommendation from the cheap model plus a "
        "learned difference (discrepancy: planners.mf_discrepancy; opt-in, not yet shown better, see RESULTS issue 22), "
        "or from the multi-fidelity GP alone (joint)")


_SHARED_WITH_BO = ("n_init", "num_restarts", "raw_samples", "maxiter", "refit_growth", "warm_maxiter", "fit_max_points", "device", "device_crossover",
                   "torch_threads")


class MFPlanner:
    """Cost-aware multi-fidelity BO (see module docs); options: :class:`MFOptions`."""

    kind = "mf"
    options_model = MFOptions
    blocking = True
    multi_fidelity = True

    def __init__(self, **options: Any) -> None:
        self.options = parse_options(MFOptions, self.kind, options)
        o = self.options
        self.devices = DevicePolicy(o.device, o.device_crossover)
        """Each proposal's device (:mod:`selflab.planners.device_choice`; ``d`` counts the fidelity column)."""
        self._fitter = SurrogateFitter(refit_growth=o.refit_growth, warm_maxiter=o.warm_maxiter, fit_max_points=o.fit_max_points, multi_fidelity=True)
        self._bo = BOPlanner(**{k: getattr(o, k) for k in _SHARED_WITH_BO})
        self._discrepancy_fitters = DiscrepancyFitters.create(refit_growth=o.refit_growth, warm_maxiter=o.warm_maxiter,
                                                              fit_max_points=o.fit_max_points)

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
        if len(context.fidelities) < 2 or len(objectives) != 1 or context.constraints:
            return self._bo.propose(space, objectives, observations, pending, n, context=context)
        objective = objectives[0]
        data = TrainingData.from_observations(Encoding(space), [objective.name], observations, with_fidelity=True)
        n_init = self.options.n_init or max(4, 2 * space.dim)
        if context.step < n_init or data.n < 2:
            return self._sobol(space, objectives, observations, pending, n, context, "sobol_init", data.n, device=NO_MODEL)

        def attempt(choice: DeviceChoice) -> list[Proposal]:
            try:
                with numerics(self.options.torch_threads), manual_seed(_mix(context.seed, context.step)):
                    surrogate = self._fitter.fit(Encoding(space, device=choice.device), [objective.name], data.to(choice.device))
                    return self._mf(surrogate, objective, observations, pending, n, context, choice.reason)
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
        """The design with the best posterior mean at ``context.target_fidelity``
        (see module docs), from a model of every fidelity. ``None`` before there
        is a model; several objectives, constraints, or only target-fidelity
        data: :meth:`BOPlanner.recommend`.
        """
        if self._single_fidelity(objectives, observations, context):
            return self._bo.recommend(space, objectives, observations, context=context)
        objective = objectives[0]
        target = context.target_fidelity
        o = self.options
        try:
            with numerics(o.torch_threads), manual_seed(_mix(context.seed, context.step)):
                surrogate = self._model(space, objective, observations)
                if surrogate is None:
                    return None
                encoding = surrogate.encoding
                disc = self._discrepancy(surrogate, objective, target)
                if disc is None:
                    x, _ = _best_at_target(surrogate, objective, target, o.recommend_over == "space", o.num_restarts, o.raw_samples)
                    mean, std = surrogate.stats(x[None])
                    predicted = {"mean": float(mean[0, 0]), "std": float(std[0, 0])}
                else:  # target data trusted where they exist: the cheap model's shape plus the learned difference
                    x = best_predicted(disc, encoding, objective.direction == "maximize", surrogate.data.X, target,
                                       search=o.recommend_over == "space", num_restarts=o.num_restarts, raw_samples=o.raw_samples)
                    predicted = _disc_prediction(disc, x)
        except _NUMERIC_ERRORS:
            return None
        return Recommendation(
            params=encoding.decode(x[None, : encoding.dim])[0],
            fidelity=target,
            predicted={objective.name: predicted},
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
        """The posterior at ``points`` and ``context.target_fidelity`` of the GP
        over every fidelity that :meth:`recommend` and :meth:`propose` fit
        (:class:`~selflab.planners.protocol.Predictor`); where this planner models the
        target fidelity alone (see :meth:`recommend`), :meth:`BOPlanner.predict`."""
        if self._single_fidelity(objectives, observations, context):
            return self._bo.predict(space, objectives, observations, points, context=context)
        with numerics(self.options.torch_threads), manual_seed(_mix(context.seed, context.step)):
            surrogate = self._model(space, objectives[0], observations)
        if surrogate is None:
            return {}
        points_at_target = _augment(surrogate.encoding, points, [context.target_fidelity] * len(points))
        return surrogate.prediction(points_at_target, context.target_fidelity)

    def leave_one_out(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        observations: Sequence[Observation],
        *,
        context: PlanContext,
    ) -> dict[str, LeaveOneOut]:
        """Leave-one-out predictions of that GP at its training points, each at
        its own fidelity (:class:`~selflab.planners.protocol.Predictor`)."""
        if self._single_fidelity(objectives, observations, context):
            return self._bo.leave_one_out(space, objectives, observations, context=context)
        with numerics(self.options.torch_threads), manual_seed(_mix(context.seed, context.step)):
            surrogate = self._model(space, objectives[0], observations)
        return {} if surrogate is None else surrogate.leave_one_out(context.target_fidelity)

    @staticmethod
    def _single_fidelity(objectives: Sequence[Objective], observations: Sequence[Observation], context: PlanContext) -> bool:
        """Whether the recommendation (and the model shown) is the :class:`BOPlanner`'s
        of the target fidelity alone: several objectives, outcome constraints, or
        every observation at the target fidelity."""
        return len(objectives) != 1 or bool(context.constraints) or all(o.fidelity == context.target_fidelity for o in observations)

    def _model(self, space: SearchSpace, objective: Objective, observations: Sequence[Observation]) -> Surrogate | None:
        """The GP over every fidelity (fidelity the last input column) fitted to
        ``objective``, as :meth:`propose` fits it, on the device :attr:`devices`
        chooses for its size; ``None`` with fewer than two usable observations.
        Callers hold ``numerics`` and the seed of ``(seed, step)``."""
        data = TrainingData.from_observations(Encoding(space), [objective.name], observations, with_fidelity=True)
        if data.n < 2:
            return None

        def attempt(choice: DeviceChoice) -> Surrogate:
            return self._fitter.fit(Encoding(space, device=choice.device), [objective.name], data.to(choice.device))

        return self.devices.run(data.n, data.X.shape[-1], 1, attempt)

    def _discrepancy(self, surrogate: Surrogate, objective: Objective, target: float) -> DiscrepancyModel | None:
        """The discrepancy model of the target (:mod:`selflab.planners.mf_discrepancy`) on the
        surrogate's data, or ``None``: ``target_model: joint``, fewer than two
        target or cheap observations, or a fit that failed (then the joint GP serves)."""
        if self.options.target_model != "discrepancy":
            return None
        try:
            return fit_discrepancy(self._discrepancy_fitters, surrogate.encoding, objective.name, surrogate.data, target)
        except _NUMERIC_ERRORS as exc:
            log.warning("discrepancy model not fitted (%s: %s); the multi-fidelity GP serves", type(exc).__name__, exc)
            return None

    def _mf(
        self,
        surrogate: Surrogate,
        objective: Objective,
        observations: Sequence[Observation],
        pending: Sequence[Pending],
        n: int,
        context: PlanContext,
        device_reason: str,
    ) -> list[Proposal]:
        o, enc = self.options, surrogate.encoding
        started = time.perf_counter()
        seed = _mix(context.seed, context.step)
        levels = sorted(context.fidelities, key=lambda f: f.fidelity)
        top = offered_fidelity(context)
        target = context.target_fidelity
        cost_of = _pricer(levels)
        pool = enc.encode(list(context.candidates)) if context.candidates is not None else None
        X_avoid = torch.cat([_augment(enc, [p.params for p in ps], [p.fidelity for p in ps]) for ps in (pending, context.failed)])
        busy_top = any(p.fidelity == top for p in pending)
        spent = {"all": 0.0, "top": 0.0}
        for f in [*(ob.fidelity for ob in observations), *(p.fidelity for p in pending)]:
            spent["all"] += cost_of(f)
            spent["top"] += cost_of(f) if f == top else 0.0
        chosen: list[tuple[torch.Tensor, float, dict[str, Any]]] = []
        model = _believe(surrogate.model, X_avoid)
        free = {f.fidelity: (n if f.free is None else f.free) for f in levels}  # slots free now, per fidelity
        disc = self._discrepancy(surrogate, objective, target) if top == target else None
        disc_predicted: dict[int, dict[str, float]] = {}
        for i in range(n):
            open_levels = [f for f, k in free.items() if k > 0]
            if not open_levels:
                break  # every instrument that could run more is busy: propose fewer
            forced = spent["top"] < o.min_target_share * spent["all"] and not busy_top and free.get(top, 0) > 0
            acqf = self._acquisition(surrogate, model, objective, levels, target, pool, seed + i)
            x, value, by_level = self._choose(acqf, enc, [top] if forced else open_levels, X_avoid, pool, seed + i)
            fidelity = float(x[-1])
            extra: dict[str, Any] = {}
            if disc is not None:
                target_open = free.get(top, 0) > 0 and not busy_top
                step = self._discrepancy_step(disc, enc, objective, x, value, target_open, forced, cost_of, top,
                                               [f.fidelity for f in levels if f.fidelity < top], pool, X_avoid)
                if step is None:
                    log.info("mf: no cheap proposal: a cheap experiment buys less of the target uncertainty than it costs, "
                             "and the target instrument is busy")
                    break  # the cheap fidelity stops paying and the target is busy: propose fewer
                x, value, extra = step
                fidelity = float(x[-1])
                if "discrepancy_predicted" in extra:
                    disc_predicted[len(chosen)] = extra.pop("discrepancy_predicted")
            free[fidelity] = free.get(fidelity, 1) - 1
            X_avoid = torch.cat([X_avoid, x[None]])
            model = _believe(model, x[None])
            spent["all"] += cost_of(fidelity)
            spent["top"] += cost_of(fidelity) if fidelity == top else 0.0
            busy_top = busy_top or fidelity == top
            chosen.append((x, value, {"target_share_rule": forced, "candidates_by_fidelity": by_level, **extra}))
        acq_seconds = time.perf_counter() - started
        if not chosen:
            return []
        X = torch.stack([x for x, _, _ in chosen])
        mean, std = surrogate.stats(X)
        noise = surrogate.noise_std(X)
        flags = extrapolation_flags(surrogate, X)
        proposals = []
        for i, (point, (x, value, extra)) in enumerate(zip(enc.decode(X[:, : enc.dim]), chosen)):
            fidelity, cost = float(x[-1]), cost_of(float(x[-1]))
            reason = {
                "strategy": "mf",
                "acquisition": self._kind(enc, pool),
                "acquisition_value": _number(value * cost),
                "cost_aware_value": _number(value),
                "fidelity": fidelity,
                "cost": cost,
                "predicted": {objective.name: disc_predicted.get(i, {"mean": _number(mean[i, 0]), "std": _number(std[i, 0])})},
                "noise_std": {objective.name: _number(noise[i, 0])},
                "fit_seconds": surrogate.fit_seconds,
                "acquisition_seconds": acq_seconds,
                "n_observations": surrogate.data.n,
                "device": str(enc.device),
                "device_reason": device_reason,
                "refit": surrogate.refit,
                "fitted_by": surrogate.made_by,
                "kernel": {objective.name: "multi_fidelity"}, "lengthscale_prior": {},
                "extrapolation": flags[i],
                **extra,
            }
            proposals.append(Proposal(params=point, fidelity=fidelity, reason=reason))
        return proposals

    def _discrepancy_step(
        self, disc: DiscrepancyModel, enc: Encoding, objective: Objective, x: torch.Tensor, value: float, target_open: bool,
        forced: bool, cost_of: Callable[[float], float], top: float, cheaper: Sequence[float], pool: torch.Tensor | None, X_avoid: torch.Tensor,
    ) -> tuple[torch.Tensor, float, dict[str, Any]] | None:
        """Revise the multi-fidelity acquisition's choice ``x`` (value per unit
        cost ``value``; ``forced``: by the target-share rule) with the
        discrepancy model. Its next target point ``xt`` is its log-EI choice. A
        cheap choice stands only while a cheap experiment can still buy at least
        its cost share of the target uncertainty at ``xt`` (:func:`cheap_pays`);
        else the proposal moves to ``xt`` at the target when ``target_open`` (a
        target slot free, no target experiment pending or earlier in the batch),
        or none is made (``None``). A target choice moves to ``xt`` when
        ``target_open`` (otherwise the acquisition's point, chosen on the model
        that believes the pending target experiments, stands)."""
        o = self.options
        observed = torch.cat([disc.target_X, disc.target_X.new_full((len(disc.target_X), 1), top)], dim=-1)
        xt, log_ei = target_candidate(disc, enc, objective.direction == "maximize", observed, top, candidates=pool,
                                      num_restarts=o.num_restarts, raw_samples=o.raw_samples, maxiter=o.maxiter)
        v_low, v_delta = (float(v[0]) for v in disc.variance_split(xt[None]))
        share = v_low / (v_low + v_delta) if v_low + v_delta > 0 else 0.0
        fidelity = float(x[-1])
        cheap_cost = cost_of(fidelity) if fidelity != top else min(cost_of(f) for f in cheaper) if cheaper else cost_of(top)
        pays = cheap_pays(share, cheap_cost, cost_of(top))
        info: dict[str, Any] = {"discrepancy": {"low_share_of_variance": _number(share), "cost_ratio": _number(cheap_cost / cost_of(top)),
                                                "cheap_pays": pays, "log_ei": _number(log_ei)}}
        if fidelity != top and pays:
            return x, value, {**info, "fidelity_rule": "acquisition"}
        if not target_open:
            return None if fidelity != top else (x, value, {**info, "fidelity_rule": "acquisition", "target_point": "acquisition"})
        if bool(too_close(enc, xt[None], X_avoid)[0]):  # (a repeat of a pending or failed experiment: the acquisition's choice)
            return x, value, {**info, "fidelity_rule": "acquisition", "target_point": "acquisition"}
        info["fidelity_rule"] = "cheap_stops_paying" if fidelity != top else "target_share" if forced else "acquisition"
        info["target_point"] = "discrepancy_logei"
        low, delta = disc.mean_split(xt[None])
        info["discrepancy"].update(low_fidelity_mean=_number(low[0]), difference_mean=_number(delta[0]))
        info["discrepancy_predicted"] = _disc_prediction(disc, xt)
        return xt, value if fidelity == top else math.nan, info

    def _acquisition(
        self,
        surrogate: Surrogate,
        model: Model,
        objective: Objective,
        levels: Sequence[FidelityOption],
        target: float,
        pool: torch.Tensor | None,
        seed: int,
    ) -> AcquisitionFunction:
        """The acquisition on ``model`` (the surrogate's, conditioned on pending points)."""
        o, enc = self.options, surrogate.encoding
        kind = self._kind(enc, pool)
        candidate_set = pool if pool is not None else sobol_candidates(enc, o.candidate_set_size, seed)
        current = None
        if kind == "mfkg":
            _, current = _best_at_target(surrogate, objective, target, pool is None, o.num_restarts, o.raw_samples)
        return build_mf_acquisition(
            model, enc.dim, objective, kind, fidelities=[f.fidelity for f in levels], costs=[f.cost for f in levels], target=target,
            candidate_set=candidate_set, num_fantasies=o.num_fantasies, current_value=current,
        )

    def _kind(self, enc: Encoding, pool: torch.Tensor | None) -> Literal["mfmes", "gibbon", "mfkg"]:
        """The acquisition used: ``mfkg`` needs an all-float space and no pool, else ``mfmes``."""
        if self.options.acquisition == "mfkg" and not (enc.continuous and pool is None):
            return "mfmes"
        return self.options.acquisition

    def _choose(
        self, acqf: AcquisitionFunction, enc: Encoding, levels: list[float], X_avoid: torch.Tensor, pool: torch.Tensor | None, seed: int
    ) -> tuple[torch.Tensor, float, dict[str, float | None]]:
        """The best point (``d + 1``, fidelity last) over ``levels``, its value per
        unit cost, and the best value found at each level tried."""
        o = self.options
        settings = {"num_restarts": o.num_restarts, "raw_samples": o.raw_samples, "maxiter": o.maxiter}
        found: dict[float, tuple[torch.Tensor, float]] = {}
        if len(levels) > o.max_discrete_fidelities and pool is None:
            X, _ = maximize(acqf, enc, 1, fidelity=(levels[0], levels[-1]), **settings)
            nearest = min(levels, key=lambda f: abs(f - float(X[0, -1])))
            x = torch.cat([X[0, :-1], X.new_tensor([nearest])])
            found[nearest] = self._keep_apart(acqf, enc, x, _value(acqf, x), X_avoid, seed)
        else:
            X, values = maximize_by_level(acqf, enc, levels, candidates=pool, **settings)
            for x, v in zip(X, values):
                found[float(x[-1])] = self._keep_apart(acqf, enc, x, float(v), X_avoid, seed)
        best = max(found, key=lambda f: found[f][1])
        return found[best][0], found[best][1], {f"{f:g}": _number(v) for f, (_, v) in found.items()}

    def _keep_apart(
        self, acqf: AcquisitionFunction, enc: Encoding, x: torch.Tensor, value: float, X_avoid: torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, float]:
        """``x`` and its value, or, when ``x`` is within ``1e-3`` of a row of
        ``X_avoid``, the best Sobol candidate at its fidelity that keeps away."""
        if not bool(too_close(enc, x[None], X_avoid)[0]):
            return x, value
        choices = sobol_candidates(enc, _GUARD_CANDIDATES, seed + 1)
        choices = choices[~too_close(enc, choices, X_avoid)]
        if not len(choices):
            return x, value
        X, values = maximize(acqf, enc, 1, candidates=choices, fidelity=float(x[-1]))
        return X[0], float(values[0])

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
        """Sobol points: spread over the offered fidelities for ``"sobol_init"``
        (see module docs), at the target fidelity for ``"fallback_sobol"``;
        ``device``: where the model that failed ran, or :data:`~selflab.planners.bo.NO_MODEL`."""
        base = SobolPlanner().propose(space, objectives, observations, pending, n, context=context)
        top = offered_fidelity(context)
        cheaper = sorted(f.fidelity for f in context.fidelities if f.fidelity != top)
        every = self.options.init_target_every
        proposals = []
        for i, p in enumerate(base):
            k = context.step + i
            fidelity = top
            if strategy == "sobol_init" and cheaper and k % every != every - 1:
                fidelity = cheaper[(k - k // every) % len(cheaper)]
            reason = {**model_free_reason(p.reason, strategy, n_observations, device, error), "fidelity": fidelity}
            proposals.append(p.model_copy(update={"fidelity": fidelity, "reason": reason}))
        return proposals


def _best_at_target(
    surrogate: Surrogate, objective: Objective, target: float, search: bool, num_restarts: int, raw_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The design (``d + 1``, fidelity = ``target``) with the best posterior mean
    at the target fidelity, and that mean, maximize-oriented (negated for
    ``minimize``). Among the observed designs, and over the design space when
    ``search``."""
    enc = surrogate.encoding
    acqf = PosteriorMean(surrogate.model, maximize=objective.direction == "maximize")
    observed = surrogate.data.X.clone()
    observed[:, -1] = target
    with torch.no_grad():
        values = acqf(observed[:, None, :])
    best = int(values.argmax())
    x, value = observed[best], values[best]
    if search:
        X, found = maximize(acqf, enc, 1, fidelity=target, num_restarts=num_restarts, raw_samples=raw_samples)
        if float(found[0]) > float(value):
            x, value = X[0], found[0]
    return x, value.detach()


def _believe(model: Model, X: torch.Tensor) -> Model:
    """``model`` conditioned on rows ``X`` (``k x (d + 1)``) observed at its posterior mean."""
    if not len(X):
        return model
    with torch.no_grad():
        mean = model.posterior(X).mean
    return model.condition_on_observations(X, mean)


def _pricer(levels: Sequence[FidelityOption]) -> Callable[[float], float]:
    """``fidelity -> cost`` of one experiment, by :func:`fidelity_cost_model`."""
    model = fidelity_cost_model([f.fidelity for f in levels], [f.cost for f in levels])
    exact = {f.fidelity: f.cost for f in levels}

    def cost(fidelity: float) -> float:
        if fidelity in exact:
            return exact[fidelity]
        return float(model(torch.tensor([[fidelity]], dtype=torch.float64)).reshape(()))

    return cost


def _augment(enc: Encoding, points: Sequence[dict[str, Any]], fidelities: Sequence[float]) -> torch.Tensor:
    """Points and their fidelities -> ``n x (d + 1)`` rows, the fidelity last."""
    return torch.cat([enc.encode(points), torch.tensor(fidelities, dtype=enc.dtype, device=enc.device).reshape(-1, 1)], dim=1)


def _value(acqf: AcquisitionFunction, x: torch.Tensor) -> float:
    """The acquisition value of one row ``x`` (``d + 1``)."""
    with torch.no_grad():
        return float(acqf(x[None, None, :]).reshape(()))


def _disc_prediction(disc: DiscrepancyModel, x: torch.Tensor) -> dict[str, float]:
    """The discrepancy model's target posterior at row ``x`` (``d + 1``): mean and std."""
    mean, std = disc.stats(x[None])
    return {"mean": float(mean[0]), "std": float(std[0])}
