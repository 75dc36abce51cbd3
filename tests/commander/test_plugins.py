"""Plugins in process: the manager's loading (and its failures), the [TOOL_CALL] grammar, a
node's tool calls under its lease (refusals, limits, records), the SSRF guard of the web tools
and fetch_url's readable text, against a loopback stand-in."""

from __future__ import annotations

import ipaddress
import socket
import json

import certifi
import pytest
import requests

from commander import pipelines, tokens
from commander.agents import service as agents
from commander.exceptions import Conflict
from commander.models import StepAction, ToolCall
from commander.permissions import NODE_PERMISSIONS
from commander.plugins import calls, steps
from commander.plugins.builtin import web
from commander.plugins.manager import ToolError
from harness import ROOT
from m3shd import tool_calls
from mesh import configure, join, join_signing, lease_of, report, submit
from ntfy_standin import Ntfy
from searxng_standin import BRAVE_KEY, SearxNG

PLUGINS_DIR = ROOT / "tests" / "fixtures" / "plugins"
PROFILE = """+++
name = "tooled"
plugin_tools = ["echo", "slow", "big", "admin_only", "buggy", "web_search"]
+++
Use the tools.
"""


@pytest.fixture
def tooled(make_app):
    """A Commander with the test plugins, a node, and a task of an agent allowed their tools, leased."""
    app = make_app(plugins=("testing", "notify"), plugins_dir=str(PLUGINS_DIR), tool_rounds=3)
    cmdr = app.extensions["m3shd"]
    with cmdr.db.connection_context():
        agents.put(cmdr, "tooled", PROFILE, "test")
        node = join(cmdr)
        lease = lease_of(cmdr, node, submit(cmdr, "use tools", agent="tooled"))
        yield cmdr, node, lease


def ask(tooled, tool: str, args: dict | None = None, permissions=frozenset(NODE_PERMISSIONS), **changed):
    cmdr, node, lease = tooled
    lease = {**lease, **changed}
    return calls.run(cmdr, node.id, permissions, lease["task_id"], lease["attempt"], lease["lease_token"], tool,
                     args or {})


# --- the manager ---------------------------------------------------------------------------------

def test_a_plugin_that_fails_to_import_or_set_up_is_reported_and_the_others_load(make_app, caplog):
    app = make_app(plugins=("broken", "setup_fails", "nowhere", "testing", "notify"), plugins_dir=str(PLUGINS_DIR))
    manager = app.extensions["m3shd"].plugins
    states = {plugin.name: (plugin.state, plugin.error) for plugin in manager.plugins}
    assert states["broken"] == ("failed", "import failed: ModuleNotFoundError: No module named 'm3shd_no_such_module'")
    assert states["setup_fails"] == ("failed", "setup failed: RuntimeError: the backend is not configured")
    assert states["nowhere"][0] == "failed" and "no plugin named 'nowhere'" in states["nowhere"][1]
    assert states["testing"] == ("loaded", None) and states["notify"] == ("loaded", None)
    assert "half_done" not in manager.tools  # registered by the setup that failed: dropped with it
    assert sorted(manager.tools) == ["admin_only", "big", "buggy", "echo", "notify", "slow"]
    assert "plugin setup_fails" in caplog.text


def test_the_web_plugin_offers_web_search_only_with_a_backend(make_app):
    assert "web_search" not in make_app(plugins=("web",)).extensions["m3shd"].plugins.tools
    assert "web_search" in make_app(plugins=("web",), searxng_url="http://127.0.0.1:1").extensions["m3shd"].plugins.tools


def test_the_plugins_route_lists_tools_with_their_schemas(make_app):
    app = make_app(plugins=("testing", "broken"), plugins_dir=str(PLUGINS_DIR))
    cmdr = app.extensions["m3shd"]
    with cmdr.db.connection_context(), cmdr.writing(wake=False):
        _, secret = tokens.create("phone", actor="test", role="mobile")
    listed = app.test_client().get("/api/plugins", headers={"Authorization": f"Bearer {secret}"}).get_json()["plugins"]
    assert [(p["name"], p["state"]) for p in listed] == [("testing", "loaded"), ("broken", "failed")]
    echo = listed[0]["tools"][0]
    assert (echo["name"], echo["permission"], echo["args_schema"]["required"]) == ("echo", "work:execute", ["text"])


