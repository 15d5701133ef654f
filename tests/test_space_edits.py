"""Search-space edits as versioned ledger events, and the boundary check (issue 19, items 1 and 2)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import quadratic_config

from selflab.controller.cli import main
from selflab.controller.config import parse_config
from selflab.controller.ledger import Ledger
from selflab.controller.oversight import OversightWriter
from selflab.controller.projection import CampaignState
from selflab.controller.runner import Runner
from selflab.controller.space_cmd import SpaceWriter, parse_edit
from selflab.controller.space_edits import EditRefused, SpaceEdit, apply_edit, model_space
from selflab.controller.study import Study, StudyError
from selflab.planners.baselines import SobolPlanner
from selflab.planners.bo import BOPlanner
from selflab.planners.protocol import Observation, Pending, PlanContext, Proposal
from selflab.planners.space import CategoricalParameter, FloatParameter, IntParameter, Objective, SearchSpace

TESTS = Path(__file__).resolve().parent
PARAMS = [FloatParameter(name="x", low=0, high=1), IntParameter(name="n", low=1, high=5),
          CategoricalParameter(name="s", choices=["water", "ethanol"])]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``selflab ARGS`` in another process (the test drivers importable there too)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "selflab.controller.cli", *args], capture_output=True, text=True, env=env, timeout=60)


def config_study(url: str, **overrides: Any) -> Study:
    cfg = quadratic_config(ledger=url, planner={"kind": "sobol"}, **overrides)
    return Study.open(cfg)


def test_each_edit_and_its_refusals_writing_nothing(sqlite_url: str) -> None:
    space = SearchSpace(parameters=PARAMS)
    wide = apply_edit(space, SpaceEdit(op="widen", parameter="x", values=["-1", "2"]))
    assert (wide.parameters[0].low, wide.parameters[0].high) == (-1.0, 2.0)  # type: ignore[union-attr]
    narrow = apply_edit(space, SpaceEdit(op="narrow", parameter="n", values=[2, 4]))
    assert (narrow.parameters[1].low, narrow.parameters[1].high) == (2, 4)  # type: ignore[union-attr]
    added = apply_edit(space, SpaceEdit(op="add", parameter="t", values=[20, 80], backfill=25))
    assert added.names == ["x", "n", "s", "t"]
    cat = apply_edit(space, SpaceEdit(op="add", parameter="c", values=["a", "b"], backfill="a"))
    assert cat.parameters[-1].type == "categorical"
    fixed = apply_edit(space, SpaceEdit(op="fix", parameter="x", values=["0.4"]))
    assert fixed.parameters[0] == CategoricalParameter(name="x", choices=[0.4])
    freed = apply_edit(fixed, SpaceEdit(op="widen", parameter="x", values=[0, 1]), history=[space, fixed])
    assert freed.parameters[0] == FloatParameter(name="x", low=0, high=1)
    more = apply_edit(space, SpaceEdit(op="add_choice", parameter="s", values=["dmso"]))
    assert more.parameters[2].choices == ["water", "ethanol", "dmso"]  # type: ignore[union-attr]
    fewer = apply_edit(space, SpaceEdit(op="remove_choice", parameter="s", values=["water"]))
    assert fewer.parameters[2].choices == ["ethanol"]  # type: ignore[union-attr]
    refusals = {
        ("add", "t", (0, 1), None): "adding t needs a backfill value",
        ("widen", "q", (0, 2), None): "unknown parameter 'q' (the parameters are x, n, s)",
        ("widen", "x", (0.2, 0.9), None): "the new range must contain the old one",
        ("narrow", "x", (-1, 0.5), None): "the new range must lie inside the old one",
        ("narrow", "n", (1.5, 4), None): "n is an integer parameter",
        ("add_choice", "x", ("a",), None): "x is numeric",
        ("widen", "s", (0, 1), None): "s is categorical",
        ("remove_choice", "s", ("dmso",), None): "s has no choice 'dmso'",
        ("fix", "s", ("dmso",), None): "is not one of its choices",
        ("add", "x", (0, 1), 0.5): "has a parameter x already",
    }
    for (op, name, values, backfill), said in refusals.items():
        with pytest.raises(EditRefused, match="nothing was written") as caught:
            apply_edit(space, SpaceEdit(op=op, parameter=name, values=list(values), backfill=backfill))  # type: ignore[arg-type]
        assert said in str(caught.value) and "\n" not in str(caught.value)

    # In a campaign: limits with the config check's own words, and a refusal writes nothing.
    limited = [{"name": "q1", "driver": "labdrivers:Quadratic", "limits": {"x": [0.0, 1.5]}},
               {"name": "q2", "driver": "labdrivers:Quadratic", "limits": {"x": [-0.5, 1.2]}}]
    with config_study(sqlite_url, instruments=limited) as study:
        before = len(study.ledger.events("quad"))
        for args, kwargs, said in [
            (("widen", "x", 0, 2), {}, "parameters[0]: x asks for [0, 2] but the instruments' limits allow only [-0.5, 1.5] "
                                       "(q1 accepts [0, 1.5], q2 accepts [-0.5, 1.2]); narrow the parameter or widen a limit"),
            (("add", "w", 0, 1), {}, "adding w needs a backfill value"),
            (("narrow", "nope", 0, 1), {}, "unknown parameter 'nope'"),
            (("stretch", "x", 0, 1), {}, "the edits are widen, narrow, add, fix"),
        ]:
            with pytest.raises(StudyError) as caught:
                study.edit_space(*args, **kwargs)
            assert said in str(caught.value)
        assert len(study.ledger.events("quad")) == before
        space = study.edit_space("widen", "x", -0.5, 1.5, by="ada", reason="optimum on the bound")
        assert space.parameters[0] == FloatParameter(name="x", low=-0.5, high=1.5)
        study.edit_space("add", "w", 0, 10, backfill=3, by="ada")
        [first, second] = [e for e in study.ledger.events("quad") if e.kind == "space_changed"]
        assert first.payload["version"] == 1 and first.payload["by"] == "ada" and first.payload["reason"] == "optimum on the bound"
        assert first.payload["edit"] == {"op": "widen", "parameter": "x", "values": [-0.5, 1.5], "backfill": None, "kind": None,
                                         "log": False, "unit": None}
        assert second.payload["version"] == 2 and second.payload["edit"]["backfill"] == 3
        assert SearchSpace.model_validate(second.payload["space"]).names == ["x", "z", "w"]
        (trial,) = study.ask()
        assert trial.reason["space_version"] == 2 and not study.space.violations(trial.params)


def test_the_unfenced_writer_and_the_cli_words(ledger_url: str, tmp_path: Path) -> None:
    with Study.create("quad", [FloatParameter(name="x", low=0, high=1)], [Objective(name="y")], ledger=ledger_url,
                      planner=SobolPlanner()) as study:  # (the lease holder is busy; the writer is another process's)
        with SpaceWriter(ledger_url, "quad") as writer:
            event = writer.edit(parse_edit(["widen", "x", "0", "3"], None, None, False), by="ada", reason="bound")
            with pytest.raises(EditRefused, match="adding y2 needs a backfill value"):
                writer.edit(parse_edit(["add", "y2", "0", "1"], None, None, False), by="ada")
            with pytest.raises(EditRefused, match="unknown edit 'squash'"):
                parse_edit(["squash", "x"], None, None, False)
            assert len(writer.ledger.events("quad", after=event.id)) == 0
        assert event.payload["version"] == 1
        (trial,) = study.ask()  # (the holder follows the ledger)
        assert trial.reason["space_version"] == 1 and study.space.parameters[0].high == 3  # type: ignore[union-attr]


def run_until(cfg: dict[str, Any], url: str, edits: Sequence[Sequence[str]], after: int, cfg_path: Path, *,
              resume: bool = False) -> tuple[Any, list[subprocess.CompletedProcess[str]]]:
    """Run the campaign; once ``after`` experiments completed, make each edit with the CLI in another process."""
    done: list[subprocess.CompletedProcess[str]] = []

    async def main() -> Any:
        runner = Runner.from_config(parse_config(cfg), Ledger(url), resume=resume)

        async def person() -> None:
            if not edits:
                return
            while runner.state.counts()["completed"] < after:
                await asyncio.sleep(0.02)
            with OversightWriter(url, cfg["name"]) as writer:  # (held while the CLI starts: its start-up time varies)
                await asyncio.to_thread(writer.pause, "editing the space", by="ada")
                for edit in edits:
                    done.append(await asyncio.to_thread(cli, "space", str(cfg_path), *edit))
                await asyncio.to_thread(writer.resume, by="ada")

        helper = asyncio.create_task(person())
        stop = await asyncio.wait_for(runner.run(), 90)
        await asyncio.wait_for(helper, 30)
        return stop

    return asyncio.run(main()), done


def test_a_running_campaign_edited_from_another_process_carries_on_and_resumes_in_the_new_space(
        sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = quadratic_config(ledger=sqlite_url, planner={"kind": "sobol"}, stop={"max_experiments": 24},
                           instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "options": {"delay_s": 0.05}}])
    path = tmp_path / "quad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    stop, done = run_until(cfg, sqlite_url, [["narrow", "x", "0", "0.3", "--reason", "keep it cool", "--by", "ada"]], 4, path)
    assert stop.reason == "max_experiments"
    assert done[0].returncode == 0 and "space_changed v1" in done[0].stdout
    capsys.readouterr()
    assert main(["space", str(path), "add", "x", "0", "1", "--backfill", "0"]) == 2
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "x already; nothing was written" in said
    ledger = Ledger(sqlite_url, create=False)
    events = ledger.events("quad")
    [change] = [e for e in events if e.kind == "space_changed"]
    narrowed = SearchSpace.model_validate(change.payload["space"])
    proposed = [e for e in events if e.kind == "proposed"]
    after_edit = [e for e in proposed if e.payload["reason"].get("space_version") == 1]
    assert len(after_edit) >= 10 and all(e.id > change.id for e in after_edit)
    assert all(not narrowed.violations(e.payload["params"]) for e in after_edit)  # no proposal outside the new space
    assert all(e.id < change.id for e in proposed if "space_version" not in e.payload["reason"])
    assert not [e for e in events if e.kind == "abandoned" and e.payload["reason"] == "outside_space"]
    assert main(["status", str(path)]) == 0
    status = capsys.readouterr().out
    assert "space      version 1: x [0, 0.3], z [0, 1]" in status and "narrow x 0 0.3 by ada: keep it cool" in status
    # the edit's words may come after an option, as a person types them (argparse alone refused these)
    with pytest.raises(SystemExit):
        main(["space", str(path), "--ledger", sqlite_url, "widen", "x", "0", "0.4", "--bogus"])
    assert "unrecognized arguments: widen x 0 0.4 --bogus" in capsys.readouterr().err
    assert main(["space", str(path), "--ledger", sqlite_url, "narrow", "x", "-0", "0.3", "--by", "ada"]) == 2  # (-0: a value)
    assert "must lie inside the old one and be narrower" in capsys.readouterr().err
    assert main(["space", str(path), "--ledger", sqlite_url, "widen", "x", "0", "0.4", "--by", "ada"]) == 0
    assert "space_changed v2" in capsys.readouterr().out
    assert main(["space", str(path), "--reason", "back", "narrow", "x", "0", "0.3", "--by", "ada"]) == 0
    assert "space_changed v3" in capsys.readouterr().out

    # --resume carries on in the edited space (derived from the ledger; the config still says [0, 1]).
    cfg["stop"] = {"max_experiments": 30}
    path.write_text(yaml.safe_dump(cfg))
    stop, _ = run_until(cfg, sqlite_url, [], 0, path, resume=True)
    assert stop.reason == "max_experiments"
    state = CampaignState.replay("quad", ledger.events("quad"))
    assert state.space_view.version == 3 and state.space_view.space == narrowed
    last = max(e.experiment_id or 0 for e in proposed)
    resumed = [e for e in state.experiments.values() if e.experiment_id > last]
    assert len(resumed) >= 6 and all(e.reason["space_version"] == 3 and not narrowed.violations(e.params) for e in resumed)
    ledger.close()


def test_every_pre_edit_observation_stays_in_the_model(sqlite_url: str) -> None:
    space = [FloatParameter(name="x", low=0, high=1), FloatParameter(name="z", low=0, high=1)]
    planner = BOPlanner(num_restarts=2, raw_samples=32, mc_samples=32, n_init=5)
    with Study.create("model", space, [Objective(name="y")], ledger=sqlite_url, planner=planner) as study:
        for _ in range(8):
            (trial,) = study.ask()
            study.tell(trial.trial_id, {"y": 1 - (trial.params["x"] - 0.8) ** 2 - (trial.params["z"] - 0.5) ** 2})
        outside = [t for t in study.trials() if t.params["x"] > 0.5]
        assert outside  # (some observations fall outside the narrowed range)
        study.edit_space("narrow", "x", 0, 0.5)
        study.edit_space("add", "t", 10, 20, backfill=15)
        context = study.context()
        assert context.model_space is not None
        hull = context.model_space.parameters
        assert hull[0].high >= max(t.params["x"] for t in outside)  # type: ignore[union-attr]  # (the model spans old data)
        assert (hull[2].low, hull[2].high) == (10, 20)  # type: ignore[union-attr]
        assert all(o.params["t"] == 15 for o in study.observations())  # (the backfill fills earlier experiments)
        (trial,) = study.ask()
        assert trial.reason["strategy"] == "bo" and trial.reason["n_observations"] == 8  # every pre-edit observation modelled
        assert trial.reason["space_version"] == 2 and 0 <= trial.params["x"] <= 0.5 and 10 <= trial.params["t"] <= 20
        study.edit_space("fix", "z", 0.5)
        (trial,) = study.ask()
        assert trial.params["z"] == 0.5 and trial.reason["n_observations"] == 8


def test_pool_campaigns_filter_the_pool_again(sqlite_url: str) -> None:
    pool = [{"x": x / 10, "s": s} for x in range(11) for s in ("water", "ethanol")]
    space = [FloatParameter(name="x", low=0, high=1), CategoricalParameter(name="s", choices=["water", "ethanol"])]
    with Study.create("pool", space, [Objective(name="y")], ledger=sqlite_url, planner=SobolPlanner()) as study:
        study.edit_space("narrow", "x", 0, 0.45)
        study.edit_space("remove-choice", "s", "water")
        trials = study.ask(3, candidates=pool)
        assert len(trials) == 3 and all(t.params["x"] <= 0.45 and t.params["s"] == "ethanol" for t in trials)
        assert len(study.context(candidates=pool).candidates or ()) == 2  # (x in 0.0..0.4 with ethanol, less the 3 asked)


class EdgePlanner:
    """Proposes ``x`` on its high bound and ``z`` in the middle: what a model does when the optimum lies beyond a bound."""

    blocking = False

    def propose(self, space: SearchSpace, objectives: Sequence[Objective], observations: Sequence[Observation],
                pending: Sequence[Pending], n: int, *, context: PlanContext) -> list[Proposal]:
        x = space.parameters[0]
        return [Proposal(params={"x": x.high, "z": 0.4 + 0.01 * (context.step % 7)}, reason={"strategy": "edge"})  # type: ignore[union-attr]
                for _ in range(n)]


def test_boundary_hit_suggests_widening_once_per_bound_until_the_space_changes(sqlite_url: str,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    cfg = quadratic_config(ledger=sqlite_url, instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "limits": {"x": [0, 1.2]}}])
    with Study.open(cfg, planner=EdgePlanner()) as study:
        for k in range(1, 10):
            (trial,) = study.ask()
            study.tell(trial.trial_id, {"y": 0.5})
            hits = [e for e in study.ledger.events("quad") if e.kind == "boundary_hit"]
            assert len(hits) == (1 if k >= 5 else 0), k  # (fires at 5 of 5, and not again)
        [hit] = hits
        assert hit.payload == {"parameter": "x", "bound": "high", "value": 1.0, "fraction": 1.0, "window": 5, "space_version": 0,
                               "suggestion": "selflab space CONFIG widen x 0 1.2"}  # (half the range, within the limits)
        assert sum("boundary_hit: x sits on its high bound 1" in r.message for r in caplog.records) == 1
        study.edit_space("widen", "x", 0, 1.2)
        for _ in range(5):
            (trial,) = study.ask()
            study.tell(trial.trial_id, {"y": 0.5})
        hits = [e.payload for e in study.ledger.events("quad") if e.kind == "boundary_hit"]
        assert len(hits) == 2 and hits[1]["space_version"] == 1 and hits[1]["value"] == 1.2
        assert hits[1]["suggestion"] == "1.2 is the instruments' limit there: widen an instrument's limit first, then x"
        assert [h["parameter"] for h in study.state.space_view.hits] == ["x"]


def test_the_boundary_suggestion_and_study_edits_respect_the_drivers_declared_limits(sqlite_url: str) -> None:
    """The driver declares x <= 1.1 (its own ``limits``), narrower than the
    config's 1.2: a runner's boundary check suggests widening to 1.1, and its
    study's ``edit_space`` refuses 1.2 as ``selflab space`` does (before, the
    suggestion was a command that ``selflab space`` then refused)."""
    from selflab.controller.runner import Runner

    cfg = quadratic_config(ledger=sqlite_url, stop={"max_experiments": 6},
                           instruments=[{"name": "q1", "driver": "labdrivers:Quadratic", "limits": {"x": [0, 1.2]},
                                         "options": {"limits": {"x": [0, 1.1]}}}])
    ledger = Ledger(sqlite_url)
    runner = Runner.from_config(parse_config(cfg), ledger, planner=EdgePlanner())
    assert runner.study.limits == {"q1": {"x": (0.0, 1.1)}}
    with pytest.raises(StudyError, match=r"q1 accepts \[0, 1.1\]"):
        runner.study.edit_space("widen", "x", 0, 1.2)
    assert asyncio.run(runner.run()).reason == "max_experiments"
    [hit] = [e.payload for e in ledger.events("quad") if e.kind == "boundary_hit"]
    assert hit["suggestion"] == "selflab space CONFIG widen x 0 1.1"
    assert not [e for e in ledger.events("quad") if e.kind == "space_changed"]
    ledger.close()
    with Study.open(cfg, planner=EdgePlanner(), resume=True) as study:  # (a Python study has the config's limits only)
        assert study.limits == {"q1": {"x": (0.0, 1.2)}}


def test_model_space_is_the_hull_of_data_and_current_space() -> None:
    from selflab.controller.space_edits import SpaceView

    view = SpaceView()
    view.started([p.model_dump() for p in PARAMS])
    fixed = apply_edit(view.space, SpaceEdit(op="fix", parameter="x", values=[0.4]))  # type: ignore[arg-type]
    view.changed({"version": 1, "edit": {"op": "fix", "parameter": "x", "values": [0.4]}, "space": fixed.model_dump()}, None, 1)  # type: ignore[arg-type]
    fewer = apply_edit(fixed, SpaceEdit(op="remove_choice", parameter="s", values=["water"]))
    view.changed({"version": 2, "edit": {"op": "remove_choice", "parameter": "s", "values": ["water"]}, "space": fewer.model_dump()},
                 None, 1)  # type: ignore[arg-type]
    hull = model_space(view, [{"x": 0.9, "n": 7, "s": "water"}])
    assert hull is not None
    x, n, s = hull.parameters
    assert (x.type, x.low, x.high) == ("float", 0.0, 1.0)  # type: ignore[union-attr]  # (fixed, numeric in the model)
    assert (n.low, n.high) == (1, 7)  # type: ignore[union-attr]
    assert s.choices == ["ethanol", "water"]  # type: ignore[union-attr]  # (current choices first)



def test_a_widen_with_explore_looks_at_the_opened_range_first(sqlite_url: str) -> None:
    """``explore: N`` on a widen: the next N proposals are space-filling points
    whose widened parameter lies in the opened part only; counted from the
    ledger, so a resume neither repeats nor forgets them; a later edit ends them."""
    space = [FloatParameter(name="x", low=0.2, high=0.5), FloatParameter(name="z", low=0, high=1)]
    objective = [Objective(name="y", direction="minimize")]
    with Study.create("explore", space, objective, ledger=sqlite_url, planner=SobolPlanner(), seed=3) as study:
        for trial in study.ask(4):
            study.tell(trial.trial_id, {"y": trial.params["x"]})
        with pytest.raises(StudyError, match="explore goes with widen only"):
            study.edit_space("narrow", "x", 0.3, 0.5, explore=2)
        study.edit_space("widen", "x", 0, 1, explore=3, by="ada")
        first = study.ask(2)
        assert [t.reason["strategy"] for t in first] == ["explore_opened"] * 2
        assert all(t.params["x"] < 0.2 or t.params["x"] > 0.5 for t in first), [t.params for t in first]
        assert first[0].reason["opened"] == [[0.0, pytest.approx(0.2)], [pytest.approx(0.5), 1.0]]
        assert [t.reason["rank"] for t in first] == [0, 1]
    with Study.create("explore", space, objective, ledger=sqlite_url, planner=SobolPlanner(), seed=3, resume=True) as study:
        then = study.ask(2)
        assert [t.reason["strategy"] for t in then] == ["explore_opened", "sobol"]
        assert then[0].reason["rank"] == 2 and (then[0].params["x"] < 0.2 or then[0].params["x"] > 0.5)
        assert study.ask()[0].reason["strategy"] == "sobol"  # (the three are made)
        events = study.ledger.events("explore")
        assert [e.payload["planner"] for e in events if e.kind == "proposed"].count("explore_opened") == 3
        study.edit_space("widen", "z", 0, 2, by="ada")  # (no explore: the planner decides)
        assert study.ask()[0].reason["strategy"] == "sobol"
