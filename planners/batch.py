"""How the ``bo`` planner builds a batch of ``q`` points (parallel slots, plates).

The strategies (``planner.options.batch_strategy``):

- ``greedy``: sequential greedy optimization of the acquisition (qLogNEI):
  each point maximizes it given the pending points and the batch's earlier
  points (MC fantasies). The best per-point choice, but its cost grows with
  ``q`` (every point is a multi-start L-BFGS run over a joint posterior of
  the data, the pending points and the batch so far): 14 s for one q = 24
  plate at n = 96 on a loaded 2-core CPU.
- ``thompson``: pathwise Thompson sampling. ``q`` posterior sample paths of
  the GP are drawn at once (Matheron's rule over random Fourier features,
  botorch's ``get_matheron_path_model``), and each point is the maximizer of
  one path: started from the best of a candidate set (a scrambled Sobol set
  plus TuRBO-style perturbations of the best observed points, which keeps
  the search local where the data say the optimum is) and refined by one
  joint L-BFGS-B run over all paths. Paths are independent draws, so the
  batch spreads out by itself where the model is unsure and piles up where
  it is sure; its cost hardly grows with ``q``.
- ``hybrid``: the first ``batch_head`` points greedily (the acquisition's
  own best choices), the other ``q - batch_head`` by Thompson sampling.
- ``auto`` (default): ``greedy`` for ``q <= plate_from - 1`` (parallel
  reactors: 4 slots lose nothing to sequential, see ``benchmarks/RESULTS.md``,
  issue 22) and ``hybrid`` from ``plate_from`` points on (plates: one q = 24
  proposal in seconds, not minutes).

Thompson sampling needs one objective's GP that botorch can draw paths from
(a ``SingleTaskGP``; several outcomes or categorical inputs fall back to
``greedy``, and so does a pool, whose candidates are scored as a discrete set
by ``greedy`` anyway). With a pool, or with points to keep away from, every
strategy's points pass the planner's near-duplicate guard (``1e-3`` on the
unit cube, every coordinate; see :func:`selflab.planners.optimize.too_close`).

Each row's strategy is returned with the batch (``labels``), so that the
proposal's reason says which strategy made it and its rank in the batch.

Example::

    X, values, labels = thompson_batch(surrogate, objective, encoding, q=24, X_avoid=X_pending, seed=3)
    # X: 24 x d, values: 24 (each path's value at its maximizer), labels: ["thompson"] * 24
"""

from __future__ import annotations

from typing import Literal

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.objective import MCAcquisitionObjective
from botorch.generation.gen import gen_candidates_scipy
from botorch.models import SingleTaskGP
from botorch.sampling.pathwise.posterior_samplers import get_matheron_path_model
from gpytorch.kernels import Kernel
from torch import Tensor

from selflab.planners.encoding import Encoding
from selflab.planners.optimize import maximize, too_close
from selflab.planners.surrogate import Surrogate

BatchStrategy = Literal["auto", "greedy", "thompson", "hybrid"]
Resolved = Literal["greedy", "thompson", "hybrid"]
MIN_GAP = 1e-3
"""No two points of a batch (nor a batch point and a pending one) closer than this on the unit cube, in every coordinate."""


def resolve(strategy: BatchStrategy, q: int, *, plate_from: int, surrogate: Surrogate, pool: bool, learn_failures: bool) -> Resolved:
    """The strategy that builds a batch of ``q`` points (see module docs):
    ``auto`` by the size of the batch; Thompson sampling only where it applies
    (one continuous-input ``SingleTaskGP``, no pool, no feasibility
    weighting), ``greedy`` otherwise."""
    if q <= 1 or strategy == "greedy":
        return "greedy"
    if strategy == "auto":
        strategy = "greedy" if q < plate_from else "hybrid"
    if strategy != "greedy" and not thompson_applies(surrogate, pool=pool, learn_failures=learn_failures):
        return "greedy"
    return strategy