# --- the grammar ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, problem", [
    ("[TOOL_CALL]{\"tool\": \"x\"}", "never closed"),
    ("[TOOL_CALL]not json[/TOOL_CALL]", "not JSON"),
    ("[TOOL_CALL][1][/TOOL_CALL]", "a JSON object with a \"tool\" name"),
    ("[TOOL_CALL]{\"tool\": \"Bad Name\"}[/TOOL_CALL]", "is not a tool name"),
    ("[TOOL_CALL]{\"tool\": \"x\", \"args\": []}[/TOOL_CALL]", "\"args\" must be a JSON object"),
    ("[TOOL_CALL]{\"tool\": \"x\", \"extra\": 1}[/TOOL_CALL]", "unknown keys in the call: extra"),
])
def test_a_malformed_marker_says_what_is_wrong(text, problem):
    with pytest.raises(tool_calls.Malformed, match=problem.replace("[", r"\[")):
        tool_calls.find("thinking… " + text)


def test_the_first_call_of_an_answer_is_found():
    found = tool_calls.find('a [TOOL_CALL] {"tool": "echo", "args": {"text": "hi"}} [/TOOL_CALL] b '
                            '[TOOL_CALL]{"tool": "other"}[/TOOL_CALL]')
    assert found == tool_calls.Call("echo", {"text": "hi"})
    assert tool_calls.find("no call here") is None


# --- calls under a lease ---------------------------------------------------------------------------

def test_a_call_runs_and_is_recorded_with_a_digest_of_its_result(tooled):
    answer = ask(tooled, "echo", {"text": "hi"})
    assert (answer.ok, answer.result) == (True, {"text": "hi", "task": tooled[2]["task_id"]})
    [row] = calls.listing(tooled[0], tooled[2]["task_id"])
    text = json.dumps(answer.result, separators=(",", ":"))
    assert (row["tool"], row["args"], row["ok"], row["result_chars"]) == ("echo", {"text": "hi"}, True, len(text))
    assert ToolCall.get().args != json.dumps({"text": "hi"})  # encrypted at rest


MEMORY_PROFILE = """+++
name = "keeper"
plugin_tools = ["recall", "remember"]
+++
Keep notes.
"""


def test_the_memory_tools_recall_and_remember_within_the_tasks_agent_only(make_app):
    from commander.memory import store

    cmdr = make_app(plugins=("memory",)).extensions["m3shd"]
    with cmdr.db.connection_context():
        agents.put(cmdr, "keeper", MEMORY_PROFILE, "test")
        agents.put(cmdr, "other", MEMORY_PROFILE.replace("keeper", "other"), "test")
        with cmdr.writing(wake=False):
            store.put(cmdr, "other", "the vault code is 4711")   # another agent's: never reachable
            store.put(cmdr, store.SHARED, "the deploy host is pi-3.local", key="deploy host")
        node = join(cmdr)
        lease = lease_of(cmdr, node, submit(cmdr, "keep notes", agent="keeper"))
        held = (cmdr, node, lease)
        stored = ask(held, "remember", {"value": "the staging host is pi-7.local", "tags": ["hosts"]})
        assert stored.ok and stored.result["created"] is True and stored.result["shared"] is False
        found = ask(held, "recall", {"query": "which host"}).result["memories"]
        assert {(m["value"], m["shared"]) for m in found} == {("the staging host is pi-7.local", False),
                                                              ("the deploy host is pi-3.local", True)}
        assert ask(held, "recall", {"query": "vault code"}).result == {"memories": []}
        [mine] = store.listing(cmdr, "keeper", 10)
        assert (mine.value, mine.tags, mine.source_task) == ("the staging host is pi-7.local", ["hosts"], lease["task_id"])
        too_long = ask(held, "remember", {"value": "x" * 4001})
        assert too_long.error.startswith("invalid arguments") or "at most" in too_long.error
        agents.put(cmdr, "keeper", MEMORY_PROFILE.replace('name = "keeper"', 'name = "keeper"\nmemory = "off"'), "test")
        off = lease_of(cmdr, node, submit(cmdr, "no notes", agent="keeper"))
        refused = ask((cmdr, node, off), "recall", {"query": "host"})
        assert (refused.ok, refused.error) == (False, 'agent keeper keeps no memories (its profile says memory = "off")')


SUMMARY_PROFILE = MEMORY_PROFILE.replace("keeper", "reader").replace('["recall", "remember"]', '["file_summary"]')
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(60))


