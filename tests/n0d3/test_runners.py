"""The N0D3 runners against real processes: the fake `claude` CLI and a loopback API."""

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fakes.anthropic_api import serve
from harness import FAKES, ROOT
from n0d3.agent import Agent
from n0d3.runners import (
    NO_RUNNER,
    SERVER_TOOLS,
    AnthropicSdkRunner,
    ClaudeCliRunner,
    Image,
    TaskSpec,
    detect,
    price_usd,
    sdk_tools,
    stop_process_group,
)
from n0d3.settings import N0d3Settings

FAKE_CLAUDE = FAKES / "claude"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(80)


def fake_usage(prompt: str, answer: str) -> dict:
    """The token counts both fakes derive from the prompt, in RunResult's names."""
    return {
        "input_tokens": len(prompt) + 7,
        "output_tokens": len(answer),
        "cache_read_tokens": 4 * len(prompt),
        "cache_write_tokens": 2 * len(prompt),
    }


def dead(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet (a grandchild cannot be reaped by us)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    if not Path("/proc").is_dir():
        return False  # no /proc (macOS): alive as far as we can tell
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True  # exited between the two checks
    return any(line.split()[1] == "Z" for line in status.splitlines() if line.startswith("State:"))


def group_members(pgid: int) -> list[int]:
    """Live and zombie processes in a process group, from /proc (Linux)."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    members = []
    for pid in pids:
        try:
            if os.getpgid(pid) == pgid:
                members.append(pid)
        except ProcessLookupError:
            pass
    return members


def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def kill_quietly(kill) -> None:
    """Clean up after a failed assertion; the process being gone already is the good case."""
    try:
        kill()
    except ProcessLookupError:
        pass


@pytest.fixture
def fake_path(monkeypatch):
    assert os.access(FAKE_CLAUDE, os.X_OK), "tests/fakes/claude must be executable (chmod +x)"
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def cli_log(tmp_path, monkeypatch):
    log = tmp_path / "claude.log"
    monkeypatch.setenv("FAKE_CLAUDE_LOG", str(log))
    return lambda: [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def api():
    server, base_url = serve()
    yield server, base_url
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_runner_env(tmp_path, monkeypatch):
    """A machine with neither `claude` on PATH nor an API key in the environment."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


# --- TaskSpec ---------------------------------------------------------------------------


def test_task_spec_from_lease_ignores_unknown_keys_and_nulls():
    spec = TaskSpec.from_lease({"prompt": "hi", "model": None, "max_turns": 4,
                                "allowed_tools": ["Read"], "priority": "high", "task_id": 7})
    assert spec == TaskSpec(prompt="hi", max_turns=4, allowed_tools=["Read"])
    assert spec.timeout_s == 1800


# --- ClaudeCliRunner --------------------------------------------------------------------


def test_cli_success_parses_result_and_passes_flags_with_prompt_on_stdin(fake_path, cli_log):
    prompt = "summarise the mesh, please"
    spec = TaskSpec(prompt=prompt, model="claude-opus-5-5", max_turns=3, allowed_tools=["Read", "Bash(git log:*)"],
                    disallowed_tools=["Bash(rm:*)", "WebFetch"], system_prompt="Be brief.")
    runner = ClaudeCliRunner("claude", default_model="claude-sonnet-5-5")
    result = runner.run(spec, threading.Event())

    answer = "echo: " + prompt
    assert result.status == "succeeded", result.error
    assert result.output == answer
    assert result.error is None
    assert result.usage == fake_usage(prompt, answer)
    u = fake_usage(prompt, answer)
    expected_cost = (u["input_tokens"] * 2.0 + u["cache_write_tokens"] * 2.5
                     + u["cache_read_tokens"] * 0.1 + u["output_tokens"] * 10.0) / 1e6
    assert result.cost_usd == pytest.approx(expected_cost)
    assert result.model == "claude-opus-5-5"
    assert not result.infra_failure and not result.cancelled

    [call] = cli_log()
    argv = call["argv"]
    pairs = list(zip(argv, argv[1:]))
    assert "-p" in argv
    assert ("--output-format", "json") in pairs
    assert ("--model", "claude-opus-5-5") in pairs
    assert ("--max-turns", "3") in pairs
    assert ("--append-system-prompt", "Be brief.") in pairs
    # One argument per tool (a rule may hold a space), read by the CLI as one list each.
    assert call["options"]["allowedTools"] == ["Read", "Bash(git log:*)"]
    assert call["options"]["disallowedTools"] == ["Bash(rm:*)", "WebFetch"]
    assert call["prompt"] == prompt  # read from stdin ...
    assert not any(prompt in arg for arg in argv)  # ... never passed in argv


def test_cli_images_are_files_in_the_tasks_own_working_directory_named_by_the_prompt(fake_path, cli_log):
    spec = TaskSpec(prompt="what is in these?", images=[Image("image/png", PNG), Image("image/jpeg", JPEG)])
    result = ClaudeCliRunner("claude").run(spec, threading.Event())

    assert result.status == "succeeded", result.error
    [run] = cli_log()
    assert run["prompt"] == ("what is in these?\n\nImages for this task, in the working directory:\n"
                             f"- ./image-1.png (image/png, {len(PNG)} bytes)\n- ./image-2.jpeg (image/jpeg, {len(JPEG)} bytes)")
    assert run["files"] == {"image-1.png": hashlib.sha256(PNG).hexdigest(),
                            "image-2.jpeg": hashlib.sha256(JPEG).hexdigest()}
    assert Path(run["cwd"]).name.startswith("m3shd-task-") and run["cwd"] != os.getcwd()
    assert not Path(run["cwd"]).exists()  # removed once the task is done


def test_cli_omits_unset_flags_and_uses_default_model(fake_path, cli_log):
    result = ClaudeCliRunner("claude", default_model="claude-haiku-5-5").run(
        TaskSpec(prompt="hi"), threading.Event())
    assert result.status == "succeeded"
    assert result.model == "claude-haiku-5-5"
    argv = cli_log()[0]["argv"]
    assert argv == ["-p", "--output-format", "json", "--model", "claude-haiku-5-5"]


def test_cli_large_prompt_goes_through_stdin(fake_path):
    prompt = "x" * 1_000_000  # far beyond a pipe buffer and any argv limit
    result = ClaudeCliRunner("claude").run(TaskSpec(prompt=prompt), threading.Event())
    assert result.status == "succeeded", result.error
    assert result.output == "echo: " + prompt


def test_cli_without_any_model_reports_the_model_the_cli_used(fake_path):
    result = ClaudeCliRunner("claude").run(TaskSpec(prompt="hi"), threading.Event())
    assert result.status == "succeeded"
    assert result.model == "claude-sonnet-5-5"  # from the result's modelUsage


def test_cli_task_failure_is_not_an_infra_failure(fake_path):
    prompt = "do the thing [fail]"
    result = ClaudeCliRunner("claude").run(TaskSpec(prompt=prompt), threading.Event())
    assert result.status == "failed"
    assert result.error == "fake failure"
    assert not result.infra_failure and not result.cancelled
    assert result.usage == fake_usage(prompt, "fake failure")  # a failed run still cost tokens
    assert result.cost_usd and result.cost_usd > 0


def test_cli_login_error_is_an_infra_failure(fake_path):
    result = ClaudeCliRunner("claude").run(TaskSpec(prompt="[auth-fail] hi"), threading.Event())
    assert result.status == "failed"
    assert result.infra_failure
    assert "/login" in result.error


def test_cli_crash_without_json_is_an_infra_failure_with_stderr(fake_path):
    result = ClaudeCliRunner("claude").run(TaskSpec(prompt="[crash]"), threading.Event())
    assert result.status == "failed"
    assert result.infra_failure
    assert "code 3" in result.error
    assert "simulated crash" in result.error


# Issue 17 item 8: a NUL byte in a task's model failed 20 attempts in under a second as
# infrastructure failures (Popen's ValueError fell into "runner error") and opened the breaker of
# a healthy node. What the task's own input causes fails the task, never its node.
BAD_INPUT = [
    pytest.param(dict(model="claude\x00sonnet"), "invalid model name 'claude\\x00sonnet'", id="model-nul"),
    pytest.param(dict(model="--dangerously-skip-permissions"), "invalid model name", id="model-option"),
    pytest.param(dict(model="claude sonnet"), "invalid model name", id="model-space"),
    pytest.param(dict(model=5), "invalid model name 5", id="model-int"),
    pytest.param(dict(prompt="  \n\t"), "the prompt is empty", id="prompt-blank"),
    pytest.param(dict(max_turns="3"), "invalid max_turns '3'", id="max-turns-text"),
    pytest.param(dict(max_turns=0), "invalid max_turns 0", id="max-turns-zero"),
    pytest.param(dict(allowed_tools=["Read,Write"]), "invalid allowed tools", id="tool-comma"),
    pytest.param(dict(allowed_tools="Read"), "invalid allowed tools", id="tools-text"),
    pytest.param(dict(system_prompt=7), "invalid system prompt", id="system-prompt-int"),
]


@pytest.mark.parametrize("spec, said", BAD_INPUT)
def test_cli_input_no_runner_could_take_is_a_task_failure_and_starts_nothing(fake_path, cli_log, spec, said):
    result = ClaudeCliRunner("claude", default_model="claude-sonnet-5-5").run(
        TaskSpec(**{"prompt": "hi", **spec}), threading.Event())
    assert (result.status, result.infra_failure) == ("failed", False)
    assert said in result.error and result.model is None
    with pytest.raises(FileNotFoundError):
        cli_log()  # claude never started


@pytest.mark.parametrize("spec, said", BAD_INPUT)
def test_sdk_input_no_runner_could_take_is_a_task_failure_and_sends_nothing(api, spec, said):
    server, base_url = api
    result = AnthropicSdkRunner("test-key", base_url=base_url).run(TaskSpec(**{"prompt": "hi", **spec}),
                                                                   threading.Event())
    assert (result.status, result.infra_failure) == ("failed", False)
    assert said in result.error and server.requests == []


@pytest.mark.parametrize("system_prompt, said", [
    ("be brief\x00", "cannot be passed to claude: embedded null byte"),
    ("x" * 2_000_000, "too long for a command line"),  # beyond any OS: Linux takes 128 KiB an argument
], ids=["nul", "too-long"])
def test_cli_arguments_no_command_line_carries_are_a_task_failure(fake_path, system_prompt, said):
    result = ClaudeCliRunner("claude").run(TaskSpec(prompt="hi", system_prompt=system_prompt), threading.Event())
    assert (result.status, result.infra_failure) == ("failed", False)
    assert said in result.error


@pytest.mark.parametrize("directive, said", [
    ("[bad-model]", "There's an issue with the selected model (claude-sonnet-9-9)"),
    ("[bad-request]", "invalid_request_error"),
])
def test_cli_request_the_api_refuses_is_a_task_failure(fake_path, directive, said):
    result = ClaudeCliRunner("claude").run(TaskSpec(prompt=f"{directive} hi", model="claude-sonnet-9-9"),
                                           threading.Event())
    assert (result.status, result.infra_failure) == ("failed", False)
    assert said in result.error


def test_cli_missing_executable_is_an_infra_failure(tmp_path):
    result = ClaudeCliRunner(str(tmp_path / "no-such-claude")).run(
        TaskSpec(prompt="hi"), threading.Event())
    assert result.status == "failed" and result.infra_failure
    assert "could not start" in result.error


def test_cli_non_executable_file_is_an_infra_failure(tmp_path):
    not_executable = tmp_path / "claude"
    not_executable.write_text("#!/bin/sh\n")
    result = ClaudeCliRunner(str(not_executable)).run(TaskSpec(prompt="hi"), threading.Event())
    assert result.status == "failed" and result.infra_failure
    assert "could not start" in result.error


def test_cli_timeout_stops_the_process_and_is_an_infra_failure(fake_path):
    started = time.monotonic()
    result = ClaudeCliRunner("claude", grace_s=1).run(
        TaskSpec(prompt="[sleep=30] slow", timeout_s=0.5), threading.Event())
    assert time.monotonic() - started < 5
    assert result.status == "failed" and result.infra_failure and not result.cancelled
    assert result.error == "timed out after 0.5 s"


def test_cli_cancel_kills_the_whole_process_group(fake_path, tmp_path, monkeypatch):
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("FAKE_CLAUDE_CHILD_PID_FILE", str(pid_file))
    cancel = threading.Event()

    def cancel_once_child_runs():
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), 10)
        cancel.set()

    threading.Thread(target=cancel_once_child_runs, daemon=True).start()
    started = time.monotonic()
    result = ClaudeCliRunner("claude", grace_s=1).run(TaskSpec(prompt="[spawn-child]"), cancel)

    child = int(pid_file.read_text())
    try:
        assert time.monotonic() - started < 8
        assert result.status == "failed"
        assert result.cancelled and not result.infra_failure
        assert result.error == "cancelled"
        assert wait_for(lambda: dead(child), 5), f"grandchild {child} outlived the cancel"
    finally:
        kill_quietly(lambda: os.kill(child, signal.SIGKILL))


