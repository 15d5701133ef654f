"""Standard optimisation test functions exposed as instruments.

The functions themselves come from :mod:`botorch.test_functions`; these
classes add what an instrument needs: declared limits, seeded measurement
noise, a simulated duration and the failure hierarchy. botorch (and torch) is
imported on ``connect()``, not when this module is imported, because it takes
seconds and ``selflab validate`` builds instruments without running them.

* :class:`BraninInstrument`: inputs ``x1`` in [-5, 10], ``x2`` in [0, 15];
  output ``y``, minimised, optimum 0.397887.
* :class:`Hartmann6Instrument`: inputs ``x1`` .. ``x6`` in [0, 1]; output
  ``y``, minimised, optimum -3.32237.

Example::

    import asyncio
    from selflab.simulators import BraninInstrument

    async def main() -> None:
        branin = BraninInstrument(noise_std=0.1, seed=2)
        await branin.connect()
        print(await branin.run({"x1": 3.14159, "x2": 2.275}))  # about {'y': 0.4}
        await branin.close()

    asyncio.run(main())
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from selflab.simulators.simulated import Simulation, check_non_negative

if TYPE_CHECKING:
    from botorch.test_functions.synthetic import SyntheticTestFunction

__all__ = ["BraninInstrument", "Hartmann6Instrument"]


class _TestFunctionInstrument:
    """Shared body of the benchmark instruments.

    A subclass sets ``_LIMITS`` and ``optimum`` and builds the botorch
    function in ``_build()``; everything else is here. The multi-fidelity
    instruments (:mod:`selflab.simulators.multifidelity`) also override ``_point()``
    to append their fidelity to the function's input.
    """

    _LIMITS: ClassVar[dict[str, tuple[float, float]]]

    primary_output: str = "y"
    direction: Literal["maximize", "minimize"] = "minimize"
    optimum: float | None = None

    def __init__(self, *, noise_std: float = 0.0, seed: int = 0, duration_s: float = 0.0) -> None:
        self._sim = Simulation(limits=self._LIMITS, outputs={"y": "1"}, noise_std=noise_std, seed=seed)
        self.duration_s: float = check_non_negative("duration_s", duration_s)
        self.limits: dict[str, tuple[float, float]] = dict(self._sim.limits)
        self.fidelity: float = 1.0
        self.cost: float = 1.0
        self.capacity: int = 1
        self.inputs: tuple[str, ...] = tuple(self.limits)
        """The inputs ``run(params)`` reads (see :class:`~selflab.instruments.protocol.DeclaresInputs`)."""
        self._function: SyntheticTestFunction | None = None

    @property
    def noise_std(self) -> float:
        """Standard deviation of the Gaussian noise added to ``y``."""
        return self._sim.noise_std

    @property
    def seed(self) -> int:
        """Seed of the noise generator."""
        return self._sim.seed

    async def connect(self) -> None:
        """Connect; imports botorch and builds the test function on first use."""
        if self._function is None:
            self._function = self._build()
        self._sim.connect()

    def _build(self) -> SyntheticTestFunction:
        """The botorch test function (imports botorch)."""
        raise NotImplementedError

    def _point(self, x: Mapping[str, float]) -> list[float]:
        """The test function's input vector for the inputs ``x``."""
        return [x[name] for name in self.inputs]

    async def close(self) -> None:
        """Disconnect; safe to call twice."""
        self._sim.close()

    async def stop(self) -> None:
        """Nothing runs for long in a simulator: a harmless no-op."""

    def describe(self) -> dict[str, str]:
        """Output name -> unit: ``{"y": "1"}``."""
        return dict(self._sim.outputs)

    def duration(self, params: Mapping[str, Any]) -> float:
        """Simulated seconds per experiment: the ``duration_s`` option."""
        return self.duration_s

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        """Evaluate the function at ``params`` and add noise.

        Returns:
            ``{"y": value}``, dimensionless.

        Raises:
            InstrumentDisconnected: not connected.
            BadResponse: an input is missing or not a number, or the value is
                not finite.
            OutOfLimits: an input is outside :attr:`limits`.
        """
        x = self._sim.read_inputs(params)
        assert self._function is not None  # set by connect()
        import torch

        point = torch.tensor([self._point(x)], dtype=torch.float64)
        with torch.no_grad():
            value = float(self._function.evaluate_true(point).item())
        return self._sim.finish({"y": self._sim.noisy(value)})


class BraninInstrument(_TestFunctionInstrument):
    """The Branin function as an instrument (botorch's ``Branin``).

    Inputs ``x1`` in [-5, 10] and ``x2`` in [0, 15]; output ``y`` (unit
    ``"1"``), to be minimised. Its minimum 0.397887 is reached at three
    points: (-pi, 12.275), (pi, 2.275) and (9.42478, 2.475).

    Options (keyword-only):
        noise_std: standard deviation of Gaussian noise added to ``y``, ``>= 0``.
        seed: noise seed, integer ``>= 0``.
        duration_s: simulated seconds per experiment, ``>= 0`` (default 0).

    Example::

        branin = BraninInstrument()
        asyncio.run(branin.connect())
        asyncio.run(branin.run({"x1": -3.14159, "x2": 12.275}))  # {'y': 0.3978...}
    """

    _LIMITS: ClassVar[dict[str, tuple[float, float]]] = {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}
    optimum: float | None = 0.397887

    def _build(self) -> SyntheticTestFunction:
        from botorch.test_functions.synthetic import Branin

        return Branin()


class Hartmann6Instrument(_TestFunctionInstrument):
    """The six-dimensional Hartmann function as an instrument (botorch's ``Hartmann``).

    Inputs ``x1`` .. ``x6``, each in [0, 1]; output ``y`` (unit ``"1"``), to
    be minimised. Its minimum -3.32237 is at (0.20169, 0.150011, 0.476874,
    0.275332, 0.311652, 0.6573).

    Options (keyword-only):
        noise_std: standard deviation of Gaussian noise added to ``y``, ``>= 0``.
        seed: noise seed, integer ``>= 0``.
        duration_s: simulated seconds per experiment, ``>= 0`` (default 0).

    Example::

        hartmann = Hartmann6Instrument(duration_s=60)
        asyncio.run(hartmann.connect())
        asyncio.run(hartmann.run({f"x{i}": 0.5 for i in range(1, 7)}))
    """

    _LIMITS: ClassVar[dict[str, tuple[float, float]]] = {f"x{i}": (0.0, 1.0) for i in range(1, 7)}
    optimum: float | None = -3.32237

    def _build(self) -> SyntheticTestFunction:
        from botorch.test_functions.synthetic import Hartmann

        return Hartmann(dim=6)