@pytest.fixture
def reader(make_app, tmp_path, monkeypatch):
    """A Commander with the files plugin, a file root, the Messages API stand-in holding the mesh key,
    and a leased task of an agent allowed file_summary, with an image attached."""
    from commander import attachments, credentials
    from fakes import anthropic_api

    key = "sk-ant-api03-" + "k" * 40
    server, base_url = anthropic_api.serve(api_key=key)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
    root = tmp_path / "files"
    (root / "notes").mkdir(parents=True)
    cmdr = make_app(plugins=("files",), file_roots=(str(root),), summary_chunk_chars=1000).extensions["m3shd"]
    with cmdr.db.connection_context():
        agents.put(cmdr, "reader", SUMMARY_PROFILE, "test")
        credentials.store(cmdr, "api_key", key, "test")  # each writes in its own transaction
        image, _ = attachments.store(cmdr, PNG, "image/png", "test")
        node = join(cmdr)
        lease = lease_of(cmdr, node, submit(cmdr, "read", agent="reader", attachments=[image.sha256]))
        yield (cmdr, node, lease), root, server
    server.shutdown()
    server.server_close()


def test_file_summary_summarises_a_long_file_in_chunks_then_combines_them(reader):
    held, root, server = reader
    lines = [f"line {i}: the {'first' if i == 0 else 'last' if i == 59 else 'middle'} part" for i in range(60)]
    (root / "notes" / "week.md").write_text("\n".join(lines) + "\n")
    answer = ask(held, "file_summary", {"path": "notes/week.md"})
    assert answer.ok, answer.error
    bodies = [r["body"] for r in server.requests]
    assert len(bodies) == answer.result["chunks"] + 1 and answer.result["chunks"] == 2  # ~1.7 KB in 1,000-char chunks
    assert {b["model"] for b in bodies} == {"claude-haiku-4-5"}
    first, last, combine = (b["messages"][0]["content"] for b in bodies)
    assert "part (1 of 2) of the file notes/week.md" in first and "line 0: the first part" in first
    assert "line 59: the last part" in last and first.endswith("\n")  # cut at a line end
    assert combine.startswith("These are summaries") and "echo: Summarise this part (2 of 2)" in combine
    assert answer.result["summary"].startswith("echo: These are summaries")


def test_file_summary_summarises_an_attached_image(reader):
    held, _, server = reader
    answer = ask(held, "file_summary", {"attachment": 1})
    assert answer.ok and answer.result["summary"].startswith("echo: [image image/png 68 bytes"), answer
    assert ask(held, "file_summary", {"attachment": 2}).error == "the task has 1 attachment(s), not 2"


@pytest.mark.parametrize("name, error", [
    ("../outside.txt", "name a file relative to a file root, without .."),
    ("/etc/passwd", "name a file relative to a file root, without .."),
    ("escape/outside.txt", "escape/outside.txt leads outside the file roots"),
    ("notes", "no file notes under the file roots"),
    ("missing.md", "no file missing.md under the file roots"),
])
def test_file_summary_reads_nothing_outside_its_roots(reader, tmp_path, name, error):
    held, root, server = reader
    (tmp_path / "outside.txt").write_text("secret")
    (root / "escape").symlink_to(tmp_path)  # a symlink leading out of the root
    answer = ask(held, "file_summary", {"path": name})
    assert (answer.ok, answer.error) == (False, error) and server.requests == []


@pytest.mark.parametrize("tool, args, error", [
    ("web_search", {"query": "x"}, "no loaded plugin offers the tool 'web_search'"),
    ("notify", {"topic": "t", "message": "m"}, "agent tooled may not use the tool 'notify'"),
    ("admin_only", {}, "this node may not use 'admin_only': it needs the admin permission"),
    ("echo", {"text": 3}, "invalid arguments: text: Input should be a valid string"),
    ("slow", {}, "the tool took longer than 0.2 s"),
    ("buggy", {}, "the tool failed (ZeroDivisionError)"),
])
def test_a_call_that_cannot_be_answered_says_why_and_is_recorded(tooled, tool, args, error):
    answer = ask(tooled, tool, args)
    assert (answer.ok, answer.error) == (False, error)
    [row] = calls.listing(tooled[0], tooled[2]["task_id"])
    assert (row["tool"], row["ok"], row["error"], row["result_sha256"]) == (tool, False, error, None)


def test_a_result_over_the_tools_cap_is_cut(tooled):
    answer = ask(tooled, "big")
    assert answer.ok and answer.result.startswith('"xxxx') and "[m3shd: cut to 100 of 1002 characters]" in answer.result


def test_an_attempt_makes_at_most_tool_rounds_calls(tooled):
    assert [ask(tooled, "echo", {"text": str(n)}).ok for n in range(3)] == [True] * 3
    refused = ask(tooled, "echo", {"text": "4"})
    assert (refused.ok, refused.error) == (False, "this attempt has used its 3 tool calls; answer without tools")


