"""How a driver reaches its devices: serial ports, VISA resources, or an emulator.

A bundled driver takes the same link options (all plain JSON, so a YAML
config can give them) and hands them to a :class:`Connection`:

==================  ===================================================
option              meaning
==================  ===================================================
``*port``           serial device path (``/dev/ttyUSB0``), or a VISA
                    resource name when ``visa_library`` is set
``baudrate``        serial speed, bits/s (default 9600)
``timeout_s``       seconds to wait for one reply line (default 1)
``retries``         resends of a read-only query, and reopen attempts
``backoff_s``       wait before the first retry, doubled each time
``visa_library``    use pyvisa with this backend (``@py``, ``x.yaml@sim``)
``emulate``         start a device emulator on connect(), stop it on close()
``emulator``        the emulator's options: ``seed``, ``time_scale``,
                    ``faults`` (:class:`selflab.simulators.emulators.FaultPlan`)
==================  ===================================================

The emulator is found by device name in the entry-point group
``selflab.emulators`` (:func:`~selflab.instruments.registry.resolve_emulator`), so
instruments never import the simulators that provide it.

:func:`driver_options` validates a driver's keyword arguments against their
annotations and reports every bad one on a single line.

Example::

    connection = Connection({"pump": "/dev/ttyUSB0"}, timeout_s=0.5)
    links = await connection.open()     # {"pump": SerialTransport}
    await connection.close()
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

from pydantic import Field, ValidationError, validate_call

from selflab.instruments.drivers.emulated import EmulatorProcess
from selflab.instruments.errors import InstrumentDisconnected
from selflab.instruments.registry import resolve_emulator
from selflab.instruments.transports import LineTransport, SerialSettings, VisaSettings, make_transport

__all__ = ["Connection", "Positive", "NonNegative", "driver_options"]

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A finite number > 0."""
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A finite number >= 0."""

F = TypeVar("F", bound=Callable[..., Any])


def driver_options(init: F) -> F:
    """Validate ``__init__`` arguments by their annotations; one-line errors.

    Raises :class:`ValueError` such as ``timeout_s: Input should be greater
    than 0 (got -1)``, which the registry reports as a bad option.
    """
    checked = validate_call(init)

    @functools.wraps(init)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return checked(*args, **kwargs)
        except ValidationError as exc:
            faults = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()]
            raise ValueError("; ".join(faults)) from None

    return wrapper  # type: ignore[return-value]


class Connection:
    """The links of one driver to its devices (see the module docstring).

    Args:
        ports: device name -> port path or VISA resource; names are the
            emulator's device names (``pump``, ``hotplate``, ``spectrometer``).

    Raises:
        ValueError: a port is missing (and ``emulate`` is off), ``emulate``
            is combined with ports or VISA, or the emulator options are bad.
        DriverError: ``emulate`` is on and no emulator serves these devices.
    """

    def __init__(
        self,
        ports: Mapping[str, str],
        *,
        baudrate: int = 9600,
        timeout_s: float = 1.0,
        retries: int = 2,
        backoff_s: float = 0.1,
        visa_library: str = "",
        emulate: bool = False,
        emulator: Mapping[str, Any] | None = None,
    ) -> None:
        self.ports = dict(ports)
        if emulate:
            if any(self.ports.values()) or visa_library:
                raise ValueError("emulate: true starts its own emulator; leave the ports and visa_library out")
            self.emulator_config = {**(emulator or {}), "devices": list(self.ports)}
            _check_emulator(self.emulator_config)
        else:
            missing = [f"{name}_port" if len(self.ports) > 1 else "port" for name, port in self.ports.items() if not port]
            if missing:
                raise ValueError(f"give {', '.join(missing)} (a serial device or VISA resource), or emulate: true")
            if emulator:
                raise ValueError("emulator options need emulate: true")
        self.emulate = emulate
        link = {"timeout_s": timeout_s, "retries": retries, "backoff_s": backoff_s}
        self._settings: Callable[[str], SerialSettings | VisaSettings]
        if visa_library:
            self._settings = lambda port: VisaSettings(resource=port, library=visa_library, **link)
        else:
            self._settings = lambda port: SerialSettings(port=port, baudrate=baudrate, **link)
        self._settings("checked")  # validates the link options now, not on connect()
        self.process: EmulatorProcess | None = None
        """The emulator child, while ``emulate`` is on and the link is open."""
        self.links: dict[str, LineTransport] = {}

    async def open(self) -> dict[str, LineTransport]:
        """Start the emulator if asked, open every link; device name -> transport.

        Raises:
            InstrumentDisconnected: a port cannot be opened or the emulator
                did not start.
        """
        await self.close()
        ports = self.ports
        if self.emulate:
            self.process = EmulatorProcess(self.emulator_config)
            ports = await self.process.start()
        try:
            for name, port in ports.items():
                link = make_transport(self._settings(port))
                await link.open()
                self.links[name] = link
        except InstrumentDisconnected:
            await self.close()
            raise
        return dict(self.links)

    async def close(self) -> None:
        """Close every link and stop the emulator; safe to call twice."""
        links, self.links = self.links, {}
        for link in links.values():
            await link.close()
        if self.process is not None:
            await self.process.stop()


def _check_emulator(config: Mapping[str, Any]) -> None:
    """Validate emulator options now, so ``selflab validate`` catches them."""
    models = {resolve_emulator(device) for device in config["devices"]}
    if len(models) > 1:
        names = ", ".join(sorted(f"{m.__module__}.{m.__qualname__}" for m in models))
        raise ValueError(f"emulate: true needs one emulator for all of {', '.join(config['devices'])}, but they have {names}")
    try:
        for model in models:  # (one)
            model.model_validate(config)
    except ValidationError as exc:
        faults = [f"emulator.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ValueError("; ".join(faults)) from None
