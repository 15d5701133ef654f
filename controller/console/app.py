"""The lab console's web application (Starlette; run by uvicorn, see :mod:`selflab.controller.console.server`).

Pages (server-rendered HTML, no JavaScript build step; the page's own small
script ``static/console.js`` keeps it live):

====================================  ==============================================
``/``                                 the campaigns in the ledger
``/c/{campaign}``                     state and stop reason, counts by state, best so
                                      far, cost, instruments, interlock and e-stop,
                                      worker claims, the latest events, the actions
``/c/{campaign}/experiments``         the experiments table: sort, filter, pages
``/c/{campaign}/experiments/{id}``    one experiment: parameters, outcomes, the
                                      proposal's reason, its events, its actions
``/c/{campaign}/plots``               best so far, Pareto front, cost by fidelity,
                                      GP slices (``/c/{campaign}/plots/{figure}``)
``/c/{campaign}/events``              the event log, newest first
``/stream``                           server-sent events: the ledger's stamp
``/api/c/{campaign}/status``          ``selflab status --json``, as JSON
====================================  ==============================================

A page asked for with the header ``X-Selflab-Partial: 1`` answers only its
live part (``<div id="view">``), which the script swaps in place.

Writes (``POST``): ``/unlock`` and ``/lock`` (a session for a person, see
:mod:`selflab.controller.console.security`), and the actions
(:mod:`selflab.controller.console.actions`) at ``/c/{campaign}/actions/{name}``
and ``/c/{campaign}/experiments/{id}/actions/{name}``. Each needs the write
token (an unlocked session, or ``Authorization: Bearer TOKEN``), a form from
a session also its CSRF value, and a valid form; otherwise it answers 401,
403, 404 or 422 with one line saying why, and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from selflab.controller.console import views
from selflab.controller.console.actions import (
    ActionContext,
    ActionRefused,
    ActionRegistry,
    Actor,
    ConsoleAction,
    Target,
    default_actions,
    origin_of,
)
from selflab.controller.console.figures import Figures, describe
from selflab.controller.console.live import Hub
from selflab.controller.console.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    DEFAULT_HOST,
    SESSION_COOKIE,
    Guard,
    allowed_hosts,
    check_who,
    new_csrf_cookie,
)
from selflab.controller.console.source import CampaignView, LedgerSource, UnknownCampaign
from selflab.controller.ledger import LedgerError
from selflab.controller.reports import status_dict

log = logging.getLogger("selflab.console")

HERE = Path(__file__).resolve().parent
PARTIAL_HEADER = "x-selflab-partial"
MAX_FORM_BYTES = 64 * 1024
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


class ConsoleSettings(BaseModel):
    """How one console runs (the write token is given to :func:`create_app` apart, so it never shows in a repr)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ledger_url: str
    campaign: str | None = None
    """The config's campaign: ``/`` opens it, and its page waits for it to start."""
    host: str = DEFAULT_HOST
    """The address the server binds: loopback answers loopback ``Host`` headers only."""
    poll_s: float = Field(default=0.2, gt=0, le=5, description="seconds between polls of the ledger's position")
    lease_every_s: float = Field(default=1.0, gt=0, le=60, description="seconds between polls of the leases")
    min_gap_s: float = Field(default=0.5, ge=0, le=60,
                             description="least seconds between two updates sent to the pages (coalesces a burst of events)")
    max_gap_s: float = Field(default=2.0, ge=0, le=60,
                             description="the gap between two updates when the ledger grows fast (see console.live.gap_for)")
    busy_events_per_s: float = Field(default=20.0, gt=0,
                                     description="past this many events a second the gap grows with the pace, up to max_gap_s")
    model_every_s: float = Field(default=10.0, ge=0, description="least seconds between two model fits of a campaign")


