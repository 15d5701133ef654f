"""Search space <-> tensor encoding for the GP planners.

A point becomes one row of a ``n x d`` tensor, one column per parameter in
:attr:`SearchSpace.names` order:

- ``float``: the value, or ``log(value)`` on a log scale;
- ``int``: the integer, or ``log(integer)`` on a log scale;
- ``categorical``: the index of the choice, ``0 .. k-1``.

:attr:`Encoding.bounds` (``2 x d``) holds each column's range, which the
model's ``Normalize`` input transform maps to the unit cube. Integer columns
take only the values in :attr:`Encoding.discrete_dims`, categorical columns
those in :attr:`Encoding.cat_dims`; both are what botorch's mixed optimizer
searches over, so the optimizer proposes valid values by construction and
:meth:`Encoding.decode` (which rounds to the nearest allowed value and clips)
only removes floating-point dust.

Example::

    enc = Encoding(SearchSpace(parameters=[
        FloatParameter(name="t", low=1, high=100, log=True),
        IntParameter(name="k", low=1, high=5),
        CategoricalParameter(name="s", choices=["a", "b"]),
    ]))
    X = enc.encode([{"t": 10.0, "k": 3, "s": "b"}])  # tensor([[2.3026, 3., 1.]])
    enc.decode(X)                                     # [{'t': 10.000000000000002, 'k': 3, 's': 'b'}]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from selflab.planners.space import CategoricalParameter, IntParameter, Point, SearchSpace, Value


class Encoding:
    """Maps points of ``space`` to rows of a tensor and back (see module docs)."""

    def __init__(self, space: SearchSpace, *, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> None:
        self.space = space
        self.dtype, self.device = dtype, torch.device(device)
        low: list[float] = []
        high: list[float] = []
        self.discrete_dims: dict[int, list[float]] = {}
        """Column -> allowed values, for integer parameters."""
        self.cat_dims: dict[int, list[float]] = {}
        """Column -> allowed values (choice indices), for categorical parameters."""
        for i, p in enumerate(space.parameters):
            if isinstance(p, CategoricalParameter):
                values = [float(j) for j in range(len(p.choices))]
                self.cat_dims[i] = values
                low.append(0.0)
                high.append(max(values[-1], 1.0))  # one choice: keep a non-empty range for Normalize
            elif isinstance(p, IntParameter):
                self.discrete_dims[i] = [self._forward(p.log, v) for v in range(p.low, p.high + 1)]
                low.append(self._forward(p.log, p.low))
                high.append(self._forward(p.log, p.high))
            else:
                low.append(self._forward(p.log, p.low))
                high.append(self._forward(p.log, p.high))
        self.bounds: Tensor = torch.tensor([low, high], dtype=dtype, device=self.device)
        """``2 x d``: lower and upper bound of each column."""

    @property
    def dim(self) -> int:
        return self.space.dim

    @property
    def continuous(self) -> bool:
        """Whether every column is a float parameter."""
        return not self.discrete_dims and not self.cat_dims

    @staticmethod
    def _forward(log: bool, v: float) -> float:
        return math.log(v) if log else float(v)

    def encode(self, points: Sequence[Mapping[str, Value]]) -> Tensor:
        """``n`` points -> ``n x d`` tensor."""
        rows = []
        for point in points:
            row = []
            for p in self.space.parameters:
                v = point[p.name]
                if isinstance(p, CategoricalParameter):
                    row.append(float([str(c) for c in p.choices].index(str(v))))
                else:
                    row.append(self._forward(p.log, float(v)))  # type: ignore[arg-type]
            rows.append(row)
        return torch.tensor(rows, dtype=self.dtype, device=self.device).reshape(len(rows), self.dim)

    def decode(self, X: Tensor) -> list[Point]:
        """``n x d`` tensor -> ``n`` points, each one valid in the space.

        Columns are clipped to their bounds; integer columns are rounded to
        the nearest integer (in value, also on a log scale) and categorical
        columns to the nearest choice index.
        """
        lo, hi = self.bounds[0].tolist(), self.bounds[1].tolist()
        points: list[Point] = []
        for row in X.detach().cpu().tolist():
            point: Point = {}
            for i, (p, x) in enumerate(zip(self.space.parameters, row)):
                x = min(max(x, lo[i]), hi[i]) if math.isfinite(x) else lo[i]
                if isinstance(p, CategoricalParameter):
                    point[p.name] = p.choices[min(int(round(x)), len(p.choices) - 1)]
                elif isinstance(p, IntParameter):
                    v = round(math.exp(x)) if p.log else round(x)
                    point[p.name] = int(min(max(v, p.low), p.high))
                elif p.log:
                    point[p.name] = min(max(math.exp(x), p.low), p.high)
                else:
                    point[p.name] = x
            points.append(point)
        return points

    def snap(self, X: Tensor) -> Tensor:
        """``n x d`` -> ``n x d``: each row moved to the encoding of a valid point."""
        return self.encode(self.decode(X)) if len(X) else X

    def from_unit(self, U: Tensor) -> Tensor:
        """``n x d`` rows in the unit cube (as :meth:`SearchSpace.from_unit` reads them) -> valid encoded rows."""
        return self.encode([self.space.from_unit(u) for u in U.tolist()])

    def to_unit(self, X: Tensor) -> Tensor:
        """``n x d`` encoded rows -> ``n x d`` rows scaled by :attr:`bounds` to the unit cube."""
        return (X - self.bounds[0]) / (self.bounds[1] - self.bounds[0])
