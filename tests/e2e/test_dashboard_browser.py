"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a gunicorn
Commander and real N0D3 processes. Every page is watched for console errors (a CSP violation is
one); screenshots of every view land in test-artifacts/dashboard/."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import requests

from harness import ARTIFACTS, Commander, N0D3, shared_ca, spki_base64, tls_by_default, wait_until
from webhook_payloads import github, github_request
from e2e.test_access import PASSWORD, make_user

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ARTIFACTS / "dashboard"
# Headless as Debian's Chromium runs here (as root, in a container, with no network to phone home to).
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHONE = dict(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
BROKEN = {"FAKE_CLAUDE_BROKEN": "1"}

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing: "
                                     "pip install -e '.[test]'")
expect = playwright_api.expect


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (tests/system-packages/browser.txt)")
    with playwright_api.sync_playwright() as playwright:
        # Under `pytest --tls` the browser trusts the tests' shared mesh CA by its key hash, as a
        # client that pinned it would, rather than ignoring certificate errors altogether.
        pinned = [f"--ignore-certificate-errors-spki-list={spki_base64(shared_ca())}"] if tls_by_default() else []
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS + pinned)
        yield browser
        browser.close()


@pytest.fixture
def fleet(tmp_path):
    """Start Commanders and N0D3S; everything started is stopped afterwards."""
    started: list = []

    def commander(**env) -> Commander:
        home = tmp_path / f"commander-{len(started)}"
        home.mkdir()
        started.append(Commander(home, env))
        return started[-1]

    def n0d3(cmd: Commander, name: str, **options) -> N0D3:
        started.append(N0D3(cmd, name, **options))
        started[-1].wait_registered()
        return started[-1]

    yield commander, n0d3
    for thing in reversed(started):
        thing.process.stop() if isinstance(thing, N0D3) else thing.stop()


class Tab:
    """One logged-in browser tab that fails the test on any console error."""

    def __init__(self, browser, cmd: Commander, role: str = "admin", **context):
        self.cmd = cmd
        self.errors: list[str] = []
        self.context = browser.new_context(base_url=cmd.url, **context)
        self.page = self.context.new_page()
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.user = make_user(cmd, role)

    def log_in(self, shot: str | None = None) -> None:
        self.page.goto("/")
        expect(self.page).to_have_url(f"{self.cmd.url}/login?next=/")
        self.page.get_by_label("User name").fill(self.user)
        self.page.get_by_label("Password").fill(PASSWORD)
        if shot:
            self.shot(shot)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page).to_have_url(f"{self.cmd.url}/")
        expect(self.page.get_by_role("heading", name="Fleet")).to_be_visible()

    def go(self, path: str) -> None:
        self.page.goto(path)
        self.page.evaluate("window.stayed = true")  # gone if the page reloads or navigates

    def stayed(self) -> bool:
        return self.page.evaluate("window.stayed === true")

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SHOTS / f"{name}.png", full_page=True)

    def close(self, network_errors: bool = False) -> None:
        """`network_errors`: a test that cuts the connection expects the browser to log it."""
        self.context.close()
        unexpected = [e for e in self.errors if not (network_errors and e.startswith("Failed to load resource: net::"))]
        assert unexpected == [], unexpected


def row_states(page, selector: str, until: str, timeout: float) -> list[str]:
    """The states a row shows, in order, until it shows `until`."""
    seen: list[str] = []

    def changed():
        state = page.get_attribute(selector, "data-state") if page.locator(selector).count() else None
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        return state == until

    wait_until(changed, timeout, every=0.05, what=f"{selector} to show {until} (saw {seen})")
    return seen


def latest_event_id(cmd: Commander) -> int:
    with sqlite3.connect(Path(cmd.env["M3SHD_DATA_DIR"]) / "commander" / "commander.db") as conn:
        return conn.execute("SELECT COALESCE(MAX(id), 0) FROM event").fetchone()[0]


# --- scenarios -------------------------------------------------------------------------------

