r"""The physical world the emulated flow rig shares: plate, pump, coil, flow cell.

A reagent A (``feed_mol_l`` in solvent) is pumped at flow rate :math:`Q`
(mL/min) through a coil of volume :math:`V_c` (mL) sitting on the hotplate,
then through a UV-Vis flow cell of volume :math:`V_{cell}`. In the coil

.. math::  A \xrightarrow{k_1} P \xrightarrow{k_2} D, \qquad
           k_i(T) = k_{i,ref} \exp\!\Big(-\frac{E_i}{R}\Big(\frac{1}{T} - \frac{1}{T_{ref}}\Big)\Big)

so after the residence time :math:`\tau = V_c / Q` (min) the outlet holds
:math:`a = e^{-k_1\tau}` and :math:`p = \frac{k_1}{k_2 - k_1}(e^{-k_1\tau} - e^{-k_2\tau})`
(fractions of the feed). :math:`E_2 > E_1`, so heat speeds the over-reaction
to D more than the wanted one: at a given residence time the yield of P peaks
at an interior temperature (about 100 degC at 5 min, 0.76; at 10 min
the best is 0.81 near 91 degC).

Each ``RUN`` of the pump starts with solvent in the coil and the cell (the rig
flushes between runs). The first :math:`V_c` mL pumped are solvent; after
that, reacted fluid at the coil's current temperature flows into the cell,
which mixes ideally: :math:`dc/dV = (c_{out} - c)/V_{cell}`. So the cell sees
about :math:`1 - e^{-(V - V_c)/V_{cell}}` of the outlet after ``V`` mL.

The spectrometer reads :math:`A(\lambda) = \ell(\varepsilon_P(\lambda) c_P +
\varepsilon_A(\lambda) c_A)` + baseline drift + noise, with Gaussian bands
for P (420 nm, 8000 L mol^-1 cm^-1) and A (300 nm, 6000 L mol^-1 cm^-1).

The plate heats towards its setpoint at most at the ramp rate (degC/min) and
approaches it with a 0.3 min lag; with the heater off it cools towards
ambient with an 8 min time constant.

Time is emulated: ``time_scale`` emulated seconds pass per real second, and
the state is integrated (0.01 min steps) whenever a device is asked.

Example::

    world = FlowWorld(time_scale=600.0)
    world.setpoint_c = 100.0
    round(outlet_fractions(5.0, 100.0)[1], 3)   # yield of P at 5 min, 100 degC
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

__all__ = ["FlowWorld", "absorbance_at", "outlet_fractions"]

R_GAS = 8.314462618
"""J mol^-1 K^-1."""
_T_REF_K = 373.15
_K1_REF, _K2_REF = 0.4, 0.04  # min^-1 at 100 degC
_E1, _E2 = 60_000.0, 95_000.0  # J/mol

EPSILON_P_420 = 8000.0
"""Molar absorptivity of P at its 420 nm band maximum, L mol^-1 cm^-1."""


def outlet_fractions(residence_min: float, temperature_c: float) -> tuple[float, float]:
    """``(a, p)``: fractions of the feed left as A and made into P after
    ``residence_min`` minutes at ``temperature_c`` (degC).

    >>> a, p = outlet_fractions(5.0, 100.0)
    >>> round(a, 3), round(p, 3)
    (0.135, 0.759)
    """
    inv = 1.0 / (temperature_c + 273.15) - 1.0 / _T_REF_K
    k1 = _K1_REF * math.exp(-_E1 / R_GAS * inv)
    k2 = _K2_REF * math.exp(-_E2 / R_GAS * inv)
    a = math.exp(-k1 * residence_min)
    if abs(k2 - k1) * residence_min < 1e-9:
        return a, k1 * residence_min * a
    return a, k1 / (k2 - k1) * (a - math.exp(-k2 * residence_min))


def absorbance_at(wavelength_nm: float, c_p: float, c_a: float, path_cm: float = 1.0) -> float:
    """Absorbance (AU) of a cell holding ``c_p`` mol/L of P and ``c_a`` of A."""
    eps_p = EPSILON_P_420 * math.exp(-0.5 * ((wavelength_nm - 420.0) / 35.0) ** 2)
    eps_a = 6000.0 * math.exp(-0.5 * ((wavelength_nm - 300.0) / 25.0) ** 2)
    return path_cm * (eps_p * c_p + eps_a * c_a)


@dataclass
class FlowWorld:
    """State of the rig, integrated lazily on the emulated clock.

    Attributes:
        time_scale: emulated seconds per real second (> 0).
        ambient_c: room temperature, degC.
        coil_ml, cell_ml: coil and flow-cell volumes, mL.
        feed_mol_l: concentration of A in the feed, mol/L.
    """

    time_scale: float = 1.0
    ambient_c: float = 22.0
    coil_ml: float = 1.0
    cell_ml: float = 0.25
    feed_mol_l: float = 1e-4
    plate_c: float = 22.0
    setpoint_c: float | None = None
    ramp_c_per_min: float = 10.0
    rate_ml_min: float = 1.0
    target_ml: float = 0.0
    pumped_ml: float = 0.0
    pumping: bool = False
    cell_p: float = 0.0
    cell_a: float = 0.0
    _started: float = field(default_factory=time.monotonic, init=False, repr=False)
    _t_min: float = field(default=0.0, init=False, repr=False)

    def now_min(self) -> float:
        """Emulated minutes since the world was made."""
        return (time.monotonic() - self._started) * self.time_scale / 60.0

    def advance(self) -> None:
        """Integrate the state up to now."""
        now = self.now_min()
        while self._t_min < now:
            dt = min(0.01, now - self._t_min)
            if not self.pumping and abs(self._plate_target() - self.plate_c) < 1e-3:
                dt = now - self._t_min  # nothing moves: jump
            self._step(dt)
            self._t_min += dt

    def _plate_target(self) -> float:
        return self.ambient_c if self.setpoint_c is None else self.setpoint_c

    def _step(self, dt: float) -> None:
        gap = self._plate_target() - self.plate_c
        if self.setpoint_c is None:
            self.plate_c += gap * min(dt / 8.0, 1.0)
        else:
            rate = max(min(gap / 0.3, self.ramp_c_per_min), -self.ramp_c_per_min)
            self.plate_c += gap if abs(rate * dt) >= abs(gap) else rate * dt
        if not self.pumping:
            return
        dv = min(self.rate_ml_min * dt, self.target_ml - self.pumped_ml)
        self.pumped_ml += dv
        if self.pumped_ml > self.coil_ml:
            a, p = outlet_fractions(self.coil_ml / self.rate_ml_min, self.plate_c)
            mix = min(dv / self.cell_ml, 1.0)
            self.cell_p += (p * self.feed_mol_l - self.cell_p) * mix
            self.cell_a += (a * self.feed_mol_l - self.cell_a) * mix
        if self.pumped_ml >= self.target_ml - 1e-12:
            self.pumping = False

    def start_pump(self) -> None:
        """Flush the coil and cell with solvent and start dispensing."""
        self.advance()
        self.pumped_ml, self.cell_p, self.cell_a, self.pumping = 0.0, 0.0, 0.0, True
