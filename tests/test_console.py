"""The lab console over HTTP: pages, live stream, security, actions, CLI (no browser here;
the browser tests are ``test_console_browser.py``)."""

from __future__ import annotations

import hashlib
import html
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from pathlib import Path
from urllib.parse import urlencode

import httpx
import psutil
import pytest
from conftest import REPO
from console_fixtures import (
    FIXTURES,
    TOKEN,
    campaign_thread,
    empty_ledger,
    quadratic_running,
    serve,
    single_objective,
    synthetic_ledger,
)

from selflab.controller.cli import _parser, main
from selflab.controller.console import views
from selflab.controller.console.actions import (
    ActionContext,
    ActionForm,
    ActionRegistry,
    ActionSpec,
    OversightAction,
    Planned,
    Target,
    default_actions,
)
from selflab.controller.console.security import (
    TOKEN_ENV,
    Guard,
    TokenError,
    allowed_hosts,
    bind_warning,
    is_loopback,
    load_token,
)
from selflab.controller.ledger import Ledger, NewEvent
from selflab.controller.projection import CampaignState

SELFLAB = str(Path(sys.executable).with_name("selflab"))


@pytest.fixture(scope="module")
def fixture_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Every fixture campaign in one SQLite ledger."""
    url = f"sqlite:///{tmp_path_factory.mktemp('console') / 'fixtures.sqlite'}"
    for build in FIXTURES.values():
        build(url)
    return url


@pytest.fixture(scope="module")
def console(fixture_url: str) -> Iterator[str]:
    """A console on the fixture ledger; its base URL."""
    with serve(fixture_url) as server:
        yield server.url.rstrip("/")


def position(url: str) -> int:
    ledger = Ledger(url, create=False)
    try:
        return sum(len(ledger.events(c)) for c in ledger.campaigns())
    finally:
        ledger.close()


def events_of(url: str, campaign: str) -> list:
    ledger = Ledger(url, create=False)
    try:
        return ledger.events(campaign)
    finally:
        ledger.close()


# --- pages ------------------------------------------------------------------------------------


def test_every_page_of_every_fixture_answers(console: str) -> None:
    with httpx.Client(base_url=console) as web:
        listing = web.get("/")
        assert listing.status_code == 200
        for name in FIXTURES:
            assert f'href="/c/{name}"' in listing.text
        for name in FIXTURES:
            for path in ("", "/experiments", "/plots", "/events", "/experiments?sort=cost&order=asc&per=5", "/events?kind=proposed"):
                page = web.get(f"/c/{name}{path}")
                assert page.status_code == 200, (name, path, page.text[:300])
                assert 'id="view"' in page.text and "data-stamp=" in page.text
        overview = web.get("/c/single").text
        assert re.search(r'data-count="completed">8<', overview)
        assert "stop reason: <b id=\"stop-reason\">max_experiments</b>" in overview
        mf = web.get("/c/mf").text
        assert "counted at the target fidelity 1 only" in mf and "fidelity 0.5" in mf  # best at the target; cost by fidelity
        failing = web.get("/c/failing/experiments?status=failed").text
        assert "garbled reply" in failing and 'class="row st-failed"' in failing and "st-completed" not in failing
        mixed = web.get("/c/mixed/experiments/1").text
        assert "solvent" in mixed and "stages" in mixed and "Why it was proposed" in mixed
        empty = web.get("/c/empty").text
        assert re.search(r'data-count="proposed">0<', empty)
        partial = web.get("/c/single/experiments", headers={"X-Selflab-Partial": "1"})
        assert '<div id="view"' in partial.text and "<html" not in partial.text
        status = web.get("/api/c/multi/status").json()
        assert status["counts"]["completed"] == 8 and len(status["pareto"]) >= 1


def test_figures_are_svg_or_a_note(console: str) -> None:
    with httpx.Client(base_url=console) as web:
        best = web.get("/c/single/plots/best_so_far")
        assert best.headers["content-type"].startswith("image/svg+xml") and best.content.startswith(b"<?xml") and len(best.content) > 5000
        assert web.get("/c/multi/plots/pareto").content.count(b"<path") > 20
        cost = web.get("/c/mf/plots/cost_y0")
        assert cost.status_code == 200 and len(cost.content) > 5000
        nothing = web.get("/c/empty/plots/best_so_far")  # no result yet: a small SVG saying so, not an error
        assert nothing.status_code == 200 and b"no result yet" in nothing.content
        assert web.get("/c/single/plots/nonsense").status_code == 200  # (an <img> never gets an error page)
        deadline = time.monotonic() + 60
        web.get("/c/single/plots")  # asks for the model fit
        while time.monotonic() < deadline:
            slices = web.get("/c/single/plots/slices_y")
            if len(slices.content) > 5000:
                break
            time.sleep(0.2)
        assert len(slices.content) > 5000, slices.content[:300]
        assert 'plots/slices_y?v=8"' in web.get("/c/single/plots").text  # its key: the 8 results it was fitted on


def test_bad_queries_are_one_clear_line(console: str) -> None:
    with httpx.Client(base_url=console) as web:
        bad = web.get("/c/single/experiments?sort=nonsense", headers={"Accept": "application/json"})
        assert bad.status_code == 400 and "sort: unknown column 'nonsense'" in bad.json()["error"]
        assert web.get("/c/single/experiments?per=0").status_code == 400
        assert "kind: unknown event kind" in web.get("/c/single/events?kind=bogus", headers={"Accept": "application/json"}).json()["error"]
        assert web.get("/c/single/experiments?surprise=1").status_code == 400
        missing = web.get("/c/nothing-here")
        assert missing.status_code == 404 and "holds no campaign 'nothing-here'" in html.unescape(missing.text)
        assert web.get("/c/single/experiments/999").status_code == 404


def test_reading_writes_nothing(tmp_path: Path) -> None:
    """The console opens an SQLite ledger read-only: serving every page leaves its bytes as they were."""
    path = tmp_path / "ro.sqlite"
    url = f"sqlite:///{path}"
    single_objective(url)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with serve(url) as server, httpx.Client(base_url=server.url) as web:
        for page in ("/", "/c/single", "/c/single/experiments", "/c/single/events", "/c/single/plots", "/c/single/plots/best_so_far"):
            assert web.get(page).status_code == 200
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_waits_for_a_ledger_that_does_not_exist_yet(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'later.sqlite'}"
    with serve(url, campaign="single") as server, httpx.Client(base_url=server.url, follow_redirects=True) as web:
        first = web.get("/")
        assert first.status_code == 200 and "Waiting for campaign <b>single</b> to start" in first.text
        single_objective(url)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "data-count" not in (page := web.get("/c/single").text):
            time.sleep(0.1)
        assert re.search(r'data-count="completed">8<', page)


def test_the_stream_sends_a_new_stamp_after_a_write(fixture_url: str, console: str) -> None:
    with httpx.Client(base_url=console, timeout=10) as web, web.stream("GET", "/stream") as stream:
        lines = stream.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        ledger = Ledger(fixture_url)
        try:
            [note] = ledger.append([NewEvent(campaign="single", kind="note", payload={"text": "stream test", "by": "test"})])
        finally:
            ledger.close()
        for line in lines:
            if line.startswith("data:") and int(line.split(":", 1)[1].strip().split(".")[0]) >= note.id:
                break
        assert int(first.split(":", 1)[1].strip().split(".")[0]) < note.id
        assert "stream test" in web.get("/c/single").text


def test_worker_claims_show(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'claims.sqlite'}"
    single_objective(url)
    ledger = Ledger(url)
    try:
        ledger.append([NewEvent(campaign="single", kind="proposed", experiment_id=9, payload={"params": {"x1": 0.0, "x2": 1.0}})],
                      work=[{"campaign": "single", "experiment_id": 9, "instrument": "sim", "state": "open", "params": {"x1": 0.0, "x2": 1.0}}])
    finally:
        ledger.close()
    with serve(url) as server, httpx.Client(base_url=server.url) as web:
        panel = web.get("/c/single").text.split('id="workers"', 1)[1].split("</section>", 1)[0]
    assert 'href="/c/single/experiments/9">#9</a></td><td>sim</td><td>open</td>' in panel


@pytest.mark.postgres
def test_on_postgres(postgres_url: str) -> None:
    single_objective(postgres_url)
    with serve(postgres_url) as server, httpx.Client(base_url=server.url) as web:
        assert re.search(r'data-count="completed">8<', web.get("/c/single").text)
        assert web.get("/c/single/experiments?sort=outcome:y&order=asc").status_code == 200
        ledger = Ledger(postgres_url)
        try:
            [note] = ledger.append([NewEvent(campaign="single", kind="note", payload={"text": "on postgres", "by": "test"})])
        finally:
            ledger.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and server.console.hub.position < note.id:
            time.sleep(0.05)
        assert server.console.hub.position >= note.id
        assert "on postgres" in web.get("/c/single").text


# --- security ---------------------------------------------------------------------------------


def test_token_sources(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text("from-a-file-0123456789\n")
    assert load_token(file, {TOKEN_ENV: "from-the-environment-1234"}) == ("from-a-file-0123456789", "file")
    assert load_token(None, {TOKEN_ENV: "from-the-environment-1234"}) == ("from-the-environment-1234", "env")
    made, source = load_token(None, {})
    assert source == "generated" and len(made) >= 32 and made != load_token(None, {})[0]
    with pytest.raises(TokenError, match="at least 16 characters"):
        load_token(None, {TOKEN_ENV: "short"})
    with pytest.raises(TokenError, match="cannot read it"):
        load_token(tmp_path / "missing", {})
    guard = Guard("a-token-that-is-long-enough")
    assert guard.unlock("ada", "a-token-that-is-long-enough-not") is None
    sid = guard.unlock("ada", "a-token-that-is-long-enough")
    assert sid is not None and guard.session(sid).who == "ada"  # type: ignore[union-attr]
    assert guard.csrf_ok("cookie", guard.csrf_value("cookie")) and not guard.csrf_ok("cookie", guard.csrf_value("other"))


def test_bind_rules() -> None:
    assert _parser().parse_args(["console", "--ledger", "sqlite:///x.sqlite"]).host == "127.0.0.1"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    assert bind_warning("127.0.0.1") is None
    warning = bind_warning("0.0.0.0")
    assert warning is not None and "not only on this machine" in warning
    assert "*" not in allowed_hosts("127.0.0.1") and allowed_hosts("0.0.0.0") == ["*"]


def test_foreign_host_header_and_security_headers(console: str) -> None:
    with httpx.Client(base_url=console) as web:
        assert web.get("/c/single", headers={"Host": "attacker.example"}).status_code == 400  # (DNS rebinding)
        page = web.get("/c/single")
        assert "script-src 'self'" in page.headers["content-security-policy"] and page.headers["x-frame-options"] == "DENY"
        assert "httponly" in page.headers["set-cookie"].lower() and "samesite=strict" in page.headers["set-cookie"].lower()


@dataclass
class Browserish:
    """An httpx client that keeps cookies and reads the page's CSRF value, as a browser would."""

    web: httpx.Client

    def csrf(self, path: str) -> str:
        match = re.search(r'name="csrf" value="([0-9a-f]+)"', self.web.get(path).text)
        assert match, path
        return match.group(1)

    def unlock(self, who: str, token: str) -> httpx.Response:
        return self.web.post("/unlock", data={"csrf": self.csrf("/?all=1"), "who": who, "token": token},
                             headers={"Accept": "application/json"})


