"""Scheduling through the real HTTP API: approvals, breakers, retries on another node, fairness,
drain, disable, and what the API shows of each node. A gunicorn Commander and real N0D3
processes; a N0D3 started with FAKE_CLAUDE_BROKEN has a runner that always crashes."""

from __future__ import annotations

import sqlite3
import time

import pytest

from harness import Commander, sse_events, wait_until
from m3shd.client import ApiClient, CommanderError

BROKEN = {"FAKE_CLAUDE_BROKEN": "1"}


@pytest.fixture
def commander(tmp_path):
    # Short breaker cooldowns so a test sees open → half-open → open again; no waiting for a
    # better busy node, so a sick node keeps being offered work until its breaker acts
    # (that waiting is tested in test_scheduler.py and measured in bench/scheduling.py).
    started = Commander(tmp_path, {"M3SHD_COMMANDER_BREAKER_COOLDOWN": "2", "M3SHD_COMMANDER_BEST_NODE_WAIT": "1",
                                   "M3SHD_COMMANDER_BETTER_NODE_WAIT": "0"})
    yield started
    started.stop()


def client(commander, name: str, **token) -> ApiClient:
    return ApiClient(commander.url, commander.token(name, **token))


def transitions_of(commander, node_id: int, state: str) -> list[dict]:
    return [e for e in sse_events(commander) if e["kind"] == "node.breaker" and e["node_id"] == node_id
            and e["data"]["state"] == state]


def kinds(events, node_id=None, task_id=None):
    return [e["kind"] for e in events
            if (node_id is None or e["node_id"] == node_id) and (task_id is None or e["task_id"] == task_id)]


# --- approvals -------------------------------------------------------------------------------

def test_a_task_waits_for_approval_and_runs_once_approved(commander, spawn_n0d3):
    spawn_n0d3("alpha")
    phone = client(commander, "phone", role="mobile")
    task = phone.submit_task("deploy the thing", approval_required=True)
    assert (task["state"], task["approval_required"]) == ("awaiting_approval", True)
    time.sleep(1.0)  # an idle node is long-polling: it must not take it
    assert commander.api.get_task(task["id"])["state"] == "awaiting_approval"
    assert [t["id"] for t in phone.list_tasks(state="awaiting_approval")] == [task["id"]]

    # The phone's token submitted it, so it may not approve it too (audit 2, item 12): another may.
    with pytest.raises(CommanderError) as own:
        phone.approve_task(task["id"])
    assert (own.value.status, own.value.code) == (403, "approver_is_submitter")
    assert "submitted by api token:phone" in own.value.message
    approved = commander.api.approve_task(task["id"])
    assert approved["state"] in ("queued", "leased", "succeeded")
    assert (approved["submitter"], approved["decided_by"], approved["approver_must_differ"]) == \
        ("api token:phone", "api token:admin", True)
    done = commander.wait_task(task["id"])
    assert (done["state"], done["output"]) == ("succeeded", "echo: deploy the thing")
    with pytest.raises(CommanderError) as refused:
        commander.api.approve_task(task["id"])
    assert (refused.value.status, refused.value.code) == (409, "not_awaiting_approval")
    assert kinds(sse_events(commander), task_id=task["id"])[:2] == ["task.awaiting_approval", "task.approved"]


def test_a_rejected_task_is_cancelled_with_the_reason_and_audited(commander):
    phone = client(commander, "phone", role="mobile")
    task = phone.submit_task("rm -rf the backups", approval_required=True)
    rejected = phone.reject_task(task["id"], "not today")
    assert rejected["state"] == "cancelled"
    assert rejected["error"] == "rejected by api token:phone: not today"
    bare = phone.submit_task("another", approval_required=True)
    assert phone.reject_task(bare["id"])["error"] == "rejected by api token:phone"  # no reason given
    audit = commander.api._send("GET", "/api/audit")["entries"]
    assert {(e["action"], e["target"]) for e in audit} >= {("task.rejected", f"task {task['id']}"),
                                                          ("task.rejected", f"task {bare['id']}")}


