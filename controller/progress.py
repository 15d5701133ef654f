"""Live progress for ``selflab run``, and logging a person can read at 3 a.m.

On a terminal, a rich live panel shows done/total, the best so far and every
instrument's state; log lines scroll above it. Off a terminal (a pipe, a
service journal) only the log lines are written, one per event of note.
``--quiet`` shows warnings and errors only.
"""

from __future__ import annotations

import logging
import sys
import time

from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from controller.config import LabConfig
from controller.fleet import Station, judged_fidelity
from controller.projection import CampaignState


def setup_logging(quiet: bool, debug: bool = False, console: Console | None = None) -> Console:
    """Route the ``selflab`` logger to stderr; returns the console used."""
    console = console or Console(stderr=True)
    logger = logging.getLogger("selflab")
    logger.handlers.clear()
    logger.propagate = False
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, log_time_format="%H:%M:%S")
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S"))
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


class LiveDisplay:
    """A rich live view of one campaign; a no-op off a terminal."""

    def __init__(self, config: LabConfig, console: Console, refresh_s: float = 0.25) -> None:
        self.config = config
        self.console = console
        self.enabled = console.is_terminal
        self.refresh_s = refresh_s
        self._last = 0.0
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
        self.instruments = Table(show_header=True, header_style="bold", box=None)
        self.live = Live(console=console, auto_refresh=False, transient=False) if self.enabled else None

    def __enter__(self) -> LiveDisplay:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def update(self, state: CampaignState, stations: list[Station], note: str = "") -> None:
        if self.live is None:
            return
        now = time.monotonic()
        if now - self._last < self.refresh_s and not note:
            return
        self._last = now
        counts = state.counts()
        done = state.cost_spent if self.by_cost else counts["completed"]
        objective = self.config.objectives[0]
        fidelity = judged_fidelity(stations, self.config.target_fidelity)
        best = state.best(objective.name, objective.direction, fidelity, self.config.constraints)
        at = "" if fidelity is None else f" at fidelity {fidelity:g}"
        best_text = f"best {objective.name}{at} = {best.outcomes[objective.name]:.4g} (#{best.experiment_id})" if best else f"no result{at} yet"
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
        failed = counts["failed"] + counts["abandoned"] + counts["stale"]
        summary = f"completed {counts['completed']}  failed {counts['failed']}  abandoned {counts['abandoned']}  stale {counts['stale']}" if failed else ""
        parts = [self.progress, table]
        if summary:
            parts.append(summary)  # type: ignore[arg-type]
        if note:
            parts.append(note)  # type: ignore[arg-type]
        self.live.update(Group(*parts), refresh=True)
