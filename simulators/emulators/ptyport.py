"""A pseudo-terminal published at a stable path, like a USB serial adapter.

``os.openpty()`` gives a new ``/dev/pts/N`` each time, so the port is
published as a symbolic link (e.g. ``/tmp/selflab-emu-x1y2/pump``) that is
re-pointed when the port comes back after a disconnect or a reboot, exactly
as udev re-creates ``/dev/serial/by-id/...`` when a cable is replugged. A
driver keeps using the link path.

The emulator keeps its own handle on the slave end open while the port is
up: without it, the master side reports a hang-up whenever no client has the
port open. Both ends are raw (no echo, no CR/LF translation).

Pseudo-terminals are POSIX (Linux, macOS): on Windows this module imports,
and :meth:`PtyPort.open` raises :class:`PtyUnavailable` (see
:func:`ptys_available`).

Example::

    port = PtyPort(Path("/tmp/pump"))
    port.open()                       # /tmp/pump -> /dev/pts/7
    os.write(port.master, b"OK\\r\\n")
    port.close()                      # /tmp/pump is gone: the port vanished
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import tty
except ImportError:  # no termios (Windows): no pseudo-terminals either
    tty = None  # type: ignore[assignment]

__all__ = ["PtyPort", "PtyUnavailable", "ptys_available", "require_ptys"]


class PtyUnavailable(OSError):
    """This platform has no pseudo-terminals (Windows), so no emulated port can be served."""


def ptys_available() -> bool:
    """Whether this platform can serve emulated ports (``os.openpty`` and ``tty``)."""
    return tty is not None and hasattr(os, "openpty")


def require_ptys() -> None:
    """Raise :class:`PtyUnavailable` unless :func:`ptys_available`."""
    if not ptys_available():
        raise PtyUnavailable("emulated devices are served on pseudo-terminals, which this platform lacks "
                             "(Linux and macOS have them; on Windows, run selflab under WSL)")


class PtyPort:
    """One emulated serial port: a pty whose slave is linked at ``link``."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self._slave = -1
        self.tty_name = ""
        """The current ``/dev/pts/N`` (empty while the port is absent)."""

    @property
    def is_open(self) -> bool:
        return self.master >= 0

    def open(self) -> str:
        """Create the pty and point :attr:`link` at it; returns the tty name.

        Raises:
            PtyUnavailable: the platform has no pseudo-terminals.
        """
        require_ptys()
        assert tty is not None
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.tty_name = os.ttyname(self._slave)
        staging = self.link.with_name(self.link.name + ".new")
        staging.unlink(missing_ok=True)
        staging.symlink_to(self.tty_name)
        staging.replace(self.link)  # atomic: the link never points nowhere while open
        return self.tty_name

    def close(self) -> None:
        """Remove the link and close the pty: the port vanishes. Safe to call twice."""
        self.link.unlink(missing_ok=True)
        for fd in (self.master, self._slave):
            if fd >= 0:
                os.close(fd)
        self.master = self._slave = -1
        self.tty_name = ""

    def write(self, data: bytes) -> int:
        """Write what the kernel takes now; returns the bytes written (0 if full)."""
        try:
            return os.write(self.master, data)
        except (BlockingIOError, OSError):
            return 0