def test_log_in_watch_a_node_join_and_a_task_finish(chromium, fleet):
    commander, n0d3 = fleet
    cmd = commander()
    tab = Tab(chromium, cmd)
    tab.log_in(shot="login")
    tab.go("/")
    expect(tab.page.get_by_text("No N0D3 has joined yet.")).to_be_visible()

    alpha = n0d3(cmd, "alpha")
    row = tab.page.locator(f"#node-{alpha.node()['id']}")
    expect(row).to_contain_text("alpha", timeout=15_000)
    expect(row).to_have_attribute("data-state", "active")
    expect(row.get_by_role("img", name="0 of 1 slots in use")).to_be_visible()
    assert tab.stayed()

    tab.page.get_by_role("link", name="Tasks").click()
    tab.page.evaluate("window.stayed = true")
    cmd.api.submit_task("[sleep=3] keep the only slot busy")
    watched = cmd.api.submit_task("[sleep=1] watch me go")
    seen = row_states(tab.page, f"#task-{watched['id']}", "succeeded", 30)
    assert seen == ["queued", "leased", "succeeded"], seen
    assert tab.stayed()
    tab.shot("queue")

    tab.page.get_by_role("link", name=f"#{watched['id']}", exact=True).click()
    expect(tab.page.locator("#output")).to_have_text("echo: [sleep=1] watch me go")
    expect(tab.page.get_by_text("Every link verifies.")).to_be_visible()
    tab.shot("task-detail")

    pipeline = cmd.api.submit_pipeline({"steps": [
        {"key": "draft", "prompt": "[sleep=2] draft it"},
        {"key": "polish", "prompt": "[sleep=1] polish {{ steps.draft.output }}", "depends_on": ["draft"]}]})
    tab.go(f"/pipelines/{pipeline['id']}")
    polish = pipeline["steps"][1]["task_id"]
    seen = row_states(tab.page, f"#step-{polish}", "succeeded", 30)  # the box in the SVG graph
    assert seen[0] == "blocked" and "leased" in seen, seen
    expect(tab.page.locator(".title-row .badge")).to_contain_text("succeeded")
    assert tab.stayed()
    tab.close()


def test_approve_with_one_click_and_from_the_keyboard(chromium, fleet):
    commander, _ = fleet
    cmd = commander()
    first = cmd.api.submit_task("Deploy the new build to the kitchen Pi", approval_required=True)
    second = cmd.api.submit_task("Delete the old backups", approval_required=True, requires=["nas"])
    cmd.api.request_join(machine_id="a1b2c3d4", name="n0d3-1a2b3c4d", slots=2, capabilities=["pi5"])
    tab = Tab(chromium, cmd, role="commander")
    tab.log_in()
    tab.go("/pending")
    tab.shot("approvals")

    tab.page.get_by_role("button", name=f"Approve task {first['id']}").click()
    expect(tab.page.locator(f"#approval-{first['id']}")).to_have_count(0)
    expect(tab.page.locator("#notice")).to_have_text(f"Task {first['id']} approved")
    assert cmd.api.get_task(first["id"])["state"] == "queued"

    # Keyboard only, from a fresh page: the skip link comes first, then Tab on to the approve
    # button, then Enter.
    tab.go("/pending")
    tab.page.keyboard.press("Tab")
    assert tab.page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(40):
        if tab.page.evaluate("document.activeElement.id") == f"approve-{second['id']}":
            break
        tab.page.keyboard.press("Tab")
    else:
        raise AssertionError("Tab never reached the approve button")
    tab.page.keyboard.press("Enter")
    expect(tab.page.locator(f"#approval-{second['id']}")).to_have_count(0)
    assert cmd.api.get_task(second["id"])["state"] == "queued"
    expect(tab.page.get_by_text("Nothing is waiting for approval.")).to_be_visible()

    tab.page.get_by_role("button", name="Let in n0d3-1a2b3c4d").click()
    expect(tab.page.get_by_text("Approved: it registers at its next poll.")).to_be_visible()
    assert tab.stayed()
    tab.close()


