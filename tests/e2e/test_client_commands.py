"""The client commands against a live Commander (no N0D3 unless a test starts one): what they
print and how they exit (issue 17, the newcomer's items)."""

from __future__ import annotations

import json
import re

from m3shd.client import ApiClient
from harness import m3shd, register_node, result_for


def cli(cmd, *args, token: str | None = None, **kwargs):
    return m3shd(*args, "--url", cmd.url, "--token", token or cmd.admin_token, env=cmd.env, check=False, **kwargs)


def test_each_kind_of_refusal_has_its_own_exit_status(cmd):
    """Every refusal exited 1, which the README keeps for a task that failed."""
    phone = cmd.token("phone", role="mobile")
    queued = cmd.api.submit_task("nobody runs me")["id"]  # no N0D3 here: it stays queued
    cases = [
        (["task", "get", str(queued)], "m3a_not-a-token", 5, "(401)"),
        (["nodes", "disable", "1"], phone, 5, "(403)"),
        (["task", "get", "999999"], None, 6, "(404)"),
        (["task", "approve", str(queued)], None, 7, "(409)"),
        (["task", "submit", "x", "--priority", "1000", "--no-wait"], None, 2, "(400)"),
    ]
    for argv, token, status, said in cases:
        done = cli(cmd, *argv, token=token)
        assert (done.returncode, said in done.stderr) == (status, True), f"{argv}: {done.returncode} {done.stderr}"


UNSAFE = ("\x1b", "\x07", "\x9b", "\u202e", "\u2066")


def test_task_output_node_problems_and_prompts_are_neutralised_when_piped(commander):
    """`m3shd task get N | less -R` got the task's escapes as they were; U+202E was never escaped."""
    node = register_node(commander.url, commander.join_token, "evil", heartbeat_every=None)
    task = commander.api.submit_task("list \u202eexe.txt")
    lease = node.claim(1, 5)[0]
    hostile = "answer\x1b]0;pwned\x07\x1b[2J \u2066gnp.exe\u2069 \x9b31m"
    node.post_result(result_for(lease, output=hostile))
    node.heartbeat(open_slots=1, running=[], runner=None, problem="no runner\x1b]0;title\x07")
    for argv in (["task", "get", str(task["id"])], ["task", "list"], ["nodes", "list"]):
        done = cli(commander, *argv)
        assert done.returncode == 0, done.stderr
        assert not any(c in done.stdout + done.stderr for c in UNSAFE), (argv, done.stdout, done.stderr)
    shown = cli(commander, "task", "get", str(task["id"])).stdout
    assert shown.strip() == "answer\\x1b]0;pwned\\x07\\x1b[2J \\u2066gnp.exe\\u2069 \\x9b31m"
    assert "none: no runner\\x1b]0;title\\x07" in cli(commander, "nodes", "list").stdout
    exact = json.loads(cli(commander, "task", "get", str(task["id"]), "--json").stdout)
    assert exact["output"] == hostile and exact["prompt"] == "list \u202eexe.txt"


def test_submit_says_why_the_task_waits_at_once(cmd):
    """It printed only "queued; waiting" for the first 25 s while no node could run the task."""
    done = cli(cmd, "task", "submit", "who runs this?", "--requires", "gpu", "--timeout", "1")
    assert done.returncode == 4, done.stderr
    task_id = cmd.api.list_tasks()[0]["id"]
    reason = cmd.api.get_task(task_id)["waiting_reason"]
    assert reason and f"task {task_id} is queued: {reason}" in done.stderr, done.stderr
    waited = cli(cmd, "task", "wait", str(task_id), "--timeout", "1")
    assert waited.returncode == 4 and f"task {task_id} is queued: {reason}" in waited.stderr, waited.stderr


def rows(table: str) -> dict[str, str]:
    """A table's lines by their first column."""
    return {line.split()[0]: line for line in table.splitlines()[1:] if line.strip()}


def test_token_list_shows_expiry_and_last_use(cmd):
    """The README promised last use; the table had neither it nor the expiry."""
    used = cmd.token("used-one", permissions="tasks:read")
    ApiClient(cmd.url, used).list_tasks()
    cli(cmd, "token", "create", "idle-one", "--permissions", "tasks:read", "--expires-in", "7200")
    table = cli(cmd, "token", "list").stdout
    assert table.splitlines()[0].split()[5:8] == ["EXPIRES", "LAST", "USED"]
    by_name = {line.split()[2]: line.split() for line in rows(table).values()}
    assert re.fullmatch(r"never \d+ s ago", " ".join(by_name["used-one"][5:9]))
    assert " ".join(by_name["idle-one"][5:9]) == "in 2 h never"


def test_pending_machines_are_numbered_apart_from_nodes(cmd):
    """"pending node 1" beside node 1: the ids look alike. They are shown as p1, and taken either way."""
    asked = ApiClient(cmd.url, "").request_join(machine_id="kitchen-pi-1", name="kitchen-pi", slots=1)
    other = ApiClient(cmd.url, "").request_join(machine_id="garage-pi-1", name="garage-pi", slots=1)
    table = cli(cmd, "nodes", "pending").stdout
    assert rows(table)[f"p{asked['id']}"].split()[1] == "kitchen-pi", table
    assert [p["id"] for p in json.loads(cli(cmd, "nodes", "pending", "--json").stdout)] == [asked["id"], other["id"]]
    approved = cli(cmd, "nodes", "approve", f"p{asked['id']}")
    assert approved.returncode == 0 and f"approved kitchen-pi (pending p{asked['id']})" in approved.stderr
    rejected = cli(cmd, "nodes", "reject", str(other["id"]))  # the bare number still works
    assert rejected.returncode == 0 and f"turned away pending machine p{other['id']}" in rejected.stderr
    refused = cli(cmd, "nodes", "approve", "node1")
    assert refused.returncode == 2 and "not a pending machine's id" in refused.stderr
