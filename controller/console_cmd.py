"""``selflab console``: a live web page of a campaign, read from its ledger.

Usage::

    selflab console CONFIG [--host 127.0.0.1] [--port 8765]
    selflab console --ledger URL [--campaign NAME] [--host ...] [--port N]

Binds 127.0.0.1 unless ``--host`` says otherwise (then it warns). Actions
(stop, emergency stop) need the write token: from ``--token-file``, else
the ``SELFLAB_CONSOLE_TOKEN`` environment variable, else one made up and
printed at start. Reading needs none. Runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import Any

DEFAULT_PORT = 8765
NEEDS = ("starlette", "uvicorn", "sse_starlette", "jinja2", "multipart")


def register(subparsers: Any) -> None:
    """Add the ``console`` subcommand."""
    p = subparsers.add_parser("console", help="a live web page of a campaign (read-only; stop and other actions need a token)")
    p.add_argument("config", metavar="CONFIG", nargs="?")
    p.add_argument("--ledger", metavar="URL", help="read this ledger (instead of, or overriding, the config's)")
    p.add_argument("--campaign", metavar="NAME", help="the campaign / opens (default: the config's; without a config, a list)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--token-file", metavar="FILE", help="read the write token from FILE (else SELFLAB_CONSOLE_TOKEN, else a new one is printed)")
    p.add_argument("--nice", type=int, default=10, metavar="N",
                   help="run the console at this lower CPU priority (default 10; 0: as the shell), so that it never takes "
                        "cores from a campaign on the same machine")
    p.set_defaults(handler=handle)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535 (got {value})")
    return value


def handle(args: argparse.Namespace) -> int:
    """Serve the console until Ctrl-C; exit 2 with one line for bad input."""
    from selflab.controller.config import load_config
    from selflab.controller.ledger import Ledger, LedgerError, sqlite_path

    if args.config is None and args.ledger is None:
        print("selflab console: give a CONFIG or --ledger URL", file=sys.stderr)
        return 2
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        print(f"selflab console: the console needs {', '.join(missing)}: pip install 'selflab[console]'", file=sys.stderr)
        return 2
    url, campaign = args.ledger, args.campaign
    if args.config is not None:
        config = load_config(args.config, ledger=args.ledger)
        url, campaign = config.ledger_url, campaign or config.name
    path = sqlite_path(url)
    if path is None or (path.exists() and path.stat().st_size > 0):  # (a ledger not made yet is waited for)
        Ledger(url, create=False).close()  # a bad URL, an unreachable server, a file that is no ledger: LedgerError, exit 2

    from selflab.controller.console.actions import default_actions
    from selflab.controller.console.app import Console, ConsoleSettings
    from selflab.controller.console.security import TokenError, bind_warning, load_token
    from selflab.controller.console.server import ConsoleServer, listen
    from selflab.controller.progress import setup_logging

    setup_logging(quiet=False, debug=args.debug)
    try:
        token, source = load_token(args.token_file, os.environ)
    except TokenError as exc:
        print(f"selflab console: {exc}", file=sys.stderr)
        return 2
    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        print(f"selflab console: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); choose another --port or --host",
              file=sys.stderr)
        return 2
    warning = bind_warning(args.host)
    if warning:
        import logging

        logging.getLogger("selflab.console").warning("%s", warning)
    _quiet_model_threads()
    _lower_priority(args.nice)
    console = Console(ConsoleSettings(ledger_url=url, campaign=campaign, host=args.host), token, default_actions())
    server = ConsoleServer(console, sock)
    said = {"file": f"from {args.token_file}", "env": "from SELFLAB_CONSOLE_TOKEN", "generated": token}[source]
    print(f"selflab console: {server.url}" + (f"c/{campaign}" if campaign else "") + f"  (ledger {console.source.display_url})\n"
          f"  write token: {said}  (reading needs none; stop and the other actions do)\n"
          "  Ctrl-C to quit", file=sys.stderr, flush=True)
    try:
        server.serve()
    except LedgerError as exc:
        print(f"selflab console: {exc}", file=sys.stderr)
        return 2
    return 0


def _lower_priority(increment: int) -> None:
    """Yield the CPU to the campaign: a viewer must never slow the lab it shows."""
    if increment > 0 and sys.platform != "win32":
        os.nice(increment)


def _quiet_model_threads() -> None:
    """One thread for the model fits behind the GP slices, so that the console
    never takes the campaign's cores (torch is only imported to fit)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
