"""The dashboard over plain HTTP: every page and form action against every role and against
no session, CSRF, login and logout, error pages, pages readable with JavaScript off, escaping
of untrusted text, the security headers, live parts, and the pipeline graph's layout."""

from __future__ import annotations

import ast
import re
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from commander import events
from commander.permissions import PUBLIC, ROLES
from commander.web import graph, site
from harness import ROOT, Commander, N0D3, register_node, wait_until
from m3shd.client import ApiClient
from e2e.test_access import PASSWORD, make_user

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'

# The permission each page and action needs: the route table must say the same (a page that
# quietly needed less would be caught here).
EXPECTED = {
    ("GET", "/"): "nodes:read",
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): PUBLIC,
    ("GET", "/static/<path:filename>"): PUBLIC,
    ("GET", "/nodes/<id:node_id>"): "nodes:read",
    ("POST", "/nodes/<id:node_id>/state"): "nodes:manage",
    ("POST", "/nodes/<id:node_id>/capabilities/approve"): "nodes:manage",
    ("GET", "/tasks"): "tasks:read",
    ("POST", "/tasks"): "tasks:submit",
    ("GET", "/tasks/<id:task_id>"): "tasks:read",
    ("POST", "/tasks/<id:task_id>/approve"): "tasks:approve",
    ("POST", "/tasks/<id:task_id>/reject"): "tasks:approve",
    ("POST", "/tasks/<id:task_id>/cancel"): "tasks:cancel",
    ("GET", "/pipelines"): "tasks:read",
    ("GET", "/pipelines/<id:pipeline_id>"): "tasks:read",
    ("POST", "/pipelines/<id:pipeline_id>/cancel"): "tasks:cancel",
    ("GET", "/agents"): "tasks:read",
    ("GET", "/agents/<name>"): "tasks:read",
    ("POST", "/agents/<name>/rollback"): "agents:manage",
    ("GET", "/agents/<name>/memory"): "memory:read",
    ("POST", "/agents/<name>/memory/<id:memory_id>/forget"): "memory:write",
    ("GET", "/spend"): "spend:read",
    ("POST", "/spend/caps"): "spend:manage",
    ("GET", "/webhooks"): "webhooks:manage",
    ("GET", "/pending"): "tasks:read",
    ("POST", "/pending/<id:pending_id>/approve"): "nodes:manage",
    ("POST", "/pending/<id:pending_id>/reject"): "nodes:manage",
    ("GET", "/tokens"): "tokens:manage",
    ("POST", "/tokens"): "tokens:manage",
    ("POST", "/tokens/<id:token_id>/revoke"): "tokens:manage",
}


@pytest.fixture(scope="module")
def node(cmd):
    """One real N0D3, for tasks that need an output."""
    started = N0D3(cmd, "alpha")
    started.wait_registered()
    yield started
    started.process.stop()


def form_login(cmd: Commander, username: str, password: str = PASSWORD) -> requests.Session:
    """A browser without JavaScript: the login form, then the cookie jar holds the session."""
    browser = requests.Session()
    reply = browser.post(f"{cmd.url}/login", data={"username": username, "password": password, "next": "/tasks"},
                         allow_redirects=False, timeout=15)
    assert reply.status_code == 303 and reply.headers["Location"] == "/tasks", reply.text
    browser.csrf = browser.get(f"{cmd.url}/api/session", timeout=15).json()["csrf_token"]
    return browser


@pytest.fixture(scope="module")
def sessions(cmd):
    found = {role: form_login(cmd, make_user(cmd, role)) for role in ROLES}
    found["none"] = requests.Session()
    found["none"].csrf = None
    return found


@pytest.fixture(scope="module")
def things(cmd):
    """One of each kind of object the pages show, so every detail page has something real."""
    registered = ApiClient(cmd.url, cmd.join_token).register(machine_id=uuid.uuid4().hex, name="table-node", slots=2)
    task = cmd.api.submit_task("a page for every task", requires=["nowhere"])
    pipeline = cmd.api.submit_pipeline({"steps": [
        {"key": "first", "prompt": "one", "requires": ["nowhere"]},
        {"key": "second", "prompt": "two: {{ steps.first.output }}", "depends_on": ["first"]}]})
    return {"node_id": registered["node_id"], "task_id": task["id"], "pipeline_id": pipeline["id"],
            "pending_id": 999_999, "token_id": 999_999, "memory_id": 999_999, "name": "general"}


