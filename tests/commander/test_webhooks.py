"""GitHub and signed JSON webhooks, in process: managing hooks, and every way a delivery goes
(signed, replayed, refused, malformed, unsupported, too large, failing to render)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from commander.models import Pipeline, Task, Webhook, WebhookDelivery
from commander.webhooks import deliveries
from webhook_payloads import github, github_request

REVIEW = {"event": "pull_request", "actions": ["opened", "synchronize"],
          "task": {"agent": "code-reviewer", "prompt": "Review PR #{{ event.number }} “{{ event.pull_request.title }}” "
                                                       "of {{ event.repository.full_name }}: {{ event.pull_request.diff_url }}"}}
TRIAGE = {"event": "issues", "actions": ["opened"],
          "task": {"prompt": "Triage issue {{ event.issue.html_url }}: {{ event.issue.title }}\n\n{{ event.issue.body }}"}}
INCIDENT = {"event": "workflow_run", "actions": ["completed"], "when": {"workflow_run.conclusion": "failure"},
            "pipeline": {"name": "ci failure", "steps": [
                {"key": "look", "agent": "incident-responder",
                 "prompt": "Workflow {{ event.workflow.name }} failed on {{ event.workflow_run.head_branch }}: "
                           "{{ event.workflow_run.html_url }}"},
                {"key": "tell", "prompt": "Summarise for the team: {{ steps.look.output }}", "depends_on": ["look"]}]}}


@pytest.fixture(autouse=True)
def connected(cmdr):
    """The tests read the tables directly, on the cmdr fixture's connection."""
    return cmdr


@pytest.fixture
def manager(bearer):
    return bearer("commander")


@pytest.fixture
def make_hook(client, manager):
    def make(name="repo", kind="github", rules=(REVIEW, TRIAGE, INCIDENT), **more) -> dict:
        reply = client.post("/api/webhooks", json={"name": name, "kind": kind, "rules": list(rules), **more},
                            headers=manager)
        assert reply.status_code == 201, reply.get_json()
        return reply.get_json()
    return make


def deliver(client, hook: dict, event: str, payload, delivery: str | None = None, secret: str | None = None, **headers):
    body, sent = github_request(secret or hook["secret"], event, payload, delivery)
    return client.post(hook["url"], data=body, headers={**sent, **headers})


def delivery_rows() -> list[WebhookDelivery]:
    return list(WebhookDelivery.select().order_by(WebhookDelivery.id))


def test_a_hook_shows_its_secret_once_and_keeps_it_sealed(app, client, manager, make_hook, tmp_path):
    made = make_hook()
    assert made["secret"].startswith("m3w_") and made["url"] == "/api/webhooks/github/repo"
    listed = client.get("/api/webhooks", headers=manager).get_json()["hooks"]
    shown = client.get("/api/webhooks/repo", headers=manager).get_json()
    assert [h["name"] for h in listed] == ["repo"] and listed[0]["secret"] is None and shown["hook"]["secret"] is None
    assert shown["hook"]["rules"][0]["task"]["agent"] == "code-reviewer" and shown["deliveries"] == []
    database = sqlite3.connect(tmp_path / "data" / "commander" / "commander.db")
    stored = database.execute("SELECT secret FROM webhook").fetchone()[0]
    assert made["secret"] not in stored and stored.startswith("gAAAA")  # a Fernet token
    # Rotating: the new secret works, the old one no longer does.
    rotated = client.post("/api/webhooks/repo/rotate-secret", headers=manager).get_json()
    assert rotated["secret"] not in (None, made["secret"]) and rotated["rotated_at"]
    assert deliver(client, made, "ping", github("ping")).status_code == 401
    assert deliver(client, rotated, "ping", github("ping")).status_code == 200


