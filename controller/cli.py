"""The ``selflab`` command line.

Exit codes (:class:`selflab.controller.exit_codes.ExitCode`): 0 done; 1 the
campaign could not finish (no instrument left, the planner failed) or an
internal error; 2 bad input (config, ledger URL, arguments), with one line
per fault and never a traceback; 130 stopped by Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any
from pathlib import Path

from selflab.controller.config import ConfigError, LabConfig, load_config
from selflab.controller.exit_codes import ExitCode
from selflab.controller.ledger import Ledger, LedgerError, sqlite_path



def _parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("selflab")
    except PackageNotFoundError:  # (run from a source tree that was never installed)
        installed = "unknown (not installed)"
    parser = argparse.ArgumentParser(prog="selflab", description="Closed-loop controller for self-driving labs.")
    parser.add_argument("--version", action="version", version=f"selflab {installed}", help="print selflab's version and exit")
    parser.add_argument("--debug", action="store_true", help="debug logging, and tracebacks for internal errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a config; one line per fault, exit 2 if any")
    p.add_argument("config", metavar="CONFIG")

    sub.add_parser("schema", help="print the config's JSON Schema")

    p = sub.add_parser("run", help="run a campaign until its stop rules hold")
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("--resume", action="store_true", help="carry on a campaign from its ledger")
    p.add_argument("--quiet", action="store_true", help="no live progress; warnings and errors only")
    p.add_argument("--ledger", metavar="URL", help="ledger URL instead of the config's")
    p.add_argument("--lease", type=_positive_seconds, default=30.0, metavar="SECONDS",
                   help="the campaign lease: another controller may take over this long after this one stops renewing it (default 30)")

    for name, text in (("status", "counts, best so far, cost and instruments of a campaign"),
                       ("export", "one row per experiment, as CSV or JSON lines")):
        p = sub.add_parser(name, help=text)
        p.add_argument("config", metavar="CONFIG", nargs="?")
        p.add_argument("--ledger", metavar="URL", help="read this ledger (instead of, or overriding, the config's)")
        p.add_argument("--campaign", metavar="NAME", help="which campaign, when the ledger holds several")
        if name == "status":
            p.add_argument("--json", action="store_true", help="machine-readable output")
        else:
            p.add_argument("--format", choices=("csv", "jsonl"), default="csv")
            p.add_argument("--out", metavar="FILE", help="write here instead of standard output")

    p = sub.add_parser("worker", help="run a campaign's remote instruments on this host (shared Postgres ledger)")
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("--ledger", metavar="URL", help="the shared ledger (instead of, or overriding, the config's)")
    p.add_argument("--instruments", metavar="A,B", help="the remote instruments hosted here (default: every remote one)")
    p.add_argument("--lease", type=float, default=30.0, metavar="SECONDS", help="claim lease, renewed every third of it (default 30)")
    p.add_argument("--quiet", action="store_true", help="warnings and errors only")

    p = sub.add_parser("stop", help="emergency stop: abort a running campaign's experiments through stop(); it stays resumable")
    p.add_argument("config", metavar="CONFIG", nargs="?")
    p.add_argument("--ledger", metavar="URL", help="the campaign's ledger (instead of, or overriding, the config's)")
    p.add_argument("--campaign", metavar="NAME", help="which campaign, when the ledger holds several")
    p.add_argument("--wait", type=float, default=60.0, metavar="SECONDS", help="how long to wait for it to stop (default 60)")

    p = sub.add_parser("drivers", help="list the installed instrument drivers with their options and limits")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    for module in _command_modules():
        module.register(sub)
    return parser


COMMAND_MODULES = ("selflab.controller.bench_cmd", "selflab.controller.report_cmd", "selflab.simulators.emulate_cmd",
                   "selflab.controller.console_cmd", "selflab.controller.oversight_cmd",
                   "selflab.controller.space_cmd")
"""Modules that add subcommands: each has ``register(subparsers)``, which adds
parsers whose defaults set ``handler`` to a function ``(args) -> exit code``.
A module that is not there (yet) is skipped."""


def _command_modules() -> list[Any]:
    import importlib

    modules = []
    for name in COMMAND_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return modules


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds (got {text})")
    return value


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; a command whose positionals are free ``words``
    (``selflab space``) also takes them after its options (``selflab space
    CONFIG --ledger URL widen x 0 2``), which argparse alone refuses."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    words = vars(args).get("words")
    if extra and isinstance(words, list) and not any(_is_option(word) for word in extra):
        args.words = [*words, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _is_option(word: str) -> bool:
    """Whether a command-line word is an option (``--x``, ``-x``) rather than a value (``-5``)."""
    if not word.startswith("-"):
        return False
    try:
        float(word)
    except ValueError:
        return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        for fault in exc.faults:
            print(str(fault), file=sys.stderr)
        return ExitCode.BAD_INPUT
    except LedgerError as exc:
        print(f"selflab: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        print("selflab: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        return ExitCode.OK
    except Exception as exc:
        from selflab.controller.study import StudyError

        if isinstance(exc, StudyError):
            print(f"selflab: {exc}", file=sys.stderr)
            return ExitCode.BAD_INPUT
        damage = _sqlite_damage(exc)
        if damage is not None:  # (found past the ledger's own checks, e.g. by a campaign's writes)
            print(f"selflab: the ledger is damaged: {damage}; {RESTORE}", file=sys.stderr)
            return ExitCode.BAD_INPUT
        if args.debug:
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"selflab: internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)", file=sys.stderr)
        return ExitCode.FAILED


RESTORE = "restore it from a backup, or point --ledger elsewhere"


def _sqlite_damage(exc: BaseException) -> str | None:
    """SQLite's one-line complaint when ``exc`` says a database file is corrupt."""
    import sqlite3

    orig = getattr(exc, "orig", exc)
    if isinstance(orig, sqlite3.DatabaseError) and not isinstance(orig, sqlite3.OperationalError):
        return (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return None


def _dispatch(args: argparse.Namespace) -> int:
    handler = getattr(args, "handler", None)
    if handler is not None:
        return int(handler(args))
    if args.command == "schema":
        from selflab.controller.config import json_schema

        print(json.dumps(json_schema(), indent=2))  # (with planner_options: planner.options of each planner kind)
        return ExitCode.OK
    if args.command == "validate":
        return _validate(args)
    if args.command == "run":
        return _run(args)
    if args.command == "worker":
        from selflab.controller.progress import setup_logging
        from selflab.controller.worker import run_worker

        config = load_config(args.config, ledger=args.ledger)
        setup_logging(quiet=args.quiet, debug=args.debug)
        names = [n.strip() for n in args.instruments.split(",") if n.strip()] if args.instruments else None
        return run_worker(config, config.ledger_url, names, args.lease)
    if args.command in ("status", "export", "stop"):
        return _read(args)
    if args.command == "drivers":
        return _drivers(args)
    raise AssertionError(args.command)


def _drivers(args: argparse.Namespace) -> int:
    from selflab.instruments.describe import describe_driver
    from selflab.instruments.registry import DriverError, installed_drivers, resolve_driver

    found = []
    for name, target in sorted(installed_drivers().items()):
        try:
            found.append({"name": name, **describe_driver(resolve_driver(name))})
        except DriverError as exc:
            found.append({"name": name, "class": target, "error": str(exc)})
    if args.json:
        print(json.dumps(found, indent=2))
        return ExitCode.OK
    for info in found:
        print(f"{info['name']}  ({info['class']})" + (f" - {info['summary']}" if info.get("summary") else ""))
        if "error" in info:
            print(f"    cannot load: {info['error']}")
            continue
        for option in info["options"]:
            default = "required" if option.get("required") else f"default {option.get('default')!r}"
            print(f"    option {option['name']}: {option.get('type') or 'any'} ({default})")
        for key, (low, high) in (info.get("limits") or {}).items():
            print(f"    limit  {key}: [{low:g}, {high:g}]")
        if info.get("outputs"):
            print("    outputs " + ", ".join(f"{k} [{v}]" for k, v in info["outputs"].items()))
    return ExitCode.OK


def _validate(args: argparse.Namespace) -> int:
    from selflab.controller.config import read_config
    from selflab.controller.fleet import check_campaign

    config, stations, _ = check_campaign(read_config(args.config))  # (every fault at once, one line each)
    print(
        f"{args.config}: ok - campaign {config.name!r}, {len(config.parameters)} parameters, "
        f"{len(config.objectives)} objective(s), {len(stations)} instrument(s), "
        f"planner {config.planner.kind}, ledger {config.ledger_url}"
    )
    return ExitCode.OK


def _run(args: argparse.Namespace) -> int:
    from selflab.controller.config import read_config
    from selflab.controller.fleet import check_campaign
    from selflab.controller.progress import LiveDisplay, setup_logging
    from selflab.controller.runner import Runner

    # every config fault (fields, fleet, planner options) at once, before the ledger is touched
    config, stations, planner = check_campaign(read_config(args.config, ledger=args.ledger))
    console = setup_logging(quiet=args.quiet, debug=args.debug)
    if args.resume:
        _check_resumable(config)
    ledger = Ledger(config.ledger_url)
    try:
        if args.quiet:
            runner = Runner.from_config(config, ledger, resume=args.resume, stations=stations, planner=planner, lease_ttl_s=args.lease)
            stop = asyncio.run(runner.run())
        else:
            with LiveDisplay(config, console) as display:
                runner = Runner.from_config(config, ledger, resume=args.resume, stations=stations, planner=planner,
                                            display=display, lease_ttl_s=args.lease)
                stop = asyncio.run(runner.run())
    finally:
        ledger.close()
    code = ExitCode.for_stop(stop.reason)
    if not args.quiet or code != ExitCode.OK:
        import shlex

        where = shlex.join([args.config, *(["--ledger", ledger.display_url] if args.ledger else [])])
        print(f"campaign {config.name} stopped: {stop.reason}" + (f" - {stop.detail}" if stop.detail else "")
              + f"\nsee: selflab status {where} | selflab report {where} --out DIR | selflab export {where} --out FILE.csv",
              file=sys.stderr)
    return code


def _check_resumable(config: LabConfig) -> None:
    """Refuse ``--resume`` when the ledger holds nothing of the campaign (or is
    damaged), reading it read-only, so that a refusal creates nothing."""
    path = sqlite_path(config.ledger_url)
    if path is not None and not path.exists():
        raise LedgerError(f"nothing to resume: there is no ledger at {path}; run without --resume to start campaign {config.name!r}")
    nothing = f"nothing to resume: ledger {{}} holds no campaign {config.name!r}; run without --resume to start it"
    if path is not None and path.stat().st_size == 0:
        raise LedgerError(nothing.format(path))
    reader = Ledger(config.ledger_url, create=False)
    try:
        if config.name not in reader.campaigns():
            raise LedgerError(nothing.format(reader.display_url))
        reader.events(config.name)  # (every event readable, every page sound: a damaged ledger is refused before anything writes to it)
        if reader.backend == "sqlite":
            with reader.engine.connect() as conn:
                verdict = conn.exec_driver_sql("PRAGMA quick_check(1)").scalar()
            if verdict != "ok":
                found = " ".join(str(verdict).replace("*** in database main ***", "").split())
                raise LedgerError(f"ledger {reader.display_url} is damaged: {found}; {RESTORE}")
    finally:
        reader.close()


def _read(args: argparse.Namespace) -> int:
    from selflab.controller.oversight import format_oversight, oversight_status
    from selflab.controller.reports import format_status, load_state, status_dict

    if args.config is None and args.ledger is None:
        print(f"selflab {args.command}: give a CONFIG or --ledger URL", file=sys.stderr)
        return ExitCode.BAD_INPUT
    campaign = args.campaign
    url = args.ledger
    if args.config is not None:
        config = load_config(args.config, ledger=args.ledger)
        url = config.ledger_url
        campaign = campaign or config.name
    ledger = Ledger(url, create=False)
    try:
        state = load_state(ledger, campaign)
        if args.command == "stop":
            return _emergency_stop(ledger, state, args.wait)
        if args.command == "status":
            data = status_dict(state, ledger.writer_active(state.campaign))
            data["oversight"] = oversight_status(state)
            print(json.dumps(data, indent=2) if args.json else format_status(data) + "\n" + format_oversight(data["oversight"]))
            return ExitCode.OK
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "w", newline="", encoding="utf-8") as handle:
                n = _export(state, args.format, handle)
            print(f"wrote {n} experiments to {args.out}", file=sys.stderr)
        else:
            _export(state, args.format, sys.stdout)
        return ExitCode.OK
    finally:
        ledger.close()


