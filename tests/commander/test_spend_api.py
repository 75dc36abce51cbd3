"""/api/spend: the figures, the dearest tasks and the caps, over the app in process."""

from __future__ import annotations

import pytest

from commander import leases, tasks, tokens
from commander.models import SpendTask, Task
from commander.schemas import SpendReport
from mesh import apply, configure, join, lease_of, result, submit


@pytest.fixture
def cmdr(app):
    commander = app.extensions["m3shd"]
    with commander.db.connection_context():
        yield commander


def run(cmdr, node, cost, submitter="alice", agent=None, model="claude-sonnet-5-5"):
    task = submit(cmdr, submitter=submitter, **({"agent": agent} if agent else {}))
    apply(cmdr, node, result(lease_of(cmdr, node, task), cost_usd=cost, model=model,
                             usage=leases.Usage(input_tokens=100, output_tokens=10)))
    return task


def test_spend_grouped_and_totalled_and_the_top_tasks(cmdr, client, bearer):
    configure(cmdr, best_node_wait=0.0)  # any free node takes a task at once
    pi1, pi2 = join(cmdr, "pi1", slots=1), join(cmdr, "pi2", slots=1)
    first = run(cmdr, pi1, 0.50)
    run(cmdr, pi2, 0.25, submitter="bob", model="claude-haiku-4-5")
    dear = run(cmdr, pi1, 1.00, submitter="bob")
    reader = bearer(permissions=["spend:read"])
    body = client.get("/api/spend?group=submitter,node", headers=reader).get_json()
    assert body["group"] == ["submitter", "node"] and body["time_zone"] == "UTC"
    # Served without the model, in its shape: a row names only the keys it is grouped by.
    assert SpendReport.model_validate(body).model_dump(mode="json", exclude_unset=True) == body
    assert [(r["submitter"], r["node"], r["cost_usd"], r["attempts"]) for r in body["rows"]] == [
        ("bob", "pi1", 1.0, 1), ("alice", "pi1", 0.5, 1), ("bob", "pi2", 0.25, 1)]
    assert body["total"]["cost_usd"] == 1.75 and body["total"]["input_tokens"] == 300
    assert "agent" not in body["rows"][0]  # not grouped by it
    by_model = client.get("/api/spend?group=model", headers=reader).get_json()["rows"]
    assert [(r["model"], r["cost_usd"]) for r in by_model] == [("claude-sonnet-5-5", 1.5), ("claude-haiku-4-5", 0.25)]
    totals = client.get("/api/spend", headers=reader).get_json()
    assert totals["rows"] == [] and totals["total"]["attempts"] == 3
    top = client.get("/api/spend/top?n=2", headers=reader).get_json()
    assert [(t["task_id"], t["cost_usd"]) for t in top["tasks"]] == [(dear.id, 1.0), (first.id, 0.5)]
    assert top["first_day"] == top["last_day"] == totals["first_day"]
    # A task counts on the day of its first attempt that spent.
    SpendTask.update(day="2026-11-30").where(SpendTask.task == first.id).execute()
    earlier = client.get("/api/spend/top?from=2026-11-01&to=2026-11-30", headers=reader).get_json()
    assert [t["task_id"] for t in earlier["tasks"]] == [first.id]



def test_by_day_and_agent_read_as_stored_agrees_with_the_sums_of_every_dimension(cmdr, client, bearer):
    configure(cmdr, best_node_wait=0.0)
    pi1, pi2 = join(cmdr, "pi1", slots=1), join(cmdr, "pi2", slots=1)
    for node, cost, agent in ((pi1, 0.1, None), (pi2, 0.2, None), (pi1, 0.7, "researcher"), (pi2, 0.3, None)):
        run(cmdr, node, cost, agent=agent)
    reader = bearer(permissions=["spend:read"])
    rows = client.get("/api/spend?group=day,agent&days=2", headers=reader).get_json()["rows"]
    # By day, then dearest first; the default agent's three attempts on two nodes in one row, its
    # cost rounded to the micro-dollar (0.1 + 0.2 + 0.3 is 0.6000000000000001 in floats).
    assert [(r["agent"], r["cost_usd"], r["attempts"]) for r in rows] == [("researcher", 0.7, 1), ("general", 0.6, 3)]
    by_node = client.get("/api/spend?group=day,agent,node&days=2", headers=reader).get_json()["rows"]
    assert sum(r["cost_usd"] for r in by_node) == pytest.approx(sum(r["cost_usd"] for r in rows))

@pytest.mark.parametrize("query, code", [
    ("group=agent,colour", "invalid_group"), ("group=day,day", "invalid_group"),
    ("from=2026-12-02&to=2026-12-01", "invalid_range"), ("from=2025-01-01&to=2026-12-01", "invalid_range"),
    ("from=2026-02-30", "invalid_day"), ("from=yesterday", "invalid_request"), ("first=2026-12-01", "invalid_request"),
])
def test_a_bad_report_query_is_a_400_naming_what_is_wrong(client, bearer, query, code):
    response = client.get(f"/api/spend?{query}", headers=bearer())
    assert response.status_code == 400 and response.get_json()["error"]["code"] == code


