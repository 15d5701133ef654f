"""Planners: the protocol, the search space, baselines and the registry."""

from selflab.planners.protocol import FidelityOption, Observation, Pending, PlanContext, Planner, Proposal, Recommendation, Recommender
from selflab.planners.registry import make_planner, planner_kinds
from selflab.planners.space import (
    CategoricalParameter,
    FloatParameter,
    IntParameter,
    Objective,
    OutcomeConstraint,
    SearchSpace,
)

__all__ = [
    "CategoricalParameter",
    "FidelityOption",
    "FloatParameter",
    "IntParameter",
    "Objective",
    "Observation",
    "OutcomeConstraint",
    "Pending",
    "PlanContext",
    "Planner",
    "Proposal",
    "Recommendation",
    "Recommender",
    "SearchSpace",
    "make_planner",
    "planner_kinds",
]
