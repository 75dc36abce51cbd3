"""The client commands against a live Commander (no N0D3 unless a test starts one): what they
print and how they exit (issue 17, the newcomer's items)."""

from __future__ import annotations

import json

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