def test_a_call_without_the_lease_is_refused_as_stale(tooled):
    with pytest.raises(Conflict, match="does not hold a lease"):
        ask(tooled, "echo", {"text": "hi"}, lease_token="0" * 32)
    with pytest.raises(Conflict):
        ask(tooled, "echo", {"text": "hi"}, attempt=2)
    assert calls.listing(tooled[0], tooled[2]["task_id"]) == []


# --- the SSRF guard ----------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://10.1.2.3/", "http://172.16.0.1/", "http://192.168.1.1/",   # private
    "http://127.0.0.1:8080/", "http://[::1]/",                           # loopback
    "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/",     # link-local (cloud metadata)
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:10.0.0.1]/",           # IPv4 inside IPv6
    "http://0.0.0.0/", "http://224.0.0.1/",                              # unspecified, multicast
    "http://localhost/",                                                 # a name resolving to loopback
])
def test_the_guard_refuses_addresses_inside_the_network(url):
    with pytest.raises(web.Refused, match="private, loopback, link-local or reserved"):
        web.check_url(url, [])


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/", "http:///path"])
def test_the_guard_takes_only_http_urls_with_a_host(url):
    with pytest.raises(web.Refused, match="only http and https"):
        web.check_url(url, [])


def test_the_guard_lets_public_and_allowed_addresses_through():
    web.check_url("http://93.184.215.14/", [])
    web.check_url("http://127.0.0.1:8080/", [ipaddress.ip_network("127.0.0.1/32")])
    with pytest.raises(web.Refused):  # allowing one address allows no other
        web.check_url("http://127.0.0.2/", [ipaddress.ip_network("127.0.0.1/32")])


@pytest.fixture
def standin():
    found = SearxNG()
    yield found
    found.close()


@pytest.fixture
def settings(app, standin):
    from dataclasses import replace
    return replace(app.extensions["m3shd"].settings, tools_allowed_networks=("127.0.0.1/32",),
                   searxng_url=standin.url)


@pytest.mark.parametrize("target", ["http://10.0.0.1/", "http://169.254.169.254/", "http://[::ffff:192.168.0.1]/"])
def test_a_redirect_to_a_private_address_is_refused(standin, settings, target):
    with pytest.raises(web.Refused):
        web.fetch(settings, f"{standin.url}/redirect?to={target}", 5)
    assert standin.requests[-1][0] == "/redirect"  # the target was never asked


def test_fetch_url_answers_a_pages_readable_text_and_follows_allowed_redirects(standin, settings):
    page = web.fetch(settings, f"{standin.url}/redirect?to=/page.html", 5)
    assert page["url"] == f"{standin.url}/page.html" and page["status"] == 200
    assert page["text"] == "Pi 5 power\nPower\nThe Pi 5 wants 5 V at 5 A.\nmenu"


def test_fetch_url_refuses_what_is_not_text(standin, settings):
    with pytest.raises(ToolError, match="answered 404"):
        web.fetch(settings, f"{standin.url}/missing", 5)


def test_web_search_asks_searxngs_json_api(standin, settings):
    found = web.SearxNG(settings).search("pi 5", 2, 5)
    assert found == [{"title": "Result 1 for pi 5", "url": "https://example.org/1", "snippet": "snippet 1"},
                     {"title": "Result 2 for pi 5", "url": "https://example.org/2", "snippet": "snippet 2"}]
    assert standin.requests == [("/search", {"q": "pi 5", "format": "json"})]


# --- notify steps ------------------------------------------------------------------------------

@pytest.fixture
def ntfy():
    found = Ntfy()
    yield found
    found.close()


def notify_pipeline(cmdr, ntfy):
    configure(cmdr, ntfy_server=ntfy.url.rsplit("/", 1)[0])
    pipeline = pipelines.submit(cmdr, [
        pipelines.Step(key="summarize", prompt="sum it up"),
        pipelines.Step(key="tell", prompt="Summary: {{ steps.summarize.output }}", depends_on=(pipelines.Edge("summarize"),),
                       notify=dict(topic="digest", message="Summary: {{ steps.summarize.output }}", title="Digest",
                                   priority=4, tags=["memo"], click=None)),
    ], submitter="test")
    node, signer = join_signing(cmdr)
    first = list(pipelines.steps_of(pipeline.id).values())[0]
    report(cmdr, node, lease_of(cmdr, node, first), signer=signer, output="all quiet")
    return pipeline


