"""``Campaign(config, ledger).run()``: the config-driven runner, as before.

The loop lives in :mod:`selflab.controller.runner` (:class:`Runner`); this
module keeps the older entry point and names importable. A campaign builds
its instruments and planner from the config when made, and opens its study
(taking the campaign's lease) when run.

Example::

    config = load_config("lab_configs/reactor_demo.yaml")
    stop = asyncio.run(Campaign(config, Ledger(config.ledger_url)).run())
    print(stop.reason)  # "max_experiments"
"""

from __future__ import annotations

from selflab.controller import lease
from selflab.controller.config import LabConfig, build_planner
from selflab.controller.events import TERMINAL_KINDS
from selflab.controller.execution import check_outcomes
from selflab.controller.fleet import Station, build_fleet, pool_of
from selflab.controller.ledger import Ledger
from selflab.controller.projection import CampaignState
from selflab.controller.runner import MAX_CONSECUTIVE_REFUSALS, Display, Runner
from selflab.controller.scheduler import StopInfo
from selflab.controller.study import Study, StudyError
from selflab.planners.protocol import Planner

CampaignError = StudyError
"""The campaign cannot start or go on; the message says what to do (a
:class:`selflab.controller.study.StudyError`: one error for both doors)."""


class Campaign:
    """One campaign run (or resumed) against one ledger, from its config."""

    def __init__(self, config: LabConfig, ledger: Ledger, *, resume: bool = False, planner: Planner | None = None,
                 display: Display | None = None, stations: list[Station] | None = None) -> None:
        self.config, self.ledger, self.resume, self.display = config, ledger, resume, display
        self.planner = planner or build_planner(config)
        self.stations = stations if stations is not None else build_fleet(config)
        self.runner: Runner | None = None
        self.study: Study | None = None
        """The campaign's record (ask/tell over the ledger), open while it runs."""

    @property
    def state(self) -> CampaignState:
        """The campaign's projection (empty before it runs)."""
        return self.study.state if self.study is not None else CampaignState(self.config.name)

    async def run(self, lease_ttl_s: float = lease.LEASE_TTL_S) -> StopInfo:
        """Open the study and run until a stop rule holds (see :meth:`Runner.run`)."""
        self._open_study(lease_ttl_s)
        assert self.runner is not None
        return await self.runner.run()

    def _open_study(self, lease_ttl_s: float) -> Study:
        """Open the campaign's study and its runner (see :meth:`Runner.from_config`)."""
        self.runner = Runner.from_config(self.config, self.ledger, resume=self.resume, planner=self.planner,
                                         stations=self.stations, display=self.display, lease_ttl_s=lease_ttl_s)
        self.study = self.runner.study
        return self.study


__all__ = ["MAX_CONSECUTIVE_REFUSALS", "Campaign", "CampaignError", "StopInfo", "TERMINAL_KINDS", "check_outcomes", "pool_of"]
