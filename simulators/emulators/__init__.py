"""Device emulators: a syringe pump, a hotplate and a UV-Vis spectrometer on
real pseudo-terminals, sharing one simulated flow rig, with seeded faults.

Each emulator process serves one or more devices; bytes cross a real pty, so
a driver's pyserial code runs exactly as on hardware. Try them with
``selflab emulate rig`` (or ``pump``, ``hotplate``, ``spectrometer``), or let
a driver start one with the option ``emulate: true``.

* :mod:`~selflab.simulators.emulators.physics`: the rig (kinetics A -> P -> D in a
  heated coil, a flow cell, Beer-Lambert absorbance).
* :mod:`~selflab.simulators.emulators.devices`: command -> reply for each device.
* :mod:`~selflab.simulators.emulators.filedevice`: your own device, described in a
  pyvisa-sim device file (``selflab emulate --device FILE``).
* :mod:`~selflab.simulators.emulators.faults`: seeded fault plans.
* :mod:`~selflab.simulators.emulators.ptyport`: a pty published at a stable link path
  (POSIX only: elsewhere :class:`PtyUnavailable` says so when a port opens).
* :mod:`~selflab.simulators.emulators.server`: serving, fault application, config.
"""

from selflab.simulators.emulators.faults import FAULT_KINDS, FaultInjector, FaultPlan
from selflab.simulators.emulators.filedevice import DeviceFileError, load_device_file
from selflab.simulators.emulators.ptyport import PtyUnavailable
from selflab.simulators.emulators.server import EmulatorConfig, serve

__all__ = ["FAULT_KINDS", "DeviceFileError", "EmulatorConfig", "FaultInjector", "FaultPlan", "PtyUnavailable",
           "load_device_file", "serve"]
