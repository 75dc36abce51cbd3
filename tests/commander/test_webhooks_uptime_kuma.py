"""Uptime Kuma webhooks, in process: a monitor's DOWN starts the response, its UP withdraws or
annotates it, flapping is debounced, and the hook's secret comes as a bearer token or in the URL."""

from __future__ import annotations

import pytest

from commander.models import Task, WebhookDelivery, now
from commander.webhooks import monitors
from mesh import join, lease_of
from webhook_payloads import kuma

RESPOND = {"event": "down", "task": {"agent": "infrastructure-ops",
                                     "prompt": "{{ event.monitor.name }} ({{ event.monitor.url }}) is down: "
                                               "{{ event.heartbeat.msg }}"}}


@pytest.fixture(autouse=True)
def connected(cmdr):
    return cmdr


@pytest.fixture
def make_hook(client, bearer):
    def make(debounce: float = 0, rules=(RESPOND,)) -> dict:
        reply = client.post("/api/webhooks", json={"name": "lab", "kind": "uptime-kuma", "rules": list(rules),
                                                   "debounce": debounce}, headers=bearer("commander"))
        assert reply.status_code == 201, reply.get_json()
        return reply.get_json()
    return make


def notify(client, hook: dict, body: dict, how: str = "bearer", secret: str | None = None):
    secret = secret or hook["secret"]
    if how == "bearer":
        return client.post(hook["url"], json=body, headers={"Authorization": f"Bearer {secret}"})
    return client.post(f"{hook['url']}?secret={secret}", json=body)


def statuses() -> list[tuple[str, str]]:
    return [(d.event, d.status) for d in WebhookDelivery.select().order_by(WebhookDelivery.id)]


def test_down_starts_the_response_with_the_monitors_details(client, make_hook):
    hook = make_hook()
    reply = notify(client, hook, kuma(0, time="2026-12-02 04:50:00"))
    assert reply.status_code == 202 and reply.get_json()["status"] == "started", reply.get_json()
    task = Task.get_by_id(reply.get_json()["task_ids"][0])
    assert task.prompt == "home-assistant (http://192.168.1.20:8123) is down: connect ECONNREFUSED"
    assert (task.agent, task.submitter) == ("infrastructure-ops", "webhook:lab")
    # The same heartbeat again (a replay) starts nothing; another DOWN while the response is open neither.
    replay = notify(client, hook, kuma(0, time="2026-12-02 04:50:00"))
    assert replay.status_code == 200 and replay.get_json()["duplicate"] is True
    again = notify(client, hook, kuma(0, time="2026-12-02 04:51:00"))
    assert again.get_json()["status"] == "ignored" and Task.select().count() == 1
    # Another monitor has a response of its own.
    other = notify(client, hook, kuma(0, monitor_id=8, name="nas", time="2026-12-02 04:51:00"))
    assert other.get_json()["status"] == "started" and Task.select().count() == 2


def test_up_cancels_a_response_whose_work_has_not_begun(client, make_hook):
    hook = make_hook()
    started = notify(client, hook, kuma(0, time="t1")).get_json()
    reply = notify(client, hook, kuma(1, time="t2"))
    assert reply.get_json()["status"] == "resolved" and reply.get_json()["message"] == "its work had not begun: cancelled"
    assert Task.get_by_id(started["task_ids"][0]).state == "cancelled"
    down = WebhookDelivery.get_by_id(started["delivery"])
    assert down.status == "recovered" and "cancelled" in down.note
    # The monitor goes down again: a new response.
    assert notify(client, hook, kuma(0, time="t3")).get_json()["status"] == "started"


def test_up_leaves_running_work_to_finish_and_notes_the_recovery(cmdr, client, make_hook):
    hook = make_hook()
    started = notify(client, hook, kuma(0, time="t1")).get_json()
    task = Task.get_by_id(started["task_ids"][0])
    lease_of(cmdr, join(cmdr, "pi", capabilities=list(task.requires)), task)
    reply = notify(client, hook, kuma(1, time="t2")).get_json()
    assert reply["message"] == "its work had begun: left to finish" and reply["task_ids"] == started["task_ids"]
    assert Task.get_by_id(task.id).state == "leased"
    assert WebhookDelivery.get_by_id(started["delivery"]).note.endswith("its work had begun: left to finish")