def test_a_breaker_opens_on_the_fleet_page(chromium, fleet):
    commander, n0d3 = fleet
    # Two nodes, so half the fleet may be opened; a long cooldown keeps it open while we look.
    cmd = commander(M3SHD_COMMANDER_BREAKER_COOLDOWN="120", M3SHD_COMMANDER_BREAKER_MAX_OPEN="0.5")
    sick = n0d3(cmd, "sick", env=BROKEN | {"M3SHD_N0D3_CAPABILITIES": "gpu"}).node()
    n0d3(cmd, "healthy")
    tab = Tab(chromium, cmd)
    tab.log_in()
    tab.go("/")
    row = tab.page.locator(f"#node-{sick['id']}")
    expect(row).to_have_attribute("data-breaker", "closed")
    for i in range(3):  # only the sick node can take these, and its runner crashes each time
        cmd.api.submit_task(f"needs the gpu {i}", requires=["gpu"], max_attempts=1)
    expect(row).to_have_attribute("data-breaker", "open", timeout=30_000)
    expect(row).to_contain_text("3 failures in a row")
    assert tab.stayed()
    tab.shot("fleet-breaker-open")
    tab.close()


def test_a_lost_connection_shows_a_banner_and_resumes_from_the_last_event(chromium, fleet):
    commander, n0d3 = fleet
    cmd = commander()
    n0d3(cmd, "alpha")
    tab = Tab(chromium, cmd)
    tab.log_in()
    tab.go("/tasks")
    before = cmd.wait_task(cmd.api.submit_task("before the outage")["id"])
    expect(tab.page.locator(f"#task-{before['id']}")).to_have_attribute("data-state", "succeeded")
    streams = []
    tab.page.on("request", lambda request: "/api/events" in request.url and streams.append(request))

    cmd.stop()
    seen_last = latest_event_id(cmd)  # nothing can be added while the Commander is down
    banner = tab.page.locator("#connection")
    expect(banner).to_have_text("Connection to the Commander lost. Reconnecting…", timeout=15_000)
    tab.shot("connection-lost")

    # Keep the browser away until the Commander has moved on without it.
    tab.page.route("**/api/events*", lambda route: route.abort())
    cmd.start()
    missed = cmd.wait_task(cmd.api.submit_task("while you were away")["id"], timeout=40)
    assert tab.page.locator(f"#task-{missed['id']}").count() == 0
    tab.page.unroute("**/api/events*")

    expect(tab.page.locator(f"#task-{missed['id']}")).to_have_attribute("data-state", "succeeded", timeout=20_000)
    expect(banner).to_be_empty()
    assert tab.stayed()
    resumed = [request for request in streams if request.all_headers().get("last-event-id") == str(seen_last)
               or request.url.endswith(f"after={seen_last}")]
    assert resumed, [(r.url, r.all_headers().get("last-event-id")) for r in streams]
    tab.close(network_errors=True)


