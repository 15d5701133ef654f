"""Physics simulators and benchmark functions, exposed as instruments.

Every class here satisfies :class:`selflab.instruments.protocol.Instrument` and also
declares ``limits``, ``describe()``, ``duration(params)`` (simulated seconds;
nothing ever sleeps), ``stop()``, ``fidelity``, ``cost``, ``capacity``,
``primary_output``, ``direction`` and ``optimum``. Constructor keyword
arguments are the driver ``options:`` of a lab config.

* :class:`PlugFlowReactor`: A + B -> P with over-reaction and a competing
  pathway, Arrhenius kinetics; outputs ``yield`` and ``space_time_yield``.
* :class:`BraninInstrument`, :class:`Hartmann6Instrument`: standard test
  functions from botorch (imported on ``connect()``).

Example::

    import asyncio
    from selflab.simulators import Hartmann6Instrument

    async def main() -> None:
        instrument = Hartmann6Instrument(noise_std=0.05, seed=1)
        await instrument.connect()
        print(await instrument.run({f"x{i}": 0.5 for i in range(1, 7)}))
        await instrument.close()

    asyncio.run(main())
"""

from selflab.simulators.benchmarks import BraninInstrument, Hartmann6Instrument
from selflab.simulators.reactor import PlugFlowReactor

__all__ = ["BraninInstrument", "Hartmann6Instrument", "PlugFlowReactor"]
