"""Transports: how a driver's command lines reach a device.

A driver talks to a :class:`Transport` and never to pyserial or pyvisa
directly, so the same driver runs on a serial port, on a VISA resource or on
an emulator's pseudo-terminal; which one is a matter of configuration
(:func:`make_transport` builds it from :data:`LinkSettings`, a tagged union
on ``kind``).

Example::

    link = make_transport({"kind": "serial", "port": "/dev/ttyUSB0", "timeout_s": 0.5})
    await link.open()
    volts = await link.query("MEAS:VOLT?", parse=float, idempotent=True)
    await link.close()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Protocol, TypeVar, runtime_checkable

from pydantic import Field, TypeAdapter

from selflab.instruments.transports.base import TRANSPORT_LOGGER, LineSettings, LineTransport, log_frame
from selflab.instruments.transports.serial_port import READ_POLL_S, SerialSettings, SerialTransport
from selflab.instruments.transports.visa import VisaSettings, VisaTransport

__all__ = [
    "READ_POLL_S",
    "TRANSPORT_LOGGER",
    "LineSettings",
    "LineTransport",
    "LinkSettings",
    "SerialSettings",
    "SerialTransport",
    "Transport",
    "VisaSettings",
    "VisaTransport",
    "log_frame",
    "make_transport",
]

T = TypeVar("T")

LinkSettings = Annotated[SerialSettings | VisaSettings, Field(discriminator="kind")]
"""Settings of any transport, told apart by ``kind`` (``"serial"`` or ``"visa"``)."""

_ADAPTER: TypeAdapter[SerialSettings | VisaSettings] = TypeAdapter(LinkSettings)


@runtime_checkable
class Transport(Protocol):
    """A link that sends one command line and returns one parsed reply line."""

    name: str
    """Port or resource name, for messages."""

    async def open(self) -> None:
        """Open the link; :class:`~selflab.instruments.errors.InstrumentDisconnected` if it cannot."""

    async def close(self) -> None:
        """Close the link; safe to call twice."""

    async def query(
        self,
        command: str,
        *,
        parse: Callable[[str], T] = ...,  # type: ignore[assignment]
        idempotent: bool = False,
        timeout_s: float | None = None,
    ) -> T:
        """Send ``command``, return ``parse(reply)`` (see :meth:`LineTransport.query`)."""


def make_transport(settings: SerialSettings | VisaSettings | Mapping[str, Any]) -> LineTransport:
    """The transport for ``settings`` (a settings model or a plain dict with ``kind``).

    Raises:
        pydantic.ValidationError: the settings are invalid (unknown field, bad value).
    """
    model = _ADAPTER.validate_python(dict(settings)) if isinstance(settings, Mapping) else settings
    if isinstance(model, SerialSettings):
        return SerialTransport(model)
    return VisaTransport(model)
