"""An asyncio line transport over pyserial that never blocks the event loop.

How it stays off the loop's critical path, in one of two ways chosen by what
the platform can do when the port opens:

* **The loop watches the port** (Linux, macOS: a selector event loop and a
  port with a file descriptor). The port is opened non-blocking (pyserial's
  POSIX backend uses ``O_NONBLOCK``; ``timeout=0`` and ``write_timeout=0``
  make ``read`` and ``write`` return at once), and ``loop.add_reader`` on its
  descriptor drains incoming bytes into a buffer as they arrive. A query
  writes its frame (waiting with ``loop.add_writer`` if the kernel buffer is
  full) and then awaits a future that the reader completes when the read
  terminator shows up. No thread, no ``time.sleep``. Measured on a
  pseudo-terminal against the emulator (2 shared CPU cores): a query round
  trip takes 0.4 ms, and a 1 ms ticker running beside 50 queries and one
  0.3 s wait for a silent device lagged 0.13 ms (median), 8 ms at worst
  (``tests/test_transport.py::test_never_blocks_the_loop`` asserts < 50 ms).
* **A worker thread reads** (Windows: its default proactor loop has no
  ``add_reader`` and pyserial's Windows port has no descriptor). A thread
  of the port's own runs pyserial's blocking ``read`` for at most
  :data:`READ_POLL_S` at a time and feeds the same buffer and future; a
  frame is written by a blocking ``write`` in another, bounded by
  ``write_timeout = timeout_s``. Replies arrive
  at most :data:`READ_POLL_S` after their bytes (``tests/test_portability.py``
  runs the transport's behaviour on a loop without ``add_reader``).

Opening the port runs in a worker thread in both cases, since a USB adapter
may take a moment. The port's threads are its own (two at most, started
when needed), not the loop's default executor, so a planner fitting in
``asyncio.to_thread`` on every default worker never delays a reply. pyserial (which imports its platform's backend at once)
is imported only then, so this module imports anywhere; pyserial's errors
are all ``OSError`` subclasses.

Failure mapping:

=====================================  ==================================
what happened                          raised
=====================================  ==================================
no reply at all within ``timeout_s``   :class:`InstrumentTimeout`
part of a line, then silence           :class:`BadResponse` (partial)
bytes the encoding cannot decode       :class:`BadResponse` (garbled)
port vanished, EIO, cannot be opened   :class:`InstrumentDisconnected`
=====================================  ==================================

Bytes that arrive between queries (a late reply to a timed-out query) are
discarded, and logged, before the next command is sent.

Example::

    link = SerialTransport(SerialSettings(port="/dev/ttyUSB0", baudrate=9600))   # or port="COM3"
    await link.open()
    print(await link.query("*IDN?", idempotent=True))
    await link.close()
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from selflab.instruments.errors import BadResponse, InstrumentDisconnected, InstrumentTimeout
from selflab.instruments.transports.base import LineSettings, LineTransport, log, log_frame

if TYPE_CHECKING:
    from serial import Serial

__all__ = ["READ_POLL_S", "SerialSettings", "SerialTransport"]

READ_POLL_S = 0.05
"""Where a worker thread reads: the longest one blocking ``read`` lasts, seconds
(how late a reply can be seen, and how long a closed port's thread lingers)."""


class SerialSettings(LineSettings):
    """A serial port and its framing (see :class:`LineSettings` for the rest).

    Attributes:
        port: device path, e.g. ``/dev/ttyUSB0``, ``COM3`` or an emulator's link path.
        baudrate: bits per second.
        bytesize, parity, stopbits: character format (default 8N1).
        exclusive: lock the port so no other process can open it (POSIX
            flock; Windows ports are always exclusive).
    """

    kind: Literal["serial"] = "serial"
    port: str = Field(min_length=1)
    baudrate: int = Field(default=9600, gt=0)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 2] = 1
    exclusive: bool = True


