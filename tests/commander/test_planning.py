"""Planning in process: the plan a dispatcher makes from the queue and the fleet in the database."""

from __future__ import annotations

import time
import uuid

from commander import planning


def register(client, headers, name: str, capabilities: list[str], slots: int = 1) -> int:
    reply = client.post("/api/nodes/register", headers=headers, json={
        "machine_id": uuid.uuid4().hex, "name": name, "capabilities": capabilities, "slots": slots, "runner": "test"})
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()["node_id"]


def submit(client, headers, prompt: str, **fields) -> int:
    reply = client.post("/api/tasks", headers=headers, json={"prompt": prompt, **fields})
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()["id"]


def plan_for(app, waiting: dict[int, frozenset[str]]) -> planning.Handout:
    cmdr = app.extensions["m3shd"]
    with cmdr.db.connection_context():
        return planning.who_should_claim(time.time(), cmdr.settings, waiting, cmdr.ranking)


def test_a_task_is_planned_only_for_a_node_that_has_what_it_requires(app, client, bearer):
    join, admin = bearer(None, ["nodes:join"]), bearer("admin")
    gpu = register(client, join, "gpu-box", ["gpu"])
    plain = register(client, join, "plain-box", [])
    render = submit(client, admin, "render the scene", requires=["gpu"])
    handout = plan_for(app, {gpu: frozenset({"gpu"}), plain: frozenset()})
    assert handout.here.get(gpu) == [render] and plain not in handout.here
    assert plan_for(app, {plain: frozenset()}).here == {}  # alone, the plain node gets nothing ...
    assert plan_for(app, {plain: frozenset()}).elsewhere == {gpu: [render]}  # ... and the task waits for its node


def test_an_empty_queue_plans_nothing(app, client, bearer):
    node = register(client, bearer(None, ["nodes:join"]), "idle-box", [])
    assert plan_for(app, {node: frozenset()}) == planning.Handout({}, {}, None)