def test_writes_need_the_token_and_a_good_form(tmp_path: Path) -> None:
    """Every refused write answers one clear line and writes nothing; then a
    good one stops the campaign through the ledger."""
    url = f"sqlite:///{tmp_path / 'live.sqlite'}"
    config = quadratic_running(url)
    with campaign_thread(config) as run, serve(url) as server, httpx.Client(base_url=server.url) as web:
        user = Browserish(web)
        stop = "/c/live/actions/stop"
        json_ = {"Accept": "application/json"}

        def refused(status: int, words: str, response: httpx.Response) -> None:
            assert response.status_code == status, response.text
            assert words in response.json()["error"] and "nothing was written" in response.json()["error"]
            assert not [e for e in events_of(url, "live") if e.kind == "stop_requested"]

        refused(401, "needs the write token", web.post(stop, data={"csrf": user.csrf("/c/live")}, headers=json_))
        refused(401, "wrong token", web.post(stop, headers={**json_, "Authorization": "Bearer not-the-token-at-all"}))
        refused(401, "wrong token", web.post(stop, headers={**json_, "Authorization": f"Basic {TOKEN}"}))
        assert user.unlock("ada", "wrong-token-0000000000").status_code == 401
        assert user.unlock("<script>", TOKEN).status_code == 422
        assert user.unlock("ada", TOKEN).json()["ok"]
        refused(403, "CSRF check failed", web.post(stop, data={"csrf": "0" * 64}, headers=json_))
        refused(403, "CSRF check failed", web.post(stop, data={}, headers=json_))
        refused(403, "is not this console's", web.post(stop, data={"csrf": user.csrf("/c/live")},
                                                       headers={**json_, "Origin": "http://attacker.example"}))
        good = user.csrf("/c/live")
        refused(404, "no campaign action 'launch'", web.post("/c/live/actions/launch", data={"csrf": good}, headers=json_))
        refused(404, "no experiment action 'stop'", web.post("/c/live/experiments/1/actions/stop", data={"csrf": good}, headers=json_))
        refused(422, "reason", web.post("/c/live/experiments/1/actions/veto", data={"csrf": good}, headers=json_))
        refused(422, "Extra inputs are not permitted", web.post(stop, data={"csrf": good, "urgency": "high"}, headers=json_))
        refused(422, "at most 500 characters", web.post(stop, data={"csrf": good, "reason": "x" * 501}, headers=json_))
        refused(422, "given more than once", web.post(stop, content=urlencode([("csrf", good), ("reason", "a"), ("reason", "b")]),
                                                         headers={**json_, "Content-Type": "application/x-www-form-urlencoded"}))
        refused(404, "holds no campaign 'ghost'", web.post("/c/ghost/actions/stop", data={"csrf": good}, headers=json_))
        assert run["thread"].is_alive()
        done = web.post(stop, data={"csrf": good, "reason": "end of shift"}, headers=json_)
        assert done.status_code == 200 and done.json()["ok"], done.text
        run["thread"].join(timeout=30)
        assert run["stop"].reason == "stop_requested"
    [request] = [e for e in events_of(url, "live") if e.kind == "stop_requested"]
    assert request.payload["by"] == "ada" and request.payload["reason"] == "end of shift" and request.payload["emergency"] is False
    assert "selflab console" in request.payload["origin"]


