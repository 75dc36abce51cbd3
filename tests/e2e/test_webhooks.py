"""Webhooks against a live Commander under gunicorn: a hook made with `m3shd webhooks`, a signed
GitHub pull_request delivery reviewed by a real N0D3, its redelivery, and an Uptime Kuma DOWN
started by the Commander's own background loop once its debounce window has passed."""

from __future__ import annotations

import json

import requests

from harness import m3shd, wait_until
from webhook_payloads import github, github_request, kuma

REVIEW = {"event": "pull_request", "actions": ["opened", "synchronize"],
          "task": {"agent": "code-reviewer",
                   "prompt": "Review PR #{{ event.number }} {{ event.pull_request.title }}: {{ event.pull_request.diff_url }}"}}


def cli(cmd, *args, token: str | None = None):
    return m3shd(*args, "--url", cmd.url, "--token", token or cmd.admin_token, env=cmd.env, check=False)


def create(cmd, tmp_path, name: str, kind: str, rules: list, *more: str) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(rules))
    made = cli(cmd, "webhooks", "create", name, "--kind", kind, "--rules", str(path), *more)
    assert made.returncode == 0, made.stderr
    assert "shown once" in made.stderr and f"{cmd.url}/api/webhooks/{kind}/{name}" in made.stderr
    return made.stdout.strip()


def test_a_signed_pull_request_is_reviewed_by_a_real_n0d3_and_a_redelivery_starts_nothing(commander, spawn_n0d3,
                                                                                          tmp_path):
    secret = create(commander, tmp_path, "repo", "github", [REVIEW])
    spawn_n0d3("reviewer")
    payload = github("pull_request.opened")
    body, headers = github_request(secret, "pull_request", payload, "9b6e2c3a-cc78-11e3-81ab-4c9367dc0958")
    url = f"{commander.url}/api/webhooks/github/repo"
    reply = requests.post(url, data=body, headers=headers, timeout=15)
    assert reply.status_code == 202 and reply.json()["status"] == "started", reply.text
    [task_id] = reply.json()["task_ids"]
    done = commander.wait_task(task_id, timeout=30)
    pr = payload["pull_request"]
    assert done["state"] == "succeeded" and done["agent"] == "code-reviewer" and done["submitter"] == "webhook:repo"
    assert done["output"] == f"echo: Review PR #{payload['number']} {pr['title']}: {pr['diff_url']}"

    again = requests.post(url, data=body, headers=headers, timeout=15)
    assert again.status_code == 200 and again.json()["duplicate"] is True and again.json()["task_ids"] == [task_id]
    forged = requests.post(url, data=body.replace(b"opened", b"closed", 1), headers={**headers, "X-GitHub-Delivery": "x"},
                           timeout=15)
    assert forged.status_code == 401
    assert len(commander.api.list_tasks()) == 1

    shown = cli(commander, "webhooks", "show", "repo", "--json")
    assert shown.returncode == 0, shown.stderr
    deliveries = json.loads(shown.stdout)["deliveries"]
    assert [(d["status"], d["task_ids"]) for d in deliveries] == [("unauthorized", []), ("started", [task_id])]
    listed = cli(commander, "webhooks", "list")
    assert listed.returncode == 0 and "repo" in listed.stdout and secret not in listed.stdout
    assert secret not in commander.process.text()  # no secret in the Commander's log


def test_an_uptime_kuma_down_starts_once_its_debounce_window_passes(commander, tmp_path):
    rules = [{"event": "down", "task": {"prompt": "{{ event.monitor.name }} is down: {{ event.heartbeat.msg }}"}}]
    secret = create(commander, tmp_path, "lab", "uptime-kuma", rules, "--debounce", "1")
    url = f"{commander.url}/api/webhooks/uptime-kuma/lab"
    pending = requests.post(url, json=kuma(0), headers={"Authorization": f"Bearer {secret}"}, timeout=15)
    assert pending.status_code == 202 and pending.json()["status"] == "pending", pending.text
    tasks = wait_until(lambda: commander.api.list_tasks(), timeout=15, what="the debounced response")
    assert tasks[0]["prompt"] == "home-assistant is down: connect ECONNREFUSED"
    assert requests.post(f"{url}?secret=wrong", json=kuma(1), timeout=15).status_code == 401
    up = requests.post(f"{url}?secret={secret}", json=kuma(1, time="2026-12-02 04:52:00"), timeout=15)
    assert up.status_code == 202 and up.json()["status"] == "resolved"


def test_webhooks_commands_exit_with_the_statuses_of_the_table(commander, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    unreadable = cli(commander, "webhooks", "create", "x", "--kind", "github", "--rules", str(broken))
    assert unreadable.returncode == 2 and "is not JSON" in unreadable.stderr
    absent = cli(commander, "webhooks", "create", "x", "--kind", "github", "--rules", str(tmp_path / "none.json"))
    assert absent.returncode == 2 and "cannot read the rules file" in absent.stderr
    both = tmp_path / "both.json"
    both.write_text(json.dumps([{"event": "issues", "task": {"prompt": "a"},
                                 "pipeline": {"steps": [{"key": "a", "prompt": "a"}]}}]))
    invalid = cli(commander, "webhooks", "create", "x", "--kind", "github", "--rules", str(both))
    assert invalid.returncode == 2 and "exactly one of `task`, `pipeline`" in invalid.stderr
    assert cli(commander, "webhooks", "show", "nope").returncode == 6
    assert cli(commander, "webhooks", "delete", "nope").returncode == 6
    refused = cli(commander, "webhooks", "list", token=commander.token("phone", role="mobile"))
    assert refused.returncode == 5 and "webhooks:manage" in refused.stderr