def test_caps_are_set_listed_and_cleared_by_spend_manage_only(cmdr, client, bearer):
    node = join(cmdr, slots=1)
    run(cmdr, node, 0.75, agent="general")
    reader, manager = bearer(permissions=["spend:read"]), bearer(permissions=["spend:manage", "spend:read"])
    cap = dict(scope="agent", name="general", usd=0.5)
    refused = client.put("/api/spend/caps", json=cap, headers=reader)
    assert refused.status_code == 403 and "spend:manage" in refused.get_json()["error"]["message"]
    body = client.put("/api/spend/caps", json=cap, headers=manager).get_json()
    assert body["spent_usd"] == 0.75 and body["at_cap"] == "hold"
    assert body["caps"] == [dict(scope="agent", name="general", cap_usd=0.5, spent_usd=0.75, left_usd=0.0,
                                 source="runtime", held=True)]
    held = client.post("/api/tasks", json=dict(prompt="more"), headers=bearer()).get_json()
    assert held["state"] == "queued" and held["waiting_reason"].startswith("daily cap of $0.50 for agent general")
    assert client.get("/api/spend/caps", headers=reader).get_json()["caps"][0]["held"] is True
    cleared = client.delete("/api/spend/caps?scope=agent&name=general", headers=manager)
    assert cleared.status_code == 200 and cleared.get_json()["caps"] == []
    again = client.delete("/api/spend/caps?scope=agent&name=general", headers=manager)
    assert again.status_code == 404 and again.get_json()["error"]["code"] == "no_cap"



def test_a_token_submitting_for_a_person_keeps_their_spend_and_cap_apart(cmdr, client, bearer):
    configure(cmdr, best_node_wait=0.0)
    node = join(cmdr, slots=1)
    bridge = bearer(role="mobile")
    first = client.post("/api/tasks", json=dict(prompt="hi", on_behalf_of="+15551234567"), headers=bridge).get_json()
    assert first["submitter"] == "api token:test for +15551234567"
    apply(cmdr, node, result(lease_of(cmdr, node, tasks.get(first["id"])), cost_usd=0.4,
                             usage=leases.Usage(input_tokens=10)))
    manager = bearer(permissions=["spend:manage", "spend:read"])
    client.put("/api/spend/caps", json=dict(scope="submitter", name=first["submitter"], usd=0.3), headers=manager)
    held = client.post("/api/tasks", json=dict(prompt="more", on_behalf_of="+15551234567"), headers=bridge).get_json()
    other = client.post("/api/tasks", json=dict(prompt="mine", on_behalf_of="friend@example.com"),
                        headers=bridge).get_json()
    assert held["waiting_reason"].startswith("daily cap of $0.30 for submitter api token:test for +15551234567")
    assert other["state"] == "queued" and other["waiting_reason"] != held["waiting_reason"]
    by_person = client.get("/api/spend?group=submitter", headers=manager).get_json()["rows"]
    assert [(r["submitter"], r["cost_usd"]) for r in by_person] == [("api token:test for +15551234567", 0.4)]
    bad = client.post("/api/tasks", json=dict(prompt="x", on_behalf_of="a\nb"), headers=bridge)
    assert bad.status_code == 400 and Task.select().count() == 3


def test_a_signed_in_user_submits_only_as_themself(cmdr, client, bearer):
    from commander import accounts

    accounts.create_user(cmdr, "alice", "correct horse battery", "mobile", actor="test")
    login = client.post("/api/session", json={"username": "alice", "password": "correct horse battery"}).get_json()
    refused = client.post("/api/tasks", json=dict(prompt="hi", on_behalf_of="bob"),
                          headers={"X-CSRF-Token": login["csrf_token"]})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "invalid_on_behalf_of"
    assert Task.select().count() == 0

@pytest.mark.parametrize("cap, code", [
    (dict(scope="all", name="x", usd=1), "invalid_scope"), (dict(scope="agent", usd=1), "invalid_scope"),
    (dict(scope="agent", name="a", usd=0), "invalid_request"), (dict(scope="planet", usd=1), "invalid_request"),
])
def test_a_bad_cap_is_a_400_and_changes_nothing(client, bearer, cap, code):
    response = client.put("/api/spend/caps", json=cap, headers=bearer())
    assert response.status_code == 400 and response.get_json()["error"]["code"] == code
    assert client.get("/api/spend/caps", headers=bearer()).get_json()["caps"] == []


def test_refuse_at_cap_answers_a_submit_with_429_and_retry_after(make_app):
    app = make_app(spend_cap=0.01, spend_at_cap="refuse", time_zone="Europe/Berlin")
    cmdr, client = app.extensions["m3shd"], app.test_client()
    with cmdr.db.connection_context():
        run(cmdr, join(cmdr, slots=1), 0.02)
    with cmdr.db.connection_context(), cmdr.writing(wake=False):
        _, secret = tokens.create("t", actor="test", role="admin")
    response = client.post("/api/tasks", json=dict(prompt="one more"), headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 429
    assert response.get_json()["error"] == dict(
        code="held", message="daily cap of $0.01 for the mesh reached; resets at 00:00 Europe/Berlin")
    assert 0 < int(response.headers["Retry-After"]) <= 25 * 3600