def _export(state: Any, fmt: str, out: Any) -> int:
    """``selflab export``: the report's rows, with the oversight columns
    (:data:`~selflab.controller.columns.OVERSIGHT_COLUMNS`) when the campaign
    has human oversight; returns the number of rows."""
    from selflab.controller.columns import OVERSIGHT_COLUMNS
    from selflab.controller.oversight import oversight_cells
    from selflab.controller.reports import export_rows, write_export

    columns, rows = export_rows(state)
    overseen = ((state.config or {}).get("oversight") or {}).get("approval", "off") != "off" or any(
        e.approval for e in state.experiments.values())
    if overseen:  # (a campaign without oversight keeps the columns it always had)
        columns = columns + list(OVERSIGHT_COLUMNS)
        for row in rows:
            row.update(oversight_cells(state.experiments[row["experiment_id"]]))
    return write_export(state, fmt, out, (columns, rows))


def _emergency_stop(ledger: Ledger, state: Any, wait_s: float) -> int:
    """Ask the controller running ``state.campaign`` to abort, through the
    ledger (a ``stop_requested`` event: any host, any platform, no signal to
    a pid that might have been reused), and wait for it to stop."""
    import os
    import socket
    import time

    from selflab.controller.lease import active_holder
    from selflab.controller.ledger import NewEvent
    from selflab.controller.reports import format_status, load_state, status_dict

    holder = active_holder(ledger, state.campaign)
    started = [e for e in ledger.events(state.campaign) if e.kind == "campaign_started"]
    if holder is None:
        last = started[-1].payload if started and state.stopped is None else None
        why = (f": not running: its recorded controller (pid {last.get('pid')} on host {last.get('host')!r}) is gone, or that pid "
               "now belongs to another process; nothing was signalled or requested (resume it with selflab run CONFIG --resume)"
               if last is not None else " is not running")
        print(f"selflab stop: campaign {state.campaign!r}{why}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if started and started[-1].payload.get("controller", "run") != "run":
        print(f"selflab stop: campaign {state.campaign!r} is driven by a Python Study ({holder}), not by selflab run; "
              "nothing was requested: stop it from that program", file=sys.stderr)
        return ExitCode.BAD_INPUT
    writer = Ledger(ledger.url)  # (the reader is read-only)
    try:
        [request] = writer.append([NewEvent(campaign=state.campaign, kind="stop_requested", payload={
            "emergency": True, "by": "selflab stop", "origin": f"pid {os.getpid()} on host {socket.gethostname()!r}"})])
    finally:
        writer.close()
    print(f"emergency stop requested for campaign {state.campaign!r} (run by {holder}); waiting for it to abort its experiments",
          file=sys.stderr)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:  # done when the campaign records its stop
        if any(e.kind == "campaign_stopped" for e in ledger.events(state.campaign, after=request.id)):
            break
        time.sleep(0.1)
    else:
        print(f"selflab stop: the controller ({holder}) has not stopped after {wait_s:g} s; check it, or kill it "
              "(the campaign stays resumable)", file=sys.stderr)
        return ExitCode.FAILED
    print(format_status(status_dict(load_state(ledger, state.campaign), False)))
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
