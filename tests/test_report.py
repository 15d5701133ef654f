"""``selflab report``: figures drawn from real campaign ledgers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from selflab.controller.bench import bench_config
from selflab.controller.campaign import Campaign
from selflab.controller.cli import main
from selflab.controller.ledger import Ledger
from selflab.simulators.problems import get_problem

PNG = b"\x89PNG\r\n\x1a\n"


def campaign(problem: str, budget: int, url: str) -> dict:
    config = bench_config(get_problem(problem), "sobol", budget, 0, 2, url)
    ledger = Ledger(url)
    try:
        asyncio.run(Campaign(config, ledger).run())
    finally:
        ledger.close()
    return config.model_dump(mode="json")


def written(out: str) -> list[Path]:
    return [Path(line) for line in out.splitlines() if line.strip()]


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5_000


def test_two_objectives_give_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'mo.sqlite'}"
    campaign("branin_currin", 10, url)
    assert main(["report", "--ledger", url, "--out", str(tmp_path / "fig")]) == 0
    paths = written(capsys.readouterr().out)
    names = sorted(p.name for p in paths)
    expected = ["best_so_far.png", "cost_branin.png", "cost_currin.png", "pareto.png"]
    pytest.importorskip("selflab.planners.surrogate")
    expected += ["gp_slices_branin.png", "gp_slices_currin.png"]
    assert names == sorted(expected)
    for path in paths:
        assert path.parent == tmp_path / "fig"
        assert_png(path)


def test_few_results_skip_the_gp_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    config = campaign("gramacy", 2, url)
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["report", str(path), "--out", str(tmp_path / "fig")]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in written(captured.out)) == ["best_so_far.png", "cost_y.png"]
    assert "GP slices skipped: 2 completed result(s)" in captured.err
    for p in written(captured.out):
        assert_png(p)


def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["report", "--ledger", f"sqlite:///{tmp_path / 'none.sqlite'}", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_campaign_a_python_study_made_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``Study.create`` records its problem, not a lab (no instruments, no stop rule):
    ``selflab report`` still draws its figures from the ledger."""
    from selflab.controller.study import Study
    from selflab.planners.baselines import SobolPlanner
    from selflab.planners.space import FloatParameter, Objective

    url = f"sqlite:///{tmp_path / 'study.sqlite'}"
    with Study.create("notebook", [FloatParameter(name="x", low=0, high=1), FloatParameter(name="z", low=0, high=1)],
                      [Objective(name="y", direction="minimize")], ledger=url, planner=SobolPlanner()) as study:
        for trial in study.ask(5):
            study.tell(trial.trial_id, {"y": (trial.params["x"] - 0.3) ** 2 + trial.params["z"]})
    assert main(["report", "--ledger", url, "--out", str(tmp_path / "fig")]) == 0
    written = capsys.readouterr().out.split()
    assert {Path(p).name for p in written} >= {"best_so_far.png", "gp_slices_y.png", "cost_y.png"}
    assert all(Path(p).stat().st_size > 1000 for p in written)
