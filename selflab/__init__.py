"""selflab: a closed-loop controller for self-driving labs.

The public Python API lives here; the parts live in ``selflab.controller``,
``selflab.instruments``, ``selflab.planners`` and ``selflab.simulators``.

>>> import selflab
>>> space = selflab.SearchSpace(parameters=[selflab.FloatParameter(name="x", low=0, high=1)])

Names are imported on first use, so ``import selflab`` (and the ``selflab``
command) stays fast until a planner is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Study": "selflab.controller.study",
    "Trial": "selflab.controller.study",
    "Problem": "selflab.controller.study",
    "StudyError": "selflab.controller.study",
    "Runner": "selflab.controller.runner",
    "InstrumentSettings": "selflab.controller.instrument_settings",
    "StopRules": "selflab.controller.config",
    "LabConfig": "selflab.controller.config",
    "ConfigError": "selflab.controller.config",
    "load_config": "selflab.controller.config",
    "parse_config": "selflab.controller.config",
    "Ledger": "selflab.controller.ledger",
    "SearchSpace": "selflab.planners.space",
    "FloatParameter": "selflab.planners.space",
    "IntParameter": "selflab.planners.space",
    "CategoricalParameter": "selflab.planners.space",
    "Objective": "selflab.planners.space",
    "OutcomeConstraint": "selflab.planners.space",
    "Observation": "selflab.planners.protocol",
    "Planner": "selflab.planners.protocol",
    "make_planner": "selflab.planners.registry",
    "Instrument": "selflab.instruments.protocol",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from selflab.controller.config import ConfigError, LabConfig, StopRules, load_config, parse_config
    from selflab.controller.instrument_settings import InstrumentSettings
    from selflab.controller.ledger import Ledger
    from selflab.controller.runner import Runner
    from selflab.controller.study import Problem, Study, StudyError, Trial
    from selflab.instruments.protocol import Instrument
    from selflab.planners.protocol import Observation, Planner
    from selflab.planners.registry import make_planner
    from selflab.planners.space import (
        CategoricalParameter,
        FloatParameter,
        IntParameter,
        Objective,
        OutcomeConstraint,
        SearchSpace,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'selflab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
