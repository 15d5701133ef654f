"""``selflab emulate``: serve emulated devices on pseudo-terminals until Ctrl-C.

Try a driver without hardware::

    $ selflab emulate pump --time-scale 60
    pump: /tmp/selflab-emu-k2j4/pump   (9600 8N1, lines end in CR LF)
    serving until Ctrl-C

then give that path as the driver's ``port``. ``rig`` serves the pump, the
hotplate and the spectrometer of one flow rig (they share its physics), for
:class:`~selflab.instruments.drivers.FlowSynthesis`. ``--faults`` takes a fault plan
as JSON, e.g. ``'{"rate": 0.2, "kinds": ["garble", "hang"]}'`` (see
:class:`selflab.simulators.emulators.FaultPlan`).

Your own device, described in a pyvisa-sim device file (see
:mod:`selflab.simulators.emulators.filedevice`)::

    $ selflab emulate --device examples/dosing_balance.yaml --link-dir /tmp/selflab-balance
    balance: /tmp/selflab-balance/balance   (9600 8N1, lines end in CR LF)
    serving until Ctrl-C

A file that cannot be served is one line on standard error and exit code 2;
a platform without pseudo-terminals (Windows) is one line and exit code 1.

The command lives with the emulators it serves, since neither the
controller nor the instruments may import simulators; ``selflab`` loads it by
name from :data:`selflab.controller.cli.COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from pydantic import ValidationError

from selflab.simulators.emulators import DeviceFileError, EmulatorConfig, PtyUnavailable, load_device_file, serve

__all__ = ["register"]

_CHOICES = {"pump": ["pump"], "hotplate": ["hotplate"], "spectrometer": ["spectrometer"],
            "rig": ["pump", "hotplate", "spectrometer"]}


def register(subparsers: Any) -> None:
    """Add the ``emulate`` subcommand to the ``selflab`` parser."""
    p = subparsers.add_parser("emulate", help="serve emulated lab devices on pseudo-terminals until Ctrl-C")
    p.add_argument("device", nargs="?", choices=sorted(_CHOICES), help="which device; 'rig' serves pump, hotplate and spectrometer")
    p.add_argument("--device", dest="device_file", metavar="FILE",
                   help="instead: serve the serial devices described in this pyvisa-sim device file (needs the visa extra)")
    p.add_argument("--seed", type=int, default=0, help="seed of sensor noise and faults (default 0)")
    p.add_argument("--time-scale", type=float, default=1.0, metavar="X",
                   help="emulated seconds per real second (default 1: real time)")
    p.add_argument("--faults", metavar="JSON", default="{}", help="fault plan as JSON (default: no faults)")
    p.add_argument("--link-dir", metavar="DIR", help="put the port links here (default: a new temporary directory)")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    if (args.device is None) == (args.device_file is None):
        print("selflab emulate: name a device (pump, hotplate, spectrometer, rig) or give --device FILE, not both",
              file=sys.stderr)
        return 2
    endings = {"pump": "CR LF", "hotplate": "CR LF", "spectrometer": "CR LF"}
    try:
        faults = json.loads(args.faults)
        if args.device_file is not None:
            endings = {d.name: _ENDINGS[d.termination] for d in load_device_file(args.device_file)}
        config = EmulatorConfig(devices=_CHOICES[args.device] if args.device else [], device_file=args.device_file,
                                seed=args.seed, time_scale=args.time_scale, faults=faults, link_dir=args.link_dir)
    except (ValueError, ValidationError) as exc:
        if isinstance(exc, ValidationError):
            message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        else:
            message = str(exc) if isinstance(exc, DeviceFileError) else f"--faults is not JSON: {exc}"
        print(f"selflab emulate: {message}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")

    def ready(ports: dict[str, str]) -> None:
        for name, path in ports.items():
            print(f"{name}: {path}   (9600 8N1, lines end in {endings[name]})")
        print("serving until Ctrl-C", flush=True)

    try:
        asyncio.run(serve(config, on_ready=ready, stop=asyncio.Event()))
    except KeyboardInterrupt:
        print("stopped")
    except PtyUnavailable as exc:
        print(f"selflab emulate: {exc}", file=sys.stderr)
        return 1
    return 0


_ENDINGS = {b"\r\n": "CR LF", b"\n": "LF", b"\r": "CR"}
