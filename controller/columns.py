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
OVERSIGHT_COLUMNS = ("approval", "original_params")
"""Human oversight's columns, after the tail: ``awaiting``, ``approved``,
``edited`` or ``vetoed`` (empty: none asked), and the planner's params (JSON)
of an edited proposal (see :func:`selflab.controller.oversight.oversight_cells`)."""
EXPORT_COLUMNS = frozenset(EXPORT_HEAD + EXPORT_TAIL + OVERSIGHT_COLUMNS)
"""Every name reserved for a fixed export column."""


def renamed_reading(name: str, taken: set[str] | frozenset[str]) -> str:
    """What a reading called ``name`` is recorded (and exported) as when
    ``name`` is taken: ``reading_<name>``, prefixed again until it is free."""
    new = f"reading_{name}"
    while new in taken:
        new = f"reading_{new}"
    return new