def test_a_flapping_monitor_is_debounced(cmdr, client, make_hook):
    hook = make_hook(debounce=30)
    pending = notify(client, hook, kuma(0, time="t1")).get_json()
    assert pending["status"] == "pending" and pending["message"] == "the response starts in 30 s unless the monitor " \
                                                                    "comes back up"
    assert monitors.start_due(cmdr, now()) == 0  # not due yet
    up = notify(client, hook, kuma(1, time="t2")).get_json()
    assert up["status"] == "resolved" and up["message"].startswith("cancelled: the monitor came back up")
    assert monitors.start_due(cmdr, now() + 60) == 0 and Task.select().count() == 0
    # Down, and it stays down past the window: the loop starts the response then.
    notify(client, hook, kuma(0, time="t3"))
    assert notify(client, hook, kuma(0, time="t4")).get_json()["status"] == "ignored"  # still the open response
    assert monitors.start_due(cmdr, now() + 31) == 1
    [task] = Task.select()
    assert task.prompt.startswith("home-assistant ")
    assert statuses() == [("down", "cancelled"), ("up", "resolved"), ("down", "started"), ("down", "ignored")]


def test_the_debounce_defaults_to_the_setting(cmdr, client, bearer):
    from mesh import configure

    configure(cmdr, webhook_debounce=5.0)
    made = client.post("/api/webhooks", json={"name": "lab", "kind": "uptime-kuma", "rules": [RESPOND]},
                       headers=bearer("commander")).get_json()
    assert made["debounce"] is None
    assert notify(client, made, kuma(0)).get_json()["message"] == "the response starts in 5 s unless the monitor " \
                                                                  "comes back up"


@pytest.mark.parametrize("how", ["bearer", "url"])
def test_the_secret_may_come_as_a_bearer_token_or_in_the_url(client, make_hook, how):
    hook = make_hook()
    assert notify(client, hook, kuma(0), how=how).status_code == 202
    wrong = notify(client, hook, kuma(0, time="later"), how=how, secret="m3w_wrong")
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "bad_secret"


def test_no_secret_is_401_with_how_to_send_it(client, make_hook):
    hook = make_hook()
    reply = client.post(hook["url"], json=kuma(0))
    assert reply.status_code == 401 and "?secret=" in reply.get_json()["error"]["message"]
    assert statuses() == [("", "unauthorized")] and Task.select().count() == 0


def test_the_test_button_and_pending_or_maintenance_beats_start_nothing(client, make_hook):
    hook = make_hook()
    assert notify(client, hook, {"heartbeat": None, "monitor": None, "msg": "Uptime Kuma Webhook testing"}).get_json()["status"] == "ping"
    for status in (2, 3):
        assert notify(client, hook, kuma(status, time=f"t{status}")).get_json()["status"] == "ignored"
    assert notify(client, hook, kuma(1, time="t9")).get_json()["status"] == "ignored"  # UP with nothing open
    assert Task.select().count() == 0


def test_malformed_bodies_are_400(client, make_hook):
    hook = make_hook()
    headers = {"Authorization": f"Bearer {hook['secret']}", "Content-Type": "application/json"}
    assert client.post(hook["url"], data=b"{", headers=headers).status_code == 400
    assert client.post(hook["url"], data=b'"down"', headers=headers).status_code == 400
    weird = notify(client, hook, {"heartbeat": {"status": "0"}, "monitor": []})
    assert weird.status_code == 202 and weird.get_json()["status"] == "ignored"


def test_a_response_held_for_approval_is_withdrawn_by_an_up_before_anyone_approves_it(client, make_hook):
    hook = make_hook(rules=[{**RESPOND, "task": {**RESPOND["task"], "approval_required": True}}])
    started = notify(client, hook, kuma(0, time="t1")).get_json()
    task = Task.get_by_id(started["task_ids"][0])
    assert task.state == "awaiting_approval" and task.submitter == "webhook:lab"
    assert notify(client, hook, kuma(1, time="t2")).get_json()["message"] == "its work had not begun: cancelled"
    assert Task.get_by_id(task.id).state == "cancelled"
