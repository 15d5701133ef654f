"""The console's figures: ``selflab report``'s figures, drawn server-side for the web.

The data and the drawing are the report's own
(:mod:`selflab.controller.report_data`, :mod:`selflab.controller.report_model`,
:mod:`selflab.controller.plots`):
the best-so-far trace (with the hypervolume for several objectives), the
Pareto front, each objective against cumulative cost coloured by fidelity,
and the planner's model (GP slices through the recommended point). Each is
drawn as SVG, or as PNG above :data:`SVG_MAX_POINTS` results (an SVG of
10,000 dots is a megabyte), and cached under a key of the data it shows
(:func:`data_key`), so a page that reloads without a new result costs
nothing.

The GP slices need a model fit (seconds). They are fitted on a background
thread, one campaign at a time and at most once every ``model_every_s``
seconds per campaign, only while someone looks at the plots page; the page
shows the latest slices drawn (or "fitting") and is told through
``on_ready`` when newer ones are there.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from typing import Any

from matplotlib.figure import Figure

from selflab.controller import plots
from selflab.controller.bench import hypervolume_curve
from selflab.controller.config import LabConfig
from selflab.controller.console.source import LedgerSource
from selflab.controller.ledger import Event
from selflab.controller.projection import CampaignState
from selflab.controller.report_data import completed, config_of, front_of, results_of
from selflab.controller.report_model import MIN_RESULTS_FOR_GP, floor, model_view, recommended, slice_point, slices_of

log = logging.getLogger("selflab.console")

SVG_MAX_POINTS = 2000
"""Above this many results a figure is sent as PNG rather than SVG."""

_DRAWING = threading.Lock()
"""matplotlib is not thread-safe: one figure is drawn at a time."""


@dataclass(frozen=True)
class Drawn:
    """A figure as sent: its data key, the bytes and their media type."""

    key: str
    body: bytes
    media: str


@dataclass(frozen=True)
class FigureRef:
    """A figure the plots page shows: its name (URL segment), title, the key
    its ``<img>`` URL carries (a new key: the browser fetches it again), and
    a note when it is not drawn (yet)."""

    name: str
    title: str
    key: str
    note: str = ""


def data_key(state: CampaignState) -> str:
    """A key of what the result figures show: the results, the failures (their
    cost) and the recommendation."""
    counts = state.counts()
    rec = json.dumps(state.recommendation, sort_keys=True, default=str)
    digest = hashlib.sha1(rec.encode()).hexdigest()[:8]
    return f"{len(state.completions)}-{counts.get('failed', 0)}-{digest}"


def render(fig: Figure, points: int) -> tuple[bytes, str]:
    """``fig`` as SVG, or PNG above :data:`SVG_MAX_POINTS` ``points``."""
    buffer = io.BytesIO()
    if points > SVG_MAX_POINTS:
        fig.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue(), "image/png"
    fig.savefig(buffer, format="svg")
    return buffer.getvalue(), "image/svg+xml"


def placeholder(text: str, width: int = 640, height: int = 120) -> bytes:
    """A small SVG that says ``text`` (a figure not drawn yet, or not drawable)."""
    lines = [text[i:i + 90] for i in range(0, min(len(text), 450), 90)] or [""]
    body = "".join(f'<text x="16" y="{34 + 20 * k}" font-family="sans-serif" font-size="14" fill="#555">{escape(line)}</text>'
                   for k, line in enumerate(lines))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<rect width="100%" height="100%" fill="#f6f6f6" stroke="#ccc"/>{body}</svg>').encode()


@dataclass
class _ModelSlot:
    """The GP slices of one campaign: the latest drawn (per objective), and the fit in hand."""

    drawn: dict[str, Drawn] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    error: str = ""
    """Why the latest fit failed ("": it did not)."""
    key: str = ""
    """The results count the drawn slices are of."""
    wanted: str = ""
    """The results count the latest page asked for."""
    fitted_at: float = -1e9
    busy: bool = False


class Figures:
    """Draws and caches the figures of every campaign of a :class:`LedgerSource`."""

    def __init__(self, source: LedgerSource, on_ready: Callable[[], None] = lambda: None, model_every_s: float = 10.0) -> None:
        self.source = source
        self.on_ready = on_ready
        self.model_every_s = model_every_s
        self._drawn: dict[tuple[str, str], Drawn] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._models: dict[str, _ModelSlot] = {}
        self._guard = threading.Lock()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._fitting = threading.Semaphore(1)
        """One model fit at a time, whatever the number of campaigns: the console keeps off the campaign's cores."""

    # --- what the plots page shows -----------------------------------------------------------

    def catalogue(self, campaign: str, state: CampaignState, events: list[Event]) -> list[FigureRef]:
        """The figures of ``campaign`` (its projection ``state`` and ``events``
        as read under the campaign's lock), and start a model fit when the
        slices are older than the results."""
        if state.config is None:
            return []
        config = config_of(state)
        key = data_key(state)
        refs = [FigureRef("best_so_far", "every result and the best so far" + (" (and hypervolume)" if len(config.objectives) > 1 else ""), key)]
        if len(config.objectives) > 1:
            refs.append(FigureRef("pareto", "Pareto front", key))
        for o in config.objectives:
            refs.append(FigureRef(f"cost_{o.name}", f"{o.name} against cumulative cost, by fidelity", key))
        slot = self._slot(campaign)
        done = len(state.completions)
        wanted = str(done)
        for o in config.objectives:
            note = ""
            if done < MIN_RESULTS_FOR_GP:
                note = f"GP slices need at least {MIN_RESULTS_FOR_GP} results ({done} so far)"
            refs.append(FigureRef(f"slices_{o.name}", f"the planner's model of {o.name}: GP slices", slot.key or "none",
                                  note or slot.notes.get(o.name) or slot.error))
        if done >= MIN_RESULTS_FOR_GP:
            self._want_model(campaign, wanted, events)
        return refs

    # --- one figure ------------------------------------------------------------------------

    def image(self, campaign: str, name: str) -> Drawn:
        """Figure ``name`` of ``campaign`` as it stands (a placeholder SVG
        saying why when it cannot be drawn); never raises for bad data."""
        if name.startswith("slices_"):
            slot = self._slot(campaign)
            with self._guard:
                drawn = slot.drawn.get(name.removeprefix("slices_"))
                note = slot.notes.get(name.removeprefix("slices_"))
                error = slot.error
            if drawn is not None:
                return drawn
            return Drawn("", placeholder(note or error or "fitting the planner's model ..."), "image/svg+xml")
        with self._guard:
            lock = self._locks.setdefault((campaign, name), threading.Lock())
        with lock:
            try:
                with self.source.campaign(campaign) as view:
                    key = data_key(view.state)
                    cached = self._drawn.get((campaign, name))
                    if cached is not None and cached.key == key:
                        return cached
                    draw, points = self._prepare(view.state, name)
                with _DRAWING:
                    body, media = render(draw(), points)
            except Exception as exc:  # (a figure that cannot be drawn must not break the page)
                log.warning("console: figure %s of campaign %s cannot be drawn: %s: %s", name, campaign, type(exc).__name__, exc)
                return Drawn("", placeholder(f"{name}: cannot be drawn ({type(exc).__name__}: {exc})"), "image/svg+xml")
            drawn = Drawn(key, body, media)
            self._drawn[(campaign, name)] = drawn
            return drawn

    def _prepare(self, state: CampaignState, name: str) -> tuple[Callable[[], Figure], int]:
        """Extract figure ``name``'s data from ``state`` now (under the
        campaign's lock); return how to draw it (outside the lock) and its
        number of points."""
        if state.config is None:
            raise LookupError("the campaign has not started")
        config = config_of(state)
        done = completed(state)
        title = f"campaign {state.campaign}: {len(done)} completed"
        if name == "best_so_far":
            panels = [results_of(state, config, o.name, recommended=recommended(state, None, o.name)) for o in config.objectives]
            hypervolume = None
            if len(config.objectives) > 1:
                front = front_of(state, config)
                hypervolume = hypervolume_curve(front.points, front.feasible, [o.direction for o in config.objectives], front.reference)
            if not any(len(p.values) for p in panels):
                raise LookupError("no result yet")
            return lambda: plots.results_figure(panels, title=title, hypervolume=hypervolume), len(done)
        if name == "pareto" and len(config.objectives) > 1:
            front = front_of(state, config)
            if not front.pareto.any():
                raise LookupError("no feasible result has every objective yet")
            return lambda: plots.pareto_figure(front, title=title), len(done)
        for o in config.objectives:
            if name == f"cost_{o.name}":
                panel = results_of(state, config, o.name)
                if not len(panel.values):
                    raise LookupError("no result yet")
                return lambda: plots.cost_figure(panel, title=f"{o.name} against cost spent"), len(done)
        raise LookupError(f"campaign {state.campaign!r} has no figure {name!r}")

    # --- the planner's model, on a background thread -------------------------------------------

    def _slot(self, campaign: str) -> _ModelSlot:
        with self._guard:
            return self._models.setdefault(campaign, _ModelSlot())

    def _want_model(self, campaign: str, wanted: str, events: list[Event]) -> None:
        slot = self._slot(campaign)
        with self._guard:
            slot.wanted = wanted
            if slot.busy or slot.key == wanted or self._closed:
                return
            slot.busy = True
        snapshot = list(events)
        wait = max(0.0, slot.fitted_at + self.model_every_s - time.monotonic())
        thread = threading.Thread(target=self._fit, args=(campaign, wanted, snapshot, wait), name=f"console-model-{campaign}", daemon=True)
        with self._guard:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _fit(self, campaign: str, wanted: str, events: list[Event], wait: float) -> None:
        """Fit the planner's model on ``events`` and draw every objective's slices."""
        slot = self._slot(campaign)
        try:
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not self._closed:
                time.sleep(min(0.1, wait))
            with self._fitting:
                if self._closed:
                    return
                state = CampaignState.replay(campaign, events)
                drawn, notes = self._slices(state, config_of(state))
            with self._guard:
                slot.drawn, slot.notes, slot.error, slot.key = drawn, notes, "", wanted
        except Exception as exc:  # (the model may fail to fit: say so in place of the figure)
            log.warning("console: the model of campaign %s cannot be drawn: %s: %s", campaign, type(exc).__name__, exc)
            with self._guard:
                slot.error, slot.key = f"the model could not be fitted: {type(exc).__name__}: {exc}", wanted
        finally:
            with self._guard:
                slot.fitted_at = time.monotonic()
                slot.busy = False
        self.on_ready()

    def _slices(self, state: CampaignState, config: LabConfig) -> tuple[dict[str, Drawn], dict[str, str]]:
        said: list[str] = []
        model = model_view(state, config, note=said.append)
        notes = {o.name: "; ".join(said) for o in config.objectives if said}
        if model is None:
            return {}, notes or {o.name: "GP slices skipped" for o in config.objectives}
        drawn: dict[str, Drawn] = {}
        done = completed(state)
        key = str(len(state.completions))
        for o in config.objectives:
            found = slice_point(model, state, config, o)
            if found is None:
                notes[o.name] = f"GP slices of {o.name}: no feasible result at the target fidelity yet"
                continue
            point, where = found
            slices, median = slices_of(model.planner, config, model.observations, model.context, point, o.name)
            with _DRAWING:
                fig = plots.slices_figure(slices, o.name, unit=o.unit, target_fidelity=config.target_fidelity, median=median,
                                          floor=floor(done, o.name),
                                          title=f"{model.named}: {o.name} at fidelity {config.target_fidelity:g}, through {where}")
                body, media = render(fig, len(done))
            drawn[o.name] = Drawn(key, body, media)
        return drawn, notes

    def close(self, timeout_s: float = 60.0) -> None:
        """Start no more fits, and wait for the one in hand (a thread killed
        inside torch at exit aborts the process)."""
        with self._guard:
            self._closed = True
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=timeout_s)


def describe(refs: list[FigureRef]) -> list[dict[str, Any]]:
    """The refs as template data."""
    return [{"name": r.name, "title": r.title, "key": r.key, "note": r.note} for r in refs]