def test_emergency_stop_by_bearer_token_and_not_when_stopped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.sqlite'}"
    with campaign_thread(quadratic_running(url, delay_s=0.3)) as run, serve(url) as server, httpx.Client(base_url=server.url) as web:
        bearer = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
        done = web.post("/c/live/actions/emergency_stop", data={"by": "night shift"}, headers=bearer)
        assert done.status_code == 200 and "emergency stop requested" in done.json()["message"]
        run["thread"].join(timeout=30)
        assert run["stop"].reason == "emergency_stop"
        written = len(events_of(url, "live"))
        again = web.post("/c/live/actions/stop", headers=bearer)
        assert again.status_code == 409 and "is not running" in again.json()["error"]
        assert len(events_of(url, "live")) == written
    [request] = [e for e in events_of(url, "live") if e.kind == "stop_requested"]
    assert request.payload["emergency"] is True and request.payload["by"] == "night shift"


def test_space_edits_by_bearer_token_are_checked_as_the_cli_checks_them(tmp_path: Path) -> None:
    """The console's ``space`` action on a stopped campaign: a bad edit is
    refused (422) in one line naming the field, the parameter or the limit
    and writes nothing; good ones are ``space_changed`` v1 and v2, by the
    named person, checked by the same rules as ``selflab space``."""
    url = f"sqlite:///{tmp_path / 'space.sqlite'}"
    single_objective(url)
    bearer = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    with serve(url) as server, httpx.Client(base_url=server.url) as web:
        written = len(events_of(url, "single"))
        for form, words in (({"op": "widen", "parameter": "nope", "values": "0 1"}, "nope"),
                            ({"op": "stretch", "parameter": "x1", "values": "0 1"}, "unknown edit 'stretch'"),
                            ({"op": "widen", "parameter": "x1", "values": "-5 12", "explore": "a few"}, "explore"),
                            ({"op": "widen", "parameter": "x1", "values": "0"}, "x1"),
                            ({"op": "add", "parameter": "stir", "values": "100 800"}, "backfill"),
                            ({"op": "widen", "parameter": "x1", "values": "-6 10"}, "the instruments' limits allow only [-5, 10]")):
            refused = web.post("/c/single/actions/space", data={**form, "by": "ada"}, headers=bearer)
            assert refused.status_code == 422 and words in refused.json()["error"], (form, refused.text)
        assert len(events_of(url, "single")) == written
        narrowed = web.post("/c/single/actions/space", data={"op": "narrow", "parameter": "x1", "values": "-4, 8", "by": "ada"},
                            headers=bearer)
        assert narrowed.status_code == 200 and "space_changed v1" in narrowed.json()["message"], narrowed.text
        done = web.post("/c/single/actions/space", data={"op": "widen", "parameter": "x1", "values": "-5 10", "explore": "2",
                                                         "reason": "back to the limits", "by": "ada"}, headers=bearer)
        assert done.status_code == 200 and "space_changed v2" in done.json()["message"], done.text
        page = web.get("/c/single").text
        assert 'id="search-space" data-version="2"' in page and "[-5, 10]" in page and "narrow x1 -4 8 by ada" in page
    edits = [e for e in events_of(url, "single") if e.kind == "space_changed"]
    assert [(e.payload["version"], e.payload["by"], e.payload["edit"]["op"]) for e in edits] == [(1, "ada", "narrow"), (2, "ada", "widen")]
    assert edits[1].payload["reason"] == "back to the limits" and edits[1].payload["edit"]["explore"] == 2