class SerialTransport(LineTransport):
    """Line-framed, non-blocking queries over a serial port (see the module docstring)."""

    def __init__(self, settings: SerialSettings) -> None:
        super().__init__(settings, settings.port)
        self.settings: SerialSettings = settings
        self._serial: Serial | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        """The descriptor the loop watches; ``None`` while a worker thread reads instead."""
        self._reader: asyncio.Task[None] | None = None
        self._threads: ThreadPoolExecutor | None = None
        """The port's own worker threads: opening, and where a thread reads, reading and writing."""
        self._buffer = bytearray()
        self._lost: str | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._terminator = settings.read_termination.encode(settings.encoding)

    @property
    def reads_in_thread(self) -> bool:
        """Whether a worker thread reads the open port (the loop cannot watch it)."""
        return self._reader is not None

    # --- hooks ------------------------------------------------------------------

    def _link_is_up(self) -> bool:
        return self._serial is not None and self._lost is None

    async def _open_link(self) -> None:
        self._close_link()
        s = self.settings
        try:
            serial = _pyserial()
        except ImportError as exc:
            raise InstrumentDisconnected(f"{s.port}: cannot open: pyserial has no backend on this platform ({exc})") from None
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="selflab-serial")
        loop = asyncio.get_running_loop()
        try:
            port = await loop.run_in_executor(self._threads, functools.partial(
                serial.Serial, s.port, s.baudrate, bytesize=s.bytesize, parity=s.parity, stopbits=s.stopbits,
                timeout=0, write_timeout=0, exclusive=s.exclusive,
            ))
        except (OSError, ValueError) as exc:  # pyserial's SerialException is an OSError
            errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            reason = os.strerror(errno) if errno else str(exc)
            self._close_link()
            raise InstrumentDisconnected(f"{s.port}: cannot open: {reason}") from None
        self._serial, self._lost = port, None
        self._buffer.clear()
        self._loop = loop
        self._fd = _watch(loop, port, self._on_readable)
        if self._fd is None:
            port.timeout, port.write_timeout = READ_POLL_S, s.timeout_s
            self._reader = loop.create_task(self._read_in_thread(port), name=f"serial reader {s.port}")

    def _close_link(self) -> None:
        port, self._serial = self._serial, None
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)  # a read in progress ends at cancel_read() below
        if port is None:
            return
        self._lost = self._lost or "closed"
        fd, self._fd = self._fd, None
        if fd is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)
        reader, self._reader = self._reader, None
        if reader is not None and not reader.get_loop().is_closed():
            reader.cancel()
        try:
            if reader is not None:
                port.cancel_read()  # end the reader thread's read() now
            port.close()
        except OSError:
            pass  # closing a port that already vanished
        self._wake()
        log.debug("%s: link closed", self.name)

    async def _exchange(self, command: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        if self._buffer:
            log_frame(self.name, "discard", bytes(self._buffer))
            self._buffer.clear()
        try:
            frame = (command + self.settings.write_termination).encode(self.settings.encoding)
        except UnicodeEncodeError as exc:
            raise BadResponse(f"{self.name}: cannot encode {command!r} as {self.settings.encoding}: {exc}") from None
        await self._write(frame, deadline)
        log_frame(self.name, "send", frame)
        line = await self._read_line(deadline, command, timeout_s)
        try:
            return line.decode(self.settings.encoding)
        except UnicodeDecodeError:
            raise BadResponse(f"{self.name}: garbled reply to {command!r}: {line!r} is not {self.settings.encoding}") from None

    # --- bytes --------------------------------------------------------------------

    def _on_readable(self) -> None:
        """Drain the port into the buffer (runs in the event loop, never blocks)."""
        port = self._serial
        if port is None:
            return
        try:
            data = port.read(max(port.in_waiting, 1))
        except OSError as exc:
            assert self._loop is not None and self._fd is not None
            self._loop.remove_reader(self._fd)
            self._port_lost(f"port vanished: {exc}")
            return
        self._received(data)

    async def _read_in_thread(self, port: Serial) -> None:
        """Where the loop cannot watch the port: one of its threads blocks in
        ``read()`` for at most :data:`READ_POLL_S` at a time, until the port is closed or lost."""
        loop = asyncio.get_running_loop()
        while self._serial is port and self._threads is not None:
            try:
                data = await loop.run_in_executor(self._threads, _read_available, port)
            except (OSError, TypeError, ValueError) as exc:  # TypeError, ValueError: closed under the read
                if self._serial is port:
                    self._port_lost(f"port vanished: {exc}")
                return
            if self._serial is port:
                self._received(data)

    def _received(self, data: bytes) -> None:
        if data:
            self._buffer += data
            if self._terminator in self._buffer:
                self._wake()

    def _port_lost(self, reason: str) -> None:
        self._lost = reason
        log.warning("%s: %s", self.name, reason)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _write(self, frame: bytes, deadline: float) -> None:
        if not self._link_is_up():
            raise InstrumentDisconnected(f"{self.name}: {self._lost}")
        if self._fd is None:
            await self._write_in_thread(frame)
            return
        view = memoryview(frame)
        while view:
            if not self._link_is_up():
                raise InstrumentDisconnected(f"{self.name}: {self._lost}")
            assert self._serial is not None
            try:
                sent = self._serial.write(view)
            except OSError as exc:
                self._lost = f"write failed: {exc}"
                raise InstrumentDisconnected(f"{self.name}: {self._lost}") from None
            view = view[sent or 0:]
            if view:
                await self._wait_writable(deadline)

    async def _write_in_thread(self, frame: bytes) -> None:
        """A blocking ``write`` in a worker thread, bounded by the port's ``write_timeout``."""
        assert self._serial is not None and self._threads is not None
        try:
            await asyncio.get_running_loop().run_in_executor(self._threads, self._serial.write, frame)
        except _pyserial().SerialTimeoutException:
            raise InstrumentTimeout(f"{self.name}: could not send within {self.settings.timeout_s:g} s (output buffer full)") from None
        except OSError as exc:
            self._lost = f"write failed: {exc}"
            raise InstrumentDisconnected(f"{self.name}: {self._lost}") from None

    async def _wait_writable(self, deadline: float) -> None:
        assert self._loop is not None and self._fd is not None
        ready = self._loop.create_future()
        fd = self._fd
        self._loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                await ready
        except TimeoutError:
            raise InstrumentTimeout(f"{self.name}: could not send within the timeout (output buffer full)") from None
        finally:
            self._loop.remove_writer(fd)
    async def _read_line(self, deadline: float, command: str, timeout_s: float) -> bytes:
        assert self._loop is not None
        while True:
            end = self._buffer.find(self._terminator)
            if end >= 0:
                line = bytes(self._buffer[:end])
                frame_end = end + len(self._terminator)
                log_frame(self.name, "receive", bytes(self._buffer[:frame_end]))
                del self._buffer[:frame_end]
                return line
            if self._lost is not None:
                raise InstrumentDisconnected(f"{self.name}: {self._lost} (waiting for the reply to {command!r})")
            left = deadline - time.monotonic()
            if left <= 0:
                if self._buffer:
                    partial = bytes(self._buffer)
                    log_frame(self.name, "discard", partial)
                    self._buffer.clear()
                    raise BadResponse(f"{self.name}: partial reply to {command!r}: {partial!r}, then "
                                      f"silence for {timeout_s:g} s")
                raise InstrumentTimeout(f"{self.name}: no reply to {command!r} within {timeout_s:g} s")
            self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(left):
                    await self._waiter
            except TimeoutError:
                pass
            finally:
                self._waiter = None


def _pyserial() -> ModuleType:
    """pyserial, with its platform's backend (imported on first use; then cached by Python)."""
    import serial

    return serial


def _watch(loop: asyncio.AbstractEventLoop, port: Serial, on_readable: Callable[[], None]) -> int | None:
    """Have ``loop`` call ``on_readable`` when ``port`` has bytes; the watched descriptor.

    ``None`` where that cannot be done: the loop has no ``add_reader``
    (Windows' proactor loop raises :class:`NotImplementedError`) or the port
    has no descriptor (pyserial on Windows raises ``io.UnsupportedOperation``).
    """
    try:
        fd = port.fileno()
        loop.add_reader(fd, on_readable)
    except (NotImplementedError, OSError, ValueError):
        return None
    return fd


def _read_available(port: Serial) -> bytes:
    """What the port has, waiting up to its ``timeout`` for a first byte (runs in a worker thread)."""
    return bytes(port.read(max(port.in_waiting, 1)))
