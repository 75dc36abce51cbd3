"""A task's whole journey through real processes: CLI → gunicorn Commander → N0D3 → fake Claude."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import requests

from harness import FAKES, base_env, free_port, m3shd, sse_events, wait_until

NO_CLAUDE_PATH = "/usr/local/bin:/usr/bin:/bin"


def cli(commander, *args, **kwargs):
    return m3shd(*args, "--url", commander.url, "--token", commander.admin_token, env=commander.env, **kwargs)


def test_submit_from_the_cli_prints_answer_usage_and_cost(commander, spawn_n0d3):
    node = spawn_n0d3("alpha")
    done = cli(commander, "task", "submit", "Write a haiku about meshes", "--timeout", "30")
    assert done.stdout.strip() == "echo: Write a haiku about meshes"
    assert "succeeded" in done.stderr
    assert "tokens:" in done.stderr and "cost $" in done.stderr

    task = commander.api.list_tasks()[0]
    assert task["state"] == "succeeded" and task["attempt"] == 1
    assert task["node_id"] == node.node()["id"]
    assert task["runner"] == "claude-cli"
    assert task["usage"]["input_tokens"] > 0 and task["usage"]["output_tokens"] > 0
    assert task["cost_usd"] > 0 and task["duration_ms"] >= 0

    kinds = [event["kind"] for event in sse_events(commander, until="task.succeeded")]
    assert kinds.index("task.queued") < kinds.index("task.leased") < kinds.index("task.succeeded")


def test_no_secrets_in_logs(commander, spawn_n0d3):
    node = spawn_n0d3("quiet")
    done = commander.wait_task(commander.api.submit_task("keep my secrets")["id"])
    assert done["state"] == "succeeded"
    identity = json.loads((node.state_dir / "identity.json").read_text())
    assert oct((node.state_dir / "identity.json").stat().st_mode & 0o777) == "0o600"
    logs = node.process.text() + commander.process.text()
    for secret in (identity["node_token"], identity["signing_key"], commander.join_token, commander.admin_token):
        assert secret not in logs


def test_task_wait_and_get_from_the_cli(commander, spawn_n0d3):
    spawn_n0d3("alpha")
    task_id = int(cli(commander, "task", "submit", "[sleep=0.5] slow one", "--no-wait").stdout)
    waited = cli(commander, "task", "wait", str(task_id), "--timeout", "30")
    assert waited.stdout.strip() == "echo: [sleep=0.5] slow one"
    shown = json.loads(cli(commander, "task", "get", str(task_id), "--json").stdout)
    assert shown["state"] == "succeeded"
    listed = cli(commander, "task", "list").stdout
    assert f"{task_id:>6}  succeeded" in listed
    nodes = cli(commander, "nodes", "list").stdout
    assert "alpha" in nodes and "claude-cli" in nodes


def test_submit_attach_sends_images_the_n0d3_fetches_and_refuses_what_is_not_one(commander, spawn_n0d3, tmp_path):
    png, jpeg = b"\x89PNG\r\n\x1a\n" + bytes(50), b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(90)
    (tmp_path / "a.png").write_bytes(png)
    (tmp_path / "b.jpg").write_bytes(jpeg)
    (tmp_path / "notes.txt").write_text("not an image")
    spawn_n0d3("alpha")
    done = cli(commander, "task", "submit", "--attach", str(tmp_path / "a.png"), "--attach", str(tmp_path / "b.jpg"),
               "--json", "what are these?", "--timeout", "30")
    task = json.loads(done.stdout)
    assert task["state"] == "succeeded"
    assert [a["sha256"] for a in task["attachments"]] == [hashlib.sha256(png).hexdigest(), hashlib.sha256(jpeg).hexdigest()]
    assert task["output"].endswith(f"- ./image-1.png (image/png, {len(png)} bytes)\n"
                                   f"- ./image-2.jpeg (image/jpeg, {len(jpeg)} bytes)")
    refused = cli(commander, "task", "submit", "--attach", str(tmp_path / "notes.txt"), "look", check=False)
    assert refused.returncode == 2
    assert f"{tmp_path / 'notes.txt'} is not a JPEG, PNG, GIF or WebP image" in refused.stderr
    assert len(commander.api.list_tasks()) == 1  # nothing submitted


def test_an_image_the_commander_can_no_longer_serve_fails_the_task_saying_why(commander, spawn_n0d3):
    """Not a fault of the node (its breaker stays shut): the task's own input is gone."""
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(90)
    stored = commander.api.upload_attachment(jpeg, "image/jpeg")
    (commander.home / "data" / "commander" / "attachments" / stored["sha256"][:2] / stored["sha256"]).unlink()
    task = commander.api.submit_task("look", attachments=[stored["sha256"]], max_attempts=1)
    spawn_n0d3("alpha")
    done = commander.wait_task(task["id"])
    assert done["state"] == "failed"
    assert done["error"].startswith(f"could not fetch the task's images: attachment {stored['sha256']} is recorded "
                                    "but its file is gone")
    assert commander.nodes()[0]["breaker"]["failures"] == 0


