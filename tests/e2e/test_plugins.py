"""Plugins and the [TOOL_CALL] loop end to end: a Commander under gunicorn with the built-in
plugins (and a broken one), loopback ntfy and SearXNG stand-ins, and N0D3 processes running the
fake `claude` (which resumes sessions by id) and the loopback Messages API. The fakes echo their
prompt, so a prompt holding a [TOOL_CALL] marker makes the model call that tool."""

from __future__ import annotations

import json

import pytest

from e2e.test_access import make_user
from e2e.test_dashboard import form_login
from fakes.anthropic_api import serve
from harness import ROOT, Commander, N0D3, m3shd, wait_until
from m3shd import wire
from ntfy_standin import Ntfy
from searxng_standin import SearxNG

NO_CLAUDE_PATH = "/usr/local/bin:/usr/bin:/bin"
TOOL_USER = """+++
name = "tool-user"
plugin_tools = ["notify", "web_search"]
+++
You use the mesh's tools when a task asks for them.
"""
CLI, SDK = ["runner=claude-cli"], ["runner=anthropic-sdk"]


def call(tool: str, **args) -> str:
    return "[TOOL_CALL]" + json.dumps({"tool": tool, "args": args}) + "[/TOOL_CALL]"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    home = tmp_path_factory.mktemp("plugins")
    (home / "profiles").mkdir()
    (home / "profiles" / "tool-user.md").write_text(TOOL_USER)
    ntfy, searx = Ntfy(), SearxNG()
    api, base_url = serve()
    commander = Commander(home, {
        "M3SHD_COMMANDER_AGENTS_DIR": str(home / "profiles"),
        "M3SHD_COMMANDER_PLUGINS": "notify,web,broken,nowhere",
        "M3SHD_COMMANDER_PLUGINS_DIR": str(ROOT / "tests" / "fixtures" / "plugins"),
        "M3SHD_COMMANDER_NTFY_SERVER": ntfy.url.rsplit("/", 1)[0],
        "M3SHD_COMMANDER_SEARXNG_URL": searx.url,
        "M3SHD_COMMANDER_TOOLS_ALLOWED_NETWORKS": "127.0.0.1/32",
        "M3SHD_COMMANDER_TOOL_ROUNDS": "2",
    })
    commander.ntfy, commander.searx, commander.anthropic = ntfy, searx, api
    commander.claude_log = home / "claude.jsonl"
    nodes = [N0D3(commander, "cli", env={"FAKE_CLAUDE_LOG": str(commander.claude_log),
                                         "FAKE_CLAUDE_SESSIONS": str(home / "sessions")}),
             N0D3(commander, "sdk", env={"PATH": NO_CLAUDE_PATH, "ANTHROPIC_API_KEY": "test-key",
                                         "ANTHROPIC_BASE_URL": base_url})]
    for node in nodes:
        node.wait_registered()
    yield commander
    for node in nodes:
        node.process.stop()
    commander.stop()
    ntfy.close()
    searx.close()
    api.shutdown()


def run(mesh, prompt: str, requires: list[str], agent: str = "tool-user") -> dict:
    task = mesh.api.submit_task(prompt, agent=agent, requires=requires)
    return mesh.wait_task(task["id"], timeout=30)


def claude_runs(mesh) -> list[dict]:
    return [json.loads(line) for line in mesh.claude_log.read_text().splitlines()]


