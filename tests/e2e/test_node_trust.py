"""Who may be a node and what it may take (SECURITY.md, Audit 2, "Commander: nodes and joins"):
a machine id is no key to a node, a node registers again only by proving its key, capabilities a
node gives itself wait for an operator, and a long-poll whose token died takes nothing.
Real Commander under gunicorn, real N0D3 processes, signed requests by hand where the attacker is."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from harness import m3shd, register_node, result_for, sse_events, wait_until
from m3shd.client import ApiClient, CommanderError, NodeClient


def refused(call) -> CommanderError:
    with pytest.raises(CommanderError) as caught:
        call()
    return caught.value


def audit(commander, action: str) -> list[dict]:
    return commander.api._send("GET", "/api/audit", params={"action": action})["entries"]


def database(commander) -> sqlite3.Connection:
    return sqlite3.connect(str(commander.home / "data" / "commander" / "commander.db"))


def identity_of(node) -> dict:
    return json.loads((node.state_dir / "identity.json").read_text())


# --- item 1: no takeover with a join token and a machine id -------------------------------------

def test_a_join_token_and_a_nodes_machine_id_do_not_take_the_node_over(commander, spawn_n0d3):
    victim = spawn_n0d3("victim")
    node_id = victim.node()["id"]
    machine_id = commander.api.get_node(node_id)["machine_id"]  # an operator (nodes:manage) sees it
    before = identity_of(victim)

    # The audit's attack: another valid join token, the victim's machine id and name.
    attacker = ApiClient(commander.url, commander.token("attacker", kind="join"))
    error = refused(lambda: attacker.register(machine_id=machine_id, name="victim", slots=4,
                                              capabilities=["runner=claude-cli", "vault"], runner="claude-cli"))
    assert (error.status, error.code) == (409, "machine_known")
    assert f"node {node_id} (victim)" in error.message and f"m3shd nodes remove {node_id}" in error.message
    # Nor without a token, as a machine asking to join.
    error = refused(lambda: ApiClient(commander.url, "").request_join(machine_id=machine_id, name="victim"))
    assert (error.status, error.code) == (409, "machine_known")
    assert commander.api.list_pending() == []

    # Nothing changed: the victim's one token, its key and its work.
    with database(commander) as db:
        assert db.execute("SELECT COUNT(*) FROM token WHERE node_id = ?", (node_id,)).fetchone() == (1,)
    record = commander.api.get_node(node_id)
    assert (record["slots"], record["requested_capabilities"]) == (1, None) and "vault" not in record["capabilities"]
    task = commander.wait_task(commander.api.submit_task("still mine")["id"])
    assert (task["state"], task["node_id"], task["output"]) == ("succeeded", node_id, "echo: still mine")
    assert identity_of(victim) == before
    # The attacker holds no node token: it can neither claim nor report for the node.
    as_attacker = NodeClient(commander.url, node_id, attacker.token, before["signing_key"])
    assert refused(lambda: as_attacker.claim(1, 0)).status == 403
    assert [t["state"] for t in commander.api.list_tasks()] == ["succeeded"]

    takeover = audit(commander, "node.takeover_refused")
    assert [(e["actor"], e["target"], e["address"]) for e in takeover] == [
        ("join token:attacker", f"node {node_id} victim", "127.0.0.1")]
    registered = audit(commander, "node.registered")
    assert [(e["actor"], e["target"]) for e in registered] == [("join token:join", f"node {node_id} victim")]


def test_a_restarted_n0d3_registers_again_with_its_key_after_its_join_token_expired(commander, spawn_n0d3):
    node = spawn_n0d3("patient")
    node_id, before = node.node()["id"], identity_of(node)
    node.process.stop()
    with database(commander) as db:  # a day later
        db.execute("UPDATE token SET expires_at = ? WHERE kind = 'join'", (time.time() - 1,))
    assert refused(lambda: ApiClient(commander.url, commander.join_token).register(
        machine_id="probe-machine-0001", name="probe")).status == 401

    node.env.update(M3SHD_N0D3_SLOTS="2", M3SHD_N0D3_CAPABILITIES="gpu")  # it changed while it was down
    node.start()
    record = wait_until(lambda: (n := node.node()) and n["slots"] == 2 and n["state"] == "active" and n, 15,
                        what="the N0D3 to register again")
    assert record["id"] == node_id and len(commander.nodes()) == 1
    assert "gpu" not in record["capabilities"] and "gpu" in record["requested_capabilities"]
    after = identity_of(node)
    assert (after["node_token"], after["signing_key"]) == (before["node_token"], before["signing_key"])
    task = commander.wait_task(commander.api.submit_task("back again")["id"])
    assert (task["state"], task["node_id"]) == ("succeeded", node_id)
    log = node.process.text()
    assert "refused" not in log and f"m3shd nodes approve-capabilities {node_id}" in log
    again = audit(commander, "node.reregistered")
    assert [(e["actor"], e["target"], e["address"]) for e in again] == [
        ("node token:patient", f"node {node_id} patient", "127.0.0.1")]
    assert again[0]["details"]["requested"] == record["requested_capabilities"]


def test_a_n0d3_that_lost_its_identity_is_told_what_to_do_and_joins_once_that_is_done(commander, spawn_n0d3):
    node = spawn_n0d3("amnesiac")
    node_id, registered_at = node.node()["id"], node.node()["registered_at"]
    node.process.stop()
    (node.state_dir / "identity.json").unlink()  # a reinstall that kept /etc/machine-id

    node.start()
    assert node.process.proc.wait(30) == 2  # a configuration to fix: systemd does not restart it
    log = node.process.text()
    assert f"this machine id belongs to node {node_id} (amnesiac)" in log
    assert f"remove node {node_id} (`m3shd nodes remove {node_id}`), then join it again" in log
    assert "identity.json is missing" in log
    assert [n["id"] for n in commander.nodes()] == [node_id]

    done = m3shd("nodes", "remove", str(node_id), "--url", commander.url, "--token", commander.admin_token,
                 env=commander.env)
    assert f"removed node {node_id}" in done.stderr
    node.start()
    joined = node.wait_registered()  # a new node (SQLite may give it the free id again)
    assert joined["registered_at"] > registered_at and len(commander.nodes()) == 1
    assert len(audit(commander, "node.registered")) == 2
    assert commander.wait_task(commander.api.submit_task("a fresh start")["id"])["node_id"] == joined["id"]


def test_machine_ids_are_shown_only_to_those_who_manage_nodes(commander):
    joined = ApiClient(commander.url, commander.join_token).register(machine_id="machine-of-record-1", name="shown")
    ApiClient(commander.url, "").request_join(machine_id="machine-asking-2", name="asking")
    phone = ApiClient(commander.url, commander.token("phone", role="mobile"))          # nodes:read
    operator = ApiClient(commander.url, commander.token("operator", role="commander"))  # nodes:manage
    assert [n["machine_id"] for n in phone.list_nodes()] == [None]
    assert phone.get_node(joined["node_id"])["machine_id"] is None
    assert [p["machine_id"] for p in phone.list_pending()] == [None]
    assert "machine-of-record-1" not in json.dumps(sse_events(commander))  # the event stream: tasks:read
    assert [n["machine_id"] for n in operator.list_nodes()] == ["machine-of-record-1"]
    assert [p["machine_id"] for p in operator.list_pending()] == ["machine-asking-2"]


# --- item 7: capabilities a node gives itself wait for an operator --------------------------------

def test_a_capability_a_node_adds_waits_for_an_operator(commander):
    node = register_node(commander.url, commander.join_token, "keeper", capabilities=["runner=claude-cli"],
                         runner="claude-cli", heartbeat_every=0.5)  # alive through its long-polls
    secret = commander.api.submit_task("open the vault", requires=["vault"])

    beat = node.heartbeat(open_slots=1, capabilities=["runner=claude-cli", "vault", "os=plan9"])
    assert beat["state"] == "active"
    record = commander.api.get_node(node.node_id)
    assert record["capabilities"] == ["os=plan9", "runner=claude-cli"]  # a fact of the machine: taken at once
    assert record["requested_capabilities"] == ["os=plan9", "runner=claude-cli", "vault"]
    assert node.claim(1, 1) == []
    assert commander.api.get_task(secret["id"])["state"] == "queued"

    # A long-poll under way when the operator approves gets the task then, not at its next claim.
    answer = []
    waiting = threading.Thread(target=lambda: answer.extend(node.claim(1, 20)))
    waiting.start()
    time.sleep(1)
    shown = m3shd("nodes", "approve-capabilities", str(node.node_id), "--url", commander.url,
                  "--token", commander.admin_token, env=commander.env)
    assert "os=plan9, runner=claude-cli → os=plan9, runner=claude-cli, vault (approved vault)" in shown.stderr
    waiting.join(25)
    assert [lease["task_id"] for lease in answer] == [secret["id"]]
    assert node.post_result(result_for(answer[0], "opened"))["task"]["state"] == "succeeded"
    record = commander.api.get_node(node.node_id)
    assert (record["capabilities"], record["requested_capabilities"]) == (
        ["os=plan9", "runner=claude-cli", "vault"], None)

    requested = audit(commander, "node.capabilities_requested")
    assert [(e["actor"], e["details"]["requested"]) for e in requested] == [
        ("node token:keeper", ["os=plan9", "runner=claude-cli", "vault"])]
    approved = audit(commander, "node.capabilities_approved")
    assert [(e["actor"], e["details"]["previous"], e["details"]["capabilities"]) for e in approved] == [
        ("api token:admin", ["os=plan9", "runner=claude-cli"], ["os=plan9", "runner=claude-cli", "vault"])]
    kinds = [e["kind"] for e in sse_events(commander) if e["node_id"] == node.node_id]
    assert kinds.index("node.capabilities_requested") < kinds.index("node.capabilities_approved")


def test_only_the_request_the_operator_saw_is_approved(commander):
    node = register_node(commander.url, commander.join_token, "shifty", heartbeat_every=None)
    node.heartbeat(open_slots=1, capabilities=["gpu"])
    node.heartbeat(open_slots=1, capabilities=["gpu", "vault"])  # changed after the operator looked
    error = refused(lambda: commander.api.approve_node_capabilities(node.node_id, ["gpu"]))
    assert (error.status, error.code) == (409, "capabilities_changed") and "gpu, vault" in error.message
    assert commander.api.get_node(node.node_id)["capabilities"] == []
    phone = ApiClient(commander.url, commander.token("phone", role="mobile"))
    assert refused(lambda: phone.approve_node_capabilities(node.node_id, ["gpu", "vault"])).status == 403
    node.heartbeat(open_slots=1, capabilities=[])  # it stops asking: nothing waits
    assert commander.api.get_node(node.node_id)["requested_capabilities"] is None
    error = refused(lambda: commander.api.approve_node_capabilities(node.node_id, []))
    assert (error.status, error.code) == (409, "nothing_requested")


# --- item 11: a long-poll whose token died takes nothing -----------------------------------------

def revoke_its_token(commander, node: NodeClient) -> None:
    with database(commander) as db:  # no route revokes a node token: its node's removal ends it
        db.execute("UPDATE token SET revoked_at = ? WHERE node_id = ?", (time.time(), node.node_id))


def remove_it(commander, node: NodeClient) -> None:
    commander.api.remove_node(node.node_id)


@pytest.mark.parametrize("end", [revoke_its_token, remove_it], ids=["token revoked", "node removed"])
def test_a_long_poll_whose_credentials_die_while_it_waits_gets_no_lease(commander, end):
    node = register_node(commander.url, commander.join_token, "doomed", capabilities=["doomed-only"],
                         heartbeat_every=0.5)  # alive through its long-poll
    answer = []
    waiting = threading.Thread(target=lambda: answer.append(node.claim(1, 10)))
    waiting.start()
    time.sleep(1.5)  # the claim found nothing and waits
    end(commander, node)
    task = commander.api.submit_task("for a dead token", requires=["doomed-only"])
    waiting.join(20)
    assert answer == [[]]
    assert (commander.api.get_task(task["id"])["state"], commander.api.get_task(task["id"])["attempt"]) == ("queued", 0)
    assert refused(lambda: node.claim(1, 0)).status == 401