def test_a_pull_request_starts_the_reviewer_and_a_redelivery_starts_nothing_new(cmdr, client, manager, make_hook):
    hook = make_hook()
    payload = github("pull_request.opened")
    reply = deliver(client, hook, "pull_request", payload, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert reply.status_code == 202, reply.get_json()
    receipt = reply.get_json()
    assert receipt["status"] == "started" and receipt["duplicate"] is False and len(receipt["task_ids"]) == 1
    task = Task.get_by_id(receipt["task_ids"][0])
    pr = payload["pull_request"]
    assert task.prompt == (f"Review PR #{payload['number']} “{pr['title']}” of {payload['repository']['full_name']}: "
                           f"{pr['diff_url']}")
    assert (task.agent, task.submitter, task.state) == ("code-reviewer", "webhook:repo", "queued")
    # GitHub's "Redeliver" sends the same X-GitHub-Delivery: the first answer again, nothing new.
    again = deliver(client, hook, "pull_request", payload, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert again.get_json()["task_ids"] == receipt["task_ids"] and Task.select().count() == 1
    shown = client.get("/api/webhooks/repo", headers=manager).get_json()["deliveries"]
    assert [(d["event"], d["action"], d["status"], d["task_ids"]) for d in shown] == [
        ("pull_request", "opened", "started", receipt["task_ids"])]
    # The payload is kept, sealed.
    sealed = WebhookDelivery.get().payload
    assert pr["title"] not in sealed and json.loads(cmdr.box.decrypt(sealed)) == payload


def test_issues_opened_goes_to_triage(client, make_hook):
    hook = make_hook()
    payload = github("issues.opened")
    receipt = deliver(client, hook, "issues", payload).get_json()
    task = Task.get_by_id(receipt["task_ids"][0])
    assert task.agent == "general" and task.prompt.startswith(f"Triage issue {payload['issue']['html_url']}: ")


def test_a_failed_workflow_run_starts_the_incident_pipeline_and_a_green_one_nothing(client, make_hook):
    hook = make_hook()
    green = deliver(client, hook, "workflow_run", github("workflow_run.completed"))  # the example succeeded
    assert green.status_code == 202 and green.get_json()["status"] == "ignored"
    payload = github("workflow_run.completed", workflow_run__conclusion="failure")
    receipt = deliver(client, hook, "workflow_run", payload).get_json()
    assert receipt["status"] == "started" and receipt["pipeline_id"]
    pipeline = Pipeline.get_by_id(receipt["pipeline_id"])
    look, tell = (Task.get_by_id(task_id) for task_id in receipt["task_ids"])
    assert pipeline.name == "ci failure" and pipeline.submitter == "webhook:repo"
    assert look.agent == "incident-responder" and payload["workflow_run"]["html_url"] in look.prompt
    assert (look.state, tell.state) == ("queued", "blocked")
    assert tell.prompt == "Summarise for the team: {{ steps.look.output }}"  # the pipeline fills that one later


def test_ping_is_answered_and_recorded(client, make_hook):
    hook = make_hook()
    reply = deliver(client, hook, "ping", github("ping"))
    assert reply.status_code == 200 and reply.get_json()["status"] == "ping" and reply.get_json()["message"] == "pong"
    assert [d.status for d in delivery_rows()] == ["ping"]


@pytest.mark.parametrize("event, payload", [
    ("star", {"action": "created", "starred_at": "2026-12-02T04:00:00Z"}),  # no rule for the event
    ("pull_request", github("pull_request.opened", action="closed")),      # the rule does not take the action
])
def test_an_event_no_rule_takes_is_ignored_with_202(client, make_hook, event, payload):
    reply = deliver(client, make_hook(), event, payload)
    assert reply.status_code == 202 and reply.get_json()["status"] == "ignored"
    assert reply.get_json()["message"].startswith("ignored: no rule of this hook takes")
    assert Task.select().count() == 0 and [d.status for d in delivery_rows()] == ["ignored"]


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "sha1=abc", "sha256=ünïcode"])
def test_a_bad_or_missing_signature_is_401_and_keeps_only_a_delivery_record(client, make_hook, signature):
    hook = make_hook()
    body, headers = github_request(hook["secret"], "pull_request", github("pull_request.opened"), "real-id")
    if signature is None:
        del headers["X-Hub-Signature-256"]
    else:
        headers["X-Hub-Signature-256"] = signature
    reply = client.post(hook["url"], data=body, headers=headers)
    assert reply.status_code == 401 and reply.get_json()["error"]["code"] == "bad_signature"
    [record] = delivery_rows()
    assert (record.status, record.payload, record.task_ids) == ("unauthorized", None, [])
    assert Task.select().count() == 0
    # The forger named a real delivery id: it is not taken from the sender.
    assert deliver(client, hook, "pull_request", github("pull_request.opened"), "real-id").get_json()["status"] == "started"


def test_a_body_signed_with_another_secret_or_altered_after_signing_is_refused(client, make_hook):
    hook = make_hook()
    assert deliver(client, hook, "ping", github("ping"), secret="m3w_not-the-secret").status_code == 401
    body, headers = github_request(hook["secret"], "ping", github("ping"))
    assert client.post(hook["url"], data=body.replace(b"Codertocat", b"Codertocaf", 1), headers=headers).status_code == 401


def test_unknown_hook_and_the_wrong_kind_are_404(client, make_hook):
    hook = make_hook()
    body, headers = github_request(hook["secret"], "ping", github("ping"))
    for url in ("/api/webhooks/github/nope", "/api/webhooks/json/repo", "/api/webhooks/uptime-kuma/repo"):
        reply = client.post(url, data=body, headers=headers)
        assert reply.status_code == 404 and reply.get_json()["error"]["code"] == "no_webhook", url
    assert delivery_rows() == []