def test_cli_already_cancelled_spawns_nothing(fake_path, cli_log, tmp_path):
    cancel = threading.Event()
    cancel.set()
    result = ClaudeCliRunner("claude").run(TaskSpec(prompt="hi"), cancel)
    assert result.cancelled
    assert not (tmp_path / "claude.log").exists()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="lists the group through /proc")
def test_stop_process_group_escalates_to_sigkill():
    # A group that ignores SIGTERM (the background sleep inherits the ignore).
    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 30 & wait"], start_new_session=True)
    try:
        assert wait_for(lambda: len(group_members(proc.pid)) >= 2, 3)
        started = time.monotonic()
        stop_process_group(proc, grace_s=0.3)
        assert time.monotonic() - started < 3
        assert proc.returncode == -signal.SIGKILL
        assert wait_for(lambda: all(dead(pid) for pid in group_members(proc.pid)), 3)
    finally:
        kill_quietly(lambda: os.killpg(proc.pid, signal.SIGKILL))


# --- AnthropicSdkRunner -----------------------------------------------------------------


def test_sdk_success_output_usage_and_cost(api):
    server, base_url = api
    runner = AnthropicSdkRunner("test-key", base_url=base_url, default_model="claude-sonnet-5-5")
    result = runner.run(TaskSpec(prompt="hello", system_prompt="Be brief."), threading.Event())

    assert result.status == "succeeded", result.error
    assert result.output == "echo: hello"
    assert result.usage == fake_usage("hello", "echo: hello")
    # Sonnet 5.5 per MTok: $2 in, $10 out, cache writes 1.25x in, cache reads 0.05x in.
    expected = (12 * 2 + 10 * 2 * 1.25 + 20 * 2 * 0.05 + 11 * 10) / 1e6
    assert result.cost_usd == pytest.approx(expected)
    assert result.model == "claude-sonnet-5-5"

    [request] = server.requests
    assert request["body"] == {
        "model": "claude-sonnet-5-5",
        "max_tokens": 4096,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
    }
    assert request["headers"]["anthropic-version"]
    assert "x-api-key" not in request["headers"] and "authorization" not in request["headers"]


