"""Runner credentials end to end: stored once on the Commander (`m3shd runners set-key`, the secret
on standard input), sealed into the leases of a N0D3 that has none of its own, used by its runner,
and found nowhere else: not in the node's files or logs, the Commander's database or logs, nor
the N0D3's own process environment. A node taken out of service receives none."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from fakes import anthropic_api
from harness import m3shd, result_for, wait_until
from m3shd import sealing
from m3shd.client import ApiClient, CommanderError, NodeClient

NO_CLAUDE_PATH = "/usr/local/bin:/usr/bin:/bin"
KEY = "sk-ant-api03-" + uuid.uuid4().hex * 3 + "-mesh"
TOKEN = "sk-ant-oat01-" + uuid.uuid4().hex * 3 + "-gpu"
LOCAL = "sk-ant-oat01-" + uuid.uuid4().hex * 3 + "-own"


def runners(commander, *args, secret: str | None = None, check: bool = True):
    return m3shd("runners", *args, "--url", commander.url, "--token", commander.admin_token, env=commander.env,
                 input=secret, check=check)


def holding(root: Path, secret: str) -> list[Path]:
    """Every file under root whose bytes contain the secret."""
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def process_files(pid: int) -> dict[str, bytes]:
    """What anyone who may read /proc/<pid> sees of a process without reading its memory."""
    return {name: Path(f"/proc/{pid}/{name}").read_bytes() for name in ("environ", "cmdline")}


def test_a_node_without_a_key_runs_on_the_commanders_which_it_keeps_nowhere(commander, spawn_n0d3):
    server, base_url = anthropic_api.serve(api_key=KEY)
    try:
        node = spawn_n0d3("sdk", env={"PATH": NO_CLAUDE_PATH, "ANTHROPIC_BASE_URL": base_url})
        waiting = node.node()
        assert waiting["runner"] is None and "m3shd runners set-key" in waiting["problem"]

        stored = runners(commander, "set-key", "--json", secret=KEY + "\n")
        shown = json.loads(stored.stdout)
        assert shown["scope"] == "mesh" and shown["prefix"] == "sk-ant-api03-" and KEY not in stored.stdout
        # The next heartbeat says a key is on offer: the SDK runner is ready without one of its own.
        wait_until(lambda: node.node()["runner"] == "anthropic-sdk", 15, what="the SDK runner to be ready")
        task = commander.api.submit_task("hello with the mesh's key")
        done = commander.wait_task(task["id"])
        assert done["state"] == "succeeded" and done["runner"] == "anthropic-sdk", done
        assert done["output"] == "echo: hello with the mesh's key"
        assert server.keys == [KEY]   # the x-api-key the Messages API received: the Commander's

        # Still running, having used it: the N0D3's environment and command line never held it.
        for name, content in process_files(node.process.proc.pid).items():
            assert KEY.encode() not in content, f"the key is in the N0D3's /proc/{name}"
        assert KEY.encode() not in process_files(commander.process.proc.pid)["environ"]
    finally:
        server.shutdown()
        server.server_close()
    assert (node.state_dir / "seal-key.json").stat().st_mode & 0o777 == 0o600
    listed = runners(commander, "list").stdout + runners(commander, "list", "--json").stdout
    assert shown["fingerprint"] in listed and KEY not in listed
    # The node's state and log, the Commander's database (with its WAL), key file and log: all under home.
    assert list(commander.home.rglob("*.db-wal")) and (commander.home / "n0d3-sdk.log").stat().st_size
    assert holding(commander.home, KEY) == []


def test_each_node_gets_what_its_scope_names_and_its_own_credential_wins(commander, spawn_n0d3, tmp_path):
    runners(commander, "set-key", secret=KEY)
    runners(commander, "set-token", "--capability", "gpu", secret=TOKEN)
    log = tmp_path / "claude.jsonl"
    no_login = {"HOME": str(tmp_path / "home"), "FAKE_CLAUDE_LOG": str(log)}   # no Claude Code login here
    spawn_n0d3("gpu", env=no_login | {"M3SHD_N0D3_CAPABILITIES": "gpu"})
    spawn_n0d3("cpu", env=no_login | {"M3SHD_N0D3_CAPABILITIES": "cpu"})
    own = spawn_n0d3("own", env=no_login | {"M3SHD_N0D3_CAPABILITIES": "own", "CLAUDE_CODE_OAUTH_TOKEN": LOCAL})
    for label in ("gpu", "cpu", "own"):
        task = commander.api.submit_task(f"on the {label} node", requires=[label])
        assert commander.wait_task(task["id"])["state"] == "succeeded"
    seen = {entry["prompt"]: entry["auth"] for entry in map(json.loads, log.read_text().splitlines())}
    assert seen == {
        "on the gpu node": {"CLAUDE_CODE_OAUTH_TOKEN": TOKEN},   # its capability's token, in claude's env only
        "on the cpu node": {"ANTHROPIC_API_KEY": KEY},           # the mesh's key
        "on the own node": {"CLAUDE_CODE_OAUTH_TOKEN": LOCAL},   # a credential of its own: the Commander's unasked
    }
    # Only the fake claude's record of its environment holds them (tmp_path is the Commander's home,
    # which holds every node's state directory and log).
    assert holding(commander.home, TOKEN) == [log] and holding(commander.home, KEY) == [log]
    assert holding(own.state_dir, LOCAL) == []


def simulated(commander) -> tuple[int, NodeClient, bytes]:
    """A node driven by the test, registered with a seal key: its id, client and private seal key."""
    private, public = sealing.new_private_key()
    reply = ApiClient(commander.url, commander.join_token, ca_file=commander.ca_file).register(
        machine_id=uuid.uuid4().hex, name="sim", slots=1, runner="anthropic-sdk", seal_key=public.hex())
    node_id = reply["node_id"]
    return node_id, NodeClient(commander.url, node_id, reply["node_token"], reply["signing_key"],
                               ca_file=commander.ca_file), private


def opened(node_id: int, lease: dict, private: bytes) -> str:
    given = lease["runner_credential"]
    bound = sealing.context(node_id, lease["task_id"], lease["attempt"], given["kind"])
    return sealing.open_sealed(private, given["sealed"], bound).decode()


def test_a_disabled_or_removed_node_receives_no_credential(commander):
    runners(commander, "set-key", secret=KEY)
    node_id, node, private = simulated(commander)
    wants = ["api_key"]
    assert node.heartbeat(open_slots=1, credential_kinds=wants)["credential"] == "api_key"
    assert node.heartbeat(open_slots=1)["credential"] is None   # it did not ask: it has its own
    commander.api.submit_task("first")
    [lease] = node.claim(1, 5, wants)
    assert opened(node_id, lease, private) == KEY and KEY not in json.dumps(lease)
    node.post_result(result_for(lease))

    commander.api.set_node_state(node_id, "disabled")
    commander.api.submit_task("second")
    assert node.heartbeat(open_slots=1, credential_kinds=wants)["credential"] is None
    assert node.claim(1, 1, wants) == []
    commander.api.remove_node(node_id)
    with pytest.raises(CommanderError) as refused:
        node.claim(1, 0, wants)
    assert refused.value.status == 401


def test_a_capability_a_node_only_reports_brings_it_no_credential_until_approved(commander):
    runners(commander, "set-key", "--capability", "gpu", secret=KEY)
    node_id, node, private = simulated(commander)
    wants = ["api_key"]
    beat = node.heartbeat(open_slots=1, capabilities=["gpu"], credential_kinds=wants)
    assert beat["credential"] is None   # "gpu" waits for an operator: nothing is on offer for it
    commander.api.submit_task("before approval")
    [lease] = node.claim(1, 5, wants)
    assert lease["runner_credential"] is None
    node.post_result(result_for(lease))
    commander.api.approve_node_capabilities(node_id, ["gpu"])
    assert node.heartbeat(open_slots=1, capabilities=["gpu"], credential_kinds=wants)["credential"] == "api_key"
    commander.api.submit_task("after approval")
    [lease] = node.claim(1, 5, wants)
    assert opened(node_id, lease, private) == KEY


def test_set_key_reads_the_secret_from_standard_input_never_the_command_line(commander):
    refused = m3shd("runners", "set-key", KEY, "--url", commander.url, "--token", commander.admin_token,
                    env=commander.env, check=False)
    assert refused.returncode == 2 and "never on the command line" in refused.stderr and KEY not in refused.stderr
    nothing = runners(commander, "set-key", secret="\n", check=False)
    assert nothing.returncode == 2 and "no Anthropic API key given" in nothing.stderr
    wrong = runners(commander, "set-token", secret=KEY, check=False)
    assert wrong.returncode == 2 and "starts with sk-ant-oat" in wrong.stderr and KEY not in wrong.stderr
    assert commander.api.list_runner_credentials() == []
