"""A line transport over pyvisa, for instruments on GPIB, USBTMC, LXI or VISA serial.

Needs the ``visa`` extra (``pip install 'selflab[visa]'``). pyvisa calls
block, so each exchange runs in a worker thread (``asyncio.to_thread``); at
most one runs at a time per transport. ``library`` picks the VISA backend:
``"@py"`` (pyvisa-py), ``"@ivi"`` (a vendor library), or
``"path/to/devices.yaml@sim"`` (pyvisa-sim), which lets a driver be tested
against a simulated instrument with no hardware.

Failure mapping: a VISA timeout -> :class:`InstrumentTimeout`; a resource
that is missing, closed or whose connection was lost ->
:class:`InstrumentDisconnected`; an undecodable reply -> :class:`BadResponse`.

Example::

    settings = VisaSettings(resource="ASRL1::INSTR", library="tests/visa_hotplate.yaml@sim")
    link = VisaTransport(settings)
    await link.open()
    print(await link.query("TEMP?", parse=float, idempotent=True))
    await link.close()
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from selflab.instruments.errors import BadResponse, InstrumentDisconnected, InstrumentTimeout
from selflab.instruments.transports.base import LineSettings, LineTransport, log_frame

if TYPE_CHECKING:
    from pyvisa.resources import MessageBasedResource

__all__ = ["VisaSettings", "VisaTransport"]


class VisaSettings(LineSettings):
    """A VISA resource and its backend (see :class:`LineSettings` for the rest).

    Attributes:
        resource: VISA resource name, e.g. ``"TCPIP::192.168.0.5::INSTR"``.
        library: VISA backend: ``"@py"``, ``"@ivi"`` or ``"devices.yaml@sim"``.
    """

    kind: Literal["visa"] = "visa"
    resource: str = Field(min_length=1)
    library: str = "@py"


class VisaTransport(LineTransport):
    """Line queries through pyvisa (see the module docstring)."""

    def __init__(self, settings: VisaSettings) -> None:
        super().__init__(settings, settings.resource)
        self.settings: VisaSettings = settings
        self._resource: MessageBasedResource | None = None
        self._io = threading.Lock()  # a cancelled query's thread may still be talking

    def _link_is_up(self) -> bool:
        return self._resource is not None

    async def _open_link(self) -> None:
        self._close_link()
        self._resource = await asyncio.to_thread(self._open_blocking)

    def _open_blocking(self) -> MessageBasedResource:
        try:
            import pyvisa
        except ImportError:
            raise InstrumentDisconnected("pyvisa is not installed; pip install 'selflab[visa]'") from None
        s = self.settings
        try:
            manager = pyvisa.ResourceManager(s.library)
            resource: Any = manager.open_resource(
                s.resource, read_termination=s.read_termination, write_termination=s.write_termination,
                encoding=s.encoding, timeout=round(s.timeout_s * 1000),
            )
        except (pyvisa.Error, OSError, ValueError) as exc:
            detail = str(exc).replace("\\n", "\n").strip("'\n ").splitlines() or [type(exc).__name__]
            raise InstrumentDisconnected(f"{s.resource}: cannot open with VISA library {s.library!r}: {detail[-1]}") from None
        return resource  # type: ignore[no-any-return]

    def _close_link(self) -> None:
        resource, self._resource = self._resource, None
        if resource is not None:
            try:
                resource.close()
            except Exception:  # noqa: BLE001 - a vanished resource may fail to close in backend-specific ways
                pass

    async def _exchange(self, command: str, timeout_s: float) -> str:
        resource = self._resource
        assert resource is not None
        return await asyncio.to_thread(self._exchange_blocking, resource, command, timeout_s)

    def _exchange_blocking(self, resource: MessageBasedResource, command: str, timeout_s: float) -> str:
        import pyvisa
        from pyvisa.constants import StatusCode

        try:
            with self._io:
                resource.timeout = round(timeout_s * 1000)
                log_frame(self.name, "send", command + self.settings.write_termination)
                reply = resource.query(command)
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == StatusCode.error_timeout:
                raise InstrumentTimeout(f"{self.name}: no reply to {command!r} within {timeout_s:g} s") from None
            raise InstrumentDisconnected(f"{self.name}: {exc.description}") from None
        except pyvisa.errors.InvalidSession:
            raise InstrumentDisconnected(f"{self.name}: the VISA session is closed") from None
        except UnicodeDecodeError as exc:
            raise BadResponse(f"{self.name}: garbled reply to {command!r}: {exc}") from None
        log_frame(self.name, "receive", reply + self.settings.read_termination)
        return reply
