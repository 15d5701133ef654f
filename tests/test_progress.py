"""The live panel of a running campaign (rich, on a forced terminal)."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from selflab.controller.bench import bench_config, run_seed
from selflab.controller.campaign import Campaign
from selflab.controller.ledger import Ledger
from selflab.controller.progress import LiveDisplay, labelled_logs
from selflab.controller.projection import CampaignState
from selflab.simulators.problems import get_problem


def test_live_panel_best_counts_only_the_target_fidelity_in_a_multifidelity_campaign(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mf.sqlite'}"
    config = bench_config(get_problem("augmented_branin"), "mf", None, 3, 1, url, {"n_init": 8}, cost_budget=1.5)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    ledger = Ledger(url)
    try:
        with LiveDisplay(config, console, refresh_s=0) as display:
            asyncio.run(Campaign(config, ledger, display=display).run())
        state = CampaignState.replay(config.name, ledger.events(config.name))
    finally:
        ledger.close()
    done = [x for x in state.experiments.values() if x.status == "completed"]
    at_target = [x.outcomes["y"] for x in done if x.fidelity == 1.0]
    cheap = [x.outcomes["y"] for x in done if x.fidelity < 1.0]
    assert at_target and cheap and min(cheap) < min(at_target), "both fidelities ran; a cheap result looks better"
    text = out.getvalue()
    assert f"best y at fidelity 1 = {min(at_target):.4g}" in text
    assert f"= {min(cheap):.4g} " not in text



class _Lines(logging.Handler):
    """Keeps the formatted lines it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def selflab_logger() -> Iterator[logging.Logger]:
    """The ``selflab`` logger as a fresh process has it (no handlers, propagating),
    at INFO; restored afterwards. (Propagating, so that pytest, which attaches its
    own handlers to every logger that does not propagate, leaves it alone.)"""
    logger = logging.getLogger("selflab")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    logger.handlers.clear()
    logger.setLevel(logging.INFO)
    logger.propagate = True
    yield logger
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_a_bench_seed_labels_its_campaign_log_lines_with_problem_planner_and_seed(selflab_logger: logging.Logger) -> None:
    lines = _Lines()
    selflab_logger.addHandler(lines)
    run_seed(get_problem("branin"), "sobol", 3, seed=4)
    started = [line for line in lines.lines if "started on the simulated clock" in line]
    assert started and started[0].startswith("branin sobol seed 4: campaign bench-sobol-seed4 started"), lines.lines
    assert all(line.startswith("branin sobol seed 4: ") for line in lines.lines)
    logging.getLogger("selflab.controller.runner").info("after the seed")
    assert lines.lines[-1] == "after the seed"  # the label goes with the campaign
    assert lines.filters == []


def test_labelled_logs_without_a_handler_writes_labelled_warnings_to_stderr(selflab_logger: logging.Logger,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    study_log = logging.getLogger("selflab.controller.study")
    with labelled_logs("pool:100%.csv bo seed 2"):
        study_log.warning("boundary_hit: %s sits on its %s bound", "x4", "low")
        study_log.warning("a line without arguments, 100%")
        study_log.info("not shown: a worker shows warnings only")
    assert capsys.readouterr().err.splitlines() == [
        "pool:100%.csv bo seed 2: boundary_hit: x4 sits on its low bound",
        "pool:100%.csv bo seed 2: a line without arguments, 100%",
    ]
    assert selflab_logger.handlers == []
