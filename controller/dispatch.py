"""One round of ask, route and submit: free slots in, experiments in flight out.

:class:`Dispatcher` fills the free instrument slots. It first sends the
proposals that wait for a busy instrument (its queue), then asks the study's
planner for as many more as the slots and budgets allow
(:func:`selflab.controller.scheduler.allowance`; stale experiments owed a new
run come first), routes each (:func:`~selflab.controller.scheduler.route_proposal`,
:func:`~selflab.controller.scheduler.pick_station`), and records the round in
one transaction: each proposal with its dispatch (or a work row for a
worker), the ones that must wait, and the ones refused (``abandoned``, with
the reason). Only then does it launch the experiments, so ``proposed`` and
``dispatched`` are always in the ledger before ``Instrument.run`` is called.

With human oversight (``oversight.approval``), a proposal the gate holds
(:func:`selflab.controller.oversight.gate`) is recorded ``proposed`` with
``awaiting_approval`` and routed nowhere; proposals awaiting count against
the allowance like queued ones (so no more await than there are free
slots), and each round first dispatches the proposals a person approved or
edited (with the edited params).

Example::

    dispatcher = Dispatcher(study, config, stations, flights, control, pool=None, doing=print)
    launched = await dispatcher.fill()
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from selflab.controller.config import LabConfig
from selflab.controller.fleet import Station
from selflab.controller.flights import Flights
from selflab.controller.ledger import NewEvent
from selflab.controller.oversight import ProposalFlagger, default_flaggers, gate
from selflab.controller.scheduler import (
    StopInfo,
    affordable,
    allowance,
    fidelities_on_offer,
    pick_station,
    queued_for,
    reservation,
    route_proposal,
    usable_stations,
)
from selflab.controller.stopping import StopControl
from selflab.controller.study import Study
from selflab.planners.protocol import DeclaresBlocking, MultiFidelity, Proposal

log = logging.getLogger("selflab")


def chooses_fidelity(planner: object) -> bool:
    """Whether ``planner`` chooses the fidelity of its proposals (:class:`MultiFidelity`)."""
    return isinstance(planner, MultiFidelity) and bool(planner.multi_fidelity)


def blocks(planner: object) -> bool:
    """Whether ``planner``'s calls run in a worker thread, off the event loop
    (:class:`DeclaresBlocking`; a planner that does not say does)."""
    return not isinstance(planner, DeclaresBlocking) or bool(planner.blocking)


class Dispatcher:
    """Fills free slots from the queue and the planner (see the module docs)."""

    def __init__(self, study: Study, config: LabConfig, stations: list[Station], flights: Flights, control: StopControl,
                 pool: list[dict[str, Any]] | None, doing: Callable[[str], None]) -> None:
        self.study, self.config, self.stations, self.flights, self.control = study, config, stations, flights, control
        self.pool = pool
        """The pool instruments' points (``None``: no pool): the planner proposes among the unmeasured ones."""
        self.doing = doing
        self.queue: dict[int, tuple[Proposal, list[Station]]] = {}
        """Proposed experiments waiting for a busy instrument that accepts them."""
        self.refusals = 0
        """Proposals in a row that ended without being dispatched (reset by a dispatch)."""
        self.last_refusal = ""
        self.approval = config.oversight.approval
        self.flaggers: list[ProposalFlagger] = default_flaggers(config.space, config.model_dump(mode="json"))
        """What flags a proposal for approval under ``approval: flagged`` (replace or extend freely)."""
        self.multi_fidelity = chooses_fidelity(study.planner)
        self.blocking = blocks(study.planner)
        """The planner's capabilities, read once (an ``isinstance`` on a Protocol takes microseconds)."""

    # --- what the budgets allow ---------------------------------------------------------

    def usable(self) -> list[Station]:
        """The stations the planner may send work to (see :func:`~selflab.controller.scheduler.usable_stations`)."""
        return usable_stations(self.stations, self.multi_fidelity, self.config.target_fidelity)

    def allowance(self, launching: int = 0, committed: float = 0.0, reserved: float = 0.0, priced: int = 0) -> int:
        """How many more experiments the budget allows to be proposed now,
        counting ``launching`` experiments (costing ``committed``) dispatched
        in this round but not yet in flight, and the proposals that wait (in
        the queue or for a person), ``priced`` of which hold ``reserved`` of
        the budget (:func:`~selflab.controller.scheduler.reservation`)."""
        state = self.study.state
        return allowance(self.usable(), self.config.stop, completed=state.counts()["completed"],
                         in_flight=len(self.flights) + launching, queued=len(self.queue) + self.held(),
                         cost_spent=state.cost_spent + committed, priced=priced, priced_cost=reserved)

    def held(self) -> int:
        """Proposals awaiting approval, and approved ones not yet in the queue or in flight."""
        state = self.study.state
        return len(state.awaiting()) + sum(1 for e in state.approved_unsent()
                                           if e.experiment_id not in self.queue and e.experiment_id not in self.flights.active)

    def budget_left(self) -> float:
        if self.config.stop.max_cost is None:
            return math.inf
        return self.config.stop.max_cost - self.study.state.cost_spent

    # --- a round ----------------------------------------------------------------------------

    async def fill(self) -> bool:
        """Dispatch queued proposals whose instrument is free, then ask for
        more; returns whether any experiment was launched."""
        state, name, now = self.study.state, self.config.name, self.study.clock.now()
        events: list[NewEvent] = []
        launches: list[tuple[int, Station, int, dict[str, Any]]] = []
        work: list[dict[str, Any]] = []
        budget_left = self.budget_left()
        reserved = 0.0  # what the proposals that wait (in the queue, or for a person) hold of the budget
        for exp in state.approved_unsent():  # a person approved (or edited) it: route it like a new one, with its params
            if exp.experiment_id not in self.queue and exp.experiment_id not in self.flights.active:
                proposal = Proposal(params=exp.params, fidelity=exp.fidelity, reason=exp.reason)
                route = route_proposal(proposal.params, proposal.fidelity, self.study.space, self.stations)
                if route.accepting:
                    self.queue[exp.experiment_id] = (proposal, list(route.accepting))
                else:
                    events.append(NewEvent(campaign=name, kind="abandoned", experiment_id=exp.experiment_id, at=now,
                                           payload={"reason": route.reason, "message": route.message}))
        for eid, (proposal, accepting) in list(self.queue.items()):
            outside = self.study.space.violations(state.space_view.filled(proposal.params))
            if outside:  # (a person edited the search space while it waited)
                del self.queue[eid]
                events.append(NewEvent(campaign=name, kind="abandoned", experiment_id=eid, at=now, payload={
                    "reason": "outside_space", "message": f"queued, but the search space changed: {'; '.join(outside)}"}))
                continue
            station = pick_station(accepting, budget_left, proposal.params)
            online = [s for s in accepting if s.online]
            if station is None and affordable(accepting, budget_left, proposal.params):
                hold = reservation(accepting, budget_left, proposal.params)
                budget_left, reserved = budget_left - hold, reserved + hold
                continue  # still waiting for one of its instruments, holding its cost
            del self.queue[eid]
            if station is None:
                why = "its instruments went offline" if not online else "the budget left cannot pay for it"
                events.append(NewEvent(campaign=name, kind="abandoned", experiment_id=eid, at=now,
                                       payload={"reason": "no_instrument", "message": f"queued, but {why}"}))
                self._refused(f"queued, but {why}")
                continue
            self.refusals = 0
            budget_left -= station.cost_of(proposal.params)
            launches.append(self._dispatch(eid, station, proposal, now, events, work))

        awaiting = state.awaiting()
        finite = math.isfinite(budget_left)
        for exp in awaiting if finite else ():  # held for a person, it holds its cost too, so that an approval finds the budget
            hold = reservation(route_proposal(exp.params, exp.fidelity, self.study.space, self.stations).accepting, budget_left, exp.params)
            budget_left, reserved = budget_left - hold, reserved + hold
        n = self.allowance(len(launches), self.budget_left() - budget_left - reserved if finite else 0.0, reserved if finite else 0.0,
                           priced=len(self.queue) + len(awaiting))
        proposals = [Proposal(params=e.params, fidelity=e.fidelity, reason={"strategy": "requeue", "requeue_of": e.experiment_id})
                     for e in state.requeues_owed()[:n]]
        if n > len(proposals):
            proposals += await self.propose(n - len(proposals))
        if (n > 0 and not proposals and not len(self.flights) and not self.queue and not self.held() and self.control.stop is None
                and state.hold is None):  # (a drift check may have paused the campaign just now)
            self.control.stop = StopInfo("planner_exhausted", f"planner {self.study.planner_kind} had nothing more to propose")
        first_id = state.next_experiment_id
        for i, proposal in enumerate(proposals[:n]):
            eid = first_id + i
            params = dict(proposal.params)
            [event] = self.study.proposed_events([proposal], first=eid)
            awaiting, flags = gate(self.approval, self.flaggers, proposal)
            if awaiting or flags:
                event = event.model_copy(update={"payload": {**event.payload, "awaiting_approval": awaiting, "flags": flags}})
            events.append(event)
            if awaiting:
                log.info("experiment %d awaits approval%s", eid, f" ({', '.join(flags)})" if flags else "")
                continue
            route = route_proposal(proposal.params, proposal.fidelity, self.study.space, self.stations)
            accepting = list(route.accepting)
            station = pick_station(accepting, budget_left, params)
            if station is not None:
                self.refusals = 0
                budget_left -= station.cost_of(params)
                launches.append(self._dispatch(eid, station, proposal, now, events, work))
            elif accepting and queued_for(accepting, [a for _, a in self.queue.values()]) < sum(s.capacity for s in accepting):
                self.queue[eid] = (proposal, accepting)  # an accepting instrument is busy: wait for it, holding its cost
                budget_left -= reservation(accepting, budget_left, params)
            else:
                reason, message = (route.reason, route.message) if not accepting else (
                    "no_instrument", "every instrument that accepts it is busy with a queue")
                events.append(NewEvent(campaign=name, kind="abandoned", experiment_id=eid, at=now,
                                       payload={"reason": reason, "message": message}))
                log.warning("experiment %d refused: %s", eid, message)
                self._refused(message)
        self.study.record(events, work)
        for eid, station, slot, params in launches:
            self.flights.launch(eid, station, slot, params, state.experiments[eid].expected_duration_s)
        return bool(launches)

    async def propose(self, n: int) -> list[Proposal]:
        """The planner's next ``n`` proposals for the fidelities on offer (and
        the pool's unmeasured points), fitted off the event loop; a planner
        that fails stops the run (``planner_error``)."""
        fidelities = fidelities_on_offer(self.stations, [a for _, a in self.queue.values()])
        self.doing(f"proposing {n} (fitting {self.study.planner_kind})")
        try:
            if self.blocking:  # fit models off the loop: instruments keep running
                return await asyncio.to_thread(self.study.propose, n, fidelities=fidelities, candidates=self.pool)
            return self.study.propose(n, fidelities=fidelities, candidates=self.pool)
        except Exception as exc:
            log.exception("planner %s failed", self.study.planner_kind)
            self.control.stop = StopInfo("planner_error", f"planner {self.study.planner_kind} failed: {type(exc).__name__}: {exc}")
            return []

    def drop_queue(self) -> list[NewEvent]:
        """Empty the queue: the ``abandoned`` events of proposals that will not run now."""
        now = self.study.clock.now()
        events = [NewEvent(campaign=self.config.name, kind="abandoned", experiment_id=eid, at=now,
                           payload={"reason": "not_dispatched", "message": "queued for a busy instrument when the campaign stopped"})
                  for eid in self.queue]
        self.queue.clear()
        return events

    def _dispatch(self, eid: int, station: Station, proposal: Proposal, now: datetime, events: list[NewEvent],
                  work: list[dict[str, Any]]) -> tuple[int, Station, int, dict[str, Any]]:
        """Take a slot on ``station`` for ``eid``: its dispatch goes into
        ``events`` (or its work row into ``work``); what to launch once recorded."""
        event, row, slot = self.flights.dispatch_record(eid, station, dict(proposal.params), proposal.fidelity, now)
        events += [event] if event is not None else []
        work += [row] if row is not None else []
        return eid, station, slot, dict(proposal.params)

    def _refused(self, message: str) -> None:
        """Count a proposal that ended without being dispatched (reset by a dispatch)."""
        self.refusals += 1
        self.last_refusal = message


__all__ = ["Dispatcher", "blocks", "chooses_fidelity"]