def test_approving_needs_the_approve_permission(commander):
    submitter = client(commander, "ci", permissions="tasks:submit,tasks:read")
    task = submitter.submit_task("needs a human", approval_required=True)
    for attempt in (lambda: submitter.approve_task(task["id"]), lambda: submitter.reject_task(task["id"])):
        with pytest.raises(CommanderError) as refused:
            attempt()
        assert refused.value.status == 403
    assert commander.api.get_task(task["id"])["state"] == "awaiting_approval"


def test_an_unanswered_approval_expires_when_a_timeout_is_set(tmp_path):
    commander = Commander(tmp_path, {"M3SHD_COMMANDER_APPROVAL_TIMEOUT": "1"})
    try:
        task = commander.api.submit_task("hello?", approval_required=True)
        done = commander.wait_task(task["id"], timeout=10)
        assert done["state"] == "cancelled"
        assert done["error"] == "rejected by commander: no answer within 1 s"
    finally:
        commander.stop()


# --- breakers and reputation -----------------------------------------------------------------

def test_a_sick_nodes_breaker_opens_and_its_work_goes_to_healthy_nodes(commander, spawn_n0d3):
    # The healthy nodes join paused: they count in the fleet (a third of three may open) but take
    # nothing, so the sick node surely gets its three tries; raced, it sometimes got only two.
    healthy = [spawn_n0d3(name).node() for name in ("good-1", "good-2")]
    for node in healthy:
        commander.api.set_node_state(node["id"], "paused")
    sick = spawn_n0d3("sick", env=BROKEN).node()
    ids = [commander.api.submit_task(f"job {i}", max_attempts=5)["id"] for i in range(8)]
    shown = wait_until(lambda: (n := commander.api.get_node(sick["id"]))["breaker"]["state"] != "closed" and n,
                       30, what="the sick node's breaker to open")
    for node in healthy:
        commander.api.set_node_state(node["id"], "active")
    for task_id in ids:
        done = commander.wait_task(task_id, timeout=40)
        assert done["state"] == "succeeded", done
        assert done["node_id"] != sick["id"]

    assert shown["breaker"]["failures"] >= 3
    assert {o["kind"] for o in shown["reputation"]["window"]} == {"infra"}
    assert shown["reputation"]["mean"] == 0.0
    for node in healthy:
        good = commander.api.get_node(node["id"])
        assert good["breaker"]["state"] == "closed"
        assert good["reputation"]["mean"] > 0.5 and good["reputation"]["window"][0]["kind"] == "succeeded"
        assert good["reputation"]["score"] is not None

    # Every transition is an event. After the cooldown the next task is its probe; the probe
    # fails, so the breaker reopens for twice as long, and the task is retried elsewhere.
    opened = next(e for e in sse_events(commander) if e["kind"] == "node.breaker" and e["node_id"] == sick["id"])
    assert (opened["data"]["state"], opened["data"]["cooldown"]) == ("open", 2.0)
    # The first cooldown may have ended while some of the eight still waited, and one of them
    # was its probe already; so the probe below is watched from the next half-open on.
    due = wait_until(lambda: (n := commander.api.get_node(sick["id"]))["breaker"]["state"] == "half_open" and n,
                     30, what="the cooldown to end")["breaker"]
    mark = sse_events(commander)[-1]["id"]
    probe = commander.api.submit_task("probe fodder", max_attempts=5)
    done = commander.wait_task(probe["id"], timeout=30)
    assert (done["state"], done["tried_nodes"]) == ("succeeded", [sick["id"]])
    after = sse_events(commander, after=mark)
    transitions = [e["data"] for e in after if e["kind"] == "node.breaker" and e["node_id"] == sick["id"]]
    cooldown = due["cooldown"]
    assert [(t["state"], t["cooldown"]) for t in transitions] == [("half_open", cooldown), ("open", 2 * cooldown)]
    # Half-open, it is given one task, the probe; while open it was given nothing.
    leased = [e["task_id"] for e in sse_events(commander, after=opened["id"])
              if e["kind"] == "task.leased" and e["node_id"] == sick["id"]]
    assert leased[-1] == probe["id"] and len(leased) == len(transitions_of(commander, sick["id"], "half_open"))


