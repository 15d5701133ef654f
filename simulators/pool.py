"""A pool of measured data as an instrument: only the rows of a CSV can be "run".

Each CSV row is one experiment that was really done: every column but the
objective is an input, the objective column is the measurement. The
instrument declares the pool through ``candidates()`` (the controller then
lets the planner choose only among unmeasured rows), and ``run(params)``
returns the objective of the row whose inputs equal ``params``.

* Rows with equal inputs are one candidate; their objective values are
  averaged (replicate measurements).
* Column names become parameter names: every run of characters other than
  letters, digits and ``_`` turns into one ``_`` (``"P3HT content (%)"`` ->
  ``P3HT_content``); :attr:`PoolInstrument.columns` maps names back.
* Input columns with a single value carry no information and are dropped.
* ``limits`` are each input's range in the data; ``optimum`` is the best
  averaged objective value; ``duration_s`` simulated seconds per experiment.

Example::

    import asyncio
    from selflab.simulators.pool import PoolInstrument

    pool = PoolInstrument(csv="simulators/data/liang2021/AutoAM_dataset.csv", objective="Score")
    asyncio.run(pool.connect())
    row = pool.candidates()[0]           # {'Prime_Delay': 0.0, 'Print_Speed': 1.0, ...}
    asyncio.run(pool.run(row))           # {'Score': 0.339554}
    pool.optimum, pool.direction         # (best Score in the pool, 'maximize')
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from selflab.instruments.errors import BadResponse
from selflab.simulators.simulated import Simulation, check_non_negative

__all__ = ["PoolInstrument", "identifier"]

Row = tuple[float, ...]


def identifier(column: str) -> str:
    """A parameter name for a CSV column: runs of other characters become ``_``.

    >>> identifier("Conductivity (measured) (S/cm)")
    'Conductivity_measured_S_cm'
    >>> identifier("2theta")
    'c_2theta'
    """
    name = re.sub(r"[^A-Za-z0-9_]+", "_", column.strip()).strip("_") or "column"
    return name if re.match(r"[A-Za-z_]", name) else f"c_{name}"


class PoolInstrument:
    """The rows of a CSV file as an instrument that can measure only those rows.

    Options (keyword-only, the driver ``options:`` of a lab config):
        csv: path of the CSV file (header row first; a UTF-8 byte-order mark
            is allowed).
        objective: the column measured, as written in the header or as its
            parameter-style name.
        direction: ``"maximize"`` or ``"minimize"`` the objective.
        duration_s: simulated seconds per experiment, ``>= 0`` (default 0).

    Raises ``ValueError`` (a config fault naming the option) for a missing
    file or column, a non-numeric cell, or a pool with no varying input.
    """

    fidelity: float = 1.0
    cost: float = 1.0
    capacity: int = 1

    def __init__(
        self,
        *,
        csv: str,
        objective: str,
        direction: Literal["maximize", "minimize"] = "maximize",
        duration_s: float = 0.0,
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        self.path = Path(csv)
        self.direction: Literal["maximize", "minimize"] = direction
        self.duration_s = check_non_negative("duration_s", duration_s)
        header, rows = _read(self.path)
        names = _unique([identifier(c) for c in header])
        target = next((i for i, (c, n) in enumerate(zip(header, names)) if objective in (c, n)), None)
        if target is None:
            raise ValueError(f"{self.path} has no column {objective!r}; its columns: {', '.join(header)}")
        self.primary_output: str = names[target]
        inputs = [i for i in range(len(header)) if i != target and len({r[i] for r in rows}) > 1]
        if not inputs:
            raise ValueError(f"{self.path}: no input column varies, nothing to choose")
        self.inputs: tuple[str, ...] = tuple(names[i] for i in inputs)
        self.columns: dict[str, str] = {names[i]: header[i] for i in [*inputs, target]}
        """Parameter-style name -> CSV column."""
        groups: dict[Row, list[float]] = {}
        for r in rows:
            groups.setdefault(tuple(r[i] for i in inputs), []).append(r[target])
        self.table: dict[Row, float] = {k: math.fsum(v) / len(v) for k, v in groups.items()}
        """Input row -> objective averaged over its replicates."""
        self.replicates: dict[Row, int] = {k: len(v) for k, v in groups.items()}
        best = max if direction == "maximize" else min
        self.optimum: float = best(self.table.values())
        self._sim = Simulation(
            limits={n: (min(k[j] for k in self.table), max(k[j] for k in self.table)) for j, n in enumerate(self.inputs)},
            outputs={self.primary_output: ""},
        )
        self.limits: dict[str, tuple[float, float]] = dict(self._sim.limits)

    def candidates(self) -> list[dict[str, float]]:
        """The unique input rows, in first-seen order."""
        return [dict(zip(self.inputs, key)) for key in self.table]

    def top(self, fraction: float) -> list[dict[str, float]]:
        """The best ``ceil(fraction * rows)`` candidates, and any tied with the last."""
        ranked = sorted(self.table.items(), key=lambda kv: kv[1], reverse=self.direction == "maximize")
        m = max(1, math.ceil(fraction * len(ranked)))
        cut = ranked[m - 1][1]
        keep = [k for k, v in ranked if (v >= cut if self.direction == "maximize" else v <= cut)]
        return [dict(zip(self.inputs, key)) for key in keep]

    async def connect(self) -> None:
        """Connect (the data is already loaded)."""
        self._sim.connect()

    async def close(self) -> None:
        """Disconnect; safe to call twice."""
        self._sim.close()

    async def stop(self) -> None:
        """Nothing runs for long here: a harmless no-op."""

    def describe(self) -> dict[str, str]:
        """Output name -> unit (``""``: the CSV does not say)."""
        return dict(self._sim.outputs)

    def duration(self, params: Mapping[str, Any]) -> float:
        """Simulated seconds per experiment: the ``duration_s`` option."""
        return self.duration_s

    async def run(self, params: Mapping[str, Any]) -> dict[str, float]:
        """The (averaged) objective of the row whose inputs equal ``params``.

        Raises:
            InstrumentDisconnected: not connected.
            BadResponse: an input is missing or not a number, or no row has
                these inputs.
            OutOfLimits: an input is outside the data's range.
        """
        x = self._sim.read_inputs(params)
        key = tuple(x[n] for n in self.inputs)
        if key not in self.table:
            raise BadResponse(f"{self.path.name} has no row with {', '.join(f'{n}={v:g}' for n, v in x.items())}")
        return self._sim.finish({self.primary_output: self.table[key]})


def _read(path: Path) -> tuple[list[str], list[list[float]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            lines = [r for r in csv.reader(handle) if any(cell.strip() for cell in r)]
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(lines) < 2:
        raise ValueError(f"{path} needs a header row and at least one data row")
    header = [c.strip() for c in lines[0]]
    rows: list[list[float]] = []
    for number, line in enumerate(lines[1:], start=2):
        if len(line) != len(header):
            raise ValueError(f"{path}:{number}: {len(line)} cells, the header has {len(header)}")
        try:
            rows.append([float(cell) for cell in line])
        except ValueError:
            raise ValueError(f"{path}:{number}: every cell must be a number, got {line}") from None
        if not all(math.isfinite(v) for v in rows[-1]):
            raise ValueError(f"{path}:{number}: every cell must be finite, got {line}")
    return header, rows


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out