def fill(rule: str, ids: dict) -> str:
    path = rule.replace("<path:filename>", "dashboard.css").replace("<name>", str(ids["name"]))
    return re.sub(r"<id:([a-z_]+)>", lambda m: str(ids[m[1]]), path)


def page_specs(app) -> list:
    return [spec for _, spec in site.pages(app)]


# --- the route table -------------------------------------------------------------------------

def test_every_route_declares_its_permission(app):
    undeclared = [rule.rule for rule in app.url_map.iter_rules()
                  if not any(hasattr(app.view_functions[rule.endpoint], attr) for attr in ("route_spec", "page_spec"))]
    assert undeclared == []
    assert {(spec.method, spec.rule): spec.permission for spec in page_specs(app)} == EXPECTED


def test_permissions_of_every_page_and_action_for_every_role(cmd, app, sessions, things):
    """GET pages with real objects: 200 when allowed. Actions on ids that do not exist, so the
    matrix changes nothing: allowed means past authorization, to the 404 (or, without ids, the
    400 of an empty form). A missing permission is an HTML 403 naming it; no session, the login page."""
    mistakes = []
    for spec in page_specs(app):
        if spec.rule == "/logout":
            continue  # ends the session: tested on its own below
        has_ids = "<id:" in spec.rule
        ids = things if spec.method == "GET" else {key: 999_999 for key in things}
        url = cmd.url + fill(spec.rule, ids)
        for role, browser in sessions.items():
            data = {"csrf_token": browser.csrf or "", "state": "paused"} if spec.method == "POST" else None
            reply = browser.request(spec.method, url, data=data, allow_redirects=False, timeout=15)
            status, where = reply.status_code, reply.headers.get("Location", "")
            allowed = spec.permission == PUBLIC or (role != "none" and spec.permission in ROLES[role])
            if allowed:
                wanted = 200 if spec.method == "GET" else 404 if has_ids else 400
                if status != wanted:
                    mistakes.append(f"{role} {spec.method} {spec.rule}: {status}, wanted {wanted}")
            elif role == "none":
                if status != 303 or not where.startswith("/login"):
                    mistakes.append(f"nobody {spec.method} {spec.rule}: {status} {where}, wanted the login page")
            elif status != 403 or "text/html" not in reply.headers["Content-Type"] or f"`{spec.permission}`" not in reply.text:
                mistakes.append(f"{role} {spec.method} {spec.rule}: {status}, wanted an HTML 403 naming {spec.permission}")
    assert mistakes == [], "\n".join(mistakes)


def test_no_session_goes_to_the_login_page_and_back(cmd):
    reply = requests.get(f"{cmd.url}/tasks?state=queued", allow_redirects=False, timeout=15)
    assert reply.status_code == 303
    assert reply.headers["Location"] == "/login?next=/tasks?state%3Dqueued"
    form = requests.get(cmd.url + reply.headers["Location"], timeout=15)
    assert 'name="next" value="/tasks?state=queued"' in form.text


# --- logging in and out ----------------------------------------------------------------------

def test_login_form_refuses_wrong_passwords_and_foreign_next_targets(cmd):
    name = make_user(cmd, "mobile")
    wrong = requests.post(f"{cmd.url}/login", data={"username": name, "password": "nope-nope-nope"},
                          allow_redirects=False, timeout=15)
    assert wrong.status_code == 401 and "Set-Cookie" not in wrong.headers
    assert "wrong user name or password" in wrong.text and f'value="{name}"' in wrong.text
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        reply = requests.post(f"{cmd.url}/login", data={"username": name, "password": PASSWORD, "next": target},
                              allow_redirects=False, timeout=15)
        assert reply.status_code == 303 and reply.headers["Location"] == "/", target
        assert "HttpOnly" in reply.headers["Set-Cookie"] and "SameSite=Lax" in reply.headers["Set-Cookie"]
    # A form on another site cannot log the browser in to an account of its choosing.
    foreign = requests.post(f"{cmd.url}/login", data={"username": name, "password": PASSWORD},
                            headers={"Origin": "https://evil.example"}, allow_redirects=False, timeout=15)
    assert foreign.status_code == 403 and "Set-Cookie" not in foreign.headers
    # The same host through a TLS proxy (the browser says https, the Commander hears http) is fine.
    proxied = requests.post(f"{cmd.url}/login", data={"username": name, "password": PASSWORD},
                            headers={"Origin": f"https://127.0.0.1:{cmd.port}"}, allow_redirects=False, timeout=15)
    assert proxied.status_code == 303


