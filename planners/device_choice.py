"""Which device a proposal's GP work runs on: ``device: auto`` decided by measurement.

The rule (:func:`choose_device`, pure: CUDA availability is an argument):

- ``cpu`` is the CPU; ``cuda`` is the GPU, and raises ``ValueError`` when
  torch sees none;
- ``auto`` is the GPU only when torch sees one **and** the problem is at
  least as large as the CUDA crossover for its dimension: the number of
  modelled observations ``n`` from which the GP work is faster on the GPU than
  on the CPU of the same host. Below it the GPU is slower (kernel launches,
  and the host sync of every scipy L-BFGS iteration, botorch #1566, cost
  more than small matrices save).

The choice is made per proposal, from that proposal's ``n`` (a campaign's
data grow past the crossover), and every proposal's reason says which device
ran it and why (``"device"``, ``"device_reason"``).

The crossover table, ``{d: n}``, lives in one place: :data:`CROSSOVER`. A
dimension not listed uses the nearest one listed (ties: the larger ``d``); a
value of ``None`` means the GPU never won at that dimension, so ``auto``
stays on the CPU. Until ``benchmarks/gpu.py`` has run on a GPU host the table
holds the anchors' figure, 2,000 for every ``d`` (botorch PR #314: exact
Cholesky beats CG/Lanczos up to about n = 1,000; Xopt #331: the GPU slower
than the CPU below thousands of points, 42 s against 24 s). ``benchmarks/gpu.py``
writes the measured table as ``device_crossover`` in its JSON; paste it into
:data:`CROSSOVER`, or give it to one campaign as a planner option
(``planner: {kind: bo, options: {device_crossover: {6: 1000, 20: 500}}}``;
:func:`crossover_from_results` reads it from the JSON).

Out of GPU memory (:class:`DevicePolicy`): a proposal whose fit or acquisition
raises ``torch.OutOfMemoryError`` on the GPU is made again on the CPU, with
``"cuda out of memory at n=..., q=...; fell back to cpu"`` in its reason; the
policy remembers that ``(n, q)``, and later proposals at least as large (more
observations and at least as many points) go straight to the CPU (a process
cache: a new planner tries the GPU again).

Example::

    choose_device("auto", n=40, d=6, cuda_available=True).reason
    # 'auto: n=40 below the CUDA crossover 2000 (d=6)'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import torch

DeviceOption = Literal["auto", "cpu", "cuda"]
Crossover = Mapping[int, int | None]
"""``{d: n}``: from ``n`` observations on, at dimension ``d``, the GPU is faster (``None``: never)."""

CROSSOVER: dict[int, int | None] = {6: 2000, 20: 2000}
"""The CUDA crossover by dimension (see module docs). Source: the anchors
(botorch PR #314, Xopt #331), not yet measured here: ``benchmarks/gpu.py``
has not run on a GPU host (``benchmarks/RESULTS.md``, issue 21)."""

CUDA_MISSING = "device: 'cuda' was asked for but torch sees no CUDA device; use device: auto or cpu, or install a CUDA build of torch"

T = TypeVar("T")


@dataclass(frozen=True)
class DeviceChoice:
    """Where one proposal's GP work runs and why (the reason's ``device`` and ``device_reason``).

    ``accelerated``: the GPU branch (an out-of-memory error there is retried on the CPU)."""

    device: torch.device
    reason: str
    accelerated: bool = False


def crossover_for(d: int, table: Crossover) -> int | None:
    """The crossover ``n`` for dimension ``d``: the entry of the nearest
    dimension listed (ties: the larger one); ``None`` when the table is empty
    or that entry is ``None`` (the GPU never won there).

    >>> crossover_for(8, {6: 2000, 20: 500}), crossover_for(13, {6: 2000, 20: 500}), crossover_for(3, {})
    (2000, 500, None)
    """
    if not table:
        return None
    nearest = min(table, key=lambda k: (abs(k - d), -k))
    return table[nearest]


def choose_device(
    asked: DeviceOption, n: int, d: int, *, cuda_available: bool, crossover: Crossover | None = None,
    cuda: torch.device | str = "cuda",
) -> DeviceChoice:
    """The device of a proposal with ``n`` modelled observations in ``d`` input
    columns (see module docs; ``crossover``: :data:`CROSSOVER` when ``None``;
    ``cuda``: the device the GPU branch uses, for tests of that branch on a
    CPU-only host). Raises ``ValueError`` for ``cuda`` without a CUDA device.

    >>> choose_device("auto", 40, 6, cuda_available=True).reason
    'auto: n=40 below the CUDA crossover 2000 (d=6)'
    >>> choose_device("auto", 5000, 6, cuda_available=False).reason
    'auto: no CUDA device'
    """
    gpu = torch.device(cuda)
    if asked == "cpu":
        return DeviceChoice(torch.device("cpu"), "asked for cpu")
    if asked == "cuda":
        if not cuda_available:
            raise ValueError(CUDA_MISSING)
        return DeviceChoice(gpu, "asked for cuda", accelerated=True)
    if not cuda_available:
        return DeviceChoice(torch.device("cpu"), "auto: no CUDA device")
    table = CROSSOVER if crossover is None else crossover
    at = crossover_for(d, table)
    if at is None:
        return DeviceChoice(torch.device("cpu"), f"auto: the GPU was never measured faster at d={d}")
    if n < at:
        return DeviceChoice(torch.device("cpu"), f"auto: n={n} below the CUDA crossover {at} (d={d})")
    return DeviceChoice(gpu, f"auto: n={n} at or above the CUDA crossover {at} (d={d})", accelerated=True)


class DevicePolicy:
    """A planner's device choice per proposal, with the CPU fallback on GPU
    out-of-memory (see module docs).

    ``cuda_available``: ``None`` asks torch; ``cuda``: the GPU branch's device
    (``"cpu"`` lets tests run that branch, and its fallback, without a GPU).
    """

    def __init__(
        self, asked: DeviceOption, crossover: Crossover | None = None, *, cuda_available: bool | None = None,
        cuda: torch.device | str = "cuda",
    ) -> None:
        self.asked = asked
        self.crossover = dict(CROSSOVER if crossover is None else crossover)
        self.cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
        self.cuda = torch.device(cuda)
        self.out_of_memory: list[tuple[int, int]] = []
        """``(n, q)`` of each proposal that ran out of GPU memory."""
        if asked == "cuda" and not self.cuda_available:
            raise ValueError(CUDA_MISSING)

    def choose(self, n: int, d: int, q: int = 1) -> DeviceChoice:
        """The device of a proposal of ``q`` points from ``n`` observations in ``d`` columns."""
        choice = choose_device(self.asked, n, d, cuda_available=self.cuda_available, crossover=self.crossover, cuda=self.cuda)
        if choice.accelerated:
            for n0, q0 in self.out_of_memory:
                if n >= n0 and q >= q0:
                    return DeviceChoice(torch.device("cpu"), f"{self.asked}: cuda ran out of memory at n={n0}, q={q0} earlier; cpu")
        return choice

    def run(self, n: int, d: int, q: int, attempt: Callable[[DeviceChoice], T]) -> T:
        """``attempt(choice)`` on the chosen device; when the GPU branch raises
        ``torch.OutOfMemoryError``, once more on the CPU, with the fallback in
        the choice's reason (``attempt`` puts it in the proposal's)."""
        choice = self.choose(n, d, q)
        if not choice.accelerated:
            return attempt(choice)
        try:
            return attempt(choice)
        except torch.OutOfMemoryError:
            self.out_of_memory.append((n, q))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return attempt(DeviceChoice(torch.device("cpu"), f"cuda out of memory at n={n}, q={q}; fell back to cpu"))


def measured_crossover(timings: Sequence[tuple[int, float | None, float | None]]) -> int | None:
    """The crossover from ``(n, cpu_seconds, cuda_seconds)`` rows (``None``:
    not measured): the smallest ``n`` from which CUDA was faster at every ``n``
    measured on both; ``None`` when it was not faster at the largest such ``n``,
    or nothing was measured on both.

    >>> measured_crossover([(100, 0.1, 0.5), (1000, 2.0, 1.0), (4000, None, 3.0), (8000, 90.0, 4.0)])
    1000
    >>> measured_crossover([(100, 0.1, 0.5), (1000, 2.0, 1.0), (8000, 90.0, 95.0)]) is None
    True
    """
    pairs = sorted((n, cpu, gpu) for n, cpu, gpu in timings if cpu is not None and gpu is not None)
    crossover = None
    for n, cpu, gpu in reversed(pairs):
        if gpu >= cpu:
            break
        crossover = n
    return crossover


def crossover_from_results(path: str | Path) -> dict[int, int | None]:
    """The measured ``{d: n}`` table in a ``benchmarks/gpu.py`` JSON file (its
    ``device_crossover``), for :data:`CROSSOVER` or a planner's
    ``device_crossover`` option. Raises ``ValueError`` when the file has none
    (a run without a GPU, or one stopped before the proposals)."""
    data = json.loads(Path(path).read_text())
    table = data.get("device_crossover")
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{path}: no device_crossover (was benchmarks/gpu.py run on a CUDA host to the end of its proposals?)")
    return {int(d): None if n is None else int(n) for d, n in table.items()}
