"""``selflab space``: edit a campaign's search space, while it runs or not.

Each edit is one unfenced ``space_changed`` ledger event (any process, while
a runner holds the campaign's lease; the runner follows the ledger and
proposes from the new space within a second), or a one-line refusal that
writes nothing (exit 2)::

    selflab space lab.yaml                                   # the current space, its version and edits
    selflab space lab.yaml widen temperature 30 180
    selflab space lab.yaml widen temperature 30 180 --explore 3   # ...and look at the opened range first
    selflab space lab.yaml narrow time 5 40 --reason "slow above 40 min"
    selflab space lab.yaml add stir 100 800 --backfill 300   # (--type int|categorical, --log)
    selflab space lab.yaml add solvent water ethanol --type categorical --backfill water
    selflab space lab.yaml fix pressure 1.0
    selflab space lab.yaml add-choice solvent dmso
    selflab space lab.yaml remove-choice solvent ethanol
    selflab space --ledger sqlite:///runs/demo.sqlite --campaign demo widen temperature 30 180

The edit is checked against the instruments' limits (the config's, narrowed
by each driver's declared limits when the driver can be built here), with the
config check's own words. The rules of each edit are
:mod:`selflab.controller.space_edits`'s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from selflab.controller.campaign_limits import campaign_limits
from selflab.controller.ledger import Event, Ledger, LedgerError, NewEvent
from selflab.controller.oversight import ActionRefused, default_actor, origin
from selflab.controller.oversight_cmd import which_campaign
from selflab.controller.projection import CampaignState
from selflab.controller.space_edits import OPS, EditRefused, SpaceEdit, edit_payload

CLI_OPS = tuple(op.replace("_", "-") for op in OPS)


def register(subparsers: Any) -> None:
    """Add ``selflab space``."""
    p = subparsers.add_parser("space", help="show or edit a campaign's search space while it runs: widen, narrow, add (with "
                              "--backfill), fix, add-choice, remove-choice", description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("words", nargs="*", metavar="[CONFIG] [OP NAME VALUE ...]",
                   help=f"OP is one of {', '.join(CLI_OPS)}; without OP: show the current space and its edits")
    p.add_argument("--ledger", metavar="URL", help="the campaign's ledger (instead of, or overriding, the config's)")
    p.add_argument("--campaign", metavar="NAME", help="which campaign, when the ledger holds several")
    p.add_argument("--backfill", metavar="VALUE", help="add: the value the new parameter had in the experiments so far (required)")
    p.add_argument("--explore", type=int, default=0, metavar="N",
                   help="widen: propose N space-filling points in the opened part of the range first (default 0: leave it to the planner)")
    p.add_argument("--type", dest="kind", choices=["float", "int", "categorical"],
                   help="add: the new parameter's type (default: float, or categorical when a value is not a number)")
    p.add_argument("--log", action="store_true", help="add: a log-scale numeric parameter")
    p.add_argument("--by", default=None, metavar="WHO", help="who edits (default: the OS user)")
    p.add_argument("--reason", default="", help="why (recorded in the ledger)")
    p.set_defaults(handler=handle)


class SpaceWriter:
    """Search-space edits from any process, with or without the campaign's
    lease: each is checked against the ledger as it stands (replayed inside
    the write transaction, so two edits get two versions) and appended unfenced."""

    def __init__(self, ledger: Ledger | str, campaign: str) -> None:
        self._own = not isinstance(ledger, Ledger)
        self.ledger = ledger if isinstance(ledger, Ledger) else Ledger(ledger)
        self.campaign = campaign

    def close(self) -> None:
        if self._own:
            self.ledger.close()

    def __enter__(self) -> SpaceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def state(self) -> CampaignState:
        return CampaignState.replay(self.campaign, self.ledger.events(self.campaign))

    def edit(self, edit: SpaceEdit, *, by: str = "", reason: str = "") -> Event:
        """Record ``edit``; raises :class:`EditRefused` (one line, nothing written).
        A database session cut meanwhile records it once (:meth:`Ledger.write`)."""
        limits = campaign_limits(self.state().config)  # (drivers are built outside the write transaction)

        def body(conn: sa.Connection) -> list[Event]:
            state = self.state()
            if state.starts == 0:
                raise EditRefused(f"the ledger {self.ledger.display_url} holds no campaign {self.campaign!r}; nothing was written")
            payload = edit_payload(state.space_view, edit, limits, by=by or default_actor(), reason=reason, origin=origin())
            return self.ledger.insert_events(conn, [NewEvent(campaign=self.campaign, kind="space_changed", payload=payload)])

        [event] = self.ledger.write(body) or []
        return event


def parse_edit(words: Sequence[str], backfill: str | None, kind: str | None, log: bool, explore: int = 0) -> SpaceEdit:
    """``OP NAME VALUE ...`` from the command line as a :class:`SpaceEdit` (values stay text: the edit types them)."""
    op = words[0].replace("-", "_")
    if op not in OPS:
        raise EditRefused(f"unknown edit {words[0]!r}; the edits are {', '.join(CLI_OPS)}")
    if len(words) < 2:
        raise EditRefused(f"{words[0]} needs a parameter name: selflab space CONFIG {words[0]} NAME ...")
    try:
        return SpaceEdit(op=op, parameter=words[1], values=list(words[2:]), backfill=backfill, kind=kind,  # type: ignore[arg-type]
                         log=log, explore=explore)
    except ValidationError as exc:
        raise EditRefused(f"{words[0]} {words[1]}: {exc.errors()[0]['msg']}") from None


def describe(state: CampaignState) -> str:
    """The current space, its version and its edits, for a person."""
    view = state.space_view
    if view.space is None:
        return f"campaign {state.campaign!r} has no search space yet"
    lines = [f"search space of {state.campaign!r}, version {view.version}:"]
    for p in view.space.parameters:
        if p.type == "categorical":
            shown = f"fixed at {p.choices[0]}" if len(p.choices) == 1 and view.version else f"one of {', '.join(map(str, p.choices))}"
        else:
            shown = f"[{p.low:g}, {p.high:g}]" + (" (log)" if p.log else "")
        lines.append(f"  {p.name:<20} {p.type:<12} {shown}")
    for e in view.edits:
        extra = f" (backfill {e['backfill']})" if e.get("backfill") is not None else ""
        lines.append(f"  v{e['version']}  {e['at'].isoformat()[:19]}  {e['op'].replace('_', '-')} {e['parameter']} "
                     f"{' '.join(map(str, e['values'] or []))}{extra} by {e['by'] or '?'}" + (f": {e['reason']}" if e["reason"] else ""))
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    """Show or edit; 0 done, 2 refused or bad input (one line on stderr)."""
    words = list(args.words)
    try:
        config_path = words.pop(0) if words and words[0].replace("-", "_") not in OPS else None
        try:
            url, campaign = which_campaign(config_path, args.ledger, args.campaign, missing="give CONFIG or --ledger URL")
        except ActionRefused as exc:
            raise EditRefused(str(exc)) from None
        if not words:
            reader = Ledger(url, create=False)
            try:
                print(describe(CampaignState.replay(campaign, reader.events(campaign))))
            finally:
                reader.close()
            return 0
        edit = parse_edit(words, args.backfill, args.kind, args.log, args.explore)
        by = args.by or default_actor()
        with SpaceWriter(url, campaign) as writer:
            event = writer.edit(edit, by=by, reason=args.reason)
    except (EditRefused, LedgerError) as exc:
        print(f"selflab space: {exc}", file=sys.stderr)
        return 2
    print(f"space_changed v{event.payload['version']} in campaign {campaign!r} by {by}: {' '.join(words)} (ledger event {event.id})")
    return 0


__all__ = ["SpaceWriter", "campaign_limits", "describe", "handle", "parse_edit", "register"]
