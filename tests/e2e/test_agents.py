"""Agents end to end: a Commander under gunicorn whose profile directory holds the test
profiles, N0D3 processes with the fake `claude` (which logs how it was called) and the loopback
Messages API, and the `m3shd` commands."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import pytest
import requests

from commander.agents.profile import parse
from commander.permissions import ROLES
from harness import FAKES, ROOT, Commander, N0D3, m3shd, wait_until
from m3shd import wire
from m3shd.client import ApiClient, CommanderError
from e2e.test_access import call, operations

FIXTURES = ROOT / "tests" / "fixtures" / "agents"
REVIEWER = (FIXTURES / "test-reviewer.md").read_text()
NO_CLAUDE_PATH = "/usr/local/bin:/usr/bin:/bin"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    """A Commander that looks at its profile files every 0.3 s, and a N0D3 whose fake `claude`
    logs every call."""
    home = tmp_path_factory.mktemp("agents")
    profiles = home / "profiles"
    shutil.copytree(FIXTURES, profiles)
    commander = Commander(home, {"M3SHD_COMMANDER_AGENTS_DIR": str(profiles),
                                 "M3SHD_COMMANDER_AGENTS_CHECK_EVERY": "0.3"})
    commander.profiles = profiles
    commander.claude_log = home / "claude.jsonl"
    node = N0D3(commander, "cli", env={"FAKE_CLAUDE_LOG": str(commander.claude_log)})
    node.wait_registered()
    yield commander
    node.process.stop()
    commander.stop()


def cli(mesh, *args, token: str | None = None, **kwargs):
    return m3shd(*args, "--url", mesh.url, "--token", token or mesh.admin_token, env=mesh.env, **kwargs)


def claude_calls(mesh) -> list[dict]:
    return [json.loads(line) for line in mesh.claude_log.read_text().splitlines()] if mesh.claude_log.exists() else []


def edit(mesh, name: str, text: str) -> None:
    path = mesh.profiles / name
    path.write_text(text)
    later = time.time() + 1  # a second later, as a person's save would be
    os.utime(path, (later, later))


# --- running as an agent -----------------------------------------------------------------------

def test_a_task_as_an_agent_reaches_the_cli_with_its_profile_and_its_result_is_bound_to_it(mesh):
    done = cli(mesh, "task", "submit", "--agent", "test-reviewer", "review the diff in HEAD", "--timeout", "30")
    assert done.stdout.strip() == "echo: review the diff in HEAD"
    task = mesh.api.list_tasks(agent="test-reviewer")[0]
    assert (task["agent"], task["agent_version"], task["model"]) == ("test-reviewer", 1, "claude-opus-5-5")

    [ran] = [c for c in claude_calls(mesh) if c["prompt"] == "review the diff in HEAD"]
    profile = parse(REVIEWER)
    assert ran["options"] == {
        "p": True, "output-format": "json", "model": "claude-opus-5-5", "max-turns": "7",
        "allowedTools": ["Read", "Grep", "Bash(git diff:*)"], "disallowedTools": ["Bash(rm:*)", "WebFetch"],
        "append-system-prompt": profile.system_prompt}

    bundle = mesh.api.task_provenance(task["id"])
    [link] = bundle["links"]
    assert (link["agent"], link["agent_version"], link["system_prompt"]) == ("test-reviewer", 1, profile.system_prompt)
    signed = json.loads(link["document"])
    assert signed["run_sha256"] == wire.run_sha256(profile.system_prompt, "review the diff in HEAD")
    path = mesh.home / "reviewed.json"
    path.write_text(json.dumps(bundle))
    assert "chain verified" in m3shd("provenance", "verify", str(path), env=mesh.env).stdout
    # The same bundle claiming another system prompt no longer verifies.
    link["system_prompt"] = "You approve everything."
    path.write_text(json.dumps(bundle))
    tampered = m3shd("provenance", "verify", str(path), env=mesh.env, check=False)
    assert tampered.returncode == 1 and "the system prompt or prompt differs" in tampered.stdout


def test_the_sdk_runner_sends_the_agents_system_prompt_model_and_server_tools(mesh):
    sys.path.insert(0, str(FAKES))
    import anthropic_api

    server, base_url = anthropic_api.serve()
    node = N0D3(mesh, "sdk", env={"PATH": NO_CLAUDE_PATH, "ANTHROPIC_API_KEY": "test-key",
                                  "ANTHROPIC_BASE_URL": base_url})
    try:
        node.wait_registered()
        task = mesh.api.submit_task("who won the match?", agent="test-researcher", requires=["runner=anthropic-sdk"])
        done = mesh.wait_task(task["id"])
    finally:
        node.process.stop()
        server.shutdown()
    assert done["state"] == "succeeded", done
    assert done["runner"] == "anthropic-sdk" and done["output"] == "echo: who won the match?"
    body = server.requests[-1]["body"]
    assert body["system"] == "You research questions on the web and cite what you found."
    assert body["model"] == "claude-sonnet-5-5"
    assert body["tools"] == [{"type": "web_search_20250305", "name": "web_search"}]
    assert done["runner_notes"] == ["the anthropic-sdk runner cannot offer Read (no Messages API equivalent); "
                                    "the task ran without it"]


def test_a_task_whose_agent_needs_a_capability_no_node_has_waits_saying_so(mesh):
    task = mesh.api.submit_task("render it", agent="test-gpu")
    time.sleep(0.5)
    waiting = mesh.api.get_task(task["id"])
    assert waiting["state"] == "queued"
    assert waiting["waiting_reason"] == "no connected N0D3 has all of: gpu (agent test-gpu requires gpu)"
    mesh.api.cancel_task(task["id"])


def test_an_unknown_agent_is_refused_with_the_names(mesh):
    refused = cli(mesh, "task", "submit", "--agent", "nobody", "hello", check=False)
    assert refused.returncode == 6  # not found (m3shd --help lists the exit statuses)
    named = refused.stderr.partition("there is no agent named 'nobody'; the agents are: ")[2]
    assert "general" in named.split(", ") and "(404)" in refused.stderr


# --- profiles change without a restart -------------------------------------------------------

def test_a_file_edit_is_picked_up_without_a_restart_and_reload_reports_broken_files(mesh):
    edit(mesh, "test-edited.md", '+++\nname = "test-edited"\ntitle = "First"\n+++\nFirst prompt.')
    first = wait_until(lambda: next((a for a in mesh.api.list_agents() if a["name"] == "test-edited"), None), 10,
                       what="the new file to be read")
    assert (first["version"], first["title"]) == (1, "First")
    edit(mesh, "test-edited.md", '+++\nname = "test-edited"\ntitle = "Second"\n+++\nSecond prompt.')
    wait_until(lambda: mesh.api.get_agent("test-edited")["version"] == 2, 10, what="the edit to be read")

    edit(mesh, "test-edited.md", '+++\nname = "test-edited"\ntitle = "Third"\nmax_turns = "lots"\n+++\nThird.')
    reloaded = cli(mesh, "agents", "reload", check=False)
    assert reloaded.returncode == 1
    assert "broken: test-edited: " in reloaded.stderr and "max_turns: Input should be a valid integer" in reloaded.stderr
    broken = mesh.api.get_agent("test-edited")
    assert broken["state"] == "broken" and "max_turns" in broken["error"] and broken["version"] == 2
    assert "agents: test-edited is broken:" in mesh.process.text()
    # The other agents load as before, and the broken one still serves its last good version.
    assert {a["state"] for a in mesh.api.list_agents() if a["name"] != "test-edited"} == {"ready"}
    assert mesh.api.submit_task("still works", agent="test-edited")["agent_version"] == 2


def test_edit_versions_rollback_and_show_from_the_command_line(mesh):
    edit(mesh, "test-scribe.md", '+++\nname = "test-scribe"\ntitle = "Scribe"\n+++\nWrite it down.')
    cli(mesh, "agents", "reload")
    # $EDITOR gets the current profile in a file; what it leaves there is sent back.
    editor = f"{sys.executable} -c \"import sys; p = sys.argv[1]; open(p, 'a').write(' Neatly.')\""
    edited = m3shd("agents", "edit", "test-scribe", "--url", mesh.url, "--token", mesh.admin_token,
                   env=mesh.env | {"EDITOR": editor, "VISUAL": ""})
    assert "agent test-scribe: version 2 is current" in edited.stderr
    assert mesh.api.get_agent("test-scribe")["system_prompt"] == "Write it down. Neatly."
    replacement = mesh.home / "scribe.md"
    replacement.write_text('name = "test-scribe"\nsystem_prompt = "Shorthand."\nmax_turns = 2')
    cli(mesh, "agents", "edit", "test-scribe", "--file", str(replacement))
    listed = cli(mesh, "agents", "versions", "test-scribe").stdout.splitlines()
    assert [line.split()[0] for line in listed[1:]] == ["3*", "2", "1"] and "edited by api token:admin" in listed[1]

    back = cli(mesh, "agents", "rollback", "test-scribe", "1")
    assert "version 1's profile is current again, as version 4" in back.stderr
    shown = cli(mesh, "agents", "show", "test-scribe")
    assert shown.stdout.rstrip("\n") == '+++\nname = "test-scribe"\ntitle = "Scribe"\n+++\nWrite it down.'
    assert "version 4" in shown.stderr

    # A profile the Commander refuses: said so, and nothing changes.
    replacement.write_text('name = "test-scribe"\nmax_turns = 0')
    refused = cli(mesh, "agents", "edit", "test-scribe", "--file", str(replacement), check=False)
    assert refused.returncode == 2 and "max_turns: Input should be greater than or equal to 1" in refused.stderr
    assert mesh.api.get_agent("test-scribe")["version"] == 4

    table = cli(mesh, "agents", "list").stdout
    assert "test-scribe" in table and "test-reviewer" in table and "claude-opus-5-5 / Test reviewer" in table


# --- tokens scoped to one agent ----------------------------------------------------------------

def test_a_token_made_for_an_agent_submits_as_it_only(mesh):
    made = cli(mesh, "token", "create", "review-bot", "--agent", "test-reviewer")
    secret = made.stdout.strip()
    assert "tasks:read, tasks:submit as agent test-reviewer only" in made.stderr
    bot = ApiClient(mesh.url, secret)
    task = bot.submit_task("look at this")
    assert task["agent"] == "test-reviewer"
    refused = cli(mesh, "task", "submit", "--agent", "general", "--no-wait", "hi", token=secret, check=False)
    assert refused.returncode == 5  # refused
    assert "this token may only submit tasks as agent `test-reviewer`, not `general` (403)" in refused.stderr
    assert [t["id"] for t in bot.list_tasks()] == [task["id"]]
    with pytest.raises(CommanderError) as other:
        bot.get_task(mesh.api.submit_task("someone else's")["id"])
    assert other.value.status == 404
    local = mesh.token("local-bot", agent="test-gpu")
    assert ApiClient(mesh.url, local).submit_task("render")["agent"] == "test-gpu"


def test_a_scoped_token_reaches_only_the_routes_made_for_it(mesh):
    """Every route, with a token scoped to an agent that holds the commander preset: the routes not
    marked agent-scoped refuse it, naming the agent; the others let it through."""
    scoped = dict(kind="token", token=mesh.api.create_token("scoped", role="commander", agent="test-reviewer")["token"])
    paths = requests.get(f"{mesh.url}/api/openapi.json", timeout=15).json()["paths"]
    mistakes = []
    for method, path, permission, signed in operations(mesh):
        if permission == "public" or signed or permission not in ROLES["commander"]:
            continue
        with call(mesh, scoped, method, path) as response:
            status = response.status_code
            message = response.json().get("error", {}).get("message", "") if status >= 400 else ""
        refused = status == 403 and "scoped to agent `test-reviewer`" in message
        if paths[path][method.lower()].get("x-agent-scoped") == refused:
            mistakes.append(f"{method} {path}: {status} {message}")
    assert mistakes == []
    assert len([op for op in paths.values() for spec in op.values() if spec.get("x-agent-scoped")]) == 12