def test_logout_needs_the_csrf_token_then_ends_the_session(cmd):
    browser = form_login(cmd, make_user(cmd, "mobile"))
    refused = browser.post(f"{cmd.url}/logout", allow_redirects=False, timeout=15)
    assert refused.status_code == 403 and "text/html" in refused.headers["Content-Type"]
    assert browser.get(f"{cmd.url}/tasks", allow_redirects=False, timeout=15).status_code == 200
    done = browser.post(f"{cmd.url}/logout", data={"csrf_token": browser.csrf}, allow_redirects=False, timeout=15)
    assert done.status_code == 303 and done.headers["Location"] == "/login"
    assert browser.get(f"{cmd.url}/tasks", allow_redirects=False, timeout=15).status_code == 303


# --- actions ---------------------------------------------------------------------------------

def test_an_action_without_its_csrf_token_is_refused_and_changes_nothing(cmd, sessions):
    task = cmd.api.submit_task("hold me", approval_required=True)
    admin = sessions["admin"]
    for data in ({}, {"csrf_token": "x" * 43}):
        refused = admin.post(f"{cmd.url}/tasks/{task['id']}/approve", data=data, allow_redirects=False, timeout=15)
        assert refused.status_code == 403 and "text/html" in refused.headers["Content-Type"]
        assert "CSRF" in refused.text
    assert cmd.api.get_task(task["id"])["state"] == "awaiting_approval"


def test_approve_and_reject_with_one_form_post(cmd, sessions):
    phone = sessions["mobile"]
    first = cmd.api.submit_task("approve me", approval_required=True, requires=["nowhere"])
    second = cmd.api.submit_task("reject me", approval_required=True)
    approved = phone.post(f"{cmd.url}/tasks/{first['id']}/approve", data={"csrf_token": phone.csrf, "next": "/pending"},
                          allow_redirects=False, timeout=15)
    assert approved.status_code == 303 and approved.headers["Location"] == "/pending"
    assert cmd.api.get_task(first["id"])["state"] == "queued"
    assert cmd.api.get_task(first["id"])["decided_by"].startswith("user:mobile-")
    rejected = phone.post(f"{cmd.url}/tasks/{second['id']}/reject",
                          data={"csrf_token": phone.csrf, "reason": "not today", "next": "https://evil.example/"},
                          allow_redirects=False, timeout=15)
    assert rejected.status_code == 303 and rejected.headers["Location"] == f"/tasks/{second['id']}"
    done = cmd.api.get_task(second["id"])
    assert done["state"] == "cancelled" and done["error"].endswith(": not today")
    again = phone.post(f"{cmd.url}/tasks/{second['id']}/approve", data={"csrf_token": phone.csrf}, timeout=15)
    assert again.status_code == 409 and "not awaiting approval" in again.text