@pytest.mark.parametrize("body, content_type, status", [
    (b"{not json", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b'{"a": NaN}', "application/json", 400),
    (b"payload=%7B%7D", "application/x-www-form-urlencoded", 415),
])
def test_a_signed_body_that_is_not_a_json_object_is_refused_and_recorded_failed(client, make_hook, body, content_type,
                                                                                 status):
    hook = make_hook()
    sent, headers = github_request(hook["secret"], "pull_request", body)
    reply = client.post(hook["url"], data=sent, headers={**headers, "Content-Type": content_type})
    assert reply.status_code == status and "error" in reply.get_json()
    [record] = delivery_rows()
    assert record.status == "failed" and record.error and Task.select().count() == 0


def test_a_template_that_does_not_render_fails_the_delivery_and_a_redelivery_tries_again(client, manager, make_hook):
    broken = {"event": "issues", "task": {"prompt": "Triage {{ event.issue.nonexistent.field }}"}}
    hook = make_hook(rules=[broken])
    reply = deliver(client, hook, "issues", github("issues.opened"), delivery="d-1")
    assert reply.status_code == 422 and reply.get_json()["status"] == "failed"
    assert "the event has no 'issue.nonexistent.field'" in reply.get_json()["message"]
    assert Task.select().count() == 0 and delivery_rows()[0].error == "the event has no 'issue.nonexistent.field'"
    # A failed delivery is tried again when redelivered (here it fails the same way, recorded once).
    assert deliver(client, hook, "issues", github("issues.opened"), delivery="d-1").status_code == 422
    assert len(delivery_rows()) == 1


def test_event_values_are_cut_and_never_expanded_again(app, client, make_hook):
    from mesh import configure

    configure(app.extensions["m3shd"], webhook_value_limit=40)
    hook = make_hook(rules=[{"event": "issues", "task": {"prompt": "{{ event.issue.title }}|{{ event.issue.body }}"}}])
    payload = github("issues.opened", issue__title="{{ event.sender.login }}", issue__body="x" * 100)
    task = Task.get_by_id(deliver(client, hook, "issues", payload).get_json()["task_ids"][0])
    assert task.prompt == "{{ event.sender.login }}|" + "x" * 40 + "\n[m3shd: cut to 40 of 100 characters]"


def test_a_body_over_the_webhook_cap_is_413_before_anything_is_recorded(make_app):
    app = make_app(webhook_max_body=2000)
    client = app.test_client()
    from commander import tokens

    cmdr = app.extensions["m3shd"]
    with cmdr.db.connection_context(), cmdr.writing(wake=False):
        _, secret = tokens.create("t", actor="test", role="commander")
    reply = client.post("/api/webhooks", json={"name": "repo", "kind": "github", "rules": [REVIEW]},
                        headers={"Authorization": f"Bearer {secret}"})
    hook = reply.get_json()
    big = github("pull_request.opened", pull_request__body="b" * 3000)
    refused = deliver(client, hook, "pull_request", big)
    assert refused.status_code == 413 and "webhook_max_body" in refused.get_json()["error"]["message"]
    assert deliver(client, hook, "ping", github("ping")).status_code == 200  # a small one still goes through
    with cmdr.db.connection_context():
        assert [d.status for d in WebhookDelivery.select()] == ["ping"]


def test_the_generic_json_hook_is_signed_the_same_way(client, make_hook):
    hook = make_hook(name="backup", kind="json",
                     rules=[{"event": "backup-failed", "task": {"prompt": "Backup of {{ event.host }} failed: "
                                                                          "{{ event.log.0 }}"}}])
    payload = {"host": "nas", "log": ["disk full", "retry later"]}
    body, headers = github_request(hook["secret"], "ignored-here", payload)
    headers = {"X-Hub-Signature-256": headers["X-Hub-Signature-256"], "Content-Type": "application/json",
               "X-M3SHD-Event": "backup-failed", "X-M3SHD-Delivery": "b-1"}
    receipt = client.post(hook["url"], data=body, headers=headers).get_json()
    assert Task.get_by_id(receipt["task_ids"][0]).prompt == "Backup of nas failed: disk full"
    assert client.post(hook["url"], data=body, headers=headers).get_json()["duplicate"] is True
    no_event = client.post(hook["url"], data=body, headers={**headers, "X-M3SHD-Event": ""})
    assert no_event.status_code == 400 and no_event.get_json()["error"]["code"] == "no_event"


def test_a_rule_may_hold_its_task_for_approval(client, make_hook):
    hook = make_hook(rules=[{**TRIAGE, "task": {**TRIAGE["task"], "approval_required": True}}])
    receipt = deliver(client, hook, "issues", github("issues.opened")).get_json()
    assert Task.get_by_id(receipt["task_ids"][0]).state == "awaiting_approval"


