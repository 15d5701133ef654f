"""One seed mix: the random stream of a planner's draw, from the campaign's
seed and the draw's coordinates.

A planner is a pure function of the ledger, so every random draw it makes is
seeded by where it stands: the campaign ``seed``, the ledger ``step``, and
any further index (a batch slot, a restart). Both helpers below derive the
stream from numpy's :class:`numpy.random.SeedSequence` over
``(seed, *parts)``, which hashes the entropy well: neighbouring seeds and
steps give unrelated streams, and no two coordinates collide as a linear mix
such as ``seed * 1_000_003 + step`` does.

Example::

    rng = seeded_rng(context.seed, context.step)          # numpy draws
    torch.manual_seed(mix_seed(context.seed, context.step))  # one integer seed
    sobol = SobolEngine(d, scramble=True, seed=mix_seed(context.seed, context.step, 1))
"""

from __future__ import annotations

import numpy as np

SEED_BITS = 31
"""A mixed seed lies in ``[0, 2**31)``: every library takes it (torch, scipy, Ax)."""


def _entropy(seed: int, parts: tuple[int, ...]) -> list[int]:
    entropy = [int(seed), *map(int, parts)]
    if any(v < 0 for v in entropy):
        raise ValueError(f"a seed and its parts are integers >= 0, not {tuple(entropy)}")
    return entropy


def seeded_rng(seed: int, *parts: int) -> np.random.Generator:
    """A numpy generator for ``(seed, *parts)``, integers ``>= 0``.

    ``seeded_rng(s, k)`` is ``numpy.random.default_rng([s, k])``: the same stream.
    """
    return np.random.default_rng(np.random.SeedSequence(_entropy(seed, parts)))


def mix_seed(seed: int, *parts: int) -> int:
    """One integer seed in ``[0, 2**31)`` for ``(seed, *parts)``, integers ``>= 0``
    (for libraries that take an integer: ``torch.manual_seed``, Sobol engines, Ax)."""
    state = np.random.SeedSequence(_entropy(seed, parts)).generate_state(1, dtype=np.uint32)[0]
    return int(state) >> (32 - SEED_BITS)