def test_the_anthropic_sdk_runner_against_a_loopback_messages_api(commander, spawn_n0d3):
    sys.path.insert(0, str(FAKES))
    import anthropic_api

    server, base_url = anthropic_api.serve()
    try:
        spawn_n0d3("sdk", env={"PATH": NO_CLAUDE_PATH, "ANTHROPIC_API_KEY": "test-key",
                               "ANTHROPIC_BASE_URL": base_url})
        task = commander.api.submit_task("hello from the SDK", model="claude-sonnet-4-5")
        done = commander.wait_task(task["id"])
    finally:
        server.shutdown()
    assert done["state"] == "succeeded", done
    assert done["output"] == "echo: hello from the SDK"
    assert done["runner"] == "anthropic-sdk"
    assert done["usage"]["input_tokens"] > 0 and done["cost_usd"] > 0
    sent = server.requests[-1]
    assert sent["body"]["model"] == "claude-sonnet-4-5"


def test_without_a_runner_the_n0d3_stays_up_and_tasks_say_why(commander, spawn_n0d3):
    node = spawn_n0d3("bare", env={"PATH": NO_CLAUDE_PATH})
    assert node.node()["runner"] is None
    assert "install Claude Code" in node.node()["problem"]
    task = commander.api.submit_task("anyone there?")
    time.sleep(1.0)
    waiting = commander.api.get_task(task["id"])
    assert waiting["state"] == "queued"
    assert "install Claude Code" in waiting["waiting_reason"] and "ANTHROPIC_API_KEY" in waiting["waiting_reason"]
    assert node.process.alive()
    assert "no Claude runner" in node.process.text()


def test_a_node_never_runs_more_than_its_slots(commander, spawn_n0d3, tmp_path):
    spans_file = tmp_path / "spans.jsonl"
    spawn_n0d3("pair", slots=2, env={"FAKE_CLAUDE_SPANS": str(spans_file)})
    ids = [commander.api.submit_task(f"[sleep=0.6] job {i}")["id"] for i in range(6)]
    assert [commander.wait_task(i, timeout=40)["state"] for i in ids] == ["succeeded"] * 6
    # Sweep the runs' start and end times: the most that overlapped at any instant.
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    edges = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans])
    overlap = peak = 0
    for _, step in edges:
        overlap += step
        peak = max(peak, overlap)
    assert len(spans) == 6 and peak == 2


def test_requirements_route_tasks_to_capable_nodes(commander, spawn_n0d3):
    spawn_n0d3("plain")
    gpu = spawn_n0d3("gpu", env={"M3SHD_N0D3_CAPABILITIES": "gpu,zone=lab"})
    task = commander.api.submit_task("needs a gpu", requires=["gpu", "zone=lab"])
    assert commander.wait_task(task["id"])["node_id"] == gpu.node()["id"]
    orphan = commander.api.submit_task("needs a tpu", requires=["tpu"])
    time.sleep(0.5)
    assert commander.api.get_task(orphan["id"])["waiting_reason"] == "no connected N0D3 has all of: tpu"


def test_cancel_ends_the_whole_process_group(commander, spawn_n0d3, tmp_path):
    pid_file = tmp_path / "child.pid"
    spawn_n0d3("alpha", env={"FAKE_CLAUDE_CHILD_PID_FILE": str(pid_file)})
    task = commander.api.submit_task("[spawn-child] run forever")
    child = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, what="the child pid"))
    assert Path(f"/proc/{child}").exists()
    cli(commander, "task", "cancel", str(task["id"]))
    wait_until(lambda: not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2],
               10, what="the grandchild to be killed")
    assert commander.api.get_task(task["id"])["state"] == "cancelled"
    assert wait_until(lambda: commander.api.list_nodes()[0]["open_slots"] == 1, 5, what="the slot to free")


def test_sigterm_drains_then_deregisters(commander, spawn_n0d3):
    node = spawn_n0d3("alpha")
    running = commander.api.submit_task("[sleep=2] finish me")
    wait_until(lambda: commander.api.get_task(running["id"])["state"] == "leased", 10, what="the lease")
    node.process.send(signal.SIGTERM)
    wait_until(lambda: node.node()["state"] in ("draining", "offline"), 5, what="draining")
    later = commander.api.submit_task("do not take me")
    assert node.process.proc.wait(30) == 0
    assert commander.api.get_task(running["id"])["state"] == "succeeded"
    assert commander.api.get_task(later["id"])["state"] == "queued"
    assert node.node()["state"] == "offline"
    kinds = [e["kind"] for e in sse_events(commander, until="node.offline")]
    assert kinds.index("node.draining") < kinds.index("task.succeeded") < kinds.index("node.offline")