def test_sdk_offers_the_server_tools_it_can_and_says_which_it_dropped(api):
    server, base_url = api
    spec = TaskSpec(prompt="look it up", system_prompt="You research.", model="claude-opus-5-5", max_turns=4,
                    allowed_tools=["WebSearch", "WebFetch", "Read", "Bash(git log:*)", "WebFetch(domain:x.org)"],
                    disallowed_tools=["WebFetch"])
    result = AnthropicSdkRunner("test-key", base_url=base_url).run(spec, threading.Event())

    assert result.status == "succeeded", result.error
    [request] = server.requests
    body = request["body"]
    assert (body["system"], body["model"]) == ("You research.", "claude-opus-5-5")
    # WebFetch is disallowed; the rest have no Messages API equivalent (a rule with an argument
    # neither: the runner could not hold the tool to it).
    assert body["tools"] == [SERVER_TOOLS["WebSearch"]] == [{"type": "web_search_20250305", "name": "web_search"}]
    assert result.notes == ["the anthropic-sdk runner cannot offer Read, Bash(git log:*), WebFetch(domain:x.org) "
                            "(no Messages API equivalent); the task ran without them"]


def test_sdk_without_tools_sends_none():
    assert sdk_tools([], []) == ([], [])
    assert sdk_tools(["WebFetch"], []) == ([SERVER_TOOLS["WebFetch"]], [])