def test_never_more_than_a_third_of_the_fleet_is_opened(commander, spawn_n0d3):
    sick = spawn_n0d3("sick", env=BROKEN).node()
    ids = [commander.api.submit_task(f"job {i}", max_attempts=20)["id"] for i in range(5)]
    # Alone, the sick node fails three in a row; a third of a one-node fleet is 0, so its breaker
    # is held closed, and says so. (With a healthy node there from the start, the sick one might
    # not be given three tries.)
    held = wait_until(lambda: [e for e in sse_events(commander) if e["kind"] == "node.breaker_held"], 30,
                      what="the breaker to be held")
    assert held[0]["node_id"] == sick["id"]
    assert commander.api.get_node(sick["id"])["breaker"]["state"] == "closed"
    commander.api.set_node_state(sick["id"], "paused")  # its breaker stays closed: the work must go elsewhere
    spawn_n0d3("good")
    for task_id in ids:
        assert commander.wait_task(task_id, timeout=40)["state"] == "succeeded"


def test_a_task_whose_own_input_breaks_the_runner_cannot_open_a_healthy_nodes_breaker(commander, spawn_n0d3):
    """Issue 17 item 8: a NUL byte in a task's model failed 20 attempts in under a second as
    infrastructure failures and opened a healthy node's breaker. The API now refuses such a model;
    a task stored before that check (or by an older Commander) is failed by the N0D3 as the task's
    own error: one attempt, nothing against any node."""
    nodes = [spawn_n0d3(name).node() for name in ("one", "two", "three")]  # a third of three may open
    task = commander.api.submit_task("run me with a broken model", max_attempts=20, approval_required=True)
    with sqlite3.connect(commander.home / "data" / "commander" / "commander.db", timeout=10) as database:
        database.execute("UPDATE task SET model = ? WHERE id = ?", ("claude\x00sonnet", task["id"]))
    client(commander, "approver", role="admin").approve_task(task["id"])  # not the submitter's own token
    done = commander.wait_task(task["id"], timeout=30)
    assert (done["state"], done["attempt"]) == ("failed", 1), done
    assert done["error"].startswith("invalid model name 'claude\\x00sonnet'")
    ran_on = commander.api.get_node(done["node_id"])
    assert [o["kind"] for o in ran_on["reputation"]["window"]] == ["failed"]
    for node in nodes:
        shown = commander.api.get_node(node["id"])["breaker"]
        assert (shown["state"], shown["failures"]) == ("closed", 0), (node["name"], shown)
    assert not [e for e in sse_events(commander) if e["kind"].startswith("node.breaker")]
    assert commander.wait_task(commander.api.submit_task("and the next one")["id"])["state"] == "succeeded"


def test_a_retry_goes_to_a_different_node_after_its_backoff(commander, spawn_n0d3):
    sick = spawn_n0d3("sick", env=BROKEN | {"M3SHD_N0D3_CAPABILITIES": "gpu"}).node()
    good = spawn_n0d3("good").node()
    # `prefer` makes the sick node the first choice; its crash sends the retry elsewhere.
    task = commander.api.submit_task("render", prefer=["gpu"], max_attempts=3, backoff=1.0)
    done = commander.wait_task(task["id"], timeout=30)
    assert (done["state"], done["attempt"], done["node_id"]) == ("succeeded", 2, good["id"])
    assert done["tried_nodes"] == [sick["id"]]
    events = [e for e in sse_events(commander) if e["task_id"] == task["id"]]
    assert [(e["kind"], e["node_id"]) for e in events if e["kind"] in ("task.leased", "task.retrying")] == [
        ("task.leased", sick["id"]), ("task.retrying", sick["id"]), ("task.leased", good["id"])]
    retried = next(e["ts"] for e in events if e["kind"] == "task.retrying")
    leased_again = [e["ts"] for e in events if e["kind"] == "task.leased"][1]
    assert leased_again - retried >= 1.0  # the backoff held it back


def test_with_retry_on_lost_off_a_lost_node_fails_the_task(commander, spawn_n0d3):
    node = spawn_n0d3("alpha")
    task = commander.api.submit_task("[sleep=30] long job", retry_on_lost=False)
    commander.wait_task(task["id"], states=("leased",))
    node.process.kill9()
    done = commander.wait_task(task["id"], timeout=20)
    assert done["state"] == "failed"
    assert "retry_on_lost is off" in done["error"]


# --- fairness --------------------------------------------------------------------------------