def test_submit_and_cancel_a_task_and_a_pipeline_from_forms(cmd, sessions):
    operator = sessions["commander"]
    reply = operator.post(f"{cmd.url}/tasks", data={"csrf_token": operator.csrf, "prompt": "from the form",
                                                    "requires": " gpu , pi5 ,", "approval_required": "on"},
                          allow_redirects=False, timeout=15)
    assert reply.status_code == 303
    task_id = int(reply.headers["Location"].rsplit("/", 1)[1])
    task = cmd.api.get_task(task_id)
    assert (task["prompt"], task["requires"], task["state"]) == ("from the form", ["gpu", "pi5"], "awaiting_approval")
    assert task["submitter"].startswith("user:commander-")
    empty = operator.post(f"{cmd.url}/tasks", data={"csrf_token": operator.csrf, "prompt": ""}, timeout=15)
    assert empty.status_code == 400 and "prompt" in empty.text
    cmd.api.put_agent("form-agent", 'name = "form-agent"\nsystem_prompt = "Be formal."')
    assert '<option>form-agent</option>' in operator.get(f"{cmd.url}/tasks", timeout=15).text
    as_agent = operator.post(f"{cmd.url}/tasks", data={"csrf_token": operator.csrf, "prompt": "agent form",
                                                       "agent": "form-agent", "requires": "nowhere"},
                             allow_redirects=False, timeout=15)
    shown = operator.get(cmd.url + as_agent.headers["Location"], timeout=15).text
    assert 'href="/agents/form-agent">form-agent</a> <small class="muted">v1</small>' in shown
    unknown = operator.post(f"{cmd.url}/tasks", data={"csrf_token": operator.csrf, "prompt": "x", "agent": "ghost"},
                            timeout=15)
    assert unknown.status_code == 404 and "there is no agent named" in unknown.text

    cancelled = operator.post(f"{cmd.url}/tasks/{task_id}/cancel", data={"csrf_token": operator.csrf}, timeout=15)
    assert cancelled.status_code == 200 and cmd.api.get_task(task_id)["state"] == "cancelled"
    pipeline = cmd.api.submit_pipeline({"steps": [{"key": "only", "prompt": "x", "requires": ["nowhere"]}]})
    operator.post(f"{cmd.url}/pipelines/{pipeline['id']}/cancel", data={"csrf_token": operator.csrf}, timeout=15)
    assert cmd.api.get_pipeline(pipeline['id'])["state"] == "cancelled"


def test_node_orders_and_pending_joins_from_forms(cmd, sessions):
    operator = sessions["commander"]
    registered = ApiClient(cmd.url, cmd.join_token).register(machine_id=uuid.uuid4().hex, name="orderly", slots=1)
    url = f"{cmd.url}/nodes/{registered['node_id']}"
    for state in ("paused", "draining", "active"):
        reply = operator.post(f"{url}/state", data={"csrf_token": operator.csrf, "state": state}, allow_redirects=False,
                              timeout=15)
        assert reply.status_code == 303 and reply.headers["Location"] == f"/nodes/{registered['node_id']}"
        assert cmd.api.get_node(registered["node_id"])["state"] == state
    bogus = operator.post(f"{url}/state", data={"csrf_token": operator.csrf, "state": "lost"}, timeout=15)
    assert bogus.status_code == 400 and "text/html" in bogus.headers["Content-Type"]

    asks = [ApiClient(cmd.url, "none").request_join(machine_id=uuid.uuid4().hex, name=f"knocking-{i}", slots=1)
            for i in range(2)]
    listed = operator.get(f"{cmd.url}/pending", timeout=15).text
    assert "knocking-0" in listed and "knocking-1" in listed
    operator.post(f"{cmd.url}/pending/{asks[0]['id']}/approve", data={"csrf_token": operator.csrf}, timeout=15)
    operator.post(f"{cmd.url}/pending/{asks[1]['id']}/reject", data={"csrf_token": operator.csrf}, timeout=15)
    waiting = {p["name"]: p for p in cmd.api.list_pending()}
    assert waiting["knocking-0"]["approved"] and "knocking-1" not in waiting
    assert "registers at its next poll" in operator.get(f"{cmd.url}/pending", timeout=15).text


def test_capabilities_a_node_asks_for_are_shown_old_to_new_and_approved_from_the_form(cmd, sessions):
    node = register_node(cmd.url, cmd.join_token, "asking", capabilities=["gpu"], heartbeat_every=None)
    node.heartbeat(open_slots=1, capabilities=["gpu", "vault"])
    admin, phone = sessions["admin"], sessions["mobile"]
    for path in ("/", f"/nodes/{node.node_id}"):
        seen = phone.get(cmd.url + path, timeout=15).text
        block = seen[seen.index(f'id="asks-{node.node_id}"'):]
        assert re.search(r'asks for</small>\s*<span class="chip">gpu</span>\s*→\s*<span class="chip">gpu</span>'
                         r'<span class="chip">vault</span>', block), path
        assert f'id="approve-capabilities-{node.node_id}"' not in seen  # mobile may look, not approve
    page = admin.get(f"{cmd.url}/", timeout=15).text
    form = page[page.index(f'id="asks-{node.node_id}"'):]
    form = form[:form.index("</form>")]
    shown = re.findall(r'name="capabilities" value="([^"]+)"', form)
    assert shown == ["gpu", "vault"] and f'id="approve-capabilities-{node.node_id}"' in form
    reply = admin.post(f"{cmd.url}/nodes/{node.node_id}/capabilities/approve",
                       data={"csrf_token": admin.csrf, "capabilities": shown}, allow_redirects=False, timeout=15)
    assert reply.status_code == 303
    assert cmd.api.get_node(node.node_id)["capabilities"] == ["gpu", "vault"]
    assert f'id="asks-{node.node_id}"' not in admin.get(f"{cmd.url}/", timeout=15).text