def test_the_cli_runner_calls_a_tool_and_resumes_its_session_with_the_result(mesh):
    before = len(mesh.ntfy.requests)
    prompt = "tell the team " + call("notify", topic="team", message="build is green", title="CI", priority=4,
                                     tags=["white_check_mark"], click="https://ci.example/1")
    done = run(mesh, prompt, CLI)
    assert done["state"] == "succeeded", done
    assert done["output"].startswith('echo: [TOOL_RESULT]{"tool":"notify","ok":true,"result":{"sent":true')

    [(path, headers, body)] = mesh.ntfy.requests[before:]
    assert (path, body) == ("/team", "build is green")
    assert (headers["Title"], headers["Priority"], headers["Tags"], headers["Click"]) == \
        ("CI", "4", "white_check_mark", "https://ci.example/1")

    first, second = [r for r in claude_runs(mesh) if r["prompt"] == prompt or r["prompt"].startswith("[TOOL_RESULT]")][-2:]
    assert first["prompt"] == prompt and "resume" not in first["options"]
    assert "[TOOL_CALL]" in first["options"]["append-system-prompt"] and "- notify:" in first["options"]["append-system-prompt"]
    assert second["options"]["resume"] and second["prompt"].startswith('[TOOL_RESULT]{"tool":"notify","ok":true')

    # Both rounds' tokens add up: the fake counts len(prompt) + 7 input tokens per run.
    assert done["usage"]["input_tokens"] == len(first["prompt"]) + 7 + len(second["prompt"]) + 7

    [recorded] = mesh.api.tool_calls(done["id"])["tool_calls"]
    assert (recorded["tool"], recorded["ok"], recorded["attempt"], recorded["args"]["topic"]) == ("notify", True, 1, "team")
    assert len(recorded["result_sha256"]) == 64
    page = form_login(mesh, make_user(mesh, "mobile")).get(f"{mesh.url}/tasks/{done['id']}", timeout=15).text
    assert '<ol class="history" id="tool-calls">' in page and recorded["result_sha256"][:16] in page
    assert "&#34;topic&#34;: &#34;team&#34;" in page or "&#34;topic&#34;:&#34;team&#34;" in page

    # The result is bound to the system prompt with the tools section, which provenance rebuilds.
    bundle = mesh.api.task_provenance(done["id"])
    assert bundle["ok"], bundle
    [link] = bundle["links"]
    assert link["system_prompt"] == first["options"]["append-system-prompt"]
    assert json.loads(link["document"])["run_sha256"] == wire.run_sha256(link["system_prompt"], prompt)


def test_the_sdk_runner_calls_web_search_in_the_same_conversation(mesh):
    prompt = "find it " + call("web_search", query="pi 5 power", count=2)
    done = run(mesh, prompt, SDK)
    assert done["state"] == "succeeded" and done["runner"] == "anthropic-sdk", done
    assert ("/search", {"q": "pi 5 power", "format": "json"}) in mesh.searx.requests
    result = json.loads(done["output"].removeprefix("echo: [TOOL_RESULT]").removesuffix("[/TOOL_RESULT]"))
    assert result["result"] == [{"title": "Result 1 for pi 5 power", "url": "https://example.org/1", "snippet": "snippet 1"},
                                {"title": "Result 2 for pi 5 power", "url": "https://example.org/2", "snippet": "snippet 2"}]

    bodies = [r["body"] for r in mesh.anthropic.requests if r["body"] and r["body"]["messages"][0]["content"] == prompt]
    first, second = bodies[-2:]
    assert "[TOOL_CALL]" in first["system"] and "- web_search:" in first["system"]
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    assert second["messages"][1]["content"][0]["text"] == "echo: " + prompt
    # Output tokens of both answers add up (the fake counts the answer's length).
    assert done["usage"]["output_tokens"] == len("echo: " + prompt) + len(done["output"])
    assert mesh.api.task_provenance(done["id"])["ok"]


def test_a_tool_the_agent_may_not_use_is_refused_and_recorded(mesh):
    done = run(mesh, "fetch " + call("fetch_url", url="http://127.0.0.1:9/"), CLI)
    assert done["state"] == "succeeded"
    assert "agent tool-user may not use the tool 'fetch_url'" in done["output"]
    [recorded] = mesh.api.tool_calls(done["id"])["tool_calls"]
    assert (recorded["tool"], recorded["ok"], recorded["result_sha256"]) == ("fetch_url", False, None)
    assert "may not use" in recorded["error"]