# --- the action hooks --------------------------------------------------------------------------


class Flag(ActionForm):
    remark: str


@dataclass(frozen=True)
class FlagAction:
    """A stand-in for a phase-2 experiment action: a note about one experiment."""

    @property
    def spec(self) -> ActionSpec:
        return ActionSpec("flag", "Flag", "experiment", Flag, help="note something about this experiment")

    def available(self, target: Target) -> bool:
        return target.experiment is not None and target.experiment.status == "completed"

    def perform(self, context: ActionContext, form: ActionForm) -> str:
        assert isinstance(form, Flag) and context.target.experiment is not None
        ledger = Ledger(context.ledger_url)
        try:
            ledger.append([NewEvent(campaign=context.target.campaign, kind="note", payload={
                "text": f"#{context.target.experiment.experiment_id}: {form.remark}", "by": context.actor.who})])
        finally:
            ledger.close()
        return "flagged"


def test_registry_takes_new_actions(tmp_path: Path) -> None:
    registry = default_actions()
    assert [a.spec.name for a in registry] == ["stop", "emergency_stop", "approve", "veto", "edit", "attach", "result", "note",
                                               "pause", "resume", "space"]
    assert isinstance(registry.get("veto"), OversightAction)
    with pytest.raises(TypeError, match="not a ConsoleAction"):
        registry.register(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="registered already"):
        registry.register(Planned("veto"))
    registry.register(Planned("veto", "Veto", "experiment"), replace=True)  # a lab switches one off
    registry.register(FlagAction())
    url = f"sqlite:///{tmp_path / 'hooks.sqlite'}"
    single_objective(url)
    with serve(url, actions=registry) as server, httpx.Client(base_url=server.url) as web:
        table = web.get("/c/single/experiments").text
        assert table.count('data-action="flag"') == 8 and 'action="/c/single/experiments/3/actions/flag"' in table
        assert 'data-action="flag"' in web.get("/c/single/experiments/3").text
        bearer = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
        assert web.post("/c/single/experiments/3/actions/flag", data={}, headers=bearer).status_code == 422  # (remark is required)
        done = web.post("/c/single/experiments/3/actions/flag", data={"remark": "odd colour", "by": "ada"}, headers=bearer)
        assert done.json() == {"ok": True, "message": "flagged"}
        off = web.post("/c/single/experiments/3/actions/veto", data={}, headers=bearer)
        assert off.status_code == 501 and "not available in this selflab yet" in off.json()["error"], off.text
    assert [e.payload for e in events_of(url, "single") if e.kind == "note"] == [{"text": "#3: odd colour", "by": "ada"}]
    empty = ActionRegistry()
    assert empty.offered("campaign", Target("x", CampaignState("x"), True)) == []


