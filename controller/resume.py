"""What a starting runner settles of the run before it, so that a crash at any
moment leaves a ledger it can carry on from.

* :func:`settle_unsent` runs inside the start's transaction
  (:class:`selflab.controller.record.CampaignRecord`): work no worker claimed is
  withdrawn (so none can claim it now) and proposals never sent are
  ``abandoned``, except those under human oversight: a proposal awaiting
  approval still awaits, and an approved one is dispatched by the new run.
* :func:`reconcile` settles the experiments that were in flight: an
  instrument that remembers the outcome (:class:`~selflab.instruments.protocol.Remembering`)
  has it adopted as ``completed`` (``recovered``); a remote one is awaited
  again (its worker may still be at it); every other one becomes ``stale``,
  and with ``stale_policy: requeue`` its params are owed a new run.

Example::

    study = Study(problem, ledger, planner, on_start=settle_unsent(ledger, "demo", remote=False), resume=True)
    await reconcile(study, config, stations, flights)
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from selflab.controller import workqueue
from selflab.controller.config import LabConfig
from selflab.controller.execution import check_outcomes
from selflab.controller.fleet import Station
from selflab.controller.flights import Flights
from selflab.controller.ledger import Event, Ledger, NewEvent
from selflab.controller.projection import CampaignState
from selflab.controller.record import StartHook
from selflab.controller.study import Study
from selflab.instruments.errors import failure_kind
from selflab.instruments.protocol import Remembering

log = logging.getLogger("selflab")


def settle_unsent(ledger: Ledger, campaign: str, remote: bool) -> StartHook:
    """The start hook of ``selflab run``: inside the start's transaction,
    withdraw the previous run's work no worker claimed (``remote``: the
    campaign has remote instruments), and abandon what it proposed and never
    sent."""

    def settle(conn: sa.Connection, state: CampaignState, now: datetime) -> list[Event]:
        written: list[Event] = []
        if remote:
            written += workqueue.settle_in(conn, ledger, campaign, "open", "cancelled", lambda eid, inst: NewEvent(
                campaign=campaign, kind="abandoned", experiment_id=eid, instrument=inst, at=now,
                payload={"reason": "not_dispatched", "message": "queued for a worker but not claimed before the controller stopped"}))
        withdrawn = {e.experiment_id for e in written}
        written += ledger.insert_events(conn, [
            NewEvent(campaign=campaign, kind="abandoned", experiment_id=exp.experiment_id, at=now,
                     payload={"reason": "not_dispatched", "message": "proposed but not sent before the controller stopped"})
            for exp in state.with_status("proposed") if exp.experiment_id not in withdrawn and not exp.approval])
        return written

    return settle


async def reconcile(study: Study, config: LabConfig, stations: list[Station], flights: Flights) -> None:
    """Settle the experiments that were in flight when the controller stopped
    (see the module docs); remote ones go back into ``flights``."""
    state, name, now = study.state, config.name, study.clock.now()
    by_name = {s.name: s for s in stations}
    requeue = config.stale_policy == "requeue"
    events: list[NewEvent] = []
    for exp in state.with_status("dispatched"):
        if exp.attached:  # a person's own experiment, pending its result: not the controller's to settle
            continue
        station = by_name.get(exp.instrument or "")
        if station is not None and station.config.remote:  # its worker may still be at it: wait for it again
            flights.await_worker(exp.experiment_id, station, exp.params)
            continue
        outcomes = await recovered_outcome(station, exp.params, config) if station is not None else None
        if outcomes is not None:
            events.append(NewEvent(campaign=name, kind="completed", experiment_id=exp.experiment_id, instrument=exp.instrument,
                                   at=now, payload={"outcomes": outcomes, "recovered": True}))
            log.info("experiment %d: %s reported the outcome it finished while the controller was down: %s",
                     exp.experiment_id, exp.instrument, fmt(outcomes))
            continue
        events.append(NewEvent(campaign=name, kind="stale", experiment_id=exp.experiment_id, instrument=exp.instrument,
                               at=now, payload={"message": "in flight when the controller stopped; its result is unknown",
                                                "requeue": requeue}))
    written = study.record(events)
    stale = [e for e in written if e.kind == "stale"]
    if stale:
        log.warning("%d experiment(s) in flight at the last stop are stale%s", len(stale), "; requeued as new experiments" if requeue else "")
    owed = state.requeues_owed()
    if len(owed) > len(stale):
        log.info("%d stale experiment(s) of earlier stops are still owed a new run; requeued first", len(owed) - len(stale))


async def recovered_outcome(station: Station, params: dict[str, Any], config: LabConfig) -> dict[str, float] | None:
    """The outcome an instrument that remembers reports for ``params`` (checked), or ``None``."""
    if not isinstance(station.driver, Remembering) or not station.online:
        return None
    try:
        async with asyncio.timeout(station.config.timeout):
            result = await station.driver.outcome_of(dict(params))
        return None if result is None else check_outcomes(result, config.outcome_names, station.name, parameters=config.space.names)
    except Exception as exc:  # an unreadable memory is no outcome: the experiment goes stale
        log.warning("instrument %s could not report a past outcome: %s: %s", station.name, failure_kind(exc), exc)
        return None


def fmt(outcomes: dict[str, float]) -> str:
    """Readings as ``name=value`` for a log line."""
    return ", ".join(f"{k}={v:.4g}" for k, v in outcomes.items())


__all__ = ["reconcile", "recovered_outcome", "settle_unsent"]