def test_an_agent_without_plugin_tools_gets_no_tools_and_its_markers_are_plain_text(mesh):
    prompt = "quote " + call("notify", topic="x", message="y")
    done = run(mesh, prompt, CLI, agent="general")
    assert done["output"] == "echo: " + prompt
    assert mesh.api.tool_calls(done["id"])["tool_calls"] == []


def test_a_malformed_marker_gets_an_error_back_to_the_model(mesh):
    done = run(mesh, 'try [TOOL_CALL]{"tool": "notify", "args": [1]}[/TOOL_CALL]', SDK)
    assert done["state"] == "succeeded"
    assert 'malformed tool call: \\"args\\" must be a JSON object' in done["output"] or \
        '"args" must be a JSON object' in done["output"]
    assert mesh.api.tool_calls(done["id"])["tool_calls"] == []


@pytest.mark.parametrize("requires", [CLI, SDK], ids=["cli", "sdk"])
def test_the_rounds_are_bounded(mesh, requires):
    done = run(mesh, "[repeat-call] " + call("web_search", query="again"), requires)
    assert done["state"] == "succeeded"
    assert "stopped after 2 tool calls (the Commander's tool_rounds): the answer may be unfinished" in done["runner_notes"]
    assert [c["ok"] for c in mesh.api.tool_calls(done["id"])["tool_calls"]] == [True, True]


def test_research_summarize_notify_really_notifies(mesh):
    before = len(mesh.ntfy.requests)
    pipeline = mesh.api.submit_pipeline({"name": "daily", "steps": [
        {"key": "research", "prompt": "research the news", "requires": CLI},
        {"key": "summarize", "prompt": "summarize: {{ steps.research.output }}", "depends_on": ["research"],
         "requires": CLI},
        {"key": "notify", "notify": {"topic": "digest", "title": "Daily digest",
                                     "message": "{{ steps.summarize.output }}"}, "depends_on": ["summarize"]},
    ]})
    done = wait_until(lambda: (p := mesh.api.get_pipeline(pipeline["id"]))["state"] != "running" and p, 30,
                      what="the pipeline to finish")
    assert done["state"] == "succeeded", done
    [(path, headers, body)] = mesh.ntfy.requests[before:]
    assert (path, headers["Title"], body) == ("/digest", "Daily digest", "echo: summarize: echo: research the news")
    notify_step = done["steps"][2]
    assert (notify_step["state"], notify_step["output"], notify_step["node_id"]) == \
        ("succeeded", "sent to ntfy topic digest", None)


def test_plugins_list_reports_what_failed_and_what_loaded(mesh):
    listed = {p["name"]: p for p in mesh.api.plugins()["plugins"]}
    assert [t["name"] for t in listed["notify"]["tools"]] == ["notify"]
    assert [t["name"] for t in listed["web"]["tools"]] == ["web_search", "fetch_url"]
    assert listed["web"]["tools"][0]["args_schema"]["properties"]["query"]["type"] == "string"
    assert listed["broken"]["state"] == "failed"
    assert "import failed: ModuleNotFoundError: No module named 'm3shd_no_such_module'" in listed["broken"]["error"]
    assert listed["nowhere"]["state"] == "failed" and "no plugin named 'nowhere'" in listed["nowhere"]["error"]
    shown = m3shd("plugins", "list", "--url", mesh.url, "--token", mesh.admin_token, env=mesh.env, check=False)
    assert shown.returncode == 1
    assert "broken               FAILED  import failed: ModuleNotFoundError" in shown.stdout
    assert "web                  loaded  web_search, fetch_url" in shown.stdout
    assert "plugin broken" in (mesh.home / "commander.log").read_text()
    page = form_login(mesh, make_user(mesh, "mobile")).get(f"{mesh.url}/agents", timeout=15).text
    broken = page[page.index('<tr id="plugin-broken">'):].split("</tr>")[0]
    assert "broken" in broken and "import failed: ModuleNotFoundError" in broken
    assert "web_search, fetch_url" in page[page.index('<tr id="plugin-web">'):].split("</tr>")[0]
