"""Reading the campaigns a campaign is warm-started from (``warm_start`` in the config).

Each source, ``{ledger: URL, campaign: NAME}`` (:class:`~selflab.controller.config_models.WarmStartSource`;
``ledger`` defaults to the campaign's own), is read once, read-only, when the
campaign opens (a new start or a resume), before anything is written: an
SQLite source ledger is opened ``mode=ro``, and this campaign's own ledger is
only read. Its completed experiments (attached ones included) at the source's
own target fidelity become a :class:`~selflab.planners.protocol.SourceTask`
for the planner's context (:mod:`selflab.planners.warm_start` models it as
another task).

Matching, by parameter name:

- a parameter of this campaign that the source lacks: refused, naming the
  parameter (no value could be guessed for the source's experiments);
- a parameter of the source that this campaign lacks: dropped. The source's
  rows are kept as they are, so its variation along that parameter becomes
  the source task's own noise, which the multi-task model learns per task
  (and the guard switches transfer off when that makes the source useless);
- a source row outside this campaign's space (a value beyond a bound, a
  choice this campaign does not offer) is left out and counted (``dropped``);
- a modelled outcome (objective or constrained outcome) that the source
  campaign does not have: refused, naming it.

Every refusal is a :class:`WarmStartError` (a
:class:`~selflab.controller.record.StudyError`: one line, exit code 2 from the
CLI) that names ``warm_start[i]``, and it comes before the campaign records
anything. A source without completed experiments is allowed (it brings no
rows; the reason says so).

Example::

    sources = load_sources([{"campaign": "march"}], problem, ledger)
    sources[0].name, len(sources[0].observations)   # ('march@sqlite:///runs/lab.sqlite', 40)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from selflab.controller.config_models import WarmStartSource
from selflab.controller.ledger import Ledger, LedgerError, sqlite_path
from selflab.controller.projection import CampaignState
from selflab.controller.record import Problem, StudyError
from selflab.controller.reports import load_state
from selflab.planners.protocol import Observation, SourceTask
from selflab.planners.space import SearchSpace, brief


class WarmStartError(StudyError):
    """A warm-start source that cannot be used (missing ledger or campaign, a parameter or outcome it lacks)."""


def parse_sources(specs: Sequence[WarmStartSource | Mapping[str, Any]]) -> list[WarmStartSource]:
    """``warm_start`` entries validated (raises :class:`WarmStartError` naming the bad entry)."""
    out = []
    for i, spec in enumerate(specs):
        try:
            out.append(spec if isinstance(spec, WarmStartSource) else WarmStartSource.model_validate(spec))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise WarmStartError(f"warm_start[{i}]{'.' + where if where else ''}: {first['msg']}") from None
    return out


def load_sources(specs: Sequence[WarmStartSource | Mapping[str, Any]], problem: Problem, own: Ledger) -> tuple[SourceTask, ...]:
    """The source tasks of ``specs`` for ``problem`` (whose own ledger is ``own``), read-only; see module docs."""
    tasks = []
    for i, spec in enumerate(parse_sources(specs)):
        url = spec.ledger or own.url
        if spec.campaign == problem.name and _same_ledger(url, own):
            raise WarmStartError(f"warm_start[{i}]: campaign {spec.campaign!r} cannot warm-start from itself; name an earlier campaign")
        try:
            state = _read(url, spec.campaign, own)
        except LedgerError as exc:
            raise WarmStartError(f"warm_start[{i}]: {exc}") from None
        tasks.append(_task(i, spec, url, state, problem))
    return tuple(tasks)


def _read(url: str, campaign: str, own: Ledger) -> CampaignState:
    """The source campaign's projection: through ``own`` when it is the same ledger, else a read-only ledger."""
    if _same_ledger(url, own):
        return load_state(own, campaign)
    ledger = Ledger(url, create=False)
    try:
        return load_state(ledger, campaign)
    finally:
        ledger.engine.dispose()


def _same_ledger(url: str, own: Ledger) -> bool:
    """Whether ``url`` names ``own`` (the same URL, or the same SQLite file by another path)."""
    if url == own.url:
        return True
    mine, theirs = _path(own.url), _path(url)
    return mine is not None and mine == theirs


def _path(url: str) -> str | None:
    try:
        path = sqlite_path(url)
    except ArgumentError:  # (not a URL: the read reports it)
        return None
    return str(path.resolve()) if path is not None else None


def _task(i: int, spec: WarmStartSource, url: str, state: CampaignState, problem: Problem) -> SourceTask:
    config = state.config or {}
    source_params = {p.get("name") for p in config.get("parameters", [])}
    missing = [name for name in problem.space.names if name not in source_params]
    if missing:
        raise WarmStartError(f"warm_start[{i}]: campaign {spec.campaign!r} has no parameter {missing[0]!r}, which this campaign "
                             "has; warm-start only from campaigns with every parameter of this one")
    source_outcomes = {o.get("name") for o in config.get("objectives", [])} | {
        c.get("outcome") for c in config.get("constraints", []) if isinstance(c, Mapping)}
    lacking = [name for name in problem.outcome_names if name not in source_outcomes]
    if lacking:
        raise WarmStartError(f"warm_start[{i}]: campaign {spec.campaign!r} has no outcome {lacking[0]!r}; warm-start only "
                             "from campaigns that measured every objective and constrained outcome of this one")
    fidelity = float(config.get("target_fidelity", 1.0))
    rows, dropped = _rows(state, problem.space, problem.outcome_names, fidelity)
    return SourceTask(name=f"{spec.campaign}@{_shown(url)}", observations=tuple(rows), dropped=dropped)


def _rows(state: CampaignState, space: SearchSpace, outcomes: Sequence[str], fidelity: float) -> tuple[list[Observation], int]:
    """The completed experiments at ``fidelity`` inside ``space``, with ``space``'s parameters only; and how many were left out."""
    rows: list[Observation] = []
    dropped = 0
    for eid in state.completions:
        exp = state.experiments[eid]
        if exp.fidelity != fidelity:
            continue
        point = {name: exp.params.get(name) for name in space.names}
        values = {name: exp.outcomes.get(name, math.nan) for name in outcomes}
        if space.violations(point) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values.values()):
            dropped += 1
            continue
        rows.append(Observation(params=point, outcomes={k: float(v) for k, v in values.items()}))
    return rows, dropped


def _shown(url: str) -> str:
    """The URL without a password, for the record."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # (not a URL: shown as given, briefly)
        return brief(url)
