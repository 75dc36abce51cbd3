"""Faults: nodes that die, a Commander that restarts or vanishes. Nothing acknowledged is lost."""

from __future__ import annotations

import time

from harness import register_node, result_for, sse_events, wait_until
from m3shd.client import CommanderError, NodeClient


def fake_node(commander, name: str) -> NodeClient:
    """A node driven by the test itself, with no heartbeat, so it can hold a lease and then play dead."""
    return register_node(commander.url, commander.join_token, name, capabilities=["runner=claude-cli"],
                         runner="claude-cli", heartbeat_every=None)


def test_kill9_mid_task_another_node_finishes_it(commander, spawn_n0d3):
    doomed = spawn_n0d3("doomed")
    task = commander.api.submit_task("[sleep=30] long job")
    wait_until(lambda: commander.api.get_task(task["id"])["state"] == "leased", 10, what="the lease")
    doomed_id = doomed.node()["id"]
    doomed.process.kill9()
    survivor = spawn_n0d3("survivor")
    wait_until(lambda: doomed.node()["state"] == "lost", 10, what="the dead node to be lost")
    second = wait_until(lambda: (t := commander.api.get_task(task["id"])) and t["attempt"] == 2 and t, 15,
                        what="attempt 2")
    assert second["node_id"] == survivor.node()["id"] != doomed_id
    mine = [e["kind"] for e in sse_events(commander)
            if e["task_id"] == task["id"] or e["node_id"] == doomed_id]
    assert mine.index("node.lost") < mine.index("task.requeued") < len(mine) - 1 and mine[-1] == "task.leased"
    # Back from the dead with the same state directory: the same node, never a ghost.
    doomed.start()
    assert doomed.wait_registered()["id"] == doomed_id
    assert len(commander.api.list_nodes()) == 2


def test_a_dead_nodes_late_result_is_refused(commander, spawn_n0d3):
    ghost = fake_node(commander, "ghost")
    task = commander.api.submit_task("first come")
    lease = ghost.claim(open_slots=1, wait=5)[0]
    assert lease["attempt"] == 1
    # The ghost stops heartbeating: its lease expires, a real N0D3 does attempt 2.
    spawn_n0d3("alive")
    done = commander.wait_task(task["id"])
    assert done["state"] == "succeeded" and done["attempt"] == 2 and done["output"] == "echo: first come"
    try:
        ghost.post_result(result_for(lease, "too late"))
    except CommanderError as exc:
        assert exc.status == 409 and exc.code == "stale_lease"
    else:
        raise AssertionError("a stale attempt's result was accepted")
    assert commander.api.get_task(task["id"])["output"] == "echo: first come"


def test_the_same_accepted_result_twice_is_a_duplicate(commander):
    node = fake_node(commander, "twice")
    commander.api.submit_task("once")
    lease = node.claim(open_slots=1, wait=5)[0]
    first = node.post_result(result_for(lease, "the answer"))
    again = node.post_result(result_for(lease, "the answer"))
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert again["task"]["output"] == "the answer" and again["task"]["state"] == "succeeded"


def test_commander_restart_mid_run_loses_nothing_acknowledged(commander, spawn_n0d3):
    spawn_n0d3("alpha", slots=2)
    ids = [commander.api.submit_task(f"[sleep=1] job {i}")["id"] for i in range(6)]
    wait_until(lambda: commander.api.list_tasks(state="leased"), 10, what="work to start")
    commander.process.kill9()  # no graceful anything
    time.sleep(0.5)
    commander.start()
    done = [commander.wait_task(i, timeout=40) for i in ids]
    assert [t["state"] for t in done] == ["succeeded"] * 6
    assert [t["output"] for t in done] == [f"echo: [sleep=1] job {i}" for i in range(6)]


def test_commander_unreachable_for_a_while_the_held_result_is_delivered(commander, spawn_n0d3):
    node = spawn_n0d3("patient")
    task = commander.api.submit_task("[sleep=1] answer while nobody listens")
    wait_until(lambda: commander.api.get_task(task["id"])["state"] == "leased", 10, what="the lease")
    commander.stop()
    # Longer than the lease (2 s): the result waits on disk, the N0D3 keeps retrying.
    wait_until(lambda: node.held_results(), 10, what="the result to be held on disk")
    time.sleep(3)
    assert node.process.alive()
    commander.start()
    done = commander.wait_task(task["id"], timeout=40)
    assert done["state"] == "succeeded" and done["attempt"] == 1
    assert done["output"] == "echo: [sleep=1] answer while nobody listens"
    wait_until(lambda: not node.held_results(), 10, what="the outbox to empty")
    assert "retrying with back-off" in node.process.text()
    assert "Traceback" not in node.process.text()


def test_lost_node_with_no_attempts_left_fails_the_task(commander):
    ghost = fake_node(commander, "ghost")
    task = commander.api.submit_task("one shot", max_attempts=1)
    ghost.claim(open_slots=1, wait=5)
    failed = commander.wait_task(task["id"], timeout=15)
    assert failed["state"] == "failed" and "lease expired" in failed["error"]
    assert wait_until(lambda: next(n for n in commander.api.list_nodes() if n["name"] == "ghost")["state"] == "lost",
                      10, what="ghost lost")
