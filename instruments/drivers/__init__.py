"""Reference drivers for serial lab devices, each with a documented ASCII protocol.

* :class:`SyringePump` (``syringe_pump``): dispense a volume at a flow rate.
* :class:`Hotplate` (``hotplate``): heat to a temperature and wait to settle.
* :class:`Spectrometer` (``uv_vis``): absorbance at a wavelength.
* :class:`FlowSynthesis` (``flow_synthesis``): the three composed into one
  experiment (heat, pump through a heated coil, read the outlet).

Each takes its port(s) and link options (:mod:`selflab.instruments.drivers.connection`)
as keyword arguments, or ``emulate: true`` to start a device emulator
(:mod:`selflab.simulators.emulators`) on ``connect()``.

Example::

    rig = FlowSynthesis(emulate=True, emulator={"time_scale": 600}, poll_s=0.05)
    await rig.connect()
    print(await rig.run({"temperature": 100, "flow_rate": 0.2, "volume": 3}))
    await rig.close()
"""

from selflab.instruments.drivers.flow_synthesis import FlowSynthesis
from selflab.instruments.drivers.hotplate import Hotplate
from selflab.instruments.drivers.spectrometer import Spectrometer
from selflab.instruments.drivers.syringe_pump import SyringePump

__all__ = ["FlowSynthesis", "Hotplate", "Spectrometer", "SyringePump"]
