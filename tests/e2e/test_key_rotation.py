"""Rotating a node's request-signing key: an operator's order, carried by the heartbeat, taken up
by the N0D3, and completed by the Commander when the node first signs with the new key."""

from __future__ import annotations

import functools
import json
import uuid

import pytest

from harness import m3shd, sse_events, wait_until
from m3shd import provenance, wire
from m3shd.client import ApiClient, CommanderError, NodeClient


def identity_of(node) -> dict:
    return json.loads((node.state_dir / "identity.json").read_text())


def refused(call) -> tuple[int, str]:
    with pytest.raises(CommanderError) as caught:
        call()
    return caught.value.status, caught.value.code


def test_a_live_n0d3_takes_up_a_new_key_and_keeps_working(commander, spawn_n0d3):
    node = spawn_n0d3("alpha")
    node_id = node.node()["id"]
    before = identity_of(node)
    assert commander.wait_task(commander.api.submit_task("before rotation")["id"])["state"] == "succeeded"

    ordered = m3shd("nodes", "rotate-key", str(node_id), "--json", "--url", commander.url,
                    "--token", commander.admin_token, env=commander.env)
    assert json.loads(ordered.stdout) == {"node_id": node_id, "pending": True}
    rotated = sse_events(commander, until="node.key_rotated")
    kinds = [e["kind"] for e in rotated if e["node_id"] == node_id]
    assert kinds.index("node.key_rotating") < kinds.index("node.key_rotated")

    after = identity_of(node)
    assert after["signing_key"] != before["signing_key"] and after["node_token"] == before["node_token"]
    task = commander.wait_task(commander.api.submit_task("after rotation")["id"])
    assert task["state"] == "succeeded" and task["node_id"] == node_id
    assert commander.api.task_provenance(task["id"])["ok"] is True

    old_key = NodeClient(commander.url, node_id, before["node_token"], before["signing_key"])
    assert refused(lambda: old_key.heartbeat(open_slots=0)) == (401, "bad_signature")
    entries = commander.api._send("GET", "/api/audit")["entries"]
    ordered, finished = ([e for e in entries if e["action"] == action] for action in ("node.rotate_key", "node.key_rotated"))
    assert [(e["actor"], e["target"]) for e in ordered] == [("api token:admin", f"node {node_id} alpha")]
    assert [(e["actor"], e["target"], e["address"]) for e in finished] == [
        ("node token:alpha", f"node {node_id} alpha", "127.0.0.1")]
    logs = node.process.text() + commander.process.text() + json.dumps(rotated) + json.dumps(entries)
    assert after["signing_key"] not in logs and before["signing_key"] not in logs

    # Restarted from its identity file alone (no join token, so no fresh registration).
    node.process.stop()
    node.env["M3SHD_N0D3_JOIN_TOKEN"] = ""
    node.start()
    task = commander.wait_task(commander.api.submit_task("after restart")["id"])
    assert task["state"] == "succeeded" and task["node_id"] == node_id
    assert identity_of(node)["signing_key"] == after["signing_key"]


def test_a_result_finished_before_the_rotation_is_accepted_after_it(commander):
    result_key = provenance.new_private_key()
    joined = ApiClient(commander.url, commander.join_token).register(
        machine_id=uuid.uuid4().hex, name="by-hand", capabilities=["runner=claude-cli"], slots=1, runner="claude-cli",
        public_key=provenance.public_key_hex(result_key))
    node_id, old_key = joined["node_id"], joined["signing_key"]
    client = NodeClient(commander.url, node_id, joined["node_token"], old_key,
                        sign_document=functools.partial(provenance.sign, result_key))
    task_id = commander.api.submit_task("held across a rotation")["id"]
    lease = wait_until(lambda: client.claim(1, 1), 10, what="the lease")[0]
    held = dict(task_id=lease["task_id"], attempt=lease["attempt"], lease_token=lease["lease_token"],
                status="succeeded", output="done", usage={"input_tokens": 1, "output_tokens": 1}, cost_usd=0.0,
                prompt_sha256=wire.sha256_hex(lease["prompt"].encode()),  # as a N0D3 names what it answered
                **wire.binding(lease))

    commander.api.rotate_node_key(node_id)
    first = client.heartbeat(open_slots=0)["orders"]["rotate_key"]
    commander.api.rotate_node_key(node_id)  # ordering again replaces the pending key
    order = client.heartbeat(open_slots=0)["orders"]["rotate_key"]  # the old key still works meanwhile
    assert order and order != first and order != old_key
    client.use_key(order)
    assert client.post_result(held)["accepted"] is True  # signed when sent: with the new key
    assert client.heartbeat(open_slots=1)["orders"]["rotate_key"] is None
    assert commander.api.task_provenance(task_id)["ok"] is True

    stale = NodeClient(commander.url, node_id, joined["node_token"], old_key)
    assert refused(lambda: stale.heartbeat(open_slots=1)) == (401, "bad_signature")
    unused = NodeClient(commander.url, node_id, joined["node_token"], first)
    assert refused(lambda: unused.heartbeat(open_slots=1)) == (401, "bad_signature")
    # A result document signed with one key inside a request signed with another is refused.
    mixed = dict(held, signature=wire.sign_result(bytes.fromhex(old_key), held))
    assert refused(lambda: client._signed("results", mixed)) == (400, "bad_result_signature")


def test_who_may_rotate_and_which_nodes(commander):
    joined = ApiClient(commander.url, commander.join_token).register(
        machine_id=uuid.uuid4().hex, name="target", capabilities=[], slots=1)
    mobile = ApiClient(commander.url, commander.token("phone", role="mobile"))
    assert refused(lambda: mobile.rotate_node_key(joined["node_id"])) == (403, "forbidden")
    assert refused(lambda: commander.api.rotate_node_key(joined["node_id"] + 100)) == (404, "not_found")
    NodeClient(commander.url, joined["node_id"], joined["node_token"], joined["signing_key"]).deregister()
    assert refused(lambda: commander.api.rotate_node_key(joined["node_id"])) == (409, "not_live")