# --- views, at scale -----------------------------------------------------------------------------


def test_tables_sort_filter_and_cut_pages(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'big.sqlite'}"
    synthetic_ledger(url, 2000, fail_every=20)
    state = CampaignState.replay("big", events_of(url, "big"))
    page = views.experiments_page(state, views.TableQuery(sort="outcome:y0", order="asc", per=25))
    values = [e.outcomes["y0"] for e in page.rows]
    assert values == sorted(values) and values[0] == min(e.outcomes.get("y0", 1e9) for e in state.experiments.values())
    assert page.total == 2000 and page.pages == 80 and len(page.rows) == 25
    last = views.experiments_page(state, views.TableQuery(sort="outcome:y0", order="asc", per=25, page=80))
    assert [e.status for e in last.rows][-1] == "failed"  # (no outcome: last, whatever the order)
    failed = views.experiments_page(state, views.TableQuery(status="failed", per=500))
    assert failed.total == 100 and {e.status for e in failed.rows} == {"failed"}
    found = views.experiments_page(state, views.TableQuery(q="GARBLED reply to run #1980"))
    assert [e.experiment_id for e in found.rows] == [1980]
    with pytest.raises(views.QueryError, match="fidelity: 'high' is not a number"):
        views.experiments_page(state, views.TableQuery(fidelity="high"))
    log = views.events_page(events_of(url, "big"), views.EventQuery(per=10))
    assert [r.id for r in log.rows] == sorted((r.id for r in log.rows), reverse=True) and log.rows[0].kind == "campaign_stopped"
    mine = views.events_page(events_of(url, "big"), views.EventQuery(experiment=7))
    assert [r.kind for r in mine.rows] == ["completed", "dispatched", "proposed"]


