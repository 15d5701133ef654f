"""The live panel of a running campaign (rich, on a forced terminal)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from rich.console import Console

from selflab.controller.bench import bench_config
from selflab.controller.campaign import Campaign
from selflab.controller.ledger import Ledger
from selflab.controller.progress import LiveDisplay
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