def test_a_nodes_machine_id_is_on_its_page_only_for_those_who_manage_nodes(cmd, sessions):
    machine_id = f"machine-{uuid.uuid4().hex}"
    joined = ApiClient(cmd.url, cmd.join_token).register(machine_id=machine_id, name="private", slots=1)
    ApiClient(cmd.url, "none").request_join(machine_id=f"asking-{machine_id}", name="asking-private", slots=1)
    for role, shown in (("mobile", False), ("commander", True)):
        pages = "".join(sessions[role].get(cmd.url + path, timeout=15).text
                        for path in (f"/nodes/{joined['node_id']}", "/", "/pending"))
        assert (machine_id in pages) is shown, role
        assert (f"asking-{machine_id}" in pages) is shown, role


def test_tokens_are_created_shown_once_and_revoked_from_forms(cmd, sessions):
    admin = sessions["admin"]
    created = admin.post(f"{cmd.url}/tokens", timeout=15, data={
        "csrf_token": admin.csrf, "name": "phone-from-form", "kind": "api", "role": "mobile", "expires_in": "86400"})
    assert created.status_code == 201
    secret = re.search(r'id="secret"[^>]*value="(m3a_[^"]+)"', created.text)[1]
    assert ApiClient(cmd.url, secret).list_tasks() is not None
    assert secret not in admin.get(f"{cmd.url}/tokens", timeout=15).text
    token = next(t for t in cmd.api.list_tokens() if t["name"] == "phone-from-form")
    assert sorted(token["permissions"]) == sorted(ROLES["mobile"]) and token["expires_at"] is not None
    join = admin.post(f"{cmd.url}/tokens", data={"csrf_token": admin.csrf, "name": "new-pi", "kind": "join",
                                                 "role": "admin"}, timeout=15)
    assert re.search(r'value="(m3j_[^"]+)"', join.text)
    assert next(t for t in cmd.api.list_tokens() if t["name"] == "new-pi")["permissions"] == ["nodes:join"]
    admin.post(f"{cmd.url}/tokens/{token['id']}/revoke", data={"csrf_token": admin.csrf}, timeout=15)
    assert requests.get(f"{cmd.url}/api/tasks", headers={"Authorization": f"Bearer {secret}"}, timeout=15).status_code == 401
    # What the creator does not hold cannot be granted: a commander session has no tokens:manage
    # at all, and the form cannot ask for more than a preset.
    bad = admin.post(f"{cmd.url}/tokens", data={"csrf_token": admin.csrf, "name": "x", "role": "root"}, timeout=15)
    assert bad.status_code == 400


# --- what the pages show ---------------------------------------------------------------------

def test_bad_ids_get_an_html_404(cmd, sessions):
    admin = sessions["admin"]
    for path in ("/tasks/999999", "/nodes/999999", "/pipelines/999999", "/tasks/0", "/tasks/abc", "/no-such-page",
                 f"/tasks/{2**63}", "/static/../app.py", "/static/nothing.css"):
        reply = admin.get(cmd.url + path, timeout=15)
        assert reply.status_code == 404 and "text/html" in reply.headers["Content-Type"], path
        assert "Not found" in reply.text
    assert admin.get(f"{cmd.url}/tasks?state=bogus", timeout=15).status_code == 400


