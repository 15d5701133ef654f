"""Devices described in a file, so a driver author can test without writing a fake.

The file is a `pyvisa-sim device file
<https://pyvisa.readthedocs.io/projects/pyvisa-sim/en/latest/definitions.html>`_:
fixed dialogues (``*IDN?`` -> ``ACME,DB-5,...``), properties with a getter,
a setter and a range (``DOSE {:f}`` sets ``dosed``, ``MASS?`` reads it back,
a value out of range gets the setter's error reply), and the reply to an
unknown command. pyvisa-sim (the ``visa`` extra) answers every command; this
module puts each of the file's serial resources (``ASRL<n>::INSTR``) behind
one :class:`~selflab.simulators.emulators.server.DeviceServer`, so ``selflab emulate
--device FILE`` serves it on a pseudo-terminal named after its device, with
the same fault injection as the bundled emulators. The same file also works
with no pty at all, through pyvisa (``VisaSettings(resource="ASRL1::INSTR",
library="FILE@sim")``).

Lines are framed as by the bundled emulators (a command ends at CR or LF);
replies end in the device's ``eom`` for ``ASRL INSTR`` (pyvisa-sim's default
when the file gives none: LF). A dialogue without ``r`` never answers (the
driver sees a timeout). Values are whatever the file says: there is no
physics, noise or time.

Example::

    (balance,) = load_device_file("examples/dosing_balance.yaml")
    balance.handle("DOSE 2.500")   # 'OK'
    balance.handle("MASS?")        # '2.5000'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["DeviceFileError", "FileDevice", "load_device_file"]

_SERIAL = "ASRL INSTR"
"""The ``eom`` key of serial resources in a pyvisa-sim file."""


class DeviceFileError(ValueError):
    """The device file cannot be served; the message says why, in one line."""


class FileDevice:
    """One serial resource of a pyvisa-sim device file, answering one command line at a time.

    Args:
        path: the device file.
        resource: its resource name, e.g. ``"ASRL1::INSTR"``.
        name: the device's name in the file (names the port).
        query_eom, reply_eom: the device's line endings, as bytes.
    """

    def __init__(self, path: Path, resource: str, name: str, query_eom: bytes, reply_eom: bytes) -> None:
        self.path, self.resource, self.name = path, resource, name
        self.query_eom = query_eom
        self.termination = reply_eom
        """Ends every reply line."""
        self._device: Any = None
        self.reset()

    def reset(self) -> None:
        """Power-on state: every property back to its default (a reboot)."""
        from pyvisa_sim.parser import get_devices

        self._device = get_devices(str(self.path), False)[self.resource]

    def handle(self, line: str) -> str | None:
        """The reply to one command line (without terminators); ``None``: the device stays silent."""
        self._device.write(line.encode() + self.query_eom)
        reply = bytearray()
        while True:
            byte, _end = self._device.read()
            if not byte:
                break
            reply += byte
        if not reply:
            return None
        return bytes(reply).removesuffix(self.termination).decode("latin-1")


def load_device_file(path: str | Path) -> list[FileDevice]:
    """The serial devices of a pyvisa-sim device file, one per ``ASRL<n>::INSTR`` resource.

    Raises:
        DeviceFileError: pyvisa-sim is not installed, the file cannot be read
            or parsed, it has no serial resource, two of them share a device,
            or a device's line endings are not CR, LF or CR LF.
    """
    path = Path(path)
    try:
        from pyvisa import rname
        from pyvisa_sim.parser import SPEC_VERSION_TUPLE, Loader, get_devices
    except ImportError:
        raise DeviceFileError("serving a device file needs pyvisa-sim: pip install 'selflab[visa]'") from None
    try:
        yaml.safe_load(path.read_text(encoding="utf-8"))  # pyvisa-sim would report a syntax error with its traceback
        loader = Loader(str(path), False)
        get_devices(str(path), False)  # pyvisa-sim's own checks of the whole file
        resources: dict[str, Any] = dict(loader.data.get("resources") or {})
    except OSError as exc:
        raise DeviceFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}" if exc.problem_mark else ""
        raise DeviceFileError(f"{path}: YAML syntax error: {exc.problem}{where}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DeviceFileError(f"{path}: not a pyvisa-sim device file: {type(exc).__name__}: {exc}") from None
    devices: list[FileDevice] = []
    for resource, spec in resources.items():
        parsed = rname.parse_resource_name(resource)
        if f"{parsed.interface_type_const.name.upper()} {parsed.resource_class}" != _SERIAL:
            continue
        name = spec["device"]
        definition = loader.get_device_dict(name, spec.get("filename"), spec.get("bundled", False), SPEC_VERSION_TUPLE[0])
        eom = (definition.get("eom") or {}).get(_SERIAL) or {"q": "\n", "r": "\n"}
        if eom.get("q") not in ("\r\n", "\n", "\r") or eom.get("r") not in ("\r\n", "\n", "\r"):
            raise DeviceFileError(f"{path}: device {name!r}: eom {_SERIAL!r} must be CR, LF or CR LF, got {eom}")
        if any(d.name == name for d in devices):
            raise DeviceFileError(f"{path}: device {name!r} serves two serial resources; give each its own device")
        devices.append(FileDevice(path, str(parsed), name, eom["q"].encode(), eom["r"].encode()))
    if not devices:
        raise DeviceFileError(f"{path}: no serial resource (ASRL<n>::INSTR) to serve; resources: {sorted(resources) or 'none'}")
    return devices
