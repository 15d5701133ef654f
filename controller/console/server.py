"""Serving the console with uvicorn: in the foreground (``selflab console``) or
on a thread (tests, benchmarks).

The listening socket is bound before uvicorn starts (:func:`listen`), so a
port in use is one clear error, and ``port=0`` gets a free port whose number
is known at once.

Example::

    console = Console(ConsoleSettings(ledger_url=url), token)
    with ConsoleServer(console, listen("127.0.0.1", 0)).running() as server:
        print(server.url)    # http://127.0.0.1:PORT/
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator

import uvicorn

from selflab.controller.console.app import Console

log = logging.getLogger("selflab.console")


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (``port`` 0: a free one), listening.
    :class:`OSError` when it cannot be had (the port in use, no such address)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


class ConsoleServer:
    """uvicorn serving one :class:`Console` on one bound socket."""

    def __init__(self, console: Console, sock: socket.socket) -> None:
        self.console = console
        self.sock = sock
        config = uvicorn.Config(console.app(), log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=2, ws="none")
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def serve(self) -> None:
        """Serve until Ctrl-C (or :meth:`stop`)."""
        self.server.run(sockets=[self.sock])

    @contextlib.contextmanager
    def running(self, timeout_s: float = 20.0) -> Iterator[ConsoleServer]:
        """Serve on a thread while the block runs."""
        self._thread = threading.Thread(target=self.serve, name="selflab-console", daemon=True)
        self._thread.start()
        waited = threading.Event()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the console server stopped while starting")
            if waited.wait(0.02) or timeout_s <= 0:
                break
            timeout_s -= 0.02
        if not self.server.started:
            raise RuntimeError("the console server did not start in time")
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        """End the streams, stop serving, and wait for the thread."""
        self.console.hub.close_threadsafe()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self.sock.close()
