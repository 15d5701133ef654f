"""The human-oversight commands: ``selflab approve|veto|edit|attach|result|note|pause|resume``.

Each writes one unfenced ledger event through
:class:`selflab.controller.oversight.OversightWriter` (any host, while a
runner holds the campaign's lease; it obeys within a second), or says in one
line why it was refused, having written nothing (exit 2)::

    selflab approve 7 --config lab.yaml
    selflab veto 8 --reason "too hot for the new reactor" --ledger sqlite:///runs/demo.sqlite
    selflab edit 9 temperature=80 time=30 --reason "cooler" --config lab.yaml
    selflab attach temperature=85 time=20 --result yield=0.61 --config lab.yaml
    selflab result 12 yield=0.58 --config lab.yaml      # an experiment attached without its result
    selflab note "new reagent batch" --config lab.yaml
    selflab pause --reason "cleaning" --config lab.yaml ; selflab resume --config lab.yaml

``--by`` defaults to the operating system's user. ``selflab stop`` (and the
console's emergency stop) asks a running campaign to stop the same way.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from selflab.controller.config import load_config
from selflab.controller.ledger import Ledger, LedgerError
from selflab.controller.oversight import ActionRefused, OversightWriter, default_actor


def register(subparsers: Any) -> None:
    """Add the oversight subcommands."""
    forms: dict[str, tuple[str, list[tuple[str, dict[str, Any]]]]] = {
        "approve": ("let a proposal awaiting approval be dispatched", [("id", {"type": int, "metavar": "ID"})]),
        "veto": ("refuse a proposal awaiting approval, with --reason; its neighbourhood is not proposed again",
                 [("id", {"type": int, "metavar": "ID"})]),
        "edit": ("change a proposal awaiting approval (NAME=VALUE ...), with --reason; it is dispatched so",
                 [("id", {"type": int, "metavar": "ID"}), ("params", {"nargs": "+", "metavar": "NAME=VALUE"})]),
        "attach": ("record an experiment of your own (NAME=VALUE ...), with --result NAME=VALUE ... or without",
                   [("params", {"nargs": "+", "metavar": "NAME=VALUE"})]),
        "result": ("give the result (NAME=VALUE ...) of an experiment you attached without one",
                   [("id", {"type": int, "metavar": "ID"}), ("outcomes", {"nargs": "+", "metavar": "NAME=VALUE"})]),
        "note": ("write a note into the campaign's ledger", [("text", {"metavar": "TEXT"})]),
        "pause": ("dispatch nothing new until resumed; experiments in flight finish", []),
        "resume": ("dispatch again after a pause", []),
    }
    for name, (text, positionals) in forms.items():
        p = subparsers.add_parser(name, help=text)
        for dest, options in positionals:
            p.add_argument(dest, **options)
        p.add_argument("--config", metavar="CONFIG", help="the campaign's config (its ledger and name)")
        p.add_argument("--ledger", metavar="URL", help="the campaign's ledger (instead of, or overriding, the config's)")
        p.add_argument("--campaign", metavar="NAME", help="which campaign, when the ledger holds several")
        p.add_argument("--by", default=None, metavar="WHO", help="who acts (default: the OS user)")
        if name in ("veto", "edit"):
            p.add_argument("--reason", required=True, help="why (recorded in the ledger)")
        elif name in ("approve", "pause", "resume"):
            p.add_argument("--reason", default="", help="why (optional, recorded)")
        if name == "attach":
            p.add_argument("--result", nargs="+", metavar="NAME=VALUE", help="its outcomes (omit: not measured yet)")
            p.add_argument("--fidelity", type=float, default=1.0)
            p.add_argument("--message", default="", help="a remark recorded with it")
        p.set_defaults(handler=handle)


def pairs(items: list[str], what: str) -> dict[str, str]:
    """``NAME=VALUE`` arguments as a mapping (values stay text: the action types them)."""
    found: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ActionRefused(f"{what}: {item!r} is not NAME=VALUE; nothing was written", 422)
        found[name.strip()] = value.strip()
    return found


def which_campaign(config_path: str | None, ledger: str | None, campaign: str | None,
                   missing: str = "give --config CONFIG or --ledger URL") -> tuple[str, str]:
    """The ledger URL and campaign a command acts on: the config's (``--ledger``
    overrides its ledger), else ``--ledger`` with ``--campaign``, or the
    ledger's only campaign. Raises :class:`ActionRefused` (one line) when
    neither is given or the ledger holds several campaigns and none is named."""
    url = ledger
    if config_path is not None:
        config = load_config(config_path, ledger=ledger)
        url, campaign = config.ledger_url, campaign or config.name
    if url is None:
        raise ActionRefused(missing, 422)
    if campaign is None:
        reader = Ledger(url, create=False)
        try:
            names = reader.campaigns()
        finally:
            reader.close()
        if len(names) != 1:
            raise ActionRefused(f"the ledger holds {len(names)} campaigns ({', '.join(names) or 'none'}); choose one with --campaign", 422)
        campaign = names[0]
    return url, campaign


def handle(args: argparse.Namespace) -> int:
    """Perform one action; 0 done, 2 refused or bad input (one line on stderr)."""
    command = args.command
    try:
        url, campaign = which_campaign(args.config, args.ledger, args.campaign)
        by = args.by or default_actor()
        with OversightWriter(url, campaign) as writer:
            if command == "approve":
                event = writer.approve(args.id, by=by, reason=args.reason)
            elif command == "veto":
                event = writer.veto(args.id, args.reason, by=by)
            elif command == "edit":
                event = writer.edit(args.id, pairs(args.params, "edit"), args.reason, by=by)
            elif command == "attach":
                result = pairs(args.result, "--result") if args.result else None
                event = writer.attach(pairs(args.params, "attach"), result, fidelity=args.fidelity, by=by, message=args.message)
            elif command == "result":
                event = writer.result(args.id, pairs(args.outcomes, "result"), by=by)
            elif command == "note":
                event = writer.note(args.text, by=by)
            elif command == "pause":
                event = writer.pause(args.reason, by=by)
            else:
                event = writer.resume(args.reason, by=by)
    except (ActionRefused, LedgerError) as exc:
        print(f"selflab {command}: {exc}", file=sys.stderr)
        return 2
    on = f" experiment {event.experiment_id}" if event.experiment_id is not None else ""
    print(f"{event.kind}{on} in campaign {campaign!r} by {by} (ledger event {event.id})")
    return 0


__all__ = ["handle", "pairs", "register", "which_campaign"]