def test_an_unknown_agent_fails_the_delivery_with_the_reason(client, make_hook):
    hook = make_hook(rules=[{"event": "issues", "task": {"agent": "no-such-agent", "prompt": "x"}}])
    reply = deliver(client, hook, "issues", github("issues.opened"))
    assert reply.status_code == 422 and "no-such-agent" in reply.get_json()["message"]
    assert [d.status for d in delivery_rows()] == ["failed"] and Task.select().count() == 0


@pytest.mark.parametrize("rules, code", [
    ([{"event": "issues"}], "invalid_request"),
    ([{"event": "issues", "task": {"prompt": "a"}, "pipeline": {"steps": [{"key": "a", "prompt": "a"}]}}],
     "invalid_request"),
    ([{"event": "issues", "pipeline": {"steps": [{"key": "a", "prompt": "a", "depends_on": ["b"]},
                                                 {"key": "b", "prompt": "b", "depends_on": ["a"]}]}}],
     "invalid_pipeline"),
    ([{"event": "Not An Event", "task": {"prompt": "a"}}], "invalid_request"),
])
def test_a_hook_whose_rules_cannot_work_is_refused(client, manager, rules, code):
    reply = client.post("/api/webhooks", json={"name": "repo", "kind": "github", "rules": rules}, headers=manager)
    assert reply.status_code == 400 and reply.get_json()["error"]["code"] == code, reply.get_json()
    assert Webhook.select().count() == 0


def test_managing_hooks_needs_webhooks_manage_and_names_are_unique(client, bearer, make_hook):
    make_hook()
    again = client.post("/api/webhooks", json={"name": "repo", "kind": "github", "rules": [REVIEW]},
                        headers=bearer("commander"))
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "webhook_exists"
    mobile = bearer("mobile")
    for method, url in (("GET", "/api/webhooks"), ("GET", "/api/webhooks/repo"), ("POST", "/api/webhooks/repo/rotate-secret"),
                        ("DELETE", "/api/webhooks/repo")):
        refused = client.open(url, method=method, headers=mobile)
        assert refused.status_code == 403 and "`webhooks:manage`" in refused.get_json()["error"]["message"], url
    assert client.get("/api/webhooks").status_code == 401


def test_deleting_a_hook_takes_its_deliveries_and_leaves_its_tasks(client, manager, make_hook):
    hook = make_hook()
    deliver(client, hook, "issues", github("issues.opened"))
    assert client.delete("/api/webhooks/repo", headers=manager).status_code == 204
    assert Webhook.select().count() == 0 and WebhookDelivery.select().count() == 0 and Task.select().count() == 1
    assert client.get("/api/webhooks/repo", headers=manager).status_code == 404
    assert deliver(client, hook, "issues", github("issues.opened")).status_code == 404


def test_refused_deliveries_are_kept_to_a_bounded_number(client, make_hook, monkeypatch):
    monkeypatch.setattr(deliveries, "KEEP_UNAUTHORIZED", 3)
    hook = make_hook()
    for _ in range(5):
        assert deliver(client, hook, "ping", github("ping"), secret="m3w_wrong").status_code == 401
    assert [d.status for d in delivery_rows()] == ["unauthorized"] * 3


def test_the_webhooks_page_lists_hooks_with_their_recent_deliveries(client, bearer, manager, make_hook):
    hook = make_hook()
    started = deliver(client, hook, "pull_request", github("pull_request.opened")).get_json()
    deliver(client, hook, "ping", github("ping"), secret="m3w_wrong")
    make_hook(name="lab", kind="uptime-kuma", rules=[{"event": "down", "task": {"prompt": "{{ event.monitor.name }}"}}])
    page = client.get("/webhooks", headers=manager)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "http://localhost/api/webhooks/github/repo" in html and "/api/webhooks/uptime-kuma/lab" in html
    assert f'href="/tasks/{started["task_ids"][0]}">#{started["task_ids"][0]}</a>' in html
    assert 'class="badge s-started"' in html and 'class="badge s-unauthorized"' in html
    assert "X-Hub-Signature-256 does not match" in html and "No deliveries yet." in html
    assert hook["secret"] not in html and 'href="/webhooks"' in html  # the menu links it
    refused = client.get("/webhooks", headers=bearer("mobile"))
    assert refused.status_code == 403 and "webhooks:manage" in refused.get_data(as_text=True)
    assert 'href="/webhooks"' not in client.get("/tasks", headers=bearer("mobile")).get_data(as_text=True)


def test_a_malformed_body_under_a_delivery_id_that_started_work_leaves_its_record(client, make_hook):
    hook = make_hook()
    first = deliver(client, hook, "issues", github("issues.opened"), delivery="same").get_json()
    assert deliver(client, hook, "issues", b"{broken", delivery="same").status_code == 400
    [record] = delivery_rows()
    assert (record.status, record.task_ids) == ("started", first["task_ids"])
