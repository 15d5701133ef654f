"""The lab console in a real browser: Debian's headless Chromium driven by Playwright.

Every page of every fixture ledger loads with no console error; a ledger
write shows in the open page; a person unlocks the console and stops a
running campaign from the page. Each test waits on markers the page sets
(``body[data-ready]`` once the live stream is connected, ``#view[data-position]``
after each live update), never on a fixed sleep. Screenshots go to the
test's temporary folder (``screens/``; the path is printed), or under
``$SELFLAB_CONSOLE_SCREENSHOTS`` when it is set.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_fixtures import FIXTURES, TOKEN, campaign_thread, empty_ledger, quadratic_running, serve, single_objective

from selflab.controller.ledger import Ledger, NewEvent

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM_ENV = "SELFLAB_CHROMIUM"


def chromium_path() -> str:
    """Debian's Chromium (``apt-get install chromium``), or ``$SELFLAB_CHROMIUM``."""
    found = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no chromium: install Debian's (apt-get install -y chromium) or set SELFLAB_CHROMIUM to a Chromium binary")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium_path())
        try:
            yield launched
        finally:
            launched.close()


class Watched:
    """A page whose console errors, uncaught exceptions, failed requests and
    error responses are collected in ``problems``."""

    def __init__(self, browser: Any, screens: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1360, "height": 900})
        self.page = self.context.new_page()
        self.screens = screens
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}")
                     if not (r.url.endswith("/stream") or r.failure == "net::ERR_ABORTED") else None)  # (a live refresh cut by the next goto)
        self.page.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

    def open(self, url: str) -> None:
        """Load ``url`` and wait until the page is live and its images are in."""
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready='1'][data-images='ready']", timeout=30_000)
        self.loaded_images()

    def loaded_images(self) -> None:
        """Every image on the page has loaded and is not empty."""
        widths = self.page.locator("img").evaluate_all("images => images.map(i => i.complete ? i.naturalWidth : -1)")
        assert all(w > 0 for w in widths), widths

    def unlock(self, who: str) -> None:
        """Unlock the page with the write token as ``who`` and wait until it is live again."""
        self.page.fill("input[name='who']", who)
        self.page.fill("input[name='token']", TOKEN)
        self.page.click("form.unlock button")
        self.page.wait_for_selector("#who")
        self.page.wait_for_selector("body[data-ready='1']")

    def shot(self, name: str) -> Path:
        self.screens.mkdir(parents=True, exist_ok=True)
        path = self.screens / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


SCREENS_ENV = "SELFLAB_CONSOLE_SCREENSHOTS"
"""A folder for the screenshots (default: the test's temporary folder, ``screens/``)."""


@pytest.fixture
def watched(browser: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Watched]:
    where = Path(os.environ[SCREENS_ENV]) / request.node.name if os.environ.get(SCREENS_ENV) else tmp_path / "screens"
    page = Watched(browser, where)
    try:
        yield page
    finally:
        page.close()
        print(f"screenshots: {page.screens}")


