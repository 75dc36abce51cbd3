"""How a flashed Pi joins: it finds the Commander with mDNS when it has no URL, and without a
join token it waits as pending until an operator approves it (an audited nodes:manage action).
Real Commander under gunicorn, real N0D3 processes, real multicast DNS on this machine's LAN."""

from __future__ import annotations

import json
import secrets

import pytest
import requests

from commander.discovery import addresses_for
from harness import Commander, N0D3, m3shd, wait_until
from m3shd.trust import file_hash


def pending(cmd: Commander) -> list[dict]:
    return cmd.api.list_pending()


def anonymous(cmd: Commander, method: str, path: str, body: dict | None = None, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, cmd.url + path, json=body, headers=headers, timeout=10)


def join_request(machine: str, name: str = "stranger") -> dict:
    return {"machine_id": machine, "name": name, "capabilities": ["os=linux"], "slots": 1}


def test_a_tokenless_n0d3_waits_as_pending_until_approved_then_runs_tasks(commander, spawn_n0d3):
    node = spawn_n0d3("kitchen-pi", env={"M3SHD_N0D3_JOIN_TOKEN": ""}, wait=False)
    waiting = wait_until(lambda: pending(commander), 15, what="a pending join request")
    assert [(p["name"], p["approved"], p["address"]) for p in waiting] == [("kitchen-pi", False, "127.0.0.1")]
    assert node.node() is None                          # not a node yet: it can take no work
    task = commander.api.submit_task("hello from the kitchen")
    assert commander.api.get_task(task["id"], wait=1)["state"] == "queued"
    label = f"p{waiting[0]['id']}"  # as `m3shd nodes pending` shows it: not a node id
    wait_until(lambda: f"m3shd nodes approve {label}" in node.process.text(), 10, what="the N0D3 to say how to approve it")

    # Only an operator with nodes:manage may approve; a phone (mobile preset) may look but not let it in.
    phone = commander.token("phone", role="mobile")
    refused = m3shd("nodes", "approve", str(waiting[0]["id"]), "--url", commander.url, "--token", phone,
                    env=commander.env, check=False)
    assert refused.returncode == 5 and "nodes:manage" in refused.stderr  # refused: 403
    listed = m3shd("nodes", "pending", "--json", "--url", commander.url, "--token", phone, env=commander.env)
    assert json.loads(listed.stdout)[0]["name"] == "kitchen-pi"

    m3shd("nodes", "approve", label, "--url", commander.url, "--token", commander.admin_token,
          env=commander.env)
    registered = node.wait_registered()
    assert commander.wait_task(task["id"])["state"] == "succeeded"
    assert commander.api.get_task(task["id"])["node_id"] == registered["id"]
    assert pending(commander) == []
    entries = commander.api._send("GET", "/api/audit")["entries"]
    approval = next(e for e in entries if e["action"] == "node.approved")
    assert approval["actor"] == "api token:admin" and "kitchen-pi" in approval["target"]
    assert approval["details"]["requested_from"] == "127.0.0.1"

    # Restarted, it is the same node: its identity was kept; it does not ask again.
    node.process.stop()
    node.start()
    wait_until(lambda: (n := node.node()) and n["state"] == "active" and n["id"] == registered["id"], 15,
               what="the approved N0D3 to come back as itself")
    assert pending(commander) == [] and len(commander.nodes()) == 1


def test_a_stranger_on_the_lan_can_only_wait_in_a_capped_line(tmp_path):
    cmd = Commander(tmp_path, {"M3SHD_COMMANDER_MAX_PENDING_NODES": "4"})
    try:
        first = anonymous(cmd, "POST", "/api/nodes/pending", join_request("machine-0001"))
        assert first.status_code == 202 and first.json()["state"] == "pending"
        poll_token = first.json()["poll_token"]
        # The poll token opens nothing but its own answer.
        for method, path in (("GET", "/api/nodes"), ("GET", "/api/tasks"), ("POST", "/api/nodes/register")):
            assert anonymous(cmd, method, path, join_request("machine-0001"), token=poll_token).status_code == 401
        assert anonymous(cmd, "POST", "/api/nodes/pending/poll", {"poll_token": poll_token}).json() == {
            "state": "pending", "registration": None}
        assert anonymous(cmd, "POST", "/api/nodes/pending/poll", {"poll_token": "m3p_guessed-token"}).status_code == 404
        # The same machine cannot queue twice (nor take over an existing request or node).
        again = anonymous(cmd, "POST", "/api/nodes/pending", join_request("machine-0001"))
        assert again.status_code == 409
        # Three waiting requests per address, then 429; the line as a whole is capped too.
        statuses = [anonymous(cmd, "POST", "/api/nodes/pending", join_request(f"machine-000{i}")).status_code
                    for i in range(2, 5)]
        assert statuses == [202, 202, 429]
        assert "this address" in anonymous(cmd, "POST", "/api/nodes/pending", join_request("machine-0009")).json()[
            "error"]["message"]
        # Approving needs credentials; rejecting ends the request and its poll token.
        target = pending(cmd)[0]["id"]
        assert anonymous(cmd, "POST", f"/api/nodes/pending/{target}/approve").status_code == 401
        cmd.api.reject_pending(target)
        assert anonymous(cmd, "POST", "/api/nodes/pending/poll", {"poll_token": poll_token}).status_code == 404
        assert [e["action"] for e in cmd.api._send("GET", "/api/audit")["entries"]].count("node.rejected") == 1
        assert cmd.nodes() == []
    finally:
        cmd.stop()


def test_the_pending_line_has_a_total_cap(tmp_path):
    cmd = Commander(tmp_path, {"M3SHD_COMMANDER_MAX_PENDING_NODES": "2"})
    try:
        statuses = [anonymous(cmd, "POST", "/api/nodes/pending", join_request(f"machine-100{i}")).status_code
                    for i in range(3)]
        assert statuses == [202, 202, 429]
    finally:
        cmd.stop()


LAN = addresses_for("0.0.0.0")


@pytest.mark.skipif(not LAN, reason="needs a non-loopback IPv4 interface for multicast DNS")
def test_a_n0d3_without_url_or_token_finds_the_commander_and_joins_once_approved(tmp_path):
    # A service type of this test's own, so Commanders of other test runs on this LAN stay apart.
    service = f"_m3t{secrets.token_hex(3)}._tcp.local."
    # Bound beyond loopback it serves HTTPS from its mesh CA, as it does by default (tls = "auto").
    cmd = Commander(tmp_path, {"M3SHD_COMMANDER_MDNS_TYPE": service}, tls=True)
    cmd.stop()
    cmd.env["M3SHD_COMMANDER_BIND"] = f"0.0.0.0:{cmd.port}"
    cmd.env.pop("M3SHD_COMMANDER_TLS")
    cmd.start()
    node = N0D3(cmd, "attic-pi", env={"M3SHD_N0D3_URL": "", "M3SHD_N0D3_JOIN_TOKEN": "",
                                      "M3SHD_N0D3_MDNS_TYPE": service})
    try:
        wait_until(lambda: pending(cmd), 20, what="the N0D3 to find the Commander and ask to join")
        said = node.process.text()
        # Nothing came with it to check the CA against: it trusts the one it is shown, and says so.
        assert "found the Commander at https://" in said
        assert f"trusting the Commander's CA {file_hash(cmd.ca_file)} on first use" in said
        cmd.api.approve_pending(pending(cmd)[0]["id"])
        node.wait_registered()
        task = cmd.api.submit_task("found you")
        assert cmd.wait_task(task["id"])["state"] == "succeeded"
    finally:
        node.process.stop()
        cmd.stop()