def thompson_applies(surrogate: Surrogate, *, pool: bool, learn_failures: bool) -> bool:
    """Whether pathwise Thompson sampling can build this batch."""
    return (not pool and not learn_failures and surrogate.encoding.continuous and len(surrogate.outcomes) == 1
            and type(surrogate.model) is SingleTaskGP)


def thompson_batch(
    surrogate: Surrogate,
    objective: MCAcquisitionObjective,
    encoding: Encoding,
    q: int,
    *,
    X_avoid: Tensor,
    seed: int,
    raw_samples: int = 2048,
    local_samples: int = 1024,
    starts: int = 3,
    maxiter: int = 100,
    region: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``q`` points (``q x d``) each maximizing its own posterior sample path,
    and each path's (objective) value there (``q``).

    Candidates: ``raw_samples`` scrambled Sobol points and ``local_samples``
    perturbations of the best observed points (a random subset of coordinates
    moved by ``N(0, 0.1 * lengthscale)`` on the unit cube, as TuRBO makes its
    candidates); each path starts from its ``starts`` best candidates that keep
    ``MIN_GAP`` away from ``X_avoid`` and the batch is refined by one L-BFGS-B
    run (``maxiter`` iterations). Rows too close to ``X_avoid`` or to each
    other are left for the caller's guard to replace. ``region``: search only
    :func:`trust_region`'s box of that side (tried on Hartmann6 plates, no
    better; not used by the planner, see ``benchmarks/RESULTS.md``, issue 22).
    """
    d = encoding.dim
    generator = torch.Generator(device="cpu").manual_seed(seed)
    paths = _paths(surrogate, q, seed)
    low, high = encoding.bounds if region is None else trust_region(surrogate, objective, region)
    C = torch.cat([_sobol(encoding, raw_samples, seed), _local(surrogate, objective, local_samples, generator)])
    C = C.clamp(low, high)
    if len(X_avoid):
        C = C[~too_close(encoding, C, X_avoid, MIN_GAP)]
    with torch.no_grad():
        scores = objective(paths(C)).reshape(q, -1)  # q x N
    k = min(starts, scores.shape[-1])
    top = scores.topk(k, dim=-1).indices  # q x k
    X0 = C[top].transpose(0, 1).unsqueeze(-2).contiguous()  # k x q x 1 x d

    def total(X: Tensor) -> Tensor:  # b x q x 1 x d -> b (sum of each path at its own row)
        return objective(paths(X)).reshape(X.shape[0], q).sum(-1)

    X, _ = gen_candidates_scipy(X0.reshape(k, q, d), lambda X: total(X.unsqueeze(-2)),
                                lower_bounds=low, upper_bounds=high, options={"maxiter": maxiter})
    with torch.no_grad():
        per_path = objective(paths(X.unsqueeze(-2))).reshape(k, q)  # k x q
    best = per_path.argmax(dim=0)  # q
    paths_idx = torch.arange(q, device=best.device)
    rows = X[best, paths_idx]
    return encoding.snap(rows.detach()), per_path[best, paths_idx].detach()


def hybrid_batch(
    acqf: AcquisitionFunction,
    surrogate: Surrogate,
    objective: MCAcquisitionObjective,
    encoding: Encoding,
    q: int,
    head: int,
    *,
    X_avoid: Tensor,
    seed: int,
    num_restarts: int,
    raw_samples: int,
    maxiter: int,
) -> tuple[Tensor, Tensor, list[str]]:
    """The first ``min(head, q)`` points by sequential greedy ``acqf`` (given
    ``X_avoid``), the rest by :func:`thompson_batch` (kept away from the
    head); their values (acquisition values, then path values) and labels."""
    h = min(head, q)
    X, values = maximize(acqf, encoding, h, X_pending=X_avoid, num_restarts=num_restarts, raw_samples=raw_samples, maxiter=maxiter)
    if q == h:
        return X, values, ["greedy"] * h
    Xt, vt = thompson_batch(surrogate, objective, encoding, q - h, X_avoid=torch.cat([X_avoid, X]), seed=seed, maxiter=maxiter)
    return torch.cat([X, Xt]), torch.cat([values, vt]), ["greedy"] * h + ["thompson"] * (q - h)


def trust_region(surrogate: Surrogate, objective: MCAcquisitionObjective, length: float) -> tuple[Tensor, Tensor]:
    """TuRBO's box (encoded ``low``, ``high``, each ``d``) around the observed
    point with the best posterior mean: side ``length`` on the unit cube times
    each lengthscale over their geometric mean, clipped to the space."""
    enc, X = surrogate.encoding, surrogate.data.X
    with torch.no_grad():
        centre = enc.to_unit(X[objective(surrogate.model.posterior(X).mean.unsqueeze(0)).reshape(-1).argmax()])
    ls = _lengthscales(surrogate).to(X)
    half = length * ls / ls.log().mean().exp() / 2
    span = enc.bounds[1] - enc.bounds[0]
    return enc.bounds[0] + (centre - half).clamp(0.0, 1.0) * span, enc.bounds[0] + (centre + half).clamp(0.0, 1.0) * span


def _paths(surrogate: Surrogate, q: int, seed: int) -> torch.nn.Module:
    """``q`` posterior sample paths; ``paths(X)`` for ``X`` of shape ``N x d``
    is ``q x N x 1``, and for ``b x q x 1 x d`` (one row per path) ``b x q x 1 x 1``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return get_matheron_path_model(surrogate.model, sample_shape=torch.Size([q]))