def test_the_agents_pages_follow_their_tasks_and_show_versions_diffs_and_a_broken_profile(chromium, fleet, tmp_path):
    commander, n0d3 = fleet
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "reviewer.md").write_text(
        '+++\nname = "reviewer"\ntitle = "Code reviewer"\ndescription = "Reviews a diff: findings first."\n'
        'model = "claude-opus-5-5"\nallowed_tools = ["Read", "Grep", "Bash(git diff:*)"]\nmax_turns = 12\n+++\n'
        "## Role\nYou review diffs.\n\n## Output\nFindings first, most serious first.\n")
    (profiles / "half-written.md").write_text('+++\nname = "half-written"\ntitle = "Unfinished"\n')
    cmd = commander(M3SHD_COMMANDER_AGENTS_DIR=str(profiles))
    n0d3(cmd, "alpha")
    cmd.api.put_agent("reviewer", (profiles / "reviewer.md").read_text().replace("max_turns = 12", "max_turns = 20")
                      .replace("most serious first.", "most serious first, each with its file and line."))
    tab = Tab(chromium, cmd, role="commander")
    tab.log_in()
    tab.page.get_by_role("link", name="Agents").click()
    tab.page.evaluate("window.stayed = true")
    broken = tab.page.locator("#agent-half-written")
    expect(broken).to_have_attribute("data-state", "broken")
    expect(broken).to_contain_text("never closed by a +++ line")
    row = tab.page.locator("#agent-reviewer")
    expect(row).to_contain_text("none yet")
    cmd.wait_task(cmd.api.submit_task("[sleep=1] check this diff", agent="reviewer")["id"])
    expect(row).to_contain_text("100 % of 1", timeout=15_000)  # live: no reload
    assert tab.stayed()
    tab.shot("agents")

    tab.page.get_by_role("link", name="reviewer", exact=True).click()
    expect(tab.page.locator("#system-prompt")).to_contain_text("each with its file and line.")
    diff = tab.page.locator("#version-2 pre.diff")
    expect(diff.locator(".del")).to_contain_text(["-max_turns = 12", "-Findings first, most serious first."])
    expect(diff.locator(".add")).to_contain_text(["+max_turns = 20"])
    tab.shot("agent")
    tab.page.get_by_role("button", name="Roll back to v1").click()
    expect(tab.page.locator("#notice")).to_have_text("reviewer: version 1 is current again")
    expect(tab.page.locator("#version-3")).to_contain_text("rollback to version 1 by user:")
    expect(tab.page.locator("#system-prompt")).not_to_contain_text("each with its file and line.")
    assert cmd.api.get_agent("reviewer")["max_turns"] == 12
    tab.shot("agent-rolled-back")
    tab.close()


