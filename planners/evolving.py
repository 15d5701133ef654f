"""Proposing in an edited search space while modelling every observation.

After search-space edits (:attr:`selflab.planners.protocol.PlanContext.model_space`)
a GP planner scales its inputs over the *model space*, the hull of the data
and the current space, so that every past observation stays in the model; its
acquisition optimizer must search only the *current* space. Both spaces have
the same parameters in the same order, and a categorical's current choices
come first in the model space's choices, so an encoded row (see
:mod:`selflab.planners.encoding`) means the same point in both. The search
encoding :func:`search_encoding` returns is the model encoding with

- each numeric column's bounds (and an integer's allowed values) narrowed to
  the current range, or held at one value for a fixed parameter (the current
  space holds it as a one-choice categorical);
- each categorical column's allowed values narrowed to the current choices;
- :meth:`~selflab.planners.encoding.Encoding.from_unit` drawing from the current space;
- :meth:`~selflab.planners.encoding.Encoding.to_unit` still on the model's bounds
  (distances keep their meaning when a column is held at one value).

Example::

    model = Encoding(context.model_space)
    search = search_encoding(model, space)
    X, values = maximize(acqf, search, q=2)   # rows inside the current space
    search.decode(X)                          # points of the current space
"""

from __future__ import annotations

import torch
from torch import Tensor

from selflab.planners.encoding import Encoding
from selflab.planners.space import CategoricalParameter, IntParameter, SearchSpace


class _Search(Encoding):
    """The model encoding narrowed to the current space (see the module docs)."""

    current: SearchSpace
    model_bounds: Tensor

    def from_unit(self, U: Tensor) -> Tensor:
        return self.encode([self.current.from_unit(u) for u in U.tolist()])

    def to_unit(self, X: Tensor) -> Tensor:
        return (X - self.model_bounds[0]) / (self.model_bounds[1] - self.model_bounds[0])


def search_encoding(model: Encoding, space: SearchSpace) -> Encoding:
    """``model`` (the encoding of the model space) restricted to ``space``, the
    current search space (same parameter names and order). Raises
    ``ValueError`` when ``space`` is no part of the model space."""
    if model.space.names != space.names:
        raise ValueError(f"the model space's parameters {model.space.names} differ from the search space's {space.names}")
    search = _Search(model.space, dtype=model.dtype, device=model.device)
    search.current, search.model_bounds = space, model.bounds
    low, high = model.bounds[0].clone(), model.bounds[1].clone()
    for i, (m, p) in enumerate(zip(model.space.parameters, space.parameters)):
        if isinstance(m, CategoricalParameter):
            assert isinstance(p, CategoricalParameter)
            index = [str(c) for c in m.choices]
            allowed = sorted(float(index.index(str(c))) for c in p.choices)
            search.cat_dims[i] = allowed
            low[i], high[i] = allowed[0], allowed[-1]
            continue
        if isinstance(p, CategoricalParameter):  # a fixed numeric parameter
            lo = hi = Encoding._forward(m.log, float(p.choices[0]))  # type: ignore[arg-type]
        else:
            lo, hi = Encoding._forward(p.log, p.low), Encoding._forward(p.log, p.high)
        low[i], high[i] = lo, hi
        if isinstance(m, IntParameter):
            search.discrete_dims[i] = [v for v in model.discrete_dims[i] if lo - 1e-9 <= v <= hi + 1e-9] or [lo]
    search.bounds = torch.stack([low, high])
    return search


__all__ = ["search_encoding"]
