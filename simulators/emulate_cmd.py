"""``selflab emulate``: serve emulated devices on pseudo-terminals until Ctrl-C.

Try a driver without hardware::

    $ selflab emulate pump --time-scale 60
    pump: /tmp/selflab-emu-k2j4/pump   (9600 8N1, lines end in CR LF)
    serving until Ctrl-C

then give that path as the driver's ``port``. ``rig`` serves the pump, the
hotplate and the spectrometer of one flow rig (they share its physics), for
:class:`~instruments.drivers.FlowSynthesis`. ``--faults`` takes a fault plan
as JSON, e.g. ``'{"rate": 0.2, "kinds": ["garble", "hang"]}'`` (see
:class:`simulators.emulators.FaultPlan`).

The command lives with the emulators it serves, since neither the
controller nor the instruments may import simulators; ``selflab`` loads it by
name from :data:`controller.cli.COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from pydantic import ValidationError

from simulators.emulators import EmulatorConfig, serve

__all__ = ["register"]

_CHOICES = {"pump": ["pump"], "hotplate": ["hotplate"], "spectrometer": ["spectrometer"],
            "rig": ["pump", "hotplate", "spectrometer"]}


def register(subparsers: Any) -> None:
    """Add the ``emulate`` subcommand to the ``selflab`` parser."""
    p = subparsers.add_parser("emulate", help="serve emulated lab devices on pseudo-terminals until Ctrl-C")
    p.add_argument("device", choices=sorted(_CHOICES), help="which device; 'rig' serves pump, hotplate and spectrometer")
    p.add_argument("--seed", type=int, default=0, help="seed of sensor noise and faults (default 0)")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="X",
                   help="emulated seconds per real second (default 1: real time)")
    p.add_argument("--faults", metavar="JSON", default="{}", help="fault plan as JSON (default: no faults)")
    p.add_argument("--link-dir", metavar="DIR", help="put the port links here (default: a new temporary directory)")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    try:
        faults = json.loads(args.faults)
        config = EmulatorConfig(devices=_CHOICES[args.device], seed=args.seed, time_scale=args.time_scale,
                                faults=faults, link_dir=args.link_dir)
    except (ValueError, ValidationError) as exc:
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()) \
            if isinstance(exc, ValidationError) else f"--faults is not JSON: {exc}"
        print(f"selflab emulate: {message}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def ready(ports: dict[str, str]) -> None:
        for name, path in ports.items():
            print(f"{name}: {path}   (9600 8N1, lines end in CR LF)")
        print("serving until Ctrl-C", flush=True)

    try:
        asyncio.run(serve(config, on_ready=ready, stop=asyncio.Event()))
    except KeyboardInterrupt:
        print("stopped")
    return 0