def test_reason_in_one_line() -> None:
    reason = {"strategy": "bo", "acquisition": "qlognei", "acquisition_value": -2.447, "flags": ["extrapolation"],
              "predicted": {"yield": {"mean": 0.786, "std": 0.2687}}}
    assert views.reason_text(reason) == "bo · qlognei -2.447 · predicted yield 0.786 ± 0.27 · flags: extrapolation"
    assert views.reason_text({}) == "unknown"


# --- the command ---------------------------------------------------------------------------------


def test_command_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["console"]) == 2
    assert capsys.readouterr().err == "selflab console: give a CONFIG or --ledger URL\n"
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    empty_ledger(url)
    short = tmp_path / "short"
    short.write_text("abc")
    assert main(["console", "--ledger", url, "--token-file", str(short)]) == 2
    assert "at least 16 characters" in capsys.readouterr().err
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        assert main(["console", "--ledger", url, "--port", str(busy.getsockname()[1])]) == 2
        assert "choose another --port" in capsys.readouterr().err
    finally:
        busy.close()
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    assert main(["console", "--ledger", f"sqlite:///{tmp_path / 'junk.sqlite'}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def _start_console(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """``selflab console ARGS`` in a subprocess; its stderr up to the token line."""
    env = {**os.environ, TOKEN_ENV: TOKEN, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([SELFLAB, "console", *args], env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    head: list[str] = []
    while not head or "write token" not in head[-1]:
        line = proc.stderr.readline()
        if not line:
            break
        head.append(line)
    return proc, head


@pytest.mark.e2e
def test_command_serves_loopback_until_ctrl_c(fixture_url: str) -> None:
    proc, head = _start_console("--ledger", fixture_url, "--port", "0")
    try:
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", "".join(head))
        assert match, head
        assert "write token: from SELFLAB_CONSOLE_TOKEN" in head[-1] and TOKEN not in "".join(head)
        assert not any("not only on this machine" in line for line in head)
        assert re.search(r'data-count="completed">8<', httpx.get(match.group(1) + "c/single", timeout=30).text)
        assert psutil.Process(proc.pid).nice() == min(19, os.nice(0) + 10)  # (--nice 10: it yields the cores to the campaign)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130  # (the CLI's code for stopped by Ctrl-C)
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
    proc, head = _start_console("--ledger", fixture_url, "--port", "0", "--host", "0.0.0.0")  # (listens only; nothing is sent there)
    try:
        assert any("not only on this machine" in line for line in head), head
    finally:
        proc.kill()
        proc.wait(timeout=30)


def watch_stamps(hub: Any, burst: Any, quiet_s: float) -> tuple[list[tuple[float, int]], int, float, float]:
    """Run ``hub``, wait ``quiet_s`` after its first stamp, run ``burst()`` (it
    writes to the ledger and returns the last event id) in a thread, and
    collect every stamp until the last write has been published (3 s at most).
    Returns (monotonic time and position of each stamp, the last id, when the
    burst started, the hub's pace when it ended)."""
    import asyncio

    async def watch() -> tuple[list[tuple[float, int]], int, float, float]:
        poller = asyncio.create_task(hub.run())
        seen: list[tuple[float, int]] = []

        async def collect() -> None:
            async for stamp in hub.stamps():
                seen.append((time.monotonic(), int(stamp.split(".")[0])))

        collector = asyncio.create_task(collect())
        while hub.position == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(quiet_s)
        started = time.monotonic()
        last = await asyncio.to_thread(burst)
        pace = hub.events_per_s
        deadline = time.monotonic() + 3.0
        while (not seen or seen[-1][1] < last) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        hub.close()
        await asyncio.gather(poller, collector)
        return seen, last, started, pace

    return asyncio.run(watch())


def test_a_burst_of_writes_reaches_the_pages_coalesced(fixture_url: str) -> None:
    """A fast campaign writes many events a second; the pages hear of them at
    most once per ``min_gap_s`` (so each redraws at most that often), the
    first change after a quiet spell goes out at once, and the last one is
    never lost."""

    from selflab.controller.console.live import Hub
    from selflab.controller.console.source import LedgerSource

    source = LedgerSource(fixture_url)
    hub = Hub(source, poll_s=0.02, lease_every_s=60, min_gap_s=1.0)
    writes, gap_s = 40, 0.03

    def burst() -> int:
        ledger = Ledger(fixture_url)
        try:
            last = 0
            for i in range(writes):
                [event] = ledger.append([NewEvent(campaign="single", kind="note", payload={"text": f"burst {i}", "by": "test"})])
                last = event.id
                time.sleep(gap_s)
            return last
        finally:
            ledger.close()

    seen, last, started, _ = watch_stamps(hub, burst, quiet_s=1.2)  # (quiet: the gap after the first stamp has ended)
    source.close()
    during = [(t, position) for t, position in seen if t >= started]
    assert during and during[-1][1] == last, "the last write must reach the pages"
    assert during[0][0] - started < 0.6, "the first change after a quiet spell goes out at once, not after the gap"
    burst_s = writes * gap_s
    assert len(during) <= burst_s / 1.0 + 2, f"{len(during)} updates for a {burst_s:.1f} s burst: not coalesced"
    gaps = [b[0] - a[0] for a, b in zip(during, during[1:], strict=False)]
    assert all(g >= 0.95 for g in gaps), gaps


def test_the_gap_between_updates_grows_with_the_ledgers_pace() -> None:
    """A ledger growing at a pace a person can follow gets updates every
    ``min_gap_s``; past ``busy_events_per_s`` the gap grows with the pace,
    up to ``max_gap_s``."""
    from selflab.controller.console.live import gap_for

    assert gap_for(0, 0.5, 2.0, 20) == 0.5
    assert gap_for(20, 0.5, 2.0, 20) == 0.5
    assert gap_for(40, 0.5, 2.0, 20) == pytest.approx(1.0)
    assert gap_for(60, 0.5, 2.0, 20) == pytest.approx(1.5)
    assert gap_for(1500, 0.5, 2.0, 20) == 2.0


def test_a_campaign_running_flat_out_is_redrawn_every_max_gap(fixture_url: str) -> None:
    """Hundreds of events a second (a simulator running flat out): after the
    first update, the pages hear of the ledger at most every ``max_gap_s``,
    and still hear of its last write."""
    from selflab.controller.console.live import Hub
    from selflab.controller.console.source import LedgerSource

    source = LedgerSource(fixture_url)
    hub = Hub(source, poll_s=0.02, lease_every_s=60, min_gap_s=0.2, max_gap_s=1.0, busy_events_per_s=20)
    burst_s = 2.5

    def burst() -> int:
        ledger = Ledger(fixture_url)
        try:
            last, end = 0, time.monotonic() + burst_s
            while time.monotonic() < end:
                events = ledger.append([NewEvent(campaign="single", kind="note", payload={"text": "fast", "by": "test"}) for _ in range(10)])
                last = events[-1].id
                time.sleep(0.01)
            return last
        finally:
            ledger.close()

    seen, last, started, pace = watch_stamps(hub, burst, quiet_s=2.5)  # (quiet: the pace window has emptied)
    source.close()
    assert pace > 100, f"the burst wrote {pace:.0f} events/s: not fast enough to test the stretch"
    during = [(t, position) for t, position in seen if t >= started]
    assert during and during[-1][1] == last, "the last write must reach the pages"
    assert during[0][0] - started < 0.5, "the first change after a quiet spell goes out at once"
    gaps = [b[0] - a[0] for a, b in zip(during[1:], during[2:], strict=False)]
    assert gaps and all(g >= 0.9 for g in gaps), f"gaps {gaps}: not stretched to max_gap_s while the ledger grows fast"


def test_a_learning_campaign_says_so_instead_of_a_best(tmp_path: Path) -> None:
    """``objective: learn`` maps an output: the overview says "learning (no
    optimum)" rather than naming a best experiment."""
    from conftest import quadratic_config

    from selflab.controller.study import Study

    url = f"sqlite:///{tmp_path / 'map.sqlite'}"
    with Study.open(quadratic_config(name="map", ledger=url, objectives=[{"name": "y", "objective": "learn"}])) as study:
        (trial,) = study.ask(1)
        study.tell(trial.trial_id, {"y": 0.5})
    with serve(url, campaign="map") as server, httpx.Client(base_url=server.url, timeout=10) as web:
        page = web.get("/c/map").text
    assert "learning (no optimum)" in page
    assert 'class="big" data-best="y"' not in page


def test_awaiting_and_vetoed_are_counted_and_filtered(tmp_path: Path) -> None:
    """The overview counts proposals awaiting approval and vetoed ones apart
    (the counts still add up), and the experiments table filters on them."""
    from conftest import quadratic_config

    from selflab.controller.events import Proposed
    from selflab.controller.study import Study

    url = f"sqlite:///{tmp_path / 'held.sqlite'}"
    cfg = quadratic_config(name="held", ledger=url, oversight={"approval": "all"})
    with Study.open(cfg) as study:
        study.record([NewEvent(campaign="held", kind="proposed", experiment_id=i, payload=Proposed(
            params={"x": 0.2 * i, "z": 0.5}, awaiting_approval=True)) for i in (1, 2, 3)])
        study.veto(2, "too hot", by="ada")
        study.approve(3, by="ada")
    from selflab.controller.oversight import OversightWriter

    with OversightWriter(url, "held") as writer:  # a person's own experiment, not measured yet (nobody holds the lease)
        assert writer.attach({"x": 0.9, "z": 0.1}, None, by="bob").experiment_id == 4
    with serve(url, campaign="held") as server, httpx.Client(base_url=server.url, timeout=10) as web:
        bearer = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
        assert "Give its result" in web.get("/c/held/experiments/4").text
        assert "Give its result" not in web.get("/c/held/experiments/3").text
        bad = web.post("/c/held/experiments/4/actions/result", data={"outcomes": "y=oops"}, headers=bearer)
        assert bad.status_code == 422 and "nothing was written" in bad.json()["error"], bad.text
        not_attached = web.post("/c/held/experiments/3/actions/result", data={"outcomes": "y=0.5"}, headers=bearer)
        assert not_attached.status_code == 409 and "not an attached experiment" in not_attached.json()["error"], not_attached.text
        given = web.post("/c/held/experiments/4/actions/result", data={"outcomes": "y=0.25", "by": "bob"}, headers=bearer)
        assert given.status_code == 200 and given.json()["ok"], given.text
        again = web.post("/c/held/experiments/4/actions/result", data={"outcomes": "y=0.3"}, headers=bearer)
        assert again.status_code == 409 and "it is completed" in again.json()["error"], again.text
        page = web.get("/c/held").text
        assert re.search(r'data-count="awaiting_approval">1<', page)
        assert re.search(r'data-count="vetoed">1<', page)
        assert re.search(r'data-count="proposed">1<', page)  # the approved one, not yet sent
        assert re.search(r'data-count="abandoned">0<', page) and re.search(r'data-count="completed">1<', page)
        table = web.get("/c/held/experiments", params={"status": "awaiting_approval"}).text
        assert re.findall(r'<tr class="row st-[a-z_]+" data-id="(\d+)"', table) == ["1"]
        assert '<option value="awaiting_approval" selected>' in table
        vetoed = web.get("/c/held/experiments", params={"status": "vetoed"}).text
        assert re.findall(r'<tr class="row st-[a-z_]+" data-id="(\d+)"', vetoed) == ["2"]
    ledger = Ledger(url, create=False)
    try:
        state = CampaignState.replay("held", ledger.events("held"))
    finally:
        ledger.close()
    shown = state.shown_counts()
    assert sum(shown.values()) == sum(state.counts().values()) == 4
    assert state.experiments[4].outcomes == {"y": 0.25} and state.actions[-1]["action"] == "result"