def test_the_read_only_pages_carry_their_data_without_javascript(cmd, sessions, node):
    """What a browser with JavaScript off sees: the data is in the HTML itself."""
    done = cmd.wait_task(cmd.api.submit_task("[sleep=0] a haiku about meshes")["id"])
    waiting = cmd.api.submit_task("waiting for a yes", approval_required=True)
    pipeline = cmd.api.submit_pipeline({"name": "digest", "steps": [
        {"key": "research", "prompt": "ideas"}, {"key": "summarize", "prompt": "sum {{ steps.research.output }}",
                                                 "depends_on": ["research"]}]})
    wait_until(lambda: cmd.api.get_pipeline(pipeline['id'])["state"] == "succeeded", 20,
               what="the pipeline")
    phone = sessions["mobile"]
    fleet = phone.get(f"{cmd.url}/", timeout=15).text
    row = fleet[fleet.index(f'id="node-{node.node()["id"]}"'):]
    assert "alpha" in row and "active" in row and "closed" in row and 'aria-label="0 of 1 slots in use"' in row
    queue = phone.get(f"{cmd.url}/tasks", timeout=15).text
    assert f'id="task-{done["id"]}" data-state="succeeded"' in queue and "a haiku about meshes" in queue
    detail = phone.get(f"{cmd.url}/tasks/{done['id']}", timeout=15).text
    assert "echo: [sleep=0] a haiku about meshes" in detail
    assert f"{done['usage']['input_tokens']:,} in" in detail and f"${done['cost_usd']:,.4f}" in detail
    assert "Every link verifies." in detail and "task.leased" in detail and "task.succeeded" in detail
    graph_page = phone.get(f"{cmd.url}/pipelines/{pipeline['id']}", timeout=15).text
    assert "<svg" in graph_page and graph_page.count('class="step s-succeeded"') == 2
    assert "research" in graph_page and "summarize" in graph_page
    assert f"#{pipeline['id']} digest" in phone.get(f"{cmd.url}/pipelines", timeout=15).text
    pending = phone.get(f"{cmd.url}/pending", timeout=15).text
    assert f'id="approval-{waiting["id"]}"' in pending and "waiting for a yes" in pending
    assert f'id="approve-{waiting["id"]}"' in pending  # mobile may approve


def test_untrusted_text_is_escaped(cmd, sessions, node):
    task = cmd.wait_task(cmd.api.submit_task(HOSTILE)["id"])
    assert task["output"] == f"echo: {HOSTILE}"
    ApiClient(cmd.url, cmd.join_token).register(machine_id=uuid.uuid4().hex, name="<b>evil</b>", slots=1)
    admin = sessions["admin"]
    for path in (f"/tasks/{task['id']}", "/tasks", "/", "/pending"):
        html = admin.get(cmd.url + path, timeout=15).text
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>evil</b>" not in html, path
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in admin.get(f"{cmd.url}/tasks/{task['id']}", timeout=15).text
    assert "&lt;b&gt;evil&lt;/b&gt;" in admin.get(f"{cmd.url}/", timeout=15).text


def test_every_page_has_a_strict_csp_and_no_inline_script_or_style(cmd, app, sessions, things):
    admin = sessions["admin"]
    for spec in page_specs(app):
        if spec.method != "GET" or spec.rule.startswith("/static"):
            continue
        reply = admin.get(cmd.url + fill(spec.rule, things), timeout=15)
        policy = reply.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
        assert reply.headers["X-Content-Type-Options"] == "nosniff" and reply.headers["X-Frame-Options"] == "DENY"
        inline = [(tag, attrs) for tag, attrs in tags(reply.text)
                  if (tag == "script" and "src" not in attrs) or any(a == "style" or a.startswith("on") for a in attrs)]
        assert inline == [], spec.rule
    static = admin.get(f"{cmd.url}/static/live.js", timeout=15)
    assert static.headers["Content-Type"].startswith("text/javascript") and static.headers["X-Content-Type-Options"] == "nosniff"
    api = requests.get(f"{cmd.url}/api/health", timeout=15)
    assert "Content-Security-Policy" not in api.headers and api.headers["Content-Type"] == "application/json"


def test_a_live_part_is_the_region_alone(cmd, sessions, things):
    admin = sessions["admin"]
    part = admin.get(f"{cmd.url}/tasks", headers={"X-Live-Part": "tasks"}, timeout=15)
    assert part.status_code == 200 and "<html" not in part.text and f'id="task-{things["task_id"]}"' in part.text
    assert admin.get(f"{cmd.url}/tasks", headers={"X-Live-Part": "fleet"}, timeout=15).status_code == 404
    before = events_latest(cmd)
    page = admin.get(f"{cmd.url}/tasks", timeout=15).text
    assert before <= int(re.search(r'data-event-id="(\d+)"', page)[1]) <= events_latest(cmd)
    kinds = re.search(r'data-event-kinds="([^"]+)"', page)[1].split()
    assert "task.succeeded" in kinds and "node.breaker" in kinds


