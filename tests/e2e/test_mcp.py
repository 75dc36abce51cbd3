"""The MCP server (`m3shd mcp`) against a live Commander and N0D3 (fake `claude`).

In-process with the SDK's own client for each tool, its schemas and its errors; then the real
thing: `m3shd mcp` spawned over stdio from the entry `m3shd mcp install` wrote, and over HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
from contextlib import asynccontextmanager

import jsonschema
import pytest
from mcp import Client, MCPError, StdioServerParameters

from m3shd.client import ApiClient
from m3shd.mcp.server import build_server
from harness import Commander, N0D3, Process, free_port, m3shd, wait_until

TOOLS = {"dispatch_task", "get_task", "wait_for_task", "list_tasks", "cancel_task", "approve_task", "list_agents", "get_agent",
         "reject_task", "list_nodes", "create_pipeline", "get_pipeline", "spend_report", "query_memory", "store_memory"}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    """One Commander and one two-slot N0D3 for the whole module: every test makes its own tasks."""
    commander = Commander(tmp_path_factory.mktemp("mesh"))
    node = N0D3(commander, "alpha", slots=2, env={"M3SHD_N0D3_CAPABILITIES": "arch=test"})
    node.wait_registered()
    yield commander
    node.process.stop()
    commander.stop()


@asynccontextmanager
async def connected(url: str, token: str):
    async with Client(build_server(ApiClient(url, token, timeout=5))) as client:
        yield client


async def call(client: Client, tool: str, **arguments) -> dict:
    """Call a tool that must succeed; check its structured result against the advertised schema."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    schema = next(t.output_schema for t in (await client.list_tools()).tools if t.name == tool)
    jsonschema.validate(result.structured_content, schema)
    return result.structured_content