def test_a_notify_step_is_sent_by_the_commander_once_its_parent_is_done(cmdr, ntfy):
    pipeline = notify_pipeline(cmdr, ntfy)
    assert steps.deliver_due(cmdr) == 1
    [(path, headers, body)] = ntfy.requests
    assert (path, body, headers["Title"], headers["Priority"], headers["Tags"]) == \
        ("/digest", "Summary: all quiet", "Digest", "4", "memo")
    tell = list(pipelines.steps_of(pipeline.id).values())[1]
    assert (tell.state, tell.output, tell.node_id) == ("succeeded", "sent to ntfy topic digest", None)
    assert pipelines.get(pipeline.id).state == "succeeded"
    assert steps.deliver_due(cmdr) == 0 and len(ntfy.requests) == 1


def test_a_notify_step_that_ntfy_refuses_fails_after_its_tries(cmdr, ntfy):
    pipeline = notify_pipeline(cmdr, ntfy)
    ntfy.status = 500
    for _ in range(steps.MAX_ATTEMPTS):
        StepAction.update(next_at=0).execute()
        steps.deliver_due(cmdr)
    tell = list(pipelines.steps_of(pipeline.id).values())[1]
    assert tell.state == "failed" and tell.error.startswith("notify: ntfy answered 500")
    assert len(ntfy.requests) == steps.MAX_ATTEMPTS and pipelines.get(pipeline.id).state == "failed"


def test_a_cancelled_pipelines_notify_step_sends_nothing(cmdr, ntfy):
    pipeline = notify_pipeline(cmdr, ntfy)
    pipelines.cancel(cmdr, pipeline.id)
    steps.deliver_due(cmdr)
    assert ntfy.requests == []


def test_web_search_asks_brave_when_no_searxng_is_set(standin, settings):
    from dataclasses import replace
    brave = replace(settings, searxng_url="", brave_api_key=BRAVE_KEY, brave_url=f"{standin.url}/res/v1/web/search")
    assert isinstance(web.backend(brave), web.Brave)
    assert web.backend(brave).search("pi 5", 2, 5) == [
        {"title": "Brave 1: pi 5", "url": "https://brave.example/1", "snippet": "about 1"},
        {"title": "Brave 2: pi 5", "url": "https://brave.example/2", "snippet": "about 2"}]
    with pytest.raises(ToolError, match="answered 401"):
        web.backend(replace(brave, brave_api_key="wrong")).search("pi 5", 2, 5)
    assert web.backend(replace(brave, brave_api_key="")) is None


def test_a_redirect_does_not_carry_the_backends_headers(standin, settings):
    from dataclasses import replace
    brave = replace(settings, searxng_url="", brave_api_key=BRAVE_KEY,
                    brave_url=f"{standin.url}/redirect?to=/res/v1/web/search")
    with pytest.raises(ToolError, match="answered 401"):  # the key stayed behind at the redirect
        web.backend(brave).search("pi 5", 2, 5)


def test_a_name_that_rebinds_after_the_check_is_refused_at_connect(standin, settings, monkeypatch):
    """A DNS answer that changes between the check and the connection (rebinding, TTL 0): the
    connection resolves once more, checks that answer and connects to it, never to another."""
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1", "10.0.0.1"])  # the check sees an allowed address, the connect an inside one

    def rebinding(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = standin.url.rsplit(":", 1)[1]
    with pytest.raises(web.Refused, match="rebind.test resolves to 10.0.0.1"):
        web.fetch(settings, f"http://rebind.test:{port}/page.html", 5)
    answers = iter(["127.0.0.1", "127.0.0.1"])  # the same name, answered steadily: fetched from the checked address
    assert web.fetch(settings, f"http://rebind.test:{port}/page.html", 5)["text"].startswith("Pi 5 power")


def test_a_pinned_https_connection_still_verifies_the_certificate(tmp_path):
    """Pinned connects to the checked address and leaves TLS as it is: a Commander under the mesh
    CA is reached with that CA, refused with another, and refused by the guard when not allowed."""
    from harness import Commander

    served = Commander(tmp_path / "tls", tls=True)
    try:
        session = web.pinned_session([ipaddress.ip_network("127.0.0.1/32")])
        assert session.get(f"{served.url}/api/health", verify=str(served.ca_file), timeout=10).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):  # the public CAs' bundle knows no mesh CA
            session.get(f"{served.url}/api/health", verify=certifi.where(), timeout=10)
        with pytest.raises(web.Refused):
            web.pinned_session([]).get(f"{served.url}/api/health", verify=str(served.ca_file), timeout=10)
    finally:
        served.stop()
