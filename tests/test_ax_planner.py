"""The ``ax`` planner on real Ax: valid proposals, pending respected, determinism."""

from __future__ import annotations

import pytest

pytest.importorskip("ax")

from selflab.planners.ax_planner import AxPlanner, _Codec  # noqa: E402
from selflab.planners.protocol import Observation, Pending, PlanContext  # noqa: E402
from selflab.planners.registry import make_planner  # noqa: E402
from selflab.planners.space import (  # noqa: E402
    CategoricalParameter,
    FloatParameter,
    IntParameter,
    Objective,
    OutcomeConstraint,
    SearchSpace,
)

MIXED = SearchSpace(parameters=[
    FloatParameter(name="rate", low=1e-3, high=10.0, log=True),
    IntParameter(name="layers", low=1, high=5),
    CategoricalParameter(name="solvent", choices=["water", "ethanol", 3]),
    FloatParameter(name="t", low=20, high=80),
])
PLANE = SearchSpace(parameters=[FloatParameter(name="x", low=0, high=1), FloatParameter(name="z", low=0, high=1)])


def bowl(p: dict) -> dict[str, float]:
    return {"yield": 1 - (p["x"] - 0.3) ** 2 - (p["z"] - 0.6) ** 2, "purity": p["z"]}


def test_initial_proposals_are_valid_typed_and_deterministic() -> None:
    planner = AxPlanner(initial_points=8)
    pending = [Pending(params={"rate": 1.0, "layers": 2, "solvent": "water", "t": 50.0})]
    context = PlanContext(seed=4, step=1)
    objectives = [Objective(name="yield", direction="maximize")]
    first = planner.propose(MIXED, objectives, [], pending, 3, context=context)
    again = planner.propose(MIXED, objectives, [], pending, 3, context=context)
    later = planner.propose(MIXED, objectives, [], pending, 3, context=context.model_copy(update={"step": 4}))
    assert len(first) == 3
    for proposal in first:
        assert MIXED.violations(proposal.params) == []
        assert isinstance(proposal.params["layers"], int) and proposal.params["solvent"] in ("water", "ethanol", 3)
        assert proposal.params != pending[0].params
        assert proposal.reason["strategy"] == "ax" and proposal.reason["generation_node"] == "Sobol"
    assert [p.params for p in first] == [p.params for p in again]
    assert [p.params for p in first] != [p.params for p in later]


def test_gp_proposal_respects_pending_and_constraints() -> None:
    planner = make_planner("ax", {"initial_points": 4})
    assert planner.blocking is True
    seen = [{"x": 0.1, "z": 0.2}, {"x": 0.8, "z": 0.9}, {"x": 0.5, "z": 0.5}, {"x": 0.2, "z": 0.7}, {"x": 0.9, "z": 0.1}]
    observations = [Observation(params=p, outcomes=bowl(p)) for p in seen]
    pending = [Pending(params={"x": 0.3, "z": 0.6})]  # the optimum: Ax must not propose it again
    context = PlanContext(seed=1, step=6, constraints=(OutcomeConstraint(outcome="purity", op=">=", value=0.3),))
    (proposal,) = planner.propose(PLANE, [Objective(name="yield")], observations, pending, 1, context=context)
    assert proposal.reason["generation_node"] == "MBM" and proposal.reason["fit_seconds"] > 0
    assert PLANE.violations(proposal.params) == []
    assert proposal.params not in [o.params for o in observations] + [p.params for p in pending]


def test_pool_proposals_are_distinct_unused_candidates() -> None:
    pool = tuple({"x": i / 10, "z": (i * 7 % 10) / 10} for i in range(10))
    proposals = AxPlanner().propose(PLANE, [Objective(name="yield")], [], [], 4, context=PlanContext(seed=2, candidates=pool))
    params = [p.params for p in proposals]
    assert len(params) == 4 and all(p in pool for p in params)
    assert len({tuple(sorted(p.items())) for p in params}) == 4


def test_several_objectives_with_reference_points_configure_ax() -> None:
    objectives = [Objective(name="yield", direction="maximize", reference_point=0.2), Objective(name="cost", direction="minimize")]
    constraint = OutcomeConstraint(outcome="purity", op=">=", value=0.9)
    codec = _Codec(PLANE, objectives, PlanContext(constraints=(constraint,)))
    assert codec.objective == "m0, -m1"
    assert codec.constraints == ["m2 >= 0.9", "m0 >= 0.2"]
    assert codec.data({"yield": 0.5, "cost": 2.0, "purity": 1.0, "other": 3.0}) == {"m0": 0.5, "m1": 2.0, "m2": 1.0}
    proposals = AxPlanner().propose(PLANE, objectives, [], [], 2, context=PlanContext(constraints=(constraint,)))
    assert len(proposals) == 2 and all(PLANE.violations(p.params) == [] for p in proposals)


def test_options_forbid_unknown_fields() -> None:
    with pytest.raises(ValueError, match="^ax planner option 'initial_point': Extra inputs are not permitted$"):
        AxPlanner(initial_point=3)
    with pytest.raises(ValueError, match="^ax planner option 'initial_points': "):
        AxPlanner(initial_points=0)