async def call_error(client: Client, tool: str, **arguments) -> str:
    """Call a tool that must fail; return the message the model would read."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error and result.structured_content is None
    text = result.content[0].text
    assert "Traceback" not in text
    return text


# --- tools and schemas -----------------------------------------------------------------------

@pytest.mark.anyio
async def test_every_tool_has_a_description_and_typed_input_and_output(mesh):
    async with connected(mesh.url, mesh.admin_token) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == TOOLS
        for tool in tools.values():
            assert len(tool.description) > 40, tool.name
            assert tool.output_schema["type"] == "object", tool.name
        dispatch = tools["dispatch_task"].input_schema
        assert dispatch["required"] == ["prompt"]
        assert dispatch["properties"]["priority"]["minimum"] == -100
        assert dispatch["properties"]["priority"]["maximum"] == 100
        assert set(dispatch["properties"]) == {"prompt", "requires", "prefer", "priority", "approval_required", "model",
                                               "agent", "images"}
        wait = tools["wait_for_task"].input_schema
        assert wait["required"] == ["task_id"] and set(wait["properties"]) == {"task_id", "timeout_seconds"}
        assert wait["properties"]["timeout_seconds"]["maximum"] == 300
        assert tools["list_tasks"].input_schema["properties"]["state"]["anyOf"][0]["enum"] == [
            "blocked", "awaiting_approval", "queued", "leased", "succeeded", "failed", "cancelled", "skipped"]
        pipeline = tools["create_pipeline"].input_schema
        assert pipeline["required"] == ["steps"] and pipeline["$defs"]["StepIn"]["required"] == ["key", "prompt"]
        assert "StepIn" in pipeline["properties"]["steps"]["items"]["$ref"]
        task_fields = tools["get_task"].output_schema["properties"]
        assert {"id", "state", "final", "output", "error", "usage", "cost_usd", "waiting_reason"} <= set(task_fields)
        node_fields = tools["list_nodes"].output_schema["$defs"]["Node"]["properties"]
        assert {"slots", "running", "open_slots", "state", "breaker", "reputation", "heartbeat_age"} <= set(node_fields)
        assert tools["get_task"].annotations.read_only_hint is True
        assert tools["cancel_task"].annotations.destructive_hint is True


@pytest.mark.anyio
async def test_dispatch_sends_image_files_that_claude_on_the_node_sees(mesh, tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + bytes(30)
    (tmp_path / "chart.png").write_bytes(png)
    (tmp_path / "notes.txt").write_text("not an image")
    async with connected(mesh.url, mesh.admin_token) as client:
        task = await call(client, "dispatch_task", prompt="explain the chart", images=[str(tmp_path / "chart.png")])
        done = await call(client, "wait_for_task", task_id=task["id"], timeout_seconds=30)
        assert done["state"] == "succeeded"
        assert done["output"].endswith(f"- ./image-1.png (image/png, {len(png)} bytes)")
        refused = await call_error(client, "dispatch_task", prompt="x", images=[str(tmp_path / "notes.txt")])
        assert "is not a JPEG, PNG, GIF or WebP image" in refused
    assert mesh.api.get_task(task["id"])["attachments"][0]["size"] == len(png)


@pytest.mark.anyio
async def test_dispatch_wait_get_and_list_a_task_that_runs(mesh):
    async with connected(mesh.url, mesh.admin_token) as client:
        task = await call(client, "dispatch_task", prompt="Write a haiku about meshes")
        assert task["state"] in ("queued", "leased") and task["final"] is False
        done = await call(client, "wait_for_task", task_id=task["id"], timeout_seconds=30)
        assert done["state"] == "succeeded" and done["final"] is True
        assert done["output"] == "echo: Write a haiku about meshes"
        assert done["usage"]["input_tokens"] > 0 and done["cost_usd"] > 0
        assert done["node_id"] == mesh.nodes()[0]["id"]
        assert await call(client, "get_task", task_id=task["id"]) == done
        listed = await call(client, "list_tasks", state="succeeded", limit=500)
        assert task["id"] in [t["id"] for t in listed["tasks"]]
        assert "output" not in listed["tasks"][0]  # the list stays small; get_task has the answer
        assert all(t["state"] == "succeeded" for t in listed["tasks"])


@pytest.mark.anyio
async def test_dispatch_passes_every_option_and_approval_then_runs_it(mesh):
    async with connected(mesh.url, mesh.admin_token) as client:
        task = await call(client, "dispatch_task", prompt="needs a yes", requires=["arch=test"], prefer=["gpu"],
                          priority=7, approval_required=True, model="claude-test-1")
        assert task["state"] == "awaiting_approval"
        stored = mesh.api.get_task(task["id"])
        assert (stored["requires"], stored["prefer"], stored["priority"], stored["model"], stored["approval_required"]) \
            == (["arch=test"], ["gpu"], 7, "claude-test-1", True)
        waited = await call(client, "wait_for_task", task_id=task["id"], timeout_seconds=0.5)
        assert waited["state"] == "awaiting_approval" and waited["final"] is False
        # This server's token submitted it, so it may not approve it too; another principal may.
        own = await call_error(client, "approve_task", task_id=task["id"])
        assert "may not approve it too" in own and "a token of their own" in own
    async with connected(mesh.url, mesh.token("approver", role="commander")) as approver:
        approved = await call(approver, "approve_task", task_id=task["id"])
        assert approved["state"] in ("queued", "leased") and approved["decided_by"] == "api token:approver"
    async with connected(mesh.url, mesh.admin_token) as client:
        done = await call(client, "wait_for_task", task_id=task["id"], timeout_seconds=30)
        assert done["state"] == "succeeded" and done["model"] == "claude-test-1"


@pytest.mark.anyio
async def test_list_and_get_agents_and_dispatch_as_one(mesh):
    mesh.api.put_agent("mcp-helper", '+++\nname = "mcp-helper"\ntitle = "Helper"\ndescription = "Helps in tests."\n'
                                     'model = "claude-haiku-5-5"\nallowed_tools = ["Read"]\n+++\nYou help briefly.')
    async with connected(mesh.url, mesh.admin_token) as client:
        listed = await call(client, "list_agents")
        helper = next(agent for agent in listed["agents"] if agent["name"] == "mcp-helper")
        assert (helper["title"], helper["model"], helper["allowed_tools"], helper["state"]) == (
            "Helper", "claude-haiku-5-5", ["Read"], "ready")
        assert "general" in [agent["name"] for agent in listed["agents"]] and "system_prompt" not in helper
        full = await call(client, "get_agent", name="mcp-helper")
        assert full["system_prompt"] == "You help briefly." and full["stats"]["queued"] == 0
        task = await call(client, "dispatch_task", prompt="be helpful", agent="mcp-helper")
        assert (task["agent"], task["agent_version"], task["model"]) == ("mcp-helper", 1, "claude-haiku-5-5")
        done = await call(client, "wait_for_task", task_id=task["id"], timeout_seconds=30)
        assert done["state"] == "succeeded"
        assert (await call(client, "get_agent", name="mcp-helper"))["stats"]["succeeded"] == 1
        unknown = await call_error(client, "dispatch_task", prompt="x", agent="nobody")
        named = unknown.partition("there is no agent named 'nobody'; the agents are: ")[2].split(", ")
        assert {"general", "mcp-helper"} <= set(named)
        assert "there is no agent named 'ghost'" in await call_error(client, "get_agent", name="ghost")


@pytest.mark.anyio
async def test_reject_with_a_reason_cancels_the_task(mesh):
    async with connected(mesh.url, mesh.admin_token) as client:
        task = await call(client, "dispatch_task", prompt="not this one", approval_required=True)
        rejected = await call(client, "reject_task", task_id=task["id"], reason="wrong repo")
        assert rejected["state"] == "cancelled" and rejected["final"] is True
        assert rejected["error"].endswith(": wrong repo")
        again = await call_error(client, "approve_task", task_id=task["id"])
        assert f"task {task['id']} is cancelled, not awaiting approval" in again


@pytest.mark.anyio
async def test_cancel_stops_a_running_task(mesh):
    async with connected(mesh.url, mesh.admin_token) as client:
        task = await call(client, "dispatch_task", prompt="[sleep=30] a long one")
        wait_until(lambda: mesh.api.get_task(task["id"])["state"] == "leased", 15, what="the task to start")
        cancelled = await call(client, "cancel_task", task_id=task["id"])
        assert cancelled["state"] == "cancelled"
        assert "already cancelled" in await call_error(client, "cancel_task", task_id=task["id"])


@pytest.mark.anyio
async def test_wait_is_bounded_and_reports_progress_with_why_a_task_waits(mesh, monkeypatch):
    monkeypatch.setattr("m3shd.mcp.server.PROGRESS_EVERY", 0.4)
    progress = []

    async def on_progress(done, total, message):
        progress.append((done, total, message))

    async with connected(mesh.url, mesh.admin_token) as client:
        task = await call(client, "dispatch_task", prompt="for a node we lack", requires=["gpu"])
        started = time.monotonic()
        result = await client.call_tool("wait_for_task", {"task_id": task["id"], "timeout_seconds": 1.5},
                                        progress_callback=on_progress)
        assert 1.4 <= time.monotonic() - started < 5
        waited = result.structured_content
        assert waited["state"] == "queued" and waited["final"] is False
        assert "no connected N0D3 has all of: gpu" in waited["waiting_reason"]
        assert len(progress) >= 2 and all(total == 1.5 for _, total, _ in progress)
        assert [done for done, _, _ in progress] == sorted(done for done, _, _ in progress)
        assert progress[0][2] == f"task {task['id']} is queued: no connected N0D3 has all of: gpu"
        await call(client, "cancel_task", task_id=task["id"])


@pytest.mark.anyio
async def test_spend_report_gives_the_ledger_grouped_with_the_caps(mesh):
    async with connected(mesh.url, mesh.admin_token) as client:
        task = await call(client, "dispatch_task", prompt="what does this cost?")
        done = await call(client, "wait_for_task", task_id=task["id"], timeout_seconds=30)
        assert done["state"] == "succeeded" and done["cost_usd"]
        mesh.api.set_spend_cap("agent", "general", 1000.0)
        report = await call(client, "spend_report", by="model")
        assert report["group"] == ["model"] and report["time_zone"] == "UTC"
        assert report["total"]["cost_usd"] == pytest.approx(mesh.api.spend("", 1)["total"]["cost_usd"])
        assert report["total"]["cost_usd"] >= done["cost_usd"]
        [cap] = report["caps"]
        assert (cap["scope"], cap["name"], cap["cap_usd"], cap["held"]) == ("agent", "general", 1000.0, False)
        assert cap["left_usd"] == pytest.approx(1000.0 - cap["spent_usd"])
        week = await call(client, "spend_report", period="week")
        assert week["group"] == ["day"] and len(week["rows"]) == 1
        mesh.api.clear_spend_cap("agent", "general")
    async with connected(mesh.url, mesh.token("mcp-no-spend", permissions="tasks:read")) as client:
        assert "spend:read" in await call_error(client, "spend_report")


@pytest.mark.anyio
async def test_store_and_query_memory_and_the_next_task_is_given_it(mesh):
    async with connected(mesh.url, mesh.admin_token) as client:
        stored = await call(client, "store_memory", agent="general", value="the kiln fires on Thursdays",
                            key="kiln", tags=["studio"])
        assert (stored["scope"], stored["key"], stored["tags"], stored["use_count"]) == ("general", "kiln",
                                                                                      ["studio"], 0)
        found = await call(client, "query_memory", agent="general", query="when does the kiln fire")
        assert [m["id"] for m in found["memories"]] == [stored["id"]]
        task = await call(client, "dispatch_task", prompt="which day is the kiln fired")
        done = await call(client, "wait_for_task", task_id=task["id"], timeout_seconds=30)
        assert f"(memory {stored['id']}) kiln: the kiln fires on Thursdays" in done["output"]
        assert "no agent named" in await call_error(client, "query_memory", agent="nobody-here")
    async with connected(mesh.url, mesh.token("mcp-memory-read", permissions="memory:read")) as client:
        assert "`memory:write`" in await call_error(client, "store_memory", agent="general", value="x")


@pytest.mark.anyio
async def test_list_nodes_shows_capacity_and_health(mesh):
    async with connected(mesh.url, mesh.admin_token) as client:
        task = await call(client, "dispatch_task", prompt="[sleep=30] keep a slot busy")
        wait_until(lambda: mesh.api.get_task(task["id"])["state"] == "leased", 15, what="the task to start")
        node = wait_until(lambda: (n := mesh.nodes()[0]) and (n["running"], n["open_slots"]) == (1, 1) and n, 5,
                          what="the node's heartbeat to report the busy slot")
        (listed,) = (await call(client, "list_nodes"))["nodes"]
        assert (listed["id"], listed["name"], listed["state"], listed["slots"]) == (node["id"], "alpha", "active", 2)
        assert (listed["running"], listed["open_slots"]) == (1, 1)
        assert "arch=test" in listed["capabilities"] and listed["runner"] == "claude-cli"
        assert listed["breaker"]["state"] == "closed" and listed["breaker"]["failures"] == 0
        assert 0 <= listed["reputation"]["mean"] <= 1 and listed["reputation"]["count"] >= 0
        assert listed["heartbeat_age"] < 2
        await call(client, "cancel_task", task_id=task["id"])


@pytest.mark.anyio
async def test_create_a_pipeline_whose_second_step_quotes_the_first(mesh):
    steps = [{"key": "plan", "prompt": "pick a topic"},
             {"key": "write", "prompt": "write about: {{ steps.plan.output }}", "depends_on": ["plan"],
              "requires": ["arch=test"]},
             {"key": "edit", "prompt": "edit it", "depends_on": [{"step": "write", "allow_failure": True}]}]
    async with connected(mesh.url, mesh.admin_token) as client:
        pipeline = await call(client, "create_pipeline", name="digest", steps=steps)
        assert (pipeline["name"], pipeline["state"]) == ("digest", "running")
        assert [step["key"] for step in pipeline["steps"]] == ["plan", "write", "edit"]
        write, edit = pipeline["steps"][1], pipeline["steps"][2]
        assert write["state"] == "blocked" and write["depends_on"][0]["step"] == "plan"
        assert edit["depends_on"][0]["allow_failure"] is True
        assert mesh.api.get_task(write["task_id"])["requires"] == ["arch=test"]
        done = await call(client, "wait_for_task", task_id=edit["task_id"], timeout_seconds=40)
        assert done["state"] == "succeeded"
        finished = await call(client, "get_pipeline", pipeline_id=pipeline["id"])
        assert finished["state"] == "succeeded" and finished["error"] is None
        assert finished["steps"][1]["output"] == "echo: write about: echo: pick a topic"


@pytest.mark.anyio
async def test_a_pipeline_the_commander_refuses_says_why(mesh):
    cycle = [{"key": "a", "prompt": "x", "depends_on": ["b"]}, {"key": "b", "prompt": "y", "depends_on": ["a"]}]
    async with connected(mesh.url, mesh.admin_token) as client:
        assert "the steps form a cycle" in await call_error(client, "create_pipeline", steps=cycle)
        assert "key" in await call_error(client, "create_pipeline", steps=[{"key": "no spaces", "prompt": "x"}])
        assert "pipeline 987654 does not exist" in await call_error(client, "get_pipeline", pipeline_id=987654)


# --- resources -------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_tasks_and_nodes_read_as_resources(mesh):
    task_id = mesh.api.submit_task("read me")["id"]
    node_id = mesh.nodes()[0]["id"]
    async with connected(mesh.url, mesh.admin_token) as client:
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert templates == {"m3shd://tasks/{task_id}", "m3shd://nodes/{node_id}"}
        (content,) = (await client.read_resource(f"m3shd://tasks/{task_id}")).contents
        assert content.mime_type == "application/json"
        assert json.loads(content.text)["prompt"] == "read me"
        (content,) = (await client.read_resource(f"m3shd://nodes/{node_id}")).contents
        assert json.loads(content.text)["name"] == "alpha"
        with pytest.raises(MCPError, match="task 987654 does not exist"):
            await client.read_resource("m3shd://tasks/987654")


# --- errors a person can act on ---------------------------------------------------------------

@pytest.mark.anyio
async def test_a_missing_task_is_a_tool_error_that_says_so(mesh):
    async with connected(mesh.url, mesh.admin_token) as client:
        for tool in ("get_task", "wait_for_task", "cancel_task", "approve_task", "reject_task"):
            message = await call_error(client, tool, task_id=987654)
            assert "task 987654 does not exist" in message and "list_tasks" in message


@pytest.mark.anyio
async def test_a_missing_permission_names_it(mesh):
    read_only = mesh.token("mcp-read-only", permissions="tasks:read")
    async with connected(mesh.url, read_only) as client:
        assert (await call(client, "list_tasks"))["tasks"] is not None
        message = await call_error(client, "dispatch_task", prompt="may I?")
        assert "lacks the `tasks:submit` permission" in message and "m3shd token create" in message
        assert "`nodes:read`" in await call_error(client, "list_nodes")


@pytest.mark.anyio
async def test_a_bad_token_and_an_absent_commander_say_what_to_fix(mesh):
    async with connected(mesh.url, "m3a_not-a-token") as client:
        message = await call_error(client, "list_nodes")
        assert "refused this MCP server's token" in message and "M3SHD_CLIENT_TOKEN" in message
    async with connected(f"http://127.0.0.1:{free_port()}", mesh.admin_token) as client:
        message = await call_error(client, "get_task", task_id=1)
        assert "cannot reach the Commander" in message and "m3shd up" in message


@pytest.mark.anyio
async def test_arguments_outside_the_schema_are_refused_before_the_commander(mesh):
    before = len(mesh.api.list_tasks(limit=500))
    async with connected(mesh.url, mesh.admin_token) as client:
        assert "priority" in await call_error(client, "dispatch_task", prompt="x", priority=500)
        assert "prompt" in await call_error(client, "dispatch_task", prompt="")
        assert "timeout_seconds" in await call_error(client, "wait_for_task", task_id=1, timeout_seconds=3600)
        assert "state" in await call_error(client, "list_tasks", state="running")
    assert len(mesh.api.list_tasks(limit=500)) == before


@pytest.mark.anyio
async def test_the_commanders_own_refusals_come_back_as_its_message(mesh):
    async with connected(mesh.url, mesh.admin_token) as client:
        message = await call_error(client, "dispatch_task", prompt="x", requires=["no spaces allowed"])
        assert "requires.0: String should match pattern" in message


# --- the real command: install, then stdio and HTTP --------------------------------------------

def install_env(mesh: Commander, home) -> dict:
    env = {k: v for k, v in mesh.env.items() if k not in ("XDG_CONFIG_HOME",)}
    return env | {"HOME": str(home), "M3SHD_CLIENT_URL": mesh.url, "M3SHD_CLIENT_TOKEN": mesh.admin_token}


def test_install_keeps_other_servers_backs_up_and_is_idempotent(mesh, tmp_path):
    env = install_env(mesh, tmp_path)
    code_config = tmp_path / ".claude.json"
    theirs = {"numStartups": 12, "mcpServers": {"github": {"type": "stdio", "command": "gh-mcp", "args": []}}}
    code_config.write_text(json.dumps(theirs))

    done = m3shd("mcp", "install", "--claude-code", "--claude-desktop", env=env)
    assert mesh.admin_token not in done.stdout + done.stderr
    assert "Claude Code: m3shd added" in done.stderr and "Claude Desktop: m3shd added" in done.stderr
    written = json.loads(code_config.read_text())
    assert written["numStartups"] == 12 and written["mcpServers"]["github"] == theirs["mcpServers"]["github"]
    entry = written["mcpServers"]["m3shd"]
    pinned = {"M3SHD_CLIENT_CA_FILE": str(mesh.ca_file)} if mesh.ca_file else {}  # under `pytest --tls`
    assert entry == {"type": "stdio", "command": sys.executable, "args": ["-m", "m3shd", "mcp"],
                     "env": {"M3SHD_CLIENT_URL": mesh.url, "M3SHD_CLIENT_TOKEN": mesh.admin_token} | pinned}
    (backup,) = tmp_path.glob(".claude.json.*.bak")
    assert json.loads(backup.read_text()) == theirs and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(code_config.stat().st_mode) == 0o600
    desktop = json.loads((tmp_path / ".config" / "Claude" / "claude_desktop_config.json").read_text())
    assert desktop == {"mcpServers": {"m3shd": {k: v for k, v in entry.items() if k != "type"}}}

    again = m3shd("mcp", "install", "--claude-code", "--claude-desktop", env=env)
    assert again.stderr.count("m3shd unchanged") == 2
    assert len(list(tmp_path.glob(".claude.json.*.bak"))) == 1
    assert json.loads(code_config.read_text()) == written

    other_token = mesh.token("claude", role="mobile")
    updated = m3shd("mcp", "install", "--claude-code", env=env | {"M3SHD_CLIENT_TOKEN": other_token})
    assert "Claude Code: m3shd updated" in updated.stderr and other_token not in updated.stderr
    assert json.loads(code_config.read_text())["mcpServers"]["m3shd"]["env"]["M3SHD_CLIENT_TOKEN"] == other_token
    backups = sorted(tmp_path.glob(".claude.json.*.bak"))
    assert len(backups) == 2 and any(json.loads(b.read_text()) == written for b in backups)


def test_install_refuses_a_file_it_cannot_read_and_needs_a_token(mesh, tmp_path):
    env = install_env(mesh, tmp_path)
    (tmp_path / ".claude.json").write_text("{not json")
    done = m3shd("mcp", "install", "--claude-code", env=env, check=False)
    assert done.returncode == 2 and "fix or move it" in done.stderr
    assert (tmp_path / ".claude.json").read_text() == "{not json"
    no_token = m3shd("mcp", "install", "--claude-desktop", env=env | {"M3SHD_CLIENT_TOKEN": ""}, check=False)
    assert no_token.returncode == 2 and "no API token" in no_token.stderr
    nowhere = m3shd("mcp", "install", env=env, check=False)
    assert nowhere.returncode == 2 and "--claude-code" in nowhere.stderr


@pytest.mark.anyio
async def test_a_real_stdio_session_with_the_installed_entry(mesh, tmp_path):
    m3shd("mcp", "install", "--claude-code", env=install_env(mesh, tmp_path))
    entry = json.loads((tmp_path / ".claude.json").read_text())["mcpServers"]["m3shd"]
    # As Claude Code starts it: the entry's command, arguments and environment, from another directory.
    server = StdioServerParameters(command=entry["command"], args=entry["args"], cwd=str(tmp_path),
                                   env=entry["env"] | {"M3SHD_CONFIG_DIR": str(tmp_path / "none")})
    async with Client(server, read_timeout_seconds=30) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        task = await call(client, "dispatch_task", prompt="over stdio")
        done = await call(client, "wait_for_task", task_id=task["id"], timeout_seconds=30)
        assert done["output"] == "echo: over stdio"
        assert "does not exist" in await call_error(client, "get_task", task_id=987654)


def serve_http(mesh: Commander, address: str, log) -> Process:
    env = mesh.env | {"M3SHD_CLIENT_URL": mesh.url, "M3SHD_CLIENT_TOKEN": mesh.admin_token}
    return Process([sys.executable, "-m", "m3shd", "mcp", "--http", address], env, log)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.mark.anyio
async def test_streamable_http(mesh, tmp_path):
    port = free_port()
    server = serve_http(mesh, f"127.0.0.1:{port}", tmp_path / "mcp-http.log")
    try:
        wait_until(lambda: listening(port) or not server.alive(), 20, what="the HTTP server")
        assert server.alive(), server.text()
        assert "warning" not in server.text()
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            (node,) = (await call(client, "list_nodes"))["nodes"]
            assert node["name"] == "alpha"
    finally:
        server.stop()


def test_http_beyond_loopback_warns_that_it_has_no_authentication(mesh, tmp_path):
    port = free_port()
    server = serve_http(mesh, f"0.0.0.0:{port}", tmp_path / "mcp-http.log")
    try:
        wait_until(lambda: listening(port) or not server.alive(), 20, what="the HTTP server")
        assert "no authentication of its own; anyone who can reach 0.0.0.0" in server.text()
    finally:
        server.stop()


def test_mcp_without_a_token_or_with_a_bad_address_says_so(mesh):
    env = mesh.env | {"M3SHD_CLIENT_TOKEN": ""}
    done = m3shd("mcp", env=env, check=False)
    assert done.returncode == 2 and "no API token" in done.stderr
    bad = m3shd("mcp", "--http", "nowhere", env=env | {"M3SHD_CLIENT_TOKEN": "t"}, check=False)
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr


def test_cli_task_wait_gives_up_with_status_4(mesh):
    """`task wait` and wait_for_task share ApiClient.wait_task; the CLI's side of its timeout."""
    task_id = mesh.api.submit_task("held", approval_required=True)["id"]
    env = mesh.env | {"M3SHD_CLIENT_URL": mesh.url, "M3SHD_CLIENT_TOKEN": mesh.admin_token}
    done = m3shd("task", "wait", str(task_id), "--timeout", "0.5", env=env, check=False)
    assert done.returncode == 4 and f"task {task_id} is still awaiting_approval after 0.5 s" in done.stderr


def test_help_names_the_tools_the_files_and_the_token(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    serve = m3shd("mcp", "--help", env=env).stdout
    assert all(tool in serve for tool in TOOLS) and "--http HOST:PORT" in serve and "M3SHD_CLIENT_TOKEN" in serve
    install = " ".join(m3shd("mcp", "install", "--help", env=env).stdout.split())
    assert "~/.claude.json" in install and "~/.config/Claude" in install and "backed up" in install