class _Headers:
    """Security headers on every response (pure ASGI, so server-sent events stream untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"DENY")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class Console:
    """The application's parts: the ledger reader, the live hub, the figures,
    the guard and the actions; :meth:`app` joins them into a Starlette app."""

    def __init__(self, settings: ConsoleSettings, token: str, actions: ActionRegistry | None = None) -> None:
        self.settings = settings
        self.source = LedgerSource(settings.ledger_url)
        self.hub = Hub(self.source, settings.poll_s, settings.lease_every_s, settings.min_gap_s, settings.max_gap_s,
                       settings.busy_events_per_s)
        self.figures = Figures(self.source, on_ready=self.hub.figures_ready, model_every_s=settings.model_every_s)
        self.guard = Guard(token)
        self.actions = actions if actions is not None else default_actions()
        self._statuses: dict[str, tuple[tuple[int, bool | None], dict[str, Any]]] = {}
        env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                          trim_blocks=True, lstrip_blocks=True)
        env.globals.update(fmt=views.fmt, when=views.when, urlencode=urlencode)
        self.templates = env

    # --- the app ---------------------------------------------------------------------

    def app(self) -> Starlette:
        routes = [
            Route("/", self.home),
            Route("/c/{campaign}", self.overview),
            Route("/c/{campaign}/experiments", self.experiments),
            Route("/c/{campaign}/experiments/{experiment:int}", self.experiment),
            Route("/c/{campaign}/plots", self.plots),
            Route("/c/{campaign}/plots/{figure}", self.figure),
            Route("/c/{campaign}/events", self.events),
            Route("/api/c/{campaign}/status", self.api_status),
            Route("/stream", self.stream),
            Route("/unlock", self.unlock, methods=["POST"]),
            Route("/lock", self.lock, methods=["POST"]),
            Route("/c/{campaign}/actions/{action}", self.act, methods=["POST"]),
            Route("/c/{campaign}/experiments/{experiment:int}/actions/{action}", self.act, methods=["POST"]),
            Route("/favicon.ico", self.favicon),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        middleware = [Middleware(_Headers), Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(self.settings.host))]
        return Starlette(routes=routes, middleware=middleware, lifespan=self._lifespan,
                         exception_handlers={HTTPException: self._http_error})

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(self.hub.run())
        warm = asyncio.create_task(asyncio.to_thread(self._warm))
        try:
            yield
        finally:
            self.hub.close()
            with contextlib.suppress(Exception):
                await warm
            await asyncio.to_thread(self.figures.close)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.source.close()

    def _warm(self) -> None:
        """Read every campaign once, at start, so that the first page of a
        big ledger need not (a page asked for meanwhile waits for its campaign)."""
        try:
            for name in self.source.campaigns():
                with self.source.campaign(name):
                    pass
        except LedgerError:  # (no ledger yet, or unreadable now: pages read it when asked)
            pass

    # --- rendering ---------------------------------------------------------------------

    def _page(self, request: Request, body: str, context: Mapping[str, Any], status: int = 200) -> HTMLResponse:
        """A page (or, for the live script, only its ``#view`` part), with the CSRF cookie set."""
        cookie = request.cookies.get(CSRF_COOKIE) or new_csrf_cookie()
        session = self.guard.session(request.cookies.get(SESSION_COOKIE))
        common = {"request": request, "stamp": self.hub.stamp, "position": self.hub.position, "who": session.who if session else None,
                  "csrf_field": CSRF_FIELD, "csrf": self.guard.csrf_value(cookie), "ledger": self.source.display_url,
                  "waiting": self.source.waiting, "body": body, "path": request.url.path,
                  "query": request.url.query}
        context = {**common, **context}
        template = body if request.headers.get(PARTIAL_HEADER) == "1" else "page.html"
        html = self.templates.get_template(template).render(context)
        response = HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})
        if request.cookies.get(CSRF_COOKIE) != cookie:
            response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="strict", path="/")
        return response

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if _wants_json(request):
            return JSONResponse({"ok": False, "error": exc.detail}, status_code=exc.status_code)
        return self._page(request, "error.html", {"error": exc.detail, "status": exc.status_code, "campaign": None, "tab": None},
                          status=exc.status_code)

    def _campaign_context(self, view: CampaignView, tab: str) -> dict[str, Any]:
        running = self.source.running(view.name)
        return {"campaign": view.name, "tab": tab, "running": running, "state_word": _state_word(view, running)}

    @contextlib.contextmanager
    def _read(self, campaign: str) -> Iterator[CampaignView]:
        """The campaign, read up to date: 404 when the ledger has no such
        campaign, 503 when the ledger cannot be read."""
        with contextlib.ExitStack() as stack:
            try:
                view = stack.enter_context(self.source.campaign(campaign))
            except UnknownCampaign as exc:
                raise HTTPException(404, str(exc)) from None
            except LedgerError as exc:
                raise HTTPException(503, str(exc)) from None
            yield view

    def _absent(self, request: Request, campaign: str, tab: str) -> Response | None:
        """The waiting page, while the config's campaign has not started yet."""
        if campaign == self.settings.campaign and not self._exists(campaign):
            return self._page(request, "waiting.html", {"campaign": campaign, "tab": tab})
        return None

    # --- pages ------------------------------------------------------------------------

    def home(self, request: Request) -> Response:
        if self.settings.campaign and not request.query_params:
            return RedirectResponse(f"/c/{quote(self.settings.campaign, safe='')}", status_code=303)
        rows = []
        try:
            names = self.source.campaigns()
        except LedgerError as exc:
            raise HTTPException(503, str(exc)) from None
        for name in names:
            with self._read(name) as view:
                running = self.source.running(name)
                data = self._status(view, running)
                rows.append({"name": name, "state": _state_word(view, running), "counts": data["counts"], "best": data["best"],
                             "cost": data["cost_spent"], "last": data["last_event_at"]})
        return self._page(request, "campaigns.html", {"campaigns": rows, "campaign": None, "tab": None})

    def overview(self, request: Request) -> Response:
        campaign = request.path_params["campaign"]
        if (waiting := self._absent(request, campaign, "overview")) is not None:
            return waiting
        with self._read(campaign) as view:
            context = self._campaign_context(view, "overview")
            state = view.state
            data = self._status(view, context["running"])
            target = Target(campaign, state, context["running"], views.latest_start(view.events))
            context.update(
                status=data,
                holder=self.source.leases().get(campaign),
                started=target.started,
                light=views.stop_light(state, context["running"]),
                work=self.source.work(campaign),
                recent=views.recent(view.events),
                notes=state.notes[-5:],
                target_fidelity=(state.config or {}).get("target_fidelity", 1.0),
                multi_fidelity=len(data["cost_by_fidelity"]) > 1 or len({i.get("fidelity") for i in (state.config or {}).get("instruments", [])}) > 1,
                actions=self.actions.offered("campaign", target),
            )
        return self._page(request, "overview.html", context)

    def experiments(self, request: Request) -> Response:
        campaign = request.path_params["campaign"]
        if (waiting := self._absent(request, campaign, "experiments")) is not None:
            return waiting
        with self._read(campaign) as view:
            try:
                query = views.parse_query(views.TableQuery, request.query_params)
                table = views.experiments_page(view.state, query)
            except views.QueryError as exc:
                raise HTTPException(400, str(exc)) from None
            context = self._campaign_context(view, "experiments")
            target = Target(campaign, view.state, context["running"], views.latest_start(view.events))
            row_actions = {e.experiment_id: self.actions.offered("experiment", Target(campaign, view.state, context["running"],
                                                                                       target.started, e))
                           for e in table.rows}
            context.update(table=table, row_actions=row_actions, link=_linker(request))
        return self._page(request, "experiments.html", context)

    def experiment(self, request: Request) -> Response:
        campaign, eid = request.path_params["campaign"], request.path_params["experiment"]
        with self._read(campaign) as view:
            exp = view.state.experiments.get(eid)
            if exp is None:
                raise HTTPException(404, f"campaign {campaign!r} has no experiment {eid}")
            context = self._campaign_context(view, "experiments")
            target = Target(campaign, view.state, context["running"], views.latest_start(view.events), exp)
            context.update(exp=exp, reason=views.reason_text(exp.reason), outcome_names=views.outcome_names(view.state),
                           reason_json=_json(exp.reason), events=[views.event_row(e) for e in view.events if e.experiment_id == eid],
                           actions=self.actions.offered("experiment", target))
        return self._page(request, "experiment.html", context)

    def plots(self, request: Request) -> Response:
        campaign = request.path_params["campaign"]
        if (waiting := self._absent(request, campaign, "plots")) is not None:
            return waiting
        with self._read(campaign) as view:
            context = self._campaign_context(view, "plots")
            context["figures"] = describe(self.figures.catalogue(campaign, view.state, view.events))
        return self._page(request, "plots.html", context)

    def figure(self, request: Request) -> Response:
        campaign, name = request.path_params["campaign"], request.path_params["figure"]
        if not self._exists(campaign):
            raise HTTPException(404, f"ledger {self.source.display_url} holds no campaign {campaign!r}")
        drawn = self.figures.image(campaign, name)
        return Response(drawn.body, media_type=drawn.media, headers={"cache-control": "private, max-age=3600"})

    def events(self, request: Request) -> Response:
        campaign = request.path_params["campaign"]
        if (waiting := self._absent(request, campaign, "events")) is not None:
            return waiting
        with self._read(campaign) as view:
            try:
                query = views.parse_query(views.EventQuery, request.query_params)
                page = views.events_page(view.events, query)
            except views.QueryError as exc:
                raise HTTPException(400, str(exc)) from None
            context = self._campaign_context(view, "events")
            context.update(log=page, link=_linker(request))
        return self._page(request, "events.html", context)

    def api_status(self, request: Request) -> Response:
        campaign = request.path_params["campaign"]
        with self._read(campaign) as view:
            data = self._status(view, self.source.running(campaign))
            position = view.state.last_position
        return JSONResponse({**data, "position": position})

    async def stream(self, request: Request) -> Response:
        async def stamps() -> AsyncIterator[dict[str, str]]:
            async for stamp in self.hub.stamps():
                if await request.is_disconnected():
                    return
                yield {"event": "stamp", "data": stamp}

        return EventSourceResponse(stamps(), ping=15, headers={"cache-control": "no-store"})

    def favicon(self, request: Request) -> Response:
        return Response((HERE / "static" / "favicon.svg").read_bytes(), media_type="image/svg+xml")

    def _exists(self, campaign: str) -> bool:
        try:
            return self.source.known(campaign)
        except LedgerError:
            return False

    def _status(self, view: CampaignView, running: bool | None) -> dict[str, Any]:
        """``selflab status``'s data of ``view``, computed once per ledger
        position (several viewers, and the lease polls, redraw the same)."""
        key = (view.state.last_position, running)
        cached = self._statuses.get(view.name)
        if cached is None or cached[0] != key:
            cached = (key, status_dict(view.state, running))
            self._statuses[view.name] = cached
        return cached[1]

    # --- writes ------------------------------------------------------------------------

    async def unlock(self, request: Request) -> Response:
        form = await _form(request)
        if not self.guard.csrf_ok(request.cookies.get(CSRF_COOKIE), _one(form, CSRF_FIELD)):
            return _refuse(request, 403, "the form is stale or came from another site (CSRF check failed); reload the page and try again")
        try:
            who = check_who(_one(form, "who") or "")
        except ValueError as exc:
            return _refuse(request, 422, str(exc))
        sid = self.guard.unlock(who, _one(form, "token"))
        if sid is None:
            log.warning("console: a wrong token was given to unlock the console (from %s)", request.client.host if request.client else "?")
            return _refuse(request, 401, "wrong token: use the one printed when the console started (or its --token-file / SELFLAB_CONSOLE_TOKEN)")
        response = _done(request, f"unlocked: actions are recorded as {who}", _next(form))
        response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="strict", path="/")
        return response

    async def lock(self, request: Request) -> Response:
        form = await _form(request)
        if not self.guard.csrf_ok(request.cookies.get(CSRF_COOKIE), _one(form, CSRF_FIELD)):
            return _refuse(request, 403, "the form is stale or came from another site (CSRF check failed); reload the page and try again")
        self.guard.lock(request.cookies.get(SESSION_COOKIE))
        response = _done(request, "locked", _next(form))
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def act(self, request: Request) -> Response:
        """Run one action: authorize, check the form, read the target, perform."""
        campaign, name = request.path_params["campaign"], request.path_params["action"]
        eid: int | None = request.path_params.get("experiment")
        form = await _form(request)
        who = self._authorize(request, form)
        if isinstance(who, Response):
            return who
        action = self.actions.get(name)
        scope = "experiment" if eid is not None else "campaign"
        if action is None or action.spec.scope != scope:
            known = ", ".join(a.spec.name for a in self.actions if a.spec.scope == scope)
            return _refuse(request, 404, f"no {scope} action {name!r} (the {scope} actions: {known}); nothing was written")
        fields = {k: v for k, v in form.multi_items() if k not in (CSRF_FIELD, "by", "next")}
        repeated = sorted({k for k, _ in form.multi_items() if len(form.getlist(k)) > 1})
        if repeated:
            return _refuse(request, 422, f"field {repeated[0]!r} given more than once; nothing was written")
        try:
            data = action.spec.form.model_validate(fields)
        except ValidationError as exc:
            return _refuse(request, 422, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'form'}: {e['msg']}" for e in exc.errors())
                           + "; nothing was written")
        actor = Actor(who=who, origin=origin_of(request.client.host if request.client else None))
        try:
            message = await run_in_threadpool(self._perform, action, campaign, eid, actor, data)
        except ActionRefused as exc:
            return _refuse(request, exc.status, str(exc))
        except LedgerError as exc:
            return _refuse(request, 503, f"{exc}; nothing was written")
        log.warning("console: %s by %s on campaign %s%s: %s", name, who, campaign, f" experiment {eid}" if eid is not None else "", message)
        return _done(request, message, _next(form) or (f"/c/{quote(campaign, safe='')}" + (f"/experiments/{eid}" if eid is not None else "")))

    def _authorize(self, request: Request, form: FormData) -> str | Response:
        """Who acts, or the refusal: a bearer token (scripts), else an unlocked
        session and a good CSRF value (browsers); a cross-origin request never."""
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            return _refuse(request, 403, f"a request from {origin} is not this console's; nothing was written")
        auth = request.headers.get("authorization", "")
        if auth:
            scheme, _, presented = auth.partition(" ")
            if scheme.lower() != "bearer" or not self.guard.token_ok(presented.strip()):
                return _refuse(request, 401, "wrong token in the Authorization header (expected: Bearer TOKEN); nothing was written")
            try:
                return check_who(_one(form, "by") or "console API")
            except ValueError as exc:
                return _refuse(request, 422, f"by: {exc}; nothing was written")
        session = self.guard.session(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return _refuse(request, 401, "this needs the write token: unlock the console with it first (or send Authorization: Bearer TOKEN); nothing was written")
        if not self.guard.csrf_ok(request.cookies.get(CSRF_COOKIE), _one(form, CSRF_FIELD)):
            return _refuse(request, 403, "the form is stale or came from another site (CSRF check failed); reload the page; nothing was written")
        return session.who

    def _perform(self, action: ConsoleAction, campaign: str, eid: int | None, actor: Actor, data: Any) -> str:
        try:
            with self.source.campaign(campaign) as view:
                experiment = None
                if eid is not None:
                    experiment = view.state.experiments.get(eid)
                    if experiment is None:
                        raise ActionRefused(f"campaign {campaign!r} has no experiment {eid}; nothing was written", 404)
                target = Target(campaign, view.state, self.source.running(campaign), views.latest_start(view.events), experiment)
                return action.perform(ActionContext(self.settings.ledger_url, target, actor), data)
        except UnknownCampaign as exc:
            raise ActionRefused(f"{exc}; nothing was written", 404) from None


def create_app(settings: ConsoleSettings, token: str, actions: ActionRegistry | None = None) -> Starlette:
    """The console's ASGI app (see the module's docstring)."""
    return Console(settings, token, actions).app()


# --- helpers -----------------------------------------------------------------------------------


def _state_word(view: CampaignView, running: bool | None) -> str:
    state = view.state
    if running:
        return "running"
    if state.stopped is not None:
        return f"stopped ({state.stopped[0]})"
    if state.starts:
        return "not running"
    return "not started"


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or request.headers.get(PARTIAL_HEADER) == "1"


def _refuse(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"ok": False, "error": message}, status_code=status)
    return HTMLResponse(f"<!doctype html><title>refused</title><p>{_escape(message)}</p><p><a href=\"/\">back</a></p>",
                        status_code=status)


