"""The fixed columns of ``selflab export``.

No parameter, objective or reading may take one of these names: config
validation refuses such parameters and objectives, and
:func:`selflab.controller.execution.check_outcomes` renames such readings.
"""

from __future__ import annotations

EXPORT_HEAD = ("experiment_id", "status", "instrument", "fidelity", "cost")
"""The columns before the parameters and outcomes."""
EXPORT_TAIL = ("proposed_at", "started_at", "finished_at", "error")
"""The columns after them."""
EXPORT_COLUMNS = frozenset(EXPORT_HEAD + EXPORT_TAIL)
"""Every name reserved for a fixed export column."""


def renamed_reading(name: str, taken: set[str] | frozenset[str]) -> str:
    """What a reading called ``name`` is recorded (and exported) as when
    ``name`` is taken: ``reading_<name>``, prefixed again until it is free."""
    new = f"reading_{name}"
    while new in taken:
        new = f"reading_{new}"
    return new
