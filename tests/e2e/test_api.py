"""The Commander API behaves as DESIGN.md §3 documents it, against a real Commander under gunicorn.

Two Commanders serve the module: `cmd` has no real N0D3 (nodes are driven by hand through
NodeClient, every task they must not take is `parked` behind a capability no node has), and
`live` has one real N0D3 running the fake `claude`, for cancellation and long-polling reads.
"""

from __future__ import annotations

import json
import queue
import re
import socket
import sqlite3
import threading
import time
import uuid

import pytest
import requests

import harness
from commander.permissions import PERMISSIONS, PUBLIC, ROLES
from m3shd import wire
from m3shd.client import ApiClient, CommanderError, NodeClient

PARKED = ["parked"]


# --- fixtures and helpers ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    started = harness.Commander(tmp_path_factory.mktemp("api-live"))
    worker = harness.N0D3(started, "worker", slots=1)
    try:
        worker.wait_registered()
        yield started, worker
    finally:
        worker.process.stop()
        started.stop()


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: requests.Response, status: int, code: str, says: str | None = None) -> dict:
    assert response.status_code == status, f"{response.status_code} {response.text[:500]}"
    assert response.headers.get("Content-Type", "").startswith("application/json")
    assert "Traceback" not in response.text
    document = response.json()
    assert set(document) == {"error"} and set(document["error"]) == {"code", "message"}, document
    assert document["error"]["code"] == code, document
    if says is not None:
        assert says in document["error"]["message"], document
    return document["error"]


def token_count(cmd) -> int:
    with sqlite3.connect(str(cmd.home / "data" / "commander" / "commander.db")) as db:
        return db.execute("SELECT COUNT(*) FROM token").fetchone()[0]


def post_task(cmd, token: str | None = None, **body) -> requests.Response:
    return requests.post(cmd.url + "/api/tasks", json=body, headers=auth(token or cmd.admin_token), timeout=15)


def list_tasks(cmd, **params) -> list[dict]:
    response = requests.get(cmd.url + "/api/tasks", params=params, headers=auth(cmd.admin_token), timeout=15)
    assert response.status_code == 200, response.text
    return response.json()["tasks"]


class HandNode:
    """A node registered and driven by hand through NodeClient."""

    def __init__(self, cmd, slots: int = 1, machine_id: str | None = None, name: str = "hand"):
        self.cmd = cmd
        self.cap = f"cap-{uuid.uuid4().hex[:12]}"
        self.machine_id = machine_id or f"api-{uuid.uuid4().hex}"
        self.reply = ApiClient(cmd.url, cmd.join_token).register(
            machine_id=self.machine_id, name=name, capabilities=[self.cap], slots=slots)
        self.id = self.reply["node_id"]
        self.client = NodeClient(cmd.url, self.id, self.reply["node_token"], self.reply["signing_key"])

    def record(self) -> dict:
        return next(n for n in self.cmd.nodes() if n["id"] == self.id)

    def submit(self, prompt: str = "hand work", **fields) -> dict:
        return self.cmd.api.submit_task(prompt, requires=[self.cap], **fields)