def test_every_page_loads_without_console_errors(watched: Watched, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fixtures.sqlite'}"
    for build in FIXTURES.values():
        build(url)
    page = watched.page
    with serve(url) as server:
        base = server.url.rstrip("/")
        watched.open(base + "/")
        assert page.locator("table.data tbody tr").count() == len(FIXTURES)
        watched.shot("campaigns")
        for name in FIXTURES:
            for tab, path in (("overview", ""), ("experiments", "/experiments"), ("plots", "/plots"), ("events", "/events"),
                              ("experiment", "/experiments/1")):
                if name == "empty" and tab == "experiment":
                    continue
                watched.open(f"{base}/c/{name}{path}")
                assert page.locator("#view").count() == 1
                if tab != "experiment":
                    assert page.locator("nav.tabs a.on").inner_text() == {"events": "event log"}.get(tab, tab)
                watched.shot(f"{name}-{tab}")
        # the experiments table sorts on a click, on the server
        watched.open(f"{base}/c/single/experiments")
        page.click("th[data-col='outcome:y'] a")
        page.wait_for_selector("th.sorted[data-col='outcome:y']")
        values = [float(v) for v in page.locator("tr.row td:nth-child(7)").all_inner_texts()]
        assert values == sorted(values, reverse=True) and len(values) == 8
        # the planner's model: the slices replace the "fitting" placeholder in place, once drawn
        watched.open(f"{base}/c/single/plots")
        page.wait_for_selector("#fig-slices_y img[src$='v=8']", timeout=60_000)
        page.wait_for_selector("body[data-images='ready']", timeout=30_000)
        watched.loaded_images()
        watched.shot("single-plots-with-slices")
    assert watched.problems == []
    empty = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    empty_ledger(empty)
    with serve(empty) as server:
        watched.open(server.url)
        assert "holds no campaign yet" in page.inner_text("#view")
        watched.shot("empty-ledger")
    assert watched.problems == []


def test_a_ledger_write_shows_in_the_open_page(watched: Watched, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.sqlite'}"
    single_objective(url)
    page = watched.page
    with serve(url) as server:
        watched.open(server.url + "c/single")
        assert page.inner_text("[data-count='proposed']") == "0"
        ledger = Ledger(url)
        try:
            [event] = ledger.append([NewEvent(campaign="single", kind="proposed", experiment_id=9,
                                              payload={"params": {"x1": 1.0, "x2": 2.0}, "reason": {"strategy": "by hand"}})])
        finally:
            ledger.close()
        page.wait_for_selector(f"#recent tr[data-event='{event.id}']", timeout=5_000)
        assert int(page.get_attribute("#view", "data-position") or 0) >= event.id
        assert page.inner_text("[data-count='proposed']") == "1"
        watched.shot("live-update")
    assert watched.problems == []


def test_stop_a_running_campaign_from_the_page(watched: Watched, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'run.sqlite'}"
    page = watched.page
    with campaign_thread(quadratic_running(url)) as run, serve(url) as server:
        watched.open(server.url + "c/live")
        assert page.inner_text("#run-state") == "running"
        assert page.locator("form[data-action='stop'] button").is_disabled()  # locked: reading needs no token, acting does
        watched.unlock("ada")
        assert page.inner_text("#who") == "ada"
        page.fill("form[data-action='stop'] input[name='reason']", "end of the shift")
        page.click("form[data-action='stop'] button")
        page.wait_for_selector("#flash[data-kind='ok']")
        assert "stop requested" in page.inner_text("#flash")
        run["thread"].join(timeout=30)
        page.wait_for_selector("#view[data-state='stopped (stop_requested)']", timeout=10_000)
        assert page.inner_text("#stop-reason") == "stop_requested"
        assert "stop requested by ada: end of the shift (obeyed)" in page.inner_text("#estop")
        watched.shot("stopped-from-the-page")
    assert run["stop"].reason == "stop_requested"
    ledger = Ledger(url, create=False)
    try:
        [request] = [e for e in ledger.events("live") if e.kind == "stop_requested"]
    finally:
        ledger.close()
    assert request.payload["by"] == "ada" and request.payload["emergency"] is False
    assert watched.problems == []


def test_approve_veto_and_edit_from_the_page(watched: Watched, tmp_path: Path) -> None:
    """``approval: all``: in the page a person vetoes the first proposal, edits
    the second and approves the rest; the instrument never gets the vetoed
    point, gets the edited one, and no later proposal comes near the vetoed one."""
    from console_fixtures import gated_running, runner_thread

    from selflab.controller.oversight import near
    from selflab.controller.projection import CampaignState
    from selflab.planners.space import SearchSpace

    url = f"sqlite:///{tmp_path / 'gated.sqlite'}"
    config = gated_running(url)
    page = watched.page
    with runner_thread(config) as run, serve(url) as server:
        watched.open(server.url + "c/gated/experiments")
        watched.unlock("ada")
        done: list[str] = []

        def next_awaiting() -> str:
            seen = "".join(f":not([data-id='{i}'])" for i in done)
            row = page.wait_for_selector(f"tr.st-awaiting_approval{seen}", timeout=15_000)
            assert row is not None
            eid = row.get_attribute("data-id") or ""
            done.append(eid)
            return eid

        def acted(text: str) -> None:
            page.wait_for_selector(f"#flash[data-kind='ok']:has-text('{text}')", timeout=10_000)

        vetoed = next_awaiting()
        watched.shot("awaiting-approval")
        page.fill(f"tr[data-id='{vetoed}'] form[data-action='veto'] input[name='reason']", "too close to the hot spot")
        page.click(f"tr[data-id='{vetoed}'] form[data-action='veto'] button")
        acted(f"vetoed experiment {vetoed}")
        edited = next_awaiting()
        row = f"tr[data-id='{edited}'] form[data-action='edit']"
        page.fill(f"{row} input[name='p_x']", "0.31")
        page.fill(f"{row} input[name='p_z']", "0.62")
        page.fill(f"{row} input[name='reason']", "a safer point")
        page.click(f"{row} button")
        acted(f"edited experiment {edited}")
        for _ in range(3):
            eid = next_awaiting()
            page.click(f"tr[data-id='{eid}'] form[data-action='approve'] button")
            acted(f"approved experiment {eid}")
        run["thread"].join(timeout=30)
        page.wait_for_selector("#view tr.st-vetoed", timeout=10_000)
        watched.shot("after-oversight")
        watched.open(server.url + f"c/gated/experiments/{edited}")
        assert "edit by ada" in page.inner_text("#oversight") and "the planner proposed" in page.inner_text("#oversight")
        watched.shot("edited-experiment")
    assert run.get("error") is None and run["stop"].reason == "max_experiments"
    sent = run["runner"].stations[0].driver.sent
    ledger = Ledger(url, create=False)
    try:
        state = CampaignState.replay("gated", ledger.events("gated"))
    finally:
        ledger.close()
    veto = state.experiments[int(vetoed)]
    assert veto.shown_status == "vetoed" and veto.oversight[0]["by"] == "ada"
    assert veto.params not in sent
    assert {"x": 0.31, "z": 0.62} in sent and state.experiments[int(edited)].original_params not in sent
    space = SearchSpace.model_validate({"parameters": config.model_dump(mode="json")["parameters"]})
    later = [e for e in state.experiments.values() if e.experiment_id > int(vetoed)]
    assert len(later) == 4 and not any(near(space, e.params, [veto.params], 0.15) for e in later)
    assert watched.problems == []


def test_widen_a_bound_of_a_running_campaign_from_the_page(watched: Watched, tmp_path: Path) -> None:
    """Issue 19 from the console: a person widens x from [0, 1] to [0, 2] on
    a running campaign; the page shows version 1 and the new range, the
    campaign proposes beyond 1 within seconds, and an edit that breaks a rule
    (a parameter added without its backfill) is refused in one line naming
    it, writing nothing."""
    import time

    url = f"sqlite:///{tmp_path / 'space.sqlite'}"
    page = watched.page
    with campaign_thread(quadratic_running(url)) as run, serve(url) as server:
        watched.open(server.url + "c/live")
        assert page.get_attribute("#search-space", "data-version") == "0"
        assert page.inner_text("#search-space tr[data-parameter='x'] td.range") == "[0, 1]"
        watched.unlock("ada")
        def edit_space(op: str, parameter: str, values: str, reason: str) -> None:
            form = "form[data-action='space']"
            page.select_option(f"{form} select[name='op']", op)
            page.fill(f"{form} input[name='parameter']", parameter)
            page.fill(f"{form} input[name='values']", values)
            page.fill(f"{form} input[name='reason']", reason)
            page.click(f"{form} button")

        edit_space("widen", "x", "0 2", "the optimum sits on the bound")
        page.wait_for_selector("#flash[data-kind='ok']:has-text('space_changed v1')", timeout=10_000)
        page.wait_for_selector("#search-space[data-version='1']", timeout=10_000)
        assert page.inner_text("#search-space tr[data-parameter='x'] td.range") == "[0, 2]"
        assert "widen x 0 2 by ada: the optimum sits on the bound" in page.inner_text("#space-edits")
        assert "search space v1: widen x 0 2 by ada: the optimum sits on the bound" in page.inner_text("#recent")
        watched.shot("space-widened")
        reader = Ledger(url, create=False)
        try:
            deadline, beyond = time.monotonic() + 20, []
            while not beyond and time.monotonic() < deadline:
                beyond = [e for e in reader.events("live") if e.kind == "proposed" and float(e.payload["params"]["x"]) > 1]
                time.sleep(0.1)
            assert beyond, "the running campaign never proposed in the widened range"
            edit_space("add", "stir", "100 800", "")
            page.wait_for_selector("#flash[data-kind='error']", timeout=10_000)
            refusal = page.inner_text("#flash")
            assert "stir" in refusal and "backfill" in refusal, refusal
            watched.shot("space-edit-refused")
            edits = [e for e in reader.events("live") if e.kind == "space_changed"]
            assert [(e.payload["version"], e.payload["by"]) for e in edits] == [(1, "ada")]
        finally:
            reader.close()
        page.fill("form[data-action='stop'] input[name='reason']", "done")
        page.click("form[data-action='stop'] button")
        run["thread"].join(timeout=30)
    assert run["stop"].reason == "stop_requested"
    refused = [p for p in watched.problems if "422" in p]  # (the refusal: its response, and the browser's line about it)
    assert len(refused) == 2 and [p for p in watched.problems if p not in refused] == []