def _sobol(encoding: Encoding, n: int, seed: int) -> Tensor:
    """``n x d`` scrambled Sobol points, encoded (continuous spaces)."""
    U = torch.quasirandom.SobolEngine(encoding.dim, scramble=True, seed=seed).draw(n, dtype=encoding.dtype).to(encoding.device)
    return encoding.bounds[0] + U * (encoding.bounds[1] - encoding.bounds[0])


def _local(surrogate: Surrogate, objective: MCAcquisitionObjective, n: int, generator: torch.Generator) -> Tensor:
    """``n x d`` TuRBO-style perturbations of the 5 best observed points (by
    the objective of the posterior mean): each moves a random subset of
    coordinates (each with probability ``min(1, 20 / d)``) by Gaussian steps
    of 0.1 lengthscale on the unit cube, clipped to the box."""
    enc, X = surrogate.encoding, surrogate.data.X
    with torch.no_grad():
        mean = surrogate.model.posterior(X).mean  # n x 1
        best = objective(mean.unsqueeze(0)).reshape(-1).topk(min(5, len(X))).indices
    lengthscale = _lengthscales(surrogate).to(X)
    d = enc.dim
    centres = enc.to_unit(X[best])[torch.randint(len(best), (n,), generator=generator).to(X.device)]
    mask = torch.rand(n, d, generator=generator, dtype=X.dtype) < min(1.0, 20.0 / d)
    mask[torch.arange(n), torch.randint(d, (n,), generator=generator)] = True
    # (the draws stay on the CPU generator, so a batch is the same on every device; then moved to the data's)
    step = torch.randn(n, d, generator=generator, dtype=X.dtype).to(X.device) * 0.1 * lengthscale
    U = (centres + mask.to(X.device) * step).clamp(0.0, 1.0)
    return enc.bounds[0] + U * (enc.bounds[1] - enc.bounds[0])


def _lengthscales(surrogate: Surrogate) -> Tensor:
    """``d`` lengthscales of the GP on the unit cube (ones where the kernel has none)."""
    d = surrogate.encoding.dim
    for module in surrogate.model.modules():
        if isinstance(module, Kernel) and module.has_lengthscale and module.lengthscale.shape[-1] == d:
            return module.lengthscale.detach().reshape(-1, d)[0].clamp(0.01, 1.0)
    return torch.ones(d, dtype=surrogate.encoding.dtype)
