"""The limits a campaign's search space must stay inside: each instrument's.

A config may give an instrument ``limits``; its driver may declare its own
(its ``limits``: :func:`~selflab.instruments.protocol.declared_limits`). A search-space edit
(``selflab space``, the console, ``Study.edit_space``) and the boundary
check's suggestion are checked against both, as the config check does.

Example::

    campaign_limits(state.config)   # {"reactor-1": {"temperature": (30.0, 140.0), "concentration": (0.1, 2.0), ...}, ...}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selflab.controller.config import ConfigError, parse_config
from selflab.controller.fleet import build_fleet
from selflab.controller.oversight import instrument_limits


def campaign_limits(config: Mapping[str, Any] | None) -> dict[str, dict[str, tuple[float, float]]]:
    """Instrument -> its limits, from a campaign's config snapshot: the
    config's limits narrowed by each driver's declared ones when the fleet can
    be built here (:func:`selflab.controller.fleet.build_fleet`), else the config's alone."""
    if not config or not config.get("instruments"):
        return {}
    try:
        stations = build_fleet(parse_config(dict(config)))
    except (ConfigError, ImportError, ValueError, TypeError, OSError):  # (a lab's driver not installed on this host, say)
        return instrument_limits(config)
    return {s.name: {k: (float(lo), float(hi)) for k, (lo, hi) in s.limits.items()} for s in stations}


__all__ = ["campaign_limits"]