def test_sdk_continues_a_paused_turn_and_stops_at_max_turns(api):
    server, base_url = api
    runner = AnthropicSdkRunner("test-key", base_url=base_url, default_model="claude-sonnet-5-5")
    done = runner.run(TaskSpec(prompt="[pause=2] news", allowed_tools=["WebSearch"], max_turns=5), threading.Event())
    assert done.status == "succeeded", done.error
    assert done.output == "(searched 1) (searched 2) echo: [pause=2] news"
    assert done.notes == []
    assert len(server.requests) == 3
    resent = server.requests[2]["body"]["messages"]
    # The paused answers go back as the assistant's turns, as they came: the search and its result.
    assert [m["role"] for m in resent] == ["user", "assistant", "assistant"]
    assert [b["type"] for b in resent[1]["content"]] == ["server_tool_use", "web_search_tool_result", "text"]
    one = fake_usage("[pause=2] news", "echo: [pause=2] news")["input_tokens"]
    assert done.usage["input_tokens"] == 3 * one  # every request is billed
    sonnet = price_usd("claude-sonnet-5-5", done.usage)
    assert done.cost_usd == pytest.approx(sonnet + 2 * 0.01)  # and each search

    server.requests.clear()
    cut = runner.run(TaskSpec(prompt="[pause=9] news", allowed_tools=["WebSearch"], max_turns=2), threading.Event())
    assert len(server.requests) == 2
    assert cut.status == "succeeded" and cut.output == "(searched 1) (searched 2) "
    assert cut.notes == ["stopped after 2 requests (the agent's max_turns): the answer may be unfinished"]


