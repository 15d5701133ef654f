"""Output warping: a Box-Cox power of a positive objective, fitted to the data.

A GP models an objective best on a scale where it looks roughly Gaussian. A
positive quantity that spans decades (an instability index from 2e4 to 2e6,
a conductivity from 2 to 1200 S/cm) is dominated by its few largest values on
the raw scale, so a model fitted there resolves nothing among the best
points of a minimization. :func:`fit_warp` chooses a Box-Cox exponent
``lam`` by maximum likelihood (``scipy.stats.boxcox_normmax``) and limits it
to the side that only ever compresses the *bad* end:

* minimize: ``lam`` in [0, 1], between the log (``lam = 0``) and the
  identity (``lam = 1``): large, bad values are pulled in;
* maximize: ``lam`` in [1, 2]: small, bad values are pulled in.

So a yield that is mostly near zero with a few good results (right-skewed,
maximized) is never log-transformed: its fitted exponent is below 1 and is
clipped to the identity. Objectives with a zero or negative observation, or
fewer than :data:`MIN_POINTS` observations, are not warped.

The warp is monotone increasing, so the best point and every ranking stay the
same; the model (and its acquisition) works on the warped scale, and
predictions are mapped back with :meth:`BoxCox.untransform` (the warped mean
maps to the posterior median; the standard deviation by the delta method).

Example::

    warp = fit_warp(torch.tensor([2.4e4, 5e4, 1.4e5, 2.7e5, 4.6e5, 1.3e6, 1.8e6, 9e5]), "minimize")
    warp.lam                 # 0.0 .. 1.0, here close to the log
    warp.inverse(warp.forward(y))   # y again
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

MIN_POINTS = 8
"""Fewer observations than this: no warp (the exponent would be a guess)."""

_RANGE = {"minimize": (0.0, 1.0), "maximize": (1.0, 2.0)}


@dataclass(frozen=True)
class BoxCox:
    """``z = (y**lam - 1) / lam`` (``log y`` at ``lam = 0``) for ``y > 0``."""

    lam: float

    def forward(self, y: Tensor) -> Tensor:
        y = y.clamp_min(torch.finfo(y.dtype).tiny)
        return torch.log(y) if self.lam == 0 else (y.pow(self.lam) - 1) / self.lam

    def inverse(self, z: Tensor) -> Tensor:
        if self.lam == 0:
            return torch.exp(z)
        return (self.lam * z + 1).clamp_min(torch.finfo(z.dtype).tiny).pow(1 / self.lam)

    def slope(self, y: Tensor) -> Tensor:
        """``dz/dy = y**(lam - 1)``: the warp's local scale factor at ``y``."""
        return y.clamp_min(torch.finfo(y.dtype).tiny).pow(self.lam - 1)

    def untransform(self, mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
        """Warped-scale mean and std -> original units (median, delta-method std)."""
        y = self.inverse(mean)
        return y, std / self.slope(y).clamp_min(torch.finfo(y.dtype).tiny)


def fit_warp(y: Tensor, direction: str) -> BoxCox | None:
    """The Box-Cox warp for the observed values ``y`` (1-D) of an objective, or
    ``None`` (identity) when the values are not all positive, too few, or the
    fitted exponent is the identity after clipping (see the module docs)."""
    values = y.detach().reshape(-1).cpu().double().numpy()
    if len(values) < MIN_POINTS or not (values > 0).all() or values.min() == values.max():
        return None
    from scipy.stats import boxcox_normmax

    try:
        lam = float(boxcox_normmax(values, method="mle"))
    except (ValueError, FloatingPointError, RuntimeError):
        return None
    low, high = _RANGE[direction]
    lam = min(max(lam, low), high) if math.isfinite(lam) else 1.0
    return None if lam == 1.0 else BoxCox(lam)