class EventStream:
    """An SSE connection read line by line on a thread, so every read has a bounded wait."""

    def __init__(self, cmd, after: int | None = None, last_event_id: str | None = None):
        headers = auth(cmd.admin_token) | ({"Last-Event-ID": last_event_id} if last_event_id is not None else {})
        params = {"after": after} if after is not None else None
        self.response = requests.get(cmd.url + "/api/events", headers=headers, params=params, stream=True,
                                     timeout=(5, 60))
        assert self.response.status_code == 200, self.response.text
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.blocks: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        block: dict = {}
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line == "":
                    if block:
                        self.blocks.put(block)
                    block = {}
                elif line.startswith(":"):
                    block.setdefault("comment", line)
                else:
                    field, _, value = line.partition(":")
                    block[field] = value[1:] if value.startswith(" ") else value
        except Exception as exc:  # closed under us
            self.blocks.put({"closed": repr(exc)})

    def next(self, timeout: float = 5.0) -> dict:
        try:
            return self.blocks.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s") from None

    def events_until(self, predicate, timeout: float = 5.0) -> list[dict]:
        """Every event block read up to and including the first one `predicate` accepts."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            block = self.next(max(0.01, deadline - time.monotonic()))
            assert "closed" not in block, block
            if "event" in block:
                block["json"] = json.loads(block["data"])
                seen.append(block)
                if predicate(block):
                    return seen

    def close(self) -> None:
        # Shut the socket first: closing the response alone waits for the reader thread's
        # blocked read, i.e. for the next keep-alive comment (15 s).
        try:
            self.response.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):
            pass
        self.response.close()


def queued_event_for(task_id: int):
    return lambda block: block["event"] == "task.queued" and block["json"]["task_id"] == task_id


# --- tasks ------------------------------------------------------------------------------------

def test_submit_is_201_and_idempotency_key_is_per_token(cmd):
    key = f"key-{uuid.uuid4().hex}"
    count = len(cmd.api.list_tasks(limit=500))
    first = post_task(cmd, prompt="once only", requires=PARKED, idempotency_key=key, priority=7)
    assert first.status_code == 201, first.text
    task = first.json()
    assert (task["state"], task["prompt"], task["priority"], task["attempt"]) == ("queued", "once only", 7, 0)
    assert task["waiting_reason"]  # a queued task says why it is not running

    again = post_task(cmd, prompt="once only", requires=PARKED, idempotency_key=key, priority=7)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == task["id"]
    # a retried submit with other content still returns the first task, unchanged
    changed = post_task(cmd, prompt="something else", requires=PARKED, idempotency_key=key)
    assert changed.status_code == 200 and changed.json()["id"] == task["id"]
    assert changed.json()["prompt"] == "once only"
    assert len(cmd.api.list_tasks(limit=500)) == count + 1

    other_token = cmd.api.create_token("other-submitter", role="mobile")["token"]
    other = post_task(cmd, other_token, prompt="once only", requires=PARKED, idempotency_key=key)
    assert other.status_code == 201, other.text
    assert other.json()["id"] != task["id"]
    other_again = post_task(cmd, other_token, prompt="once only", requires=PARKED, idempotency_key=key)
    assert other_again.status_code == 200 and other_again.json()["id"] == other.json()["id"]

    # without a key every submit is a new task
    plain = [post_task(cmd, prompt="same words", requires=PARKED) for _ in range(2)]
    assert [r.status_code for r in plain] == [201, 201]
    assert plain[0].json()["id"] != plain[1].json()["id"]
    assert len(cmd.api.list_tasks(limit=500)) == count + 4


def test_submit_defaults(cmd):
    task = post_task(cmd, prompt="defaults", requires=["b", "a", "b"]).json()
    assert task["requires"] == ["a", "b"]  # a set, stored sorted
    assert (task["priority"], task["model"], task["max_attempts"], task["node_id"]) == (0, None, 3, None)
    assert task["usage"] == {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0}
    assert cmd.api.get_task(task["id"]) == task


def test_list_filters_and_newest_first(cmd):
    node = HandNode(cmd)
    t1 = node.submit("list one")
    t2 = node.submit("list two", priority=10)
    t3 = node.submit("list three")
    t4 = node.submit("list four")
    [lease] = node.client.claim(1, 0)  # the highest priority first
    assert lease["task_id"] == t2["id"]
    cmd.api.cancel_task(t3["id"])

    leased = list_tasks(cmd, state="leased")
    assert t2["id"] in [t["id"] for t in leased] and {t["state"] for t in leased} == {"leased"}

    everything = list_tasks(cmd, limit=500)
    ids = [t["id"] for t in everything]
    assert ids == sorted(ids, reverse=True), "newest first"
    assert {t1["id"], t2["id"], t3["id"], t4["id"]} <= set(ids)

    assert [t["id"] for t in list_tasks(cmd, node_id=node.id)] == [t2["id"]]
    queued = list_tasks(cmd, state="queued", limit=500)
    assert {t["state"] for t in queued} == {"queued"}
    assert {t1["id"], t4["id"]} <= {t["id"] for t in queued}
    assert not {t2["id"], t3["id"]} & {t["id"] for t in queued}
    cancelled = list_tasks(cmd, state="cancelled", limit=500)
    assert t3["id"] in [t["id"] for t in cancelled] and {t["state"] for t in cancelled} == {"cancelled"}

    before = list_tasks(cmd, before_id=t4["id"], limit=500)
    assert before[0]["id"] == t3["id"]
    assert all(t["id"] < t4["id"] for t in before)
    assert [t["id"] for t in list_tasks(cmd, before_id=t3["id"], limit=1)] == [t2["id"]]
    assert [t["id"] for t in list_tasks(cmd, limit=2)] == ids[:2]
    assert len(list_tasks(cmd)) == min(50, len(everything))  # the default page
    combined = list_tasks(cmd, state="queued", before_id=t4["id"], limit=500)
    assert t1["id"] in [t["id"] for t in combined] and t4["id"] not in [t["id"] for t in combined]
    assert list_tasks(cmd, node_id=987654) == []


def test_cancel_queued_then_final_is_409(cmd):
    task = cmd.api.submit_task("cancel me", requires=PARKED)
    response = requests.post(cmd.url + f"/api/tasks/{task['id']}/cancel", headers=auth(cmd.admin_token), timeout=15)
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert (cancelled["state"], cancelled["error"]) == ("cancelled", "cancelled")
    assert cancelled["finished_at"] is not None
    assert cmd.api.get_task(task["id"]) == cancelled

    again = requests.post(cmd.url + f"/api/tasks/{task['id']}/cancel", headers=auth(cmd.admin_token), timeout=15)
    assert_error(again, 409, "already_final", says="cancelled")
    assert cmd.api.get_task(task["id"]) == cancelled

    # a task that succeeded cannot be cancelled either
    node = HandNode(cmd)
    done = node.submit("finish me")
    [lease] = node.client.claim(1, 0)
    node.client.post_result(dict(task_id=lease["task_id"], attempt=lease["attempt"],
                                 lease_token=lease["lease_token"], status="succeeded", output="finished",
                                 **wire.binding(lease)))
    finished = cmd.api.get_task(done["id"])
    assert finished["state"] == "succeeded"
    refused = requests.post(cmd.url + f"/api/tasks/{done['id']}/cancel", headers=auth(cmd.admin_token), timeout=15)
    assert_error(refused, 409, "already_final", says="succeeded")
    assert cmd.api.get_task(done["id"]) == finished


def test_wait_returns_the_current_state_when_time_runs_out(cmd):
    task = cmd.api.submit_task("nobody runs this", requires=PARKED)
    started = time.monotonic()
    response = requests.get(cmd.url + f"/api/tasks/{task['id']}", params={"wait": 1},
                            headers=auth(cmd.admin_token), timeout=15)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["state"] == "queued"
    assert 0.9 <= elapsed < 3.5, elapsed
    # a final task is answered at once, however long the wait
    cmd.api.cancel_task(task["id"])
    started = time.monotonic()
    response = requests.get(cmd.url + f"/api/tasks/{task['id']}", params={"wait": 30},
                            headers=auth(cmd.admin_token), timeout=40)
    assert response.json()["state"] == "cancelled"
    assert time.monotonic() - started < 2


def test_wait_returns_early_when_the_task_finishes(live):
    cmd, _ = live
    task = cmd.api.submit_task("[sleep=1] early")
    started = time.monotonic()
    response = requests.get(cmd.url + f"/api/tasks/{task['id']}", params={"wait": 30},
                            headers=auth(cmd.admin_token), timeout=40)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["state"] == "succeeded", done
    assert done["output"] == "echo: [sleep=1] early"
    assert 0.9 <= elapsed < 10, elapsed


def test_cancelling_a_running_task_stops_it_on_the_node(live):
    cmd, worker = live
    task = cmd.api.submit_task("[sleep=30] long job")
    cmd.wait_task(task["id"], timeout=15, states=("leased",))
    harness.wait_until(lambda: worker.node()["open_slots"] == 0, 10, what="the N0D3 to report its slot busy")
    assert worker.node()["running"] == 1

    response = requests.post(cmd.url + f"/api/tasks/{task['id']}/cancel", headers=auth(cmd.admin_token), timeout=15)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"
    cancelled_at = time.monotonic()
    # the next heartbeat carries the cancel order; the node ends the process and frees its slot
    harness.wait_until(lambda: (n := worker.node())["open_slots"] == 1 and n["running"] == 0, 5,
                        what="the N0D3 to free its slot")
    assert time.monotonic() - cancelled_at < 5
    assert f"cancelling task {task['id']}" in worker.process.text()
    # the slot really is free: new work runs now, long before the cancelled sleep would end
    after = cmd.api.submit_task("after the cancel")
    assert cmd.api.get_task(after["id"], wait=10)["state"] == "succeeded"
    stopped = cmd.api.get_task(task["id"])
    assert (stopped["state"], stopped["output"]) == ("cancelled", None)


# --- tokens -----------------------------------------------------------------------------------

def create_token(cmd, token: str, **body) -> requests.Response:
    return requests.post(cmd.url + "/api/tokens", json=body, headers=auth(token), timeout=15)


def test_token_with_a_role(cmd):
    response = create_token(cmd, cmd.admin_token, name="phone", role="mobile", expires_in=3600)
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["kind"], created["name"]) == ("api", "phone")
    assert created["permissions"] == sorted(ROLES["mobile"])
    assert created["token"].startswith("m3a_")
    assert abs(created["expires_at"] - (time.time() + 3600)) < 30
    secret = created["token"]
    assert post_task(cmd, secret, prompt="from the phone", requires=PARKED).status_code == 201
    assert_error(requests.put(cmd.url + "/api/nodes/1/state", json={"state": "paused"}, headers=auth(secret),
                              timeout=15), 403, "forbidden", says="`nodes:manage`")
    assert_error(create_token(cmd, secret, name="x", role="mobile"), 403, "forbidden", says="`tokens:manage`")
    # no role, no permissions: the commander role
    default = create_token(cmd, cmd.admin_token, name="default").json()
    assert default["permissions"] == sorted(ROLES["commander"]) and default["expires_at"] is None


def test_token_with_explicit_permissions(cmd):
    response = create_token(cmd, cmd.admin_token, name="reader", permissions=["tasks:read", "tasks:read"])
    assert response.status_code == 201, response.text
    assert response.json()["permissions"] == ["tasks:read"]
    secret = response.json()["token"]
    assert requests.get(cmd.url + "/api/tasks", headers=auth(secret), timeout=15).status_code == 200
    count = len(cmd.api.list_tasks(limit=500))
    assert_error(post_task(cmd, secret, prompt="no"), 403, "forbidden", says="`tasks:submit`")
    assert len(cmd.api.list_tasks(limit=500)) == count


def test_join_token(cmd):
    response = create_token(cmd, cmd.admin_token, kind="join", name="new machines", expires_in=600)
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["kind"], created["permissions"]) == ("join", ["nodes:join"])
    assert created["token"].startswith("m3j_")
    reply = ApiClient(cmd.url, created["token"]).register(machine_id=f"joined-{uuid.uuid4().hex}", name="joined")
    assert reply["node_token"].startswith("m3n_") and len(bytes.fromhex(reply["signing_key"])) == 32
    assert reply["heartbeat_interval"] == 0.3
    assert_error(requests.get(cmd.url + "/api/tasks", headers=auth(created["token"]), timeout=15), 403, "forbidden")


def test_tokens_cannot_grant_what_their_creator_lacks(cmd):
    before = token_count(cmd)
    commander_role = cmd.token("boss", role="commander")
    # the commander role holds no tokens:manage, so it cannot create tokens at all
    assert_error(create_token(cmd, commander_role, name="root", role="admin"), 403, "forbidden",
                 says="`tokens:manage`")
    assert_error(create_token(cmd, commander_role, name="root", permissions=["admin"]), 403, "forbidden")
    manager = create_token(cmd, cmd.admin_token, name="manager", permissions=["tokens:manage", "tasks:read"]).json()
    after_setup = token_count(cmd)
    assert after_setup == before + 2
    error = assert_error(create_token(cmd, manager["token"], name="root", role="admin"), 403, "forbidden",
                         says="cannot grant")
    assert "admin" in error["message"] and "nodes:manage" in error["message"]
    assert_error(create_token(cmd, manager["token"], name="more", permissions=["tasks:read", "tasks:submit"]),
                 403, "forbidden", says="tasks:submit")
    assert_error(create_token(cmd, manager["token"], name="joiner", kind="join"), 403, "forbidden", says="nodes:join")
    assert token_count(cmd) == after_setup
    # within its own permissions it may grant
    fine = create_token(cmd, manager["token"], name="sub-reader", permissions=["tasks:read"])
    assert fine.status_code == 201 and fine.json()["permissions"] == ["tasks:read"]
    assert token_count(cmd) == after_setup + 1


def test_token_with_no_permission_is_400(cmd):
    before = token_count(cmd)
    assert_error(create_token(cmd, cmd.admin_token, name="nothing", permissions=[]), 400, "invalid_request",
                 says="at least one permission")
    assert token_count(cmd) == before


# --- OpenAPI ------------------------------------------------------------------------------------

def refs(value):
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


@pytest.fixture(scope="module")
def openapi_doc(cmd):
    response = requests.get(cmd.url + "/api/openapi.json", timeout=15)  # public: no token
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def test_openapi_document_is_well_formed(openapi_doc):
    doc = openapi_doc
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["title"] and doc["info"]["version"]
    schemas = doc["components"]["schemas"]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    operation_ids = []
    assert doc["paths"]
    for path, item in doc["paths"].items():
        assert path.startswith("/api/"), path
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            assert method in {"get", "post", "put", "patch", "delete"}, where
            assert isinstance(op["summary"], str) and op["summary"], where
            assert op["x-permission"] in PERMISSIONS or op["x-permission"] == PUBLIC, where
            assert op["responses"], where
            for status, response in op["responses"].items():
                assert status == "default" or re.fullmatch(r"[1-5]\d\d", status), where
                assert response["description"], where
            assert any(s.startswith("2") for s in op["responses"]), where
            assert op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
            operation_ids.append(op["operationId"])
            if op["x-permission"] == PUBLIC:
                assert "security" not in op, where
            elif op.get("description", "").startswith("Webhook:"):  # the hook's own secret, no token
                assert op["security"] == [] and op["x-permission"] == "webhooks:ingest", where
            else:
                assert op["security"] == [{"bearer": []}], where
            templated = set(re.findall(r"\{([a-z_]+)\}", path))
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert templated == declared, where
            for parameter in (p for p in op.get("parameters", []) if p["in"] == "path"):
                assert parameter["required"], where
                if parameter["name"] == "name":  # an agent's name: a slug
                    assert parameter["schema"]["type"] == "string", where
                    continue
                # ids are positive and fit the database's INTEGER
                assert parameter["schema"]["type"] == "integer", where
                assert parameter["schema"]["minimum"] == 1 and parameter["schema"]["maximum"] <= 2**63 - 1, where
    assert len(operation_ids) == len(set(operation_ids))
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, f"unresolved {ref}"
    # request models refuse unknown fields, and say so
    submit = doc["paths"]["/api/tasks"]["post"]
    body = schemas[submit["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert body["additionalProperties"] is False and body["required"] == ["prompt"]
    assert submit["x-permission"] == "tasks:submit" and "201" in submit["responses"]
    limit = next(p for p in doc["paths"]["/api/tasks"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["in"], limit["schema"]["minimum"], limit["schema"]["maximum"]) == ("query", 1, 500)


def unguarded(app) -> list[str]:
    """Every URL rule under /api whose view declares no known permission."""
    problems = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api"):
            continue
        spec = getattr(app.view_functions[rule.endpoint], "route_spec", None)
        if spec is None:
            problems.append(f"{rule.rule}: no route_spec")
        elif spec.permission not in PERMISSIONS and spec.permission != PUBLIC:
            problems.append(f"{rule.rule}: unknown permission {spec.permission!r}")
        elif spec.method not in rule.methods or "/api" + spec.rule != rule.rule:
            problems.append(f"{rule.rule}: route_spec describes {spec.method} {spec.rule}")
    return problems


def test_every_api_route_declares_a_permission(app, openapi_doc):
    from commander import openapi

    # The dashboard's pages have a table of their own (tests/e2e/test_dashboard.py); the rest is the API.
    rules = [rule for rule in app.url_map.iter_rules() if not hasattr(app.view_functions[rule.endpoint], "page_spec")]
    assert all(rule.rule.startswith("/api/") for rule in rules), [r.rule for r in rules]
    assert len(rules) >= 12
    assert unguarded(app) == []
    public = sorted(rule.rule for rule in rules if app.view_functions[rule.endpoint].route_spec.permission == PUBLIC)
    # Log in, look, log out; a tokenless machine asking to join, then asking whether it may; and the
    # mesh CA's certificate, which a joining machine fetches and checks against its pinned hash.
    assert public == ["/api/ca", "/api/health", "/api/nodes/pending", "/api/nodes/pending/poll", "/api/openapi.json"] + [
        "/api/session"] * 3
    # the document describes exactly these routes, and the served one is the same document
    documented = {(path, method) for path, item in openapi.document(app)["paths"].items() for method in item}
    expected = {(re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule), method.lower())
                for rule in rules for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == expected
    assert openapi.document(app)["paths"] == openapi_doc["paths"]

    # and the check above does catch a route that skipped the route table
    app.add_url_rule("/api/sneaky", endpoint="sneaky", view_func=lambda: "ok", methods=["GET"])
    assert unguarded(app) == ["/api/sneaky: no route_spec"]


# --- events -----------------------------------------------------------------------------------

def test_events_stream_and_resume(cmd):
    stream = EventStream(cmd, after=0)
    try:
        assert stream.next() == {"retry": "2000"}
        first = cmd.api.submit_task("watched", requires=PARKED)
        seen = stream.events_until(queued_event_for(first["id"]))
        event = seen[-1]
        assert event["id"].isdigit()
        assert event["json"]["id"] == int(event["id"]) and event["json"]["kind"] == "task.queued"
        assert event["json"]["data"]["requires"] == PARKED
        ids = [int(block["id"]) for block in seen]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        second = cmd.api.submit_task("watched too", requires=PARKED)
        later = stream.events_until(queued_event_for(second["id"]))
        assert int(later[-1]["id"]) > int(event["id"])
    finally:
        stream.close()

    # resume: Last-Event-ID wins over the (reconnecting client's unchanged) ?after=0
    resumed = EventStream(cmd, after=0, last_event_id=event["id"])
    try:
        assert resumed.next() == {"retry": "2000"}
        replay = resumed.events_until(queued_event_for(second["id"]))
        assert all(int(block["id"]) > int(event["id"]) for block in replay)
        assert not [b for b in replay if b["event"] == "task.queued" and b["json"]["task_id"] == first["id"]]
    finally:
        resumed.close()

    # no cursor at all: only what happens from now on
    newest = int(replay[-1]["id"])
    fresh = EventStream(cmd)
    try:
        third = cmd.api.submit_task("after connecting", requires=PARKED)
        news = fresh.events_until(queued_event_for(third["id"]))
        assert all(int(block["id"]) > newest for block in news)
    finally:
        fresh.close()


def test_events_bad_last_event_id_is_400(cmd):
    response = requests.get(cmd.url + "/api/events", headers={**auth(cmd.admin_token), "Last-Event-ID": "abc"},
                            stream=True, timeout=15)
    with response:
        assert_error(response, 400, "invalid_request", says="Last-Event-ID")


def test_events_need_tasks_read(cmd):
    response = requests.get(cmd.url + "/api/events", headers=auth(cmd.join_token), stream=True, timeout=15)
    with response:
        assert_error(response, 403, "forbidden", says="`tasks:read`")


# --- node lifecycle ---------------------------------------------------------------------------

def test_a_known_machine_registers_again_only_as_its_node_proving_its_key(cmd):
    first = HandNode(cmd, name="first")
    assert first.client.heartbeat(open_slots=1)["state"] == "active"
    count = len(cmd.nodes())
    # A join token does not make a machine id already on record anyone's: 409, nothing changes.
    with pytest.raises(CommanderError) as refused:
        ApiClient(cmd.url, cmd.join_token).register(
            machine_id=first.machine_id, name="second", capabilities=["other"], slots=2)
    assert (refused.value.status, refused.value.code) == (409, "machine_known")
    assert f"node {first.id} (first)" in refused.value.message and f"m3shd nodes remove {first.id}" in refused.value.message
    assert (first.record()["name"], len(cmd.nodes())) == ("first", count)

    # The node itself, signing with its key, registers again: the same node, token and key.
    again = first.client.register_again(machine_id=first.machine_id, name="second", capabilities=[first.cap, "other"],
                                        slots=2)
    assert (again["node_id"], again["state"]) == (first.id, "active")
    assert (again["capabilities"], again["requested_capabilities"]) == ([first.cap], sorted([first.cap, "other"]))
    record = first.record()
    assert (record["name"], record["slots"], record["capabilities"]) == ("second", 2, [first.cap])
    assert len(cmd.nodes()) == count
    assert first.client.heartbeat(open_slots=2)["state"] == "active"

    # A node keeps its machine id; a token acts only for its own node.
    with pytest.raises(CommanderError) as refused:
        first.client.register_again(machine_id=f"api-{uuid.uuid4().hex}", name="moved")
    assert (refused.value.status, refused.value.code) == (409, "machine_mismatch")
    other = HandNode(cmd, name="other")
    stranger = NodeClient(cmd.url, first.id, other.reply["node_token"], other.reply["signing_key"])
    with pytest.raises(CommanderError) as refused:
        stranger.register_again(machine_id=first.machine_id, name="first")
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    assert first.record()["name"] == "second"


def test_heartbeat_returns_orders(cmd):
    node = HandNode(cmd)
    reply = node.client.heartbeat(open_slots=1)
    assert reply == {"state": "active", "orders": {"drain": False, "pause": False, "cancel": [], "rotate_key": None},
                     "heartbeat_interval": 0.3, "credential": None}   # it asked for no runner credential

    def set_state(state):
        response = requests.put(cmd.url + f"/api/nodes/{node.id}/state", json={"state": state},
                                headers=auth(cmd.admin_token), timeout=15)
        assert response.status_code == 200 and response.json()["state"] == state

    set_state("paused")
    reply = node.client.heartbeat(open_slots=1)
    assert (reply["state"], reply["orders"]["pause"], reply["orders"]["drain"]) == ("paused", True, False)
    assert node.client.claim(1, 0) == []  # a paused node is handed nothing
    set_state("draining")
    reply = node.client.heartbeat(open_slots=1)
    assert (reply["state"], reply["orders"]["pause"], reply["orders"]["drain"]) == ("draining", False, True)
    set_state("active")
    assert node.client.heartbeat(open_slots=1)["orders"] == {"drain": False, "pause": False, "cancel": [],
                                                                "rotate_key": None}

    # a lease the Commander no longer gives this node comes back as a cancel order
    task = node.submit("to be cancelled")
    [lease] = node.client.claim(1, 0)
    ref = dict(task_id=lease["task_id"], attempt=lease["attempt"], lease_token=lease["lease_token"])
    assert node.client.heartbeat(open_slots=0, running=[ref])["orders"]["cancel"] == []
    cmd.api.cancel_task(task["id"])
    assert node.client.heartbeat(open_slots=0, running=[ref])["orders"]["cancel"] == [ref]

    # the node itself says it is shutting down
    reply = node.client.heartbeat(open_slots=1, draining=True)
    assert reply["state"] == "draining" and reply["orders"]["drain"] is True
    assert node.record()["state"] == "draining"


def test_silent_node_is_lost_and_its_leases_return_or_fail(cmd):
    node = HandNode(cmd, slots=2)
    node.client.heartbeat(open_slots=2)
    retried = node.submit("retry me", priority=5, max_attempts=2)
    doomed = node.submit("one chance", priority=5, max_attempts=1)
    waiting = node.submit("wait for a slot")
    leases = node.client.claim(2, 0)  # never more than the open slots asked for
    assert sorted(lease["task_id"] for lease in leases) == sorted([retried["id"], doomed["id"]])
    assert all(lease["attempt"] == 1 for lease in leases)
    claimed_at = time.monotonic()

    # silence: no heartbeats from here on
    harness.wait_until(lambda: node.record()["state"] == "lost", 5, what="the node to be lost")
    harness.wait_until(lambda: cmd.api.get_task(retried["id"])["state"] == "queued", 5,
                        what="the retried task back in the queue")
    harness.wait_until(lambda: cmd.api.get_task(doomed["id"])["state"] == "failed", 5,
                        what="the one-attempt task to fail")
    assert time.monotonic() - claimed_at < 6
    assert cmd.api.get_task(retried["id"])["attempt"] == 1
    failed = cmd.api.get_task(doomed["id"])
    assert "lease expired" in failed["error"] and failed["finished_at"] is not None
    assert cmd.api.get_task(waiting["id"])["state"] == "queued"
    assert node.record()["open_slots"] == 0
    assert node.client.claim(2, 0) == []  # a lost node is handed nothing

    # it comes back: active again, and the retry is attempt 2
    assert node.client.heartbeat(open_slots=2)["state"] == "active"
    again = {lease["task_id"]: lease for lease in node.client.claim(2, 0)}
    assert set(again) == {retried["id"], waiting["id"]}
    assert again[retried["id"]]["attempt"] == 2
    assert cmd.api.get_task(doomed["id"])["state"] == "failed"