def tags(html: str) -> list[tuple[str, dict]]:
    found = []
    parser = HTMLParser()
    parser.handle_starttag = lambda tag, attrs: found.append((tag, dict(attrs)))
    parser.feed(html)
    return found


def events_latest(cmd: Commander) -> int:
    import sqlite3

    with sqlite3.connect(Path(cmd.env["M3SHD_DATA_DIR"]) / "commander" / "commander.db") as conn:
        return conn.execute("SELECT COALESCE(MAX(id), 0) FROM event").fetchone()[0]


def test_events_kinds_list_every_kind_the_code_publishes():
    """The browser listens for each kind by name (SSE events are named), so a kind missing from
    events.KINDS would never reach a dashboard."""
    literal, prefixes = set(), set()
    for path in (ROOT / "commander").rglob("*.py"):
        for call in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(call, ast.Call) and getattr(call.func, "attr", getattr(call.func, "id", "")) in
                    ("publish",) and call.args):
                continue
            kind = call.args[0]
            if isinstance(kind, ast.Constant):
                literal.add(kind.value)
            elif isinstance(kind, ast.JoinedStr):
                prefixes.add(kind.values[0].value)
    assert literal and literal <= set(events.KINDS), literal - set(events.KINDS)
    assert prefixes == {"task.", "node.", "pipeline.", "webhook."}


# --- the pipeline graph ----------------------------------------------------------------------

def step(key: str, *parents: str, allow_failure: bool = False, state: str = "queued") -> dict:
    return {"key": key, "task_id": len(key), "state": state,
            "depends_on": [{"step": p, "task_id": 0, "allow_failure": allow_failure} for p in parents]}


def test_graph_layout_puts_each_step_below_its_parents():
    drawn = graph.layout([step("a"), step("b", "a"), step("c", "a", allow_failure=True), step("d", "b", "c"),
                          step("a-very-long-step-key-indeed")])
    boxes = {box["key"]: box for box in drawn["boxes"]}
    assert boxes["a"]["y"] < boxes["b"]["y"] == boxes["c"]["y"] < boxes["d"]["y"]
    assert boxes["a"]["y"] == boxes["a-very-long-step-key-indeed"]["y"]
    # d sits between its parents; no two boxes of a layer overlap; everything fits the canvas.
    assert boxes["b"]["x"] < boxes["d"]["x"] < boxes["c"]["x"]
    for box in drawn["boxes"]:
        assert 0 <= box["x"] and box["x"] + graph.BOX_W <= drawn["width"] and box["y"] + graph.BOX_H <= drawn["height"]
    assert boxes["a-very-long-step-key-indeed"]["label"] == "a-very-long-step-key…"
    assert len(drawn["edges"]) == 4 and [e["allow_failure"] for e in drawn["edges"]].count(True) == 1
    assert graph.layout([]) == {"width": 2 * graph.MARGIN, "height": 2 * graph.MARGIN, "box_w": graph.BOX_W,
                                "box_h": graph.BOX_H, "boxes": [], "edges": []}


def test_graph_layout_orders_a_layer_by_its_parents():
    """Children follow their parents' left-to-right order, whatever order they were submitted in."""
    drawn = graph.layout([step("left"), step("right"), step("under-right", "right"), step("under-left", "left")])
    boxes = {box["key"]: box for box in drawn["boxes"]}
    assert boxes["under-left"]["x"] == boxes["left"]["x"] and boxes["under-right"]["x"] == boxes["right"]["x"]


def test_ago_reads_like_the_script_says_it():
    assert [site.ago(100 - seconds, now=100) for seconds in (0, 59.9, 60, 3599, 3600, 86400 * 3, -30)] == [
        "0 s ago", "59 s ago", "1 min ago", "59 min ago", "1 h ago", "3 d ago", "in 30 s"]
    assert site.ago(None) == "—"


def test_local_path_keeps_only_paths_on_this_site():
    assert site.local_path("/tasks?state=queued") == "/tasks?state=queued"
    for target in (None, "", "tasks", "//evil.example", "/\\evil.example", "https://evil.example/x",
                   "/ok\\..\\x", "javascript:alert(1)", "/x\r\nSet-Cookie: a=b"):
        assert site.local_path(target) == "/", target