def test_sdk_images_go_as_base64_image_blocks_before_the_prompt(api):
    server, base_url = api
    spec = TaskSpec(prompt="what is this?", images=[Image("image/png", PNG)])
    result = AnthropicSdkRunner("test-key", base_url=base_url).run(spec, threading.Event())

    assert result.status == "succeeded", result.error
    assert result.output == f"echo: [image image/png {len(PNG)} bytes sha256 {hashlib.sha256(PNG).hexdigest()}] what is this?"
    [request] = server.requests
    assert request["body"]["messages"] == [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": base64.b64encode(PNG).decode()}},
        {"type": "text", "text": "what is this?"}]}]


def test_sdk_an_image_the_api_refuses_fails_the_task_not_the_node(api):
    """The stand-in checks image blocks as the API does: here, bytes that are not the declared type."""
    _, base_url = api
    spec = TaskSpec(prompt="what is this?", images=[Image("image/jpeg", PNG)])
    result = AnthropicSdkRunner("test-key", base_url=base_url).run(spec, threading.Event())
    assert (result.status, result.infra_failure) == ("failed", False)
    assert "Image does not match the provided media type image/jpeg" in result.error


def test_sdk_unknown_model_has_no_cost(api):
    _, base_url = api
    result = AnthropicSdkRunner("test-key", base_url=base_url).run(
        TaskSpec(prompt="hi", model="claude-unreleased-9"), threading.Event())
    assert result.status == "succeeded"
    assert result.model == "claude-unreleased-9"
    assert result.cost_usd is None


def test_sdk_cancel_stops_the_stream(api):
    _, base_url = api
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    # 20 words -> ~14 chunks, 0.3 s apart: about 4 s if it were read to the end.
    result = AnthropicSdkRunner("test-key", base_url=base_url).run(
        TaskSpec(prompt="[sleep=0.3] " + "word " * 20), cancel)
    assert time.monotonic() - started < 2
    assert result.status == "failed"
    assert result.cancelled and not result.infra_failure
    assert result.error == "cancelled"


def test_sdk_wrong_key_is_an_infra_failure(api):
    server, base_url = api
    result = AnthropicSdkRunner("wrong-key", base_url=base_url).run(
        TaskSpec(prompt="hi"), threading.Event())
    assert result.status == "failed" and result.infra_failure
    assert "authentication" in result.error.lower()
    assert "invalid x-api-key" in result.error
    assert all("wrong-key" not in json.dumps(r) for r in server.requests)


def test_sdk_overloaded_mid_stream_is_an_infra_failure(api):
    _, base_url = api
    result = AnthropicSdkRunner("test-key", base_url=base_url).run(
        TaskSpec(prompt="[overloaded] a long answer to come"), threading.Event())
    assert result.status == "failed" and result.infra_failure
    assert "Overloaded" in result.error