def test_every_view_on_a_desktop_a_phone_and_in_the_dark(chromium, fleet):
    commander, n0d3 = fleet
    cmd = commander()
    n0d3(cmd, "mac-studio", slots=4, env={"M3SHD_N0D3_CAPABILITIES": "gpu,macos"})
    n0d3(cmd, "pi-5-kitchen", slots=2, env={"M3SHD_N0D3_CAPABILITIES": "pi5"})
    for prompt in ("Write a haiku about meshes", "Summarise RFC 9110 in five bullet points", "[fail] a task that fails"):
        cmd.wait_task(cmd.api.submit_task(prompt)["id"])
    running = cmd.api.submit_task("[sleep=60] a long refactoring job", requires=["gpu"])
    waiting = cmd.api.submit_task("Reboot every Pi in the fleet", approval_required=True)
    cmd.api.request_join(machine_id="c0ffee00", name="n0d3-c0ffee00", slots=2, capabilities=["pi5"])
    pipeline = cmd.api.submit_pipeline({"name": "weekly digest", "steps": [
        {"key": "fetch", "prompt": "collect this week's notes"},
        {"key": "analyse", "prompt": "themes in {{ steps.fetch.output }}", "depends_on": ["fetch"]},
        {"key": "fact-check", "prompt": "[fail] check {{ steps.fetch.output }}", "depends_on": ["fetch"]},
        {"key": "report", "prompt": "write it up", "depends_on": ["analyse", {"step": "fact-check", "allow_failure": True}]},
        {"key": "publish", "prompt": "post it", "depends_on": ["fact-check"]}]})
    wait_until(lambda: cmd.api.get_pipeline(pipeline["id"])["state"] != "running", 40, what="the pipeline to finish")
    cmd.api.create_token("phone", role="mobile")
    cmd.api.create_token("pi-5-garage", kind="join")
    wait_until(lambda: cmd.api.get_task(running["id"])["state"] == "leased", 20, what="the long task to start")
    hook = cmd.api.create_webhook("octo-repo", "github", [{"event": "issues", "actions": ["opened"], "task": {
        "prompt": "[sleep=60] triage {{ event.issue.title }}", "requires": ["nowhere"]}}])
    for secret, event in ((hook["secret"], "issues"), (hook["secret"], "ping"), ("m3w_wrong", "issues"),
                          (hook["secret"], "star")):
        body, headers = github_request(secret, event, github("issues.opened" if event != "ping" else "ping"))
        requests.post(cmd.url + hook["url"], data=body, headers=headers, timeout=15)
    kiln = cmd.api.remember("general", "the kiln fires on <b>Thursdays</b> at 06:00", "kiln", ["studio"])
    cmd.api.remember("general", "Dana likes dark chocolate, never milk chocolate")
    cmd.api.remember("shared", "the office closes at 18:00 on Fridays", tags=["office"])
    views = {"fleet": "/", "queue": "/tasks", "task-detail": f"/tasks/{running['id']}",
             "pipelines": "/pipelines", "pipeline-graph": f"/pipelines/{pipeline['id']}", "approvals": "/pending",
             "tokens": "/tokens", "node": "/nodes/1", "agents": "/agents", "agent": "/agents/general",
             "spend": "/spend", "webhooks": "/webhooks", "memory": "/agents/general/memory"}

    for name, context in (("desktop", dict(viewport={"width": 1280, "height": 800})), ("phone", PHONE),
                          ("dark", dict(viewport={"width": 1280, "height": 800}, color_scheme="dark"))):
        tab = Tab(chromium, cmd, **context)
        tab.log_in(shot=f"{name}-login" if name != "desktop" else None)
        for view, path in views.items():
            tab.go(path)
            unlabelled = tab.page.evaluate("""[...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
                .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
                .map(el => el.outerHTML)""")
            assert unlabelled == [], (view, unlabelled)
            width = tab.page.evaluate("document.documentElement.scrollWidth")
            assert width <= tab.page.viewport_size["width"], f"{view} is {width} px wide on a {name}"
            tab.shot(f"{name}-{view}")
        if name == "desktop":
            tab.go("/spend")  # the tasks above cost something: the day's bar is drawn, by the server
            expect(tab.page.get_by_role("img", name="Spend per day")).to_be_visible()
            assert tab.page.locator("svg[aria-labelledby=daily-title] rect").count() >= 1
            tab.go("/webhooks")  # GitHub's "Recent Deliveries": each delivery's status, what it started, the error
            deliveries = tab.page.get_by_role("table", name="Recent deliveries to octo-repo, newest first")
            expect(deliveries.get_by_role("row")).to_have_count(5)  # the header and four deliveries
            for status in ("started", "ping", "unauthorized", "ignored"):
                expect(deliveries.locator(f".badge.s-{status}")).to_be_visible()
            expect(deliveries.get_by_text("does not match the body signed")).to_be_visible()
            tab.shot("desktop-webhooks")
            deliveries.locator("a[href^='/tasks/']").click()  # the task the issue started
            expect(tab.page.get_by_text("triage Spelling error in the README file").first).to_be_visible()
            tab.go("/agents/general/memory")  # searched and forgotten in the page, markup shown as text
            tab.page.get_by_label("Search").fill("when is the kiln fired")
            tab.page.get_by_role("button", name="Search").click()
            found = tab.page.get_by_role("table", name="Memories matching when is the kiln fired, best first")
            expect(found.locator(f"#memory-{kiln['id']}")).to_contain_text("the kiln fires on <b>Thursdays</b>")
            expect(found.get_by_text("chocolate")).to_have_count(0)
            tab.shot("desktop-memory-search")
            tab.page.get_by_role("button", name=f"Forget memory {kiln['id']}").click()
            expect(tab.page.locator(f"#memory-{kiln['id']}")).to_have_count(0)
            expect(tab.page.get_by_text("Dana likes dark chocolate")).to_be_visible()
            assert [m["id"] for m in cmd.api.memories("general", "kiln")] == []
            tab.go(f"/tasks/{waiting['id']}")
            tab.shot("desktop-task-awaiting-approval")
            tab.go("/tokens")
            tab.page.get_by_text("Create a token").click()
            tab.page.get_by_label("Name").fill("ci-runner")
            tab.page.get_by_label("Role (API tokens)").select_option("commander")
            tab.page.get_by_role("button", name="Create token").click()
            expect(tab.page.get_by_label("The new token")).to_be_focused()
            assert tab.page.get_by_label("The new token").input_value().startswith("m3a_")
            tab.shot("desktop-token-created")
        tab.close()
    svg = Path(SHOTS / "desktop-pipeline-graph.png")
    assert svg.stat().st_size > 10_000