def test_restarted_n0d3_gets_its_own_node_back(commander, spawn_n0d3):
    first = spawn_n0d3("alpha")
    node_id = first.node()["id"]
    first.process.stop()
    again = spawn_n0d3("alpha")
    assert again.node()["id"] == node_id
    assert [n["name"] for n in commander.api.list_nodes()] == ["alpha"]


def test_join_saves_settings_and_run_uses_them(commander, tmp_path):
    env = dict(commander.env, M3SHD_N0D3_STATE_DIR=str(tmp_path / "joined"))
    name = 'joiner "one" \\ kitchen\nshelf'  # a quote, a backslash and a newline: TOML escapes each
    # The join string: the token, and under `pytest --tls` the hash of the CA it pins.
    done = m3shd("n0d3", "join", commander.url, commander.join_string, "--name", name, "--slots", "3", env=env)
    assert "joined as node" in done.stderr
    saved = Path(env["M3SHD_CONFIG_DIR"]) / "n0d3.toml"
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    assert tomllib.loads(saved.read_text())["n0d3"] == {"url": commander.url, "join_token": commander.join_string,
                                                        "name": name, "slots": 3}
    node = next(n for n in commander.api.list_nodes() if n["name"] == name)
    assert node["slots"] == 3
    # Joining again, its saved identity proves the node: no join token is needed, so none is checked.
    not_a_token = commander.join_string.replace(commander.join_token, "m3j_not-a-token")
    again = m3shd("n0d3", "join", commander.url, not_a_token, env=env)
    assert "joined as node" in again.stderr and [n["name"] for n in commander.api.list_nodes()].count(name) == 1
    stranger = dict(env, M3SHD_N0D3_STATE_DIR=str(tmp_path / "stranger"))  # a new machine needs a token that works
    refused = m3shd("n0d3", "join", commander.url, not_a_token, env=stranger, check=False)
    assert refused.returncode == 2 and "refused the join token" in refused.stderr


def test_up_starts_a_mesh_and_prints_url_and_token(tmp_path):
    port = free_port()
    env = base_env(tmp_path)
    # As after an earlier `m3shd up` on another port (issue 17, item 14): its client config and a
    # token this Commander knows. The `up` below must point the m3shd command at itself.
    earlier = json.loads(m3shd("token", "create", "admin (m3shd up)", "--role", "admin", "--local", "--json",
                               env=env).stdout)["token"]
    client_file = Path(env["M3SHD_CONFIG_DIR"]) / "client.toml"
    client_file.parent.mkdir(parents=True, exist_ok=True)
    client_file.write_text(f'[client]\nurl = "http://127.0.0.1:{free_port()}"\ntoken = "{earlier}"\n')
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        # Ctrl-C as a terminal delivers it: a run started in the background of a non-interactive
        # shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
        up = subprocess.Popen([sys.executable, "-m", "m3shd", "up", "--bind", f"127.0.0.1:{port}"], env=env,
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_until(lambda: "M3SHD is up." in log.read_text(), 40, what="the banner")
        banner = log.read_text()
        assert f"http://127.0.0.1:{port}" in banner and "Admin token  m3a_" in banner
        assert f"saved in {client_file}" in banner and f'url = "http://127.0.0.1:{port}"' in client_file.read_text()
        assert "runner claude-cli" in banner
        password = re.search(r"Login        admin / (\S+)", banner).group(1)  # the first account, shown once
        login = requests.post(f"http://127.0.0.1:{port}/api/session", json={"username": "admin", "password": password},
                              timeout=15)
        assert login.status_code == 200 and login.json()["role"] == "admin"
        done = m3shd("task", "submit", "hello up", "--timeout", "30", env=env)  # uses the saved client.toml
        assert done.stdout.strip() == "echo: hello up"
        again = m3shd("up", "--bind", f"127.0.0.1:{port}", env=env, check=False)
        assert again.returncode == 2 and "already in use" in again.stderr
    finally:
        os.killpg(up.pid, signal.SIGINT)
        # up gives the N0D3, then the Commander, 30 s each to stop (commander/up.py): a machine
        # this busy (CI runs the Ansible tier beside this) can take longer than 40 s in all.
        assert up.wait(90) == 0
    assert "goodbye" in log.read_text()


@pytest.mark.parametrize("argv", [["--help"], ["task", "--help"], ["task", "submit", "--help"], ["n0d3", "join", "--help"],
                                  ["up", "--help"], ["commander", "serve", "--help"], ["token", "create", "--help"]])
def test_help_everywhere(argv, tmp_path):
    done = m3shd(*argv, env=base_env(tmp_path))
    assert done.stdout.startswith("usage: m3shd")


def test_cli_without_a_commander_says_so(tmp_path):
    done = m3shd("task", "list", "--url", f"http://127.0.0.1:{free_port()}", "--token", "x", env=base_env(tmp_path),
                 check=False)
    assert done.returncode == 3 and "cannot reach the Commander" in done.stderr
    done = m3shd("task", "list", env=base_env(tmp_path), check=False)
    assert done.returncode == 2 and "no API token" in done.stderr