def _done(request: Request, message: str, next_url: str | None) -> Response:
    if _wants_json(request):
        return JSONResponse({"ok": True, "message": message})
    return RedirectResponse(next_url or "/", status_code=303)


def _escape(text: str) -> str:
    from html import escape

    return escape(text)


async def _form(request: Request) -> FormData:
    """The request's form, refused (413) above :data:`MAX_FORM_BYTES`."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise HTTPException(413, f"the form is larger than {MAX_FORM_BYTES} bytes; nothing was written")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, f"the form is larger than {MAX_FORM_BYTES} bytes; nothing was written")
    return await request.form(max_files=0, max_fields=100)


def _one(form: FormData, key: str) -> str | None:
    value = form.get(key)
    return value if isinstance(value, str) else None


def _next(form: FormData) -> str | None:
    """Where to go after a form without the script: a path on this site only."""
    target = _one(form, "next")
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


def _linker(request: Request) -> Callable[..., str]:
    """``link(sort="id", page=2)``: this page's URL with those query values changed."""
    current = dict(request.query_params)

    def link(**changes: Any) -> str:
        merged = {**current, **{k: v for k, v in changes.items()}}
        query = {k: v for k, v in merged.items() if v not in (None, "")}
        return request.url.path + ("?" + urlencode(query) if query else "")

    return link


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True, default=str)


__all__ = ["Console", "ConsoleSettings", "create_app"]
