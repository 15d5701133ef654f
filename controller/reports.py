"""Read-only views of a ledger: ``selflab status`` and ``selflab export``.

Both work from the ledger alone (the campaign's config snapshot is in its
``campaign_started`` event), so ``--ledger URL`` can stand in for a config,
and both read while a campaign writes (SQLite WAL readers never block).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import IO, Any

from selflab.controller.columns import EXPORT_COLUMNS, EXPORT_HEAD, EXPORT_TAIL, renamed_reading
from selflab.controller.drift import drift_status
from selflab.controller.failure_status import failure_status
from selflab.controller.ledger import Ledger, LedgerError
from selflab.controller.model_health import health_status
from selflab.controller.projection import CampaignState
from selflab.controller.warm_status import warm_status
from selflab.planners.space import Objective, OutcomeConstraint

FIXED_HEAD = list(EXPORT_HEAD)
FIXED_TAIL = list(EXPORT_TAIL)


def load_state(ledger: Ledger, campaign: str | None) -> CampaignState:
    """The projection of ``campaign`` (or of the ledger's only campaign)."""
    names = ledger.campaigns()
    if campaign is None:
        if not names:
            raise LedgerError(f"{ledger.display_url} holds no campaign yet")
        if len(names) > 1:
            raise LedgerError(f"{ledger.display_url} holds several campaigns ({', '.join(names)}); choose one with --campaign")
        campaign = names[0]
    elif campaign not in names:
        raise LedgerError(f"{ledger.display_url} holds no campaign {campaign!r} (it holds: {', '.join(names) or 'none'})")
    return CampaignState.replay(campaign, ledger.events(campaign))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def status_dict(state: CampaignState, writer_active: bool | None) -> dict[str, Any]:
    """Everything ``selflab status`` reports, as JSON-ready data."""
    config = state.config or {}
    objectives = [Objective.model_validate(o) for o in config.get("objectives", [])]
    constraints = [OutcomeConstraint.model_validate(c) for c in config.get("constraints", [])]
    served = {float(i.get("fidelity") or 1.0) for i in config.get("instruments", [])} | {e.fidelity for e in state.experiments.values()}
    judged = float(config.get("target_fidelity", 1.0)) if len(served) > 1 else None  # best at the target fidelity only
    best = []
    for objective in objectives:
        exp = None if objective.learn else state.best(objective.name, objective.direction, judged, constraints)
        best.append(
            {
                "objective": objective.name,
                "direction": "learn" if objective.learn else objective.direction,  # (objective: learn maps the output: no optimum)
                "value": exp.outcomes[objective.name] if exp else None,
                "experiment_id": exp.experiment_id if exp else None,
                "params": exp.params if exp else None,
                "instrument": exp.instrument if exp else None,
            }
        )
    if writer_active:
        run_state = "running"
    elif state.stopped is not None:
        run_state = "stopped"
    elif state.starts:
        run_state = "not running (crashed or killed; resume with selflab run CONFIG --resume)"
    else:
        run_state = "not started"
    instruments = []
    configured = [i["name"] for i in config.get("instruments", [])]
    for name in configured + [n for n in state.instruments if n not in configured]:
        view = state.instrument(name)
        instruments.append(
            {
                "name": name,
                "state": "offline" if view.offline_reason else (view.state if writer_active else "idle"),
                "in_flight": view.in_flight,
                "completed": view.completed,
                "failed": view.failed,
                "offline_reason": view.offline_reason,
            }
        )
    pareto = (
        [{"experiment_id": e.experiment_id, "outcomes": {o.name: e.outcomes[o.name] for o in objectives}, "params": e.params}
         for e in state.pareto(objectives, constraints)]
        if len(objectives) > 1 and not any(o.learn for o in objectives) else None
    )
    elapsed = (state.last_at - state.started_at).total_seconds() if state.last_at and state.started_at else 0.0
    return {
        "campaign": state.campaign,
        "state": run_state,
        "stop_reason": state.stopped[0] if state.stopped else None,
        "stop_detail": state.stopped[1] if state.stopped else None,
        "clock": state.clock,
        "started_at": _iso(state.started_at),
        "last_event_at": _iso(state.last_at),
        "elapsed_s": elapsed,
        "counts": {str(status): n for status, n in state.counts().items()},
        "shown_counts": state.shown_counts(),
        "best": best,
        "constraints": [str(c) for c in constraints],
        "pareto": pareto,
        "paused": state.paused,
        "recommendation": state.recommendation,
        "cost_by_fidelity": _cost_by_fidelity(state),
        "cost_spent": state.cost_spent,
        "instruments": instruments,
        "anomalies": state.anomalies,
        "model_health": health_status(state, _modelled(objectives, constraints)),
        "drift": drift_status(state),
        "failures": failure_status(state),
        "warm_start": warm_status(state),
        "search_space": space_status(state),
        "map": map_status(state) if any(o.learn for o in objectives) else None,
    }


def map_status(state: CampaignState) -> dict[str, Any] | None:
    """``selflab status``'s ``map`` part for ``objective: learn``: the model's
    integrated posterior variance (as a fraction of the outputs' observed
    variance, qNIPV's measure, :mod:`selflab.planners.learn`) before the
    first and the latest model proposal; ``None`` before the first."""
    mapped = state.reasoned("integrated_variance", (int, float))
    if not mapped:
        return None
    first, latest = mapped[0], mapped[-1]
    return {"integrated_variance": float(latest.reason["integrated_variance"]), "experiment_id": latest.experiment_id,
            "first_integrated_variance": float(first.reason["integrated_variance"]), "first_experiment_id": first.experiment_id,
            "model_proposals": len(mapped)}


def space_status(state: CampaignState) -> dict[str, Any]:
    """``selflab status``'s ``search_space`` part: the current version, its
    parameters, every edit (``space_changed``) and the boundary hits since the last."""
    view = state.space_view
    return {"version": view.version,
            "parameters": [p.model_dump(mode="json") for p in view.space.parameters] if view.space is not None else [],
            "edits": [{**e, "at": e["at"].isoformat()} for e in view.edits],
            "boundary_hits": [dict(h) for h in view.hits]}


def _modelled(objectives: list[Objective], constraints: list[OutcomeConstraint]) -> list[str]:
    """Objectives, then constrained outcomes, each once: the outcomes a planner models."""
    names = [o.name for o in objectives]
    return names + [c.outcome for c in constraints if c.outcome not in names]


def _cost_by_fidelity(state: CampaignState) -> dict[str, float]:
    """Cost spent at each fidelity (keys as text, for JSON)."""
    out: dict[str, float] = {}
    for exp in state.experiments.values():
        if exp.started_at is not None:
            key = f"{exp.fidelity:g}"
            out[key] = out.get(key, 0.0) + exp.cost
    return dict(sorted(out.items()))


def format_status(data: dict[str, Any]) -> str:
    """The human-readable ``selflab status`` text."""
    lines = [f"campaign   {data['campaign']}"]
    state = data["state"]
    if data["stop_reason"]:
        state += f" ({data['stop_reason']}: {data['stop_detail']})" if data["stop_detail"] else f" ({data['stop_reason']})"
    lines.append(f"state      {state}")
    lines.append(f"clock      {data['clock']}; started {data['started_at']}; last event {data['last_event_at']} ({_duration(data['elapsed_s'])} in)")
    counts = data["counts"]
    lines.append("experiments " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for best in data["best"]:
        if best["direction"] == "learn":
            lines.append(f"best       {best['objective']}: learning (no optimum)")
            mapped = data.get("map")
            if mapped and best is data["best"][0]:
                lines.append(f"map        mean posterior variance {mapped['integrated_variance']:.3g} of the observed variance before "
                             f"experiment {mapped['experiment_id']} ({mapped['first_integrated_variance']:.3g} before experiment "
                             f"{mapped['first_experiment_id']}, the first of {mapped['model_proposals']} model proposals)")
        elif best["value"] is None:
            none = "no feasible experiment yet" if data["constraints"] else "no completed experiment yet"
            lines.append(f"best       {best['objective']} ({best['direction']}): {none}")
        else:
            params = ", ".join(f"{k}={_num(v)}" for k, v in best["params"].items())
            lines.append(f"best       {best['objective']} = {best['value']:.6g} ({best['direction']}), experiment {best['experiment_id']}"
                         + (f" on {best['instrument']}" if best['instrument'] else " (attached)") + f": {params}")
    if data["pareto"] is not None:
        lines.append(f"pareto     {len(data['pareto'])} experiment(s) on the front" + (f" (feasible: {', '.join(data['constraints'])})" if data["constraints"] else ""))
        for point in data["pareto"]:
            lines.append(f"  #{point['experiment_id']:<5} " + ", ".join(f"{k}={v:.6g}" for k, v in point["outcomes"].items()))
    if data["paused"]:
        lines.append(f"paused     by interlock: {data['paused']}")
    rec = data["recommendation"]
    if rec:
        params = ", ".join(f"{k}={_num(v)}" for k, v in rec["params"].items())
        if rec.get("predicted"):
            said = ", ".join(f"{k} {v['mean']:.4g} ± {v['std']:.2g}" for k, v in rec["predicted"].items())
            lines.append(f"recommend  {params} at fidelity {rec['fidelity']:g}: predicted {said}")
        else:
            said = ", ".join(f"{k}={v:.4g}" for k, v in (rec.get("observed") or {}).items())
            lines.append(f"recommend  {params} at fidelity {rec['fidelity']:g}: observed {said} (experiment {rec.get('experiment_id')})")
    by_fidelity = data["cost_by_fidelity"]
    lines.append(f"cost spent {data['cost_spent']:g}" + (
        " (" + ", ".join(f"fidelity {f}: {c:g}" for f, c in by_fidelity.items()) + ")" if len(by_fidelity) > 1 else ""))
    lines.append("instruments")
    for inst in data["instruments"]:
        extra = f" - {inst['offline_reason']}" if inst["offline_reason"] else ""
        lines.append(f"  {inst['name']:<20} {inst['state']:<8} in flight {inst['in_flight']}, completed {inst['completed']}, failed {inst['failed']}{extra}")
    if data["anomalies"]:
        lines.append(f"anomalies  {len(data['anomalies'])} (first: {data['anomalies'][0]})")
    space = data.get("search_space") or {}
    if space.get("version"):
        lines.append(f"space      version {space['version']}: " + ", ".join(
            f"{p['name']} " + (f"[{p['low']:g}, {p['high']:g}]" if p["type"] != "categorical" else "{" + ", ".join(map(str, p["choices"])) + "}")
            for p in space["parameters"]))
        for e in space["edits"]:
            fill = f" (backfill {e['backfill']})" if e.get("backfill") is not None else ""
            lines.append(f"  v{e['version']}  {e['at'][:19]}  {e['op'].replace('_', '-')} {e['parameter']} {' '.join(map(str, e['values'] or []))}"
                         f"{fill} by {e['by'] or '?'}" + (f": {e['reason']}" if e["reason"] else ""))
    for hit in space.get("boundary_hits", []):
        lines.append(f"boundary   {hit['parameter']} sits on its {hit['bound']} bound {hit['value']:g} in {hit['fraction']:.0%} of the "
                     f"last {hit['window']} proposals; {hit['suggestion']}")
    drift = data.get("drift")
    if drift:
        lines.append(f"drift      {drift['line']}")
    failures = data.get("failures")
    if failures:
        lines.append(f"failures   {failures['line']}")
    warm = data.get("warm_start")
    if warm:
        lines.append(f"warm start {warm['line']}")
    health = data.get("model_health") or {}
    if health.get("lines"):
        lines.append("model health" + (f" (miscalibrated: {', '.join(health['miscalibrated'])})" if health.get("miscalibrated") else ""))
        lines += [f"  {line}" for line in health["lines"]]
    return "\n".join(lines)


def _num(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    days, h = divmod(hours, 24)
    return (f"{days}d " if days else "") + f"{h}h {m:02d}m {s:02d}s"


def export_columns(state: CampaignState) -> tuple[list[str], list[str], dict[str, str]]:
    """``(columns, parameter names, {outcome column: outcome name})`` of the export.

    Parameters and outcomes are named exactly as in the config; readings an
    instrument reported beyond those follow the config's outcomes. A reading
    named like a fixed column or a parameter (recorded before selflab renamed
    such readings, see :func:`selflab.controller.execution.check_outcomes`) gets the
    column ``reading_<name>``, so it never overwrites another column.
    """
    config = state.config or {}
    params = [p["name"] for p in config.get("parameters", [])]
    names = [o["name"] for o in config.get("objectives", [])]
    for c in config.get("constraints", []):
        if c["outcome"] not in names:
            names.append(c["outcome"])
    for exp in state.experiments.values():
        names += [key for key in exp.outcomes if key not in names]
    taken = set(EXPORT_COLUMNS) | set(params)
    outcomes: dict[str, str] = {}
    for name in names:
        column = renamed_reading(name, taken | set(names)) if name in taken else name
        taken.add(column)
        outcomes[column] = name
    return FIXED_HEAD + params + list(outcomes) + FIXED_TAIL, params, outcomes


def export_rows(state: CampaignState) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns and one row per experiment, in experiment order."""
    columns, params, outcomes = export_columns(state)
    rows = []
    for eid in sorted(state.experiments):
        exp = state.experiments[eid]
        row: dict[str, Any] = {name: exp.params.get(name) for name in params}
        row.update({column: exp.outcomes.get(name) for column, name in outcomes.items()})
        row.update(  # (the fixed columns last, so nothing above can overwrite them)
            experiment_id=exp.experiment_id,
            status=str(exp.status),
            instrument=exp.instrument,
            fidelity=exp.fidelity,
            cost=exp.cost,
            proposed_at=_iso(exp.proposed_at),
            started_at=_iso(exp.started_at),
            finished_at=_iso(exp.finished_at),
            error=exp.error or None,
        )
        rows.append({column: row[column] for column in columns})
    return columns, rows


def write_export(state: CampaignState, fmt: str, out: IO[str],
                 table: tuple[list[str], list[dict[str, Any]]] | None = None) -> int:
    """Write ``csv`` or ``jsonl`` to ``out``: ``table`` (columns, rows), by
    default :func:`export_rows`; returns the number of rows."""
    columns, rows = table if table is not None else export_rows(state)
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    elif fmt == "jsonl":
        for row in rows:
            out.write(json.dumps({k: row[k] for k in columns}) + "\n")
    else:
        raise ValueError(f"unknown format {fmt!r}; use csv or jsonl")
    return len(rows)


def export_text(state: CampaignState, fmt: str) -> str:
    buffer = io.StringIO()
    write_export(state, fmt, buffer)
    return buffer.getvalue()
