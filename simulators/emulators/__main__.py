"""``python -m selflab.simulators.emulators '<EmulatorConfig JSON>'``: serve in a child process.

Prints ``{"ports": {...}}`` on one line when the ports are up, logs to
standard error, and exits when standard input closes (the parent is gone or
done) or on SIGTERM. This is how drivers started with ``emulate: true`` run
their emulator (see :class:`selflab.instruments.drivers.emulated.EmulatorProcess`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys

from selflab.simulators.emulators.ptyport import PtyUnavailable, require_ptys
from selflab.simulators.emulators.server import EmulatorConfig, serve


async def _main(config: EmulatorConfig) -> None:
    require_ptys()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 4096):  # EOF: the parent closed the pipe or died
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)

    def ready(ports: dict[str, str]) -> None:
        print(json.dumps({"ports": ports}), flush=True)

    await serve(config, on_ready=ready, stop=stop)


def main() -> None:
    logging.basicConfig(level=os.environ.get("SELFLAB_EMULATOR_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S", stream=sys.stderr)
    config = EmulatorConfig.model_validate_json(sys.argv[1])
    try:
        asyncio.run(_main(config))
    except PtyUnavailable as exc:  # before the loop needs add_reader, which Windows' loop lacks too
        logging.getLogger("selflab.emulator").error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
