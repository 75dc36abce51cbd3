"""A N0D3 and the runner credentials the Commander seals to it: when it asks for one, how it
opens one (its seal key, for that lease only), and how each runner uses one: the CLI in its
child's environment only, the SDK runner as the client's key; a credential of the machine's own
always wins."""

from __future__ import annotations

import json
import os
import sys
import threading

import pytest

from fakes.anthropic_api import serve
from harness import FAKES
from m3shd import sealing
from n0d3.agent import Agent
from n0d3.runners import (
    API_KEY, CLI_CREDENTIAL_ENV, NO_RUNNER, OAUTH_TOKEN, AnthropicSdkRunner, ClaudeCliRunner, Credential, TaskSpec,
    detect,
)
from n0d3.settings import N0d3Settings

KEY = "sk-ant-api03-commander-key-for-this-task-only"
TOKEN = "sk-ant-oat01-commander-token-for-this-task-only"


@pytest.fixture
def bare(tmp_path, monkeypatch):
    """A machine with no credential of its own: no Anthropic or Claude Code variables, no login."""
    for name in (*CLI_CREDENTIAL_ENV, "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude-config"))
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


@pytest.fixture
def without_cli(bare, monkeypatch):
    empty = bare / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def agent_in(directory) -> Agent:
    agent = Agent(N0d3Settings(state_dir=str(directory), name="pi"))
    agent.detect_runner()
    agent.identity = {"node_id": 7}
    return agent


# --- asking ---------------------------------------------------------------------------------------

def test_a_cli_without_a_login_asks_for_a_token_or_a_key_and_runs_either_way(bare):
    found = detect(from_commander=True)
    assert isinstance(found.runner, ClaudeCliRunner) and found.problem is None
    assert found.wants == [OAUTH_TOKEN, API_KEY]
    assert detect().wants == []   # credentials_from_commander = false: today's behaviour


@pytest.mark.parametrize("login", ["CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY", "credentials file"])
def test_a_cli_with_a_login_of_its_own_asks_for_nothing(bare, monkeypatch, login):
    if login == "credentials file":
        (bare / "claude-config").mkdir()
        (bare / "claude-config" / ".credentials.json").write_text("{}")
    else:
        monkeypatch.setenv(login, "sk-ant-local")
    assert detect(from_commander=True).wants == []


def test_the_sdk_runner_waits_for_an_offered_key_and_a_local_key_wins(without_cli, monkeypatch):
    waiting = detect(from_commander=True)
    assert waiting.runner is None and waiting.wants == [API_KEY]
    assert "m3shd runners set-key" in waiting.problem and "install Claude Code" in waiting.problem
    assert detect(from_commander=True, offered=OAUTH_TOKEN).runner is None   # a token serves only the CLI
    ready = detect(from_commander=True, offered=API_KEY)
    assert isinstance(ready.runner, AnthropicSdkRunner) and ready.runner.api_key is None and ready.problem is None
    assert detect(offered=API_KEY).problem == NO_RUNNER   # not taking the Commander's: nothing changes
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-local")
    local = detect(from_commander=True, offered=API_KEY)
    assert local.runner.api_key == "sk-ant-api03-local" and local.wants == []


# --- opening --------------------------------------------------------------------------------------

