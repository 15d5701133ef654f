"""Reading a proposal's reason: the flags a planner writes that the controller acts on.

Torch-free, so that the controller (``selflab status``, the approval gate,
the console) reads a reason without loading the models that wrote it. The
flags themselves are computed in :mod:`selflab.planners.extrapolation`.

Example::

    is_extrapolating({"extrapolation": {"extrapolating": True, "distance_ratio": 3.1}})   # True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_extrapolating(reason: Mapping[str, Any]) -> bool:
    """Whether a proposal's reason flags it ``extrapolating``
    (``reason["extrapolation"]["extrapolating"]``; ``False`` when it has no flags).

    >>> is_extrapolating({"extrapolation": {"extrapolating": True}}), is_extrapolating({"strategy": "sobol"})
    (True, False)
    """
    flags = reason.get("extrapolation")
    return bool(flags.get("extrapolating")) if isinstance(flags, Mapping) else False