def test_submitters_share_one_slot_fairly_and_priority_goes_first(commander, spawn_n0d3):
    node = spawn_n0d3("alpha").node()
    commander.api.set_node_state(node["id"], "paused")
    alice, bob = client(commander, "alice", role="mobile"), client(commander, "bob", role="mobile")
    a = [alice.submit_task(f"alice {i}")["id"] for i in range(3)]
    b = bob.submit_task("bob 0")["id"]
    urgent = alice.submit_task("alice urgent", priority=10)["id"]
    commander.api.set_node_state(node["id"], "active")
    finished = [commander.wait_task(task_id, timeout=30) for task_id in [*a, b, urgent]]
    order = [t["id"] for t in sorted(finished, key=lambda t: t["started_at"])]
    assert order == [urgent, b, a[0], a[1], a[2]]


# --- drain, disable --------------------------------------------------------------------------

def test_a_draining_node_finishes_its_work_and_takes_nothing_new(commander, spawn_n0d3):
    node = spawn_n0d3("alpha").node()
    first = commander.api.submit_task("[sleep=1.5] finish me")
    commander.wait_task(first["id"], states=("leased",))
    drained = commander.api.set_node_state(node["id"], "draining")
    assert drained["state"] == "draining"
    second = commander.api.submit_task("wait for me")
    assert commander.wait_task(first["id"])["state"] == "succeeded"
    time.sleep(1.0)
    assert commander.api.get_task(second["id"])["state"] == "queued"
    commander.api.set_node_state(node["id"], "active")
    assert commander.wait_task(second["id"])["state"] == "succeeded"


def test_a_drain_deadline_sends_unfinished_work_back_to_the_queue(commander, spawn_n0d3):
    node = spawn_n0d3("alpha").node()
    task = commander.api.submit_task("[sleep=60] too long")
    commander.wait_task(task["id"], states=("leased",))
    commander.api.set_node_state(node["id"], "draining", deadline=1.0)
    wait_until(lambda: commander.api.get_task(task["id"])["state"] == "queued", 10, what="the deadline to requeue")
    events = sse_events(commander)
    assert "node.drain_deadline" in kinds(events, node_id=node["id"])
    assert [e["data"]["reason"] for e in events if e["kind"] == "task.requeued"] == ["drain deadline passed"]
    time.sleep(1.0)
    assert commander.api.get_task(task["id"])["state"] == "queued"  # the draining node took it no more
    commander.api.cancel_task(task["id"])


def test_a_disabled_node_gives_back_its_work_now_and_stays_disabled_across_a_restart(commander, spawn_n0d3):
    n0d3 = spawn_n0d3("alpha")
    node = n0d3.node()
    task = commander.api.submit_task("[sleep=60] interrupted")
    commander.wait_task(task["id"], states=("leased",))
    assert commander.api.set_node_state(node["id"], "disabled")["state"] == "disabled"
    assert commander.api.get_task(task["id"])["state"] == "queued"
    commander.api.cancel_task(task["id"])

    n0d3.process.stop()
    n0d3.start()
    wait_until(lambda: "node.reregistered" in kinds(sse_events(commander), node_id=node["id"]), 15,
               what="the N0D3 to register again")
    assert commander.api.get_node(node["id"])["state"] == "disabled"
    waiting = commander.api.submit_task("after the restart")
    time.sleep(1.0)
    assert commander.api.get_task(waiting["id"])["state"] == "queued"
    commander.api.set_node_state(node["id"], "active")
    assert commander.wait_task(waiting["id"])["state"] == "succeeded"


def test_orders_are_refused_for_a_node_that_is_not_connected(commander, spawn_n0d3):
    n0d3 = spawn_n0d3("alpha")
    node = n0d3.node()
    n0d3.process.stop()  # a clean exit: offline
    wait_until(lambda: commander.api.get_node(node["id"])["state"] == "offline", 10, what="the node to go offline")
    with pytest.raises(CommanderError) as refused:
        commander.api.set_node_state(node["id"], "draining")
    assert (refused.value.status, refused.value.code) == (409, "not_live")
    with pytest.raises(CommanderError) as refused:
        commander.api.set_node_state(node["id"], "paused", deadline=5)
    assert refused.value.status == 400