def test_sdk_bad_request_is_a_plain_failure(api):
    _, base_url = api
    result = AnthropicSdkRunner("test-key", base_url=base_url, max_tokens=0).run(
        TaskSpec(prompt="hi"), threading.Event())
    assert result.status == "failed"
    assert not result.infra_failure
    assert "max_tokens" in result.error


def test_sdk_timeout_is_an_infra_failure(api):
    _, base_url = api
    result = AnthropicSdkRunner("test-key", base_url=base_url).run(
        TaskSpec(prompt="[sleep=2] slow", timeout_s=0.5), threading.Event())
    assert result.status == "failed" and result.infra_failure
    assert result.error == "timed out after 0.5 s"


# --- detect -----------------------------------------------------------------------------


def test_detect_prefers_claude_on_path(no_runner_env, monkeypatch):
    monkeypatch.setenv("PATH", str(FAKES))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    found = detect(default_model="claude-opus-5-5")
    assert isinstance(found.runner, ClaudeCliRunner)
    assert found.runner.executable == str(FAKE_CLAUDE)
    assert found.runner.default_model == "claude-opus-5-5"
    assert found.capabilities == ["runner=claude-cli"]
    assert found.problem is None


def test_detect_explicit_claude_path(no_runner_env):
    found = detect(claude_path=str(FAKE_CLAUDE))
    assert isinstance(found.runner, ClaudeCliRunner)
    assert found.capabilities == ["runner=claude-cli"]


def test_the_n0d3s_cancel_grace_is_the_cli_runners_wait_between_term_and_kill(no_runner_env, tmp_path):
    agent = Agent(N0d3Settings(state_dir=str(tmp_path / "n0d3"), claude_path=str(FAKE_CLAUDE), cancel_grace=0.4))
    agent.detect_runner()
    assert agent.detection.runner.grace_s == 0.4


def test_detect_api_key_only_uses_the_sdk(no_runner_env, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    found = detect()
    assert isinstance(found.runner, AnthropicSdkRunner)
    assert found.runner.api_key == "env-key"
    assert found.runner.base_url == "http://127.0.0.1:9"
    assert found.runner.default_model == "claude-sonnet-5-5"
    assert found.capabilities == ["runner=anthropic-sdk"]
    assert found.problem is None

    explicit = detect(api_key="arg-key", base_url="http://127.0.0.1:8")
    assert (explicit.runner.api_key, explicit.runner.base_url) == ("arg-key", "http://127.0.0.1:8")


def test_detect_neither_gives_the_exact_problem(no_runner_env):
    found = detect()
    assert found.runner is None
    assert found.capabilities == []
    assert found.problem == (
        "no Claude runner: install Claude Code (npm install -g @anthropic-ai/claude-code) "
        "so `claude` is on PATH, or set ANTHROPIC_API_KEY"
    )
    assert found.problem == NO_RUNNER


def test_detect_key_without_the_sdk_says_what_to_install(no_runner_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "anthropic", None)  # as if not installed
    found = detect(api_key="test-key")
    assert found.runner is None
    assert "pip install 'm3shd[n0d3]'" in found.problem


def test_detect_prefer_forces_the_runner(no_runner_env, monkeypatch):
    monkeypatch.setenv("PATH", str(FAKES))
    both = detect(prefer="anthropic-sdk", api_key="test-key")
    assert isinstance(both.runner, AnthropicSdkRunner)

    monkeypatch.setenv("PATH", str(FAKES.parent / "no-such-dir"))
    cli_only = detect(prefer="claude-cli", api_key="test-key")
    assert cli_only.runner is None and cli_only.capabilities == []
    assert "npm install -g @anthropic-ai/claude-code" in cli_only.problem

    sdk_only = detect(prefer="anthropic-sdk")
    assert sdk_only.runner is None
    assert "ANTHROPIC_API_KEY" in sdk_only.problem

    assert detect(prefer="gpt").problem.startswith("unknown runner 'gpt'")


def test_import_and_detect_stay_stdlib_only():
    # The Pi pays for anthropic/pydantic only when the SDK runner actually runs a task.
    code = ("import sys, n0d3.runners as r; r.detect(api_key='k'); "
            "print(sorted(m for m in ('anthropic', 'pydantic', 'httpx2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"