def test_the_seal_key_is_made_once_kept_private_and_opens_only_its_own_lease(tmp_path, caplog):
    agent = agent_in(tmp_path / "state")
    path = tmp_path / "state" / "seal-key.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert agent_in(tmp_path / "state").seal_private == agent.seal_private   # the same key after a restart
    assert agent.registration()["seal_key"] == agent.seal_public.hex()
    lease = {"task_id": 3, "attempt": 1}
    sealed = sealing.seal(agent.seal_public, KEY.encode(), sealing.context(7, 3, 1, API_KEY))
    opened = agent.open_credential(lease, {"kind": API_KEY, "sealed": sealed})
    assert opened == Credential(API_KEY, KEY)
    assert KEY not in repr(opened) and KEY not in repr(TaskSpec(prompt="hi", credential=opened))
    assert agent.open_credential(lease, None) is None
    # Another attempt, another kind, or sealed to another node: none opens.
    assert agent.open_credential({"task_id": 3, "attempt": 2}, {"kind": API_KEY, "sealed": sealed}) is None
    assert agent.open_credential(lease, {"kind": OAUTH_TOKEN, "sealed": sealed}) is None
    other = agent_in(tmp_path / "other")
    elsewhere = sealing.seal(other.seal_public, KEY.encode(), sealing.context(7, 3, 1, API_KEY))
    assert agent.open_credential(lease, {"kind": API_KEY, "sealed": elsewhere}) is None
    assert agent.open_credential(lease, {"kind": API_KEY, "sealed": "not base64!"}) is None
    assert "does not open" in caplog.text and KEY not in caplog.text
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]


@pytest.mark.parametrize("why", ["turned off", "cryptography missing"])
def test_a_node_that_cannot_or_will_not_take_credentials_asks_for_none_and_makes_no_key(bare, monkeypatch, why):
    if why == "turned off":
        agent = Agent(N0d3Settings(state_dir=str(bare / "state"), name="pi", credentials_from_commander=False))
    else:
        monkeypatch.setitem(sys.modules, "cryptography", None)   # as if not installed: importing it raises ImportError
        agent = Agent(N0d3Settings(state_dir=str(bare / "state"), name="pi"))
    agent.detect_runner()
    assert agent.detection.runner.name == "claude-cli" and agent.detection.wants == []
    assert agent.registration()["seal_key"] is None and not (bare / "state" / "seal-key.json").exists()


def test_a_lease_names_no_credential_the_spec_would_take():
    spec = TaskSpec.from_lease({"prompt": "hi", "credential": {"kind": API_KEY, "secret": "from a lease"}})
    assert spec.credential is None


# --- using ----------------------------------------------------------------------------------------

def test_the_cli_gets_the_credential_in_its_environment_and_this_process_never_does(bare, monkeypatch):
    log = bare / "claude.jsonl"
    monkeypatch.setenv("FAKE_CLAUDE_LOG", str(log))
    runner = ClaudeCliRunner("claude")
    for credential, expected in ((Credential(OAUTH_TOKEN, TOKEN), {"CLAUDE_CODE_OAUTH_TOKEN": TOKEN}),
                                 (Credential(API_KEY, KEY), {"ANTHROPIC_API_KEY": KEY}), (None, {})):
        result = runner.run(TaskSpec(prompt="hello", credential=credential), threading.Event())
        assert result.status == "succeeded", result.error
        assert json.loads(log.read_text().splitlines()[-1])["auth"] == expected
    assert not any(value in (KEY, TOKEN) for value in os.environ.values())


def test_the_sdk_runner_uses_the_commanders_key_unless_it_has_its_own():
    server, base_url = serve(api_key=KEY)
    try:
        borrowed = AnthropicSdkRunner(None, base_url=base_url).run(
            TaskSpec(prompt="hello", credential=Credential(API_KEY, KEY)), threading.Event())
        assert borrowed.status == "succeeded", borrowed.error
        own = AnthropicSdkRunner("sk-ant-api03-local", base_url=base_url).run(
            TaskSpec(prompt="hello", credential=Credential(API_KEY, KEY)), threading.Event())
        assert own.infra_failure and "authentication_error" in own.error   # its own key went, not ours
        token = AnthropicSdkRunner(None, base_url=base_url).run(
            TaskSpec(prompt="hello", credential=Credential(OAUTH_TOKEN, TOKEN)), threading.Event())
        none = AnthropicSdkRunner(None, base_url=base_url).run(TaskSpec(prompt="hello"), threading.Event())
        for result in (token, none):   # a Claude Code token is no API key
            assert result.infra_failure and result.error.startswith("no API key for this task")
    finally:
        server.shutdown()
        server.server_close()
    assert server.keys == [KEY, "sk-ant-api03-local"]   # and nothing was sent without a key
