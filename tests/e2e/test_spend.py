"""Spend against a live Commander under gunicorn: results posted by a registered node fill the
ledger, `m3shd spend` reads and caps it, and a cap holds the next task until it is raised."""

from __future__ import annotations

import csv
import io
import json

from harness import Commander, m3shd, register_node, result_for, wait_until
from ntfy_standin import Ntfy


def cli(cmd, *args, token: str | None = None):
    return m3shd(*args, "--url", cmd.url, "--token", token or cmd.admin_token, env=cmd.env, check=False)


def run(cmd, node, prompt: str, cost: float, model: str = "claude-sonnet-5-5") -> int:
    task_id = cmd.api.submit_task(prompt)["id"]
    lease = node.claim(1, 5)[0]
    assert lease["task_id"] == task_id
    node.post_result(dict(result_for(lease), cost_usd=cost, model=model,
                          usage=dict(input_tokens=1000, output_tokens=100, cache_read_tokens=0, cache_write_tokens=0)))
    return task_id


def test_spend_commands_read_the_ledger_and_a_cap_holds_work_until_raised(cmd):
    node = register_node(cmd.url, cmd.join_token, "spender")
    cheap = run(cmd, node, "cheap", 0.25)
    dear = run(cmd, node, "dear", 1.50, model="claude-opus-5")

    today = cli(cmd, "spend", "today")
    assert today.returncode == 0, today.stderr
    lines = today.stdout.splitlines()
    assert lines[0].split()[0] == "AGENT" and lines[1].split()[:2] == ["general", "2"]
    assert lines[-1].split() == ["total", "2", "2000", "200", "$1.7500"]
    by_model = list(csv.reader(io.StringIO(cli(cmd, "spend", "today", "--by", "model", "--csv").stdout)))
    assert by_model[0] == ["model", "attempts", "input_tokens", "output_tokens", "cache_read_tokens",
                           "cache_write_tokens", "cost_usd"]
    assert [(row[0], float(row[-1])) for row in by_model[1:]] == [("claude-opus-5", 1.5), ("claude-sonnet-5-5", 0.25)]
    week = json.loads(cli(cmd, "spend", "week", "--json").stdout)
    assert week["group"] == ["day"] and len(week["rows"]) == 1 and week["total"]["cost_usd"] == 1.75
    top = json.loads(cli(cmd, "spend", "top", "-n", "1", "--json").stdout)
    assert [t["task_id"] for t in top["tasks"]] == [dear] and cheap != dear

    held = cli(cmd, "spend", "cap", "set", "--agent", "general", "1.00")
    assert held.returncode == 0, held.stderr
    assert "HELD" in held.stdout and "$1.00" in held.stdout
    waiting = cmd.api.submit_task("held by the cap")
    assert waiting["state"] == "queued"
    assert waiting["waiting_reason"] == "daily cap of $1.00 for agent general reached; resets at 00:00 UTC"
    assert node.claim(1, 1) == []  # a second's long-poll: nothing for it

    raised = cli(cmd, "spend", "cap", "set", "--agent", "general", "5")
    assert raised.returncode == 0 and "HELD" not in raised.stdout
    wait_until(lambda: node.claim(1, 1), timeout=10)
    assert cli(cmd, "spend", "cap", "clear", "--agent", "general").returncode == 0


def test_spend_commands_exit_with_the_statuses_of_the_table(cmd):
    phone = cmd.token("spend-phone", role="mobile")  # spend:read, not spend:manage
    assert cli(cmd, "spend", "cap", "list", token=phone).returncode == 0
    refused = cli(cmd, "spend", "cap", "set", "--all", "3", token=phone)
    assert refused.returncode == 5 and "spend:manage" in refused.stderr
    assert cli(cmd, "spend", "cap", "clear", "--node", "nowhere").returncode == 6
    assert cli(cmd, "spend", "cap", "set", "--agent", "a", "--node", "b", "3").returncode == 2
    assert cli(cmd, "spend", "cap", "set", "--all", "0").returncode == 2


def test_the_live_commander_posts_cap_alerts_to_ntfy_from_its_background_loop(tmp_path):
    ntfy = Ntfy()
    live = Commander(tmp_path, extra_env={"M3SHD_COMMANDER_NTFY_URL": ntfy.url, "M3SHD_COMMANDER_SPEND_CAP": "1"})
    try:
        node = register_node(live.url, live.join_token, "alerting")
        run(live, node, "half", 0.6)
        wait_until(lambda: ntfy.requests, what="the 50 % alert at the ntfy stand-in")
        [(path, headers, body)] = ntfy.requests
        assert headers["Title"] == "m3shd: 50% of the daily cap for the mesh" and body.startswith("$0.60 of $1.00")
        listed = json.loads(cli(live, "spend", "alerts", "--json").stdout)
        assert [(a["threshold"], a["state"], a["attempts"]) for a in listed] == [(50, "sent", 1)]
    finally:
        live.stop()
        ntfy.close()
