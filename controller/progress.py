"""Live progress for ``selflab run``, and logging a person can read at 3 a.m.

On a terminal, a rich live panel shows done/total, the best so far, every
instrument's state and what the controller is doing now (fitting, waiting
for instruments, paused by an interlock, stopping); log lines scroll above
it. rich redraws the panel a few times a second from the latest update, so
the last result is always shown and the panel stays live through a long
model fit. Off a terminal (a pipe, a service journal) only the log lines are
written, one per event of note, stamped to the second. ``--quiet`` shows
warnings and errors only.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from selflab.controller.config import LabConfig
from selflab.controller.events import ExperimentState
from selflab.controller.fleet import Station, judged_fidelity
from selflab.controller.projection import CampaignState


TIME_FORMAT = "%H:%M:%S"
"""Log time stamps on a terminal (to the second)."""
DATE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
"""Log time stamps off a terminal (to the second)."""


@runtime_checkable
class ShowsActivity(Protocol):
    """A display that can be told what the controller is doing now, e.g.
    ``"proposing 4 (fitting bo)"`` or ``"waiting for 3 experiment(s) in flight"``;
    ``""`` clears it. The text stays until the next call."""

    def activity(self, text: str) -> None: ...


def setup_logging(quiet: bool, debug: bool = False, console: Console | None = None) -> Console:
    """Route the ``selflab`` logger to stderr; returns the console used."""
    console = console or Console(stderr=True)
    logger = logging.getLogger("selflab")
    logger.handlers.clear()
    logger.propagate = False
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, log_time_format=TIME_FORMAT)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", DATE_TIME_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    # Libraries' warnings (an optimizer restart, a jitter added to a Cholesky)
    # are noise at 3 a.m.: shown with --debug only.
    logging.captureWarnings(True)
    library = logging.getLogger("py.warnings")
    library.handlers.clear()
    library.propagate = False
    library.addHandler(handler)
    library.setLevel(logging.DEBUG if debug else logging.CRITICAL)
    return console


class _Label(logging.Filter):
    """Starts every record that a handler emits with ``label: ``."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "labelled", False):
            label = self.label.replace("%", "%%") if record.args else self.label  # (the message is %-formatted only with args)
            record.msg, record.labelled = f"{label}: {record.msg}", True
        return True


@contextmanager
def labelled_logs(label: str) -> Iterator[None]:
    """While it is open, every line of the ``selflab`` logger starts with
    ``label`` (one campaign among many, e.g. ``"hartmann6 bo seed 13"`` in
    ``selflab bench``, where a warning such as a miscalibrated model or a
    boundary hit would otherwise not say which run it is about). Where the
    logger has no handler (a bench worker process), warnings go to stderr,
    as Python's last-resort handler would write them, but labelled.

    Example::

        with labelled_logs("hartmann6 bo seed 13"):
            run_campaign()   # "hartmann6 bo seed 13: model of y miscalibrated at experiment 16: ..."
    """
    logger = logging.getLogger("selflab")
    added = None
    if not logger.handlers:
        added = logging.StreamHandler(sys.stderr)
        added.setLevel(logging.WARNING)
        logger.addHandler(added)
    label_filter = _Label(label)
    handlers = list(logger.handlers)
    for handler in handlers:
        handler.addFilter(label_filter)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(label_filter)
        if added is not None:
            logger.removeHandler(added)


class LiveDisplay:
    """A rich live view of one campaign; a no-op off a terminal.

    :meth:`update` (the loop's thread) builds the panel from the campaign
    state at once; rich's own refresh thread redraws the latest panel every
    ``refresh_s`` seconds, so nothing is dropped and the elapsed times and the
    activity line keep moving while the loop is busy. :meth:`activity` says
    what the controller is doing (see :class:`ShowsActivity`).

    Example::

        with LiveDisplay(config, Console()) as display:
            display.activity("proposing 4 (fitting bo)")
            display.update(state, stations)
    """

    def __init__(self, config: LabConfig, console: Console, refresh_s: float = 0.25) -> None:
        self.config = config
        self.console = console
        self.enabled = console.is_terminal
        rules = config.stop
        self.total = rules.max_experiments or (int(rules.max_cost) if rules.max_cost else None)
        self.by_cost = rules.max_experiments is None and rules.max_cost is not None
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[best]}"),
            console=console,
        )
        self.task = self.progress.add_task(config.name, total=self.total, best="")
        self._body: tuple[RenderableType, ...] = ()
        """The panel below the progress bar, as of the last update (replaced whole, never changed)."""
        self._activity: tuple[str, float] | None = None
        self._spinner = Spinner("dots")
        self.live = Live(console=console, get_renderable=self.renderable, auto_refresh=True,
                         refresh_per_second=1 / max(refresh_s, 0.05), transient=False) if self.enabled else None

    def __enter__(self) -> LiveDisplay:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._activity = None  # (the last frame shows how the campaign ended, not what it was doing)
        if self.live is not None:
            self.live.stop()

    def activity(self, text: str) -> None:
        """Show ``text`` as what the controller is doing now, with how long it has been at it."""
        self._activity = (text, time.monotonic()) if text else None

    def renderable(self) -> RenderableType:
        """The panel as it stands: the latest update, and the activity with its elapsed time."""
        parts: list[RenderableType] = [self.progress, *self._body]
        activity = self._activity
        if activity is not None:
            text, since = activity
            self._spinner.update(text=Text(f"{text} ({int(time.monotonic() - since)} s)"))
            parts.append(self._spinner)
        return Group(*parts)

    def update(self, state: CampaignState, stations: list[Station], note: str = "") -> None:
        """Take in the campaign's state; the next redraw shows it."""
        if self.live is None:
            return
        counts = state.counts()
        done = state.cost_spent if self.by_cost else counts[ExperimentState.COMPLETED]
        objective = self.config.objectives[0]
        fidelity = judged_fidelity(stations, self.config.target_fidelity)
        best = state.best(objective.name, objective.direction, fidelity, self.config.constraints)
        at = "" if fidelity is None else f" at fidelity {fidelity:g}"
        best_text = f"best {objective.name}{at} = {best.outcomes[objective.name]:.4g} (#{best.experiment_id})" if best else f"no result{at} yet"
        if objective.learn:
            best_text = f"{objective.name}: learning (no optimum)"
        self.progress.update(self.task, completed=done, best=best_text)
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for column in ("instrument", "state", "fidelity", "cost", "done", "failed"):
            table.add_column(column)
        for s in stations:
            view = state.instruments.get(s.name)
            table.add_row(
                s.name,
                s.state if s.online else f"[red]offline[/red] ({s.offline_reason})",
                f"{s.fidelity:g}",
                f"{s.cost:g}",
                str(view.completed if view else 0),
                str(view.failed if view else 0),
            )
        ended = (ExperimentState.COMPLETED, ExperimentState.FAILED, ExperimentState.ABANDONED, ExperimentState.STALE)
        failed = sum(counts[s] for s in ended[1:])
        summary = "  ".join(f"{s} {counts[s]}" for s in ended) if failed else ""
        self._body = (table, *(Text(line) for line in (summary, note) if line))
