"""Hostile input against a real Commander: never a 500, never a stack trace, never a state change.

Every refusal is checked three ways: the status, the JSON error shape
`{"error": {"code", "message"}}` (application/json, no traceback), and that what the request
tried to change (tasks, nodes, tokens, a lease) is still as it was.

One Commander serves the whole module. Tests that lease work register their own node with a
capability nobody else has, and every task that is accepted here but must never run is
`parked` (it requires a capability no node has), so tests cannot take each other's work.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
import uuid

import pytest
import requests

import harness
from commander.settings import CommanderSettings
from m3shd import wire
from m3shd.client import ApiClient, NodeClient

PARKED = ["parked"]
MAX_ID = 2**63 - 1  # SQLite's signed 64-bit INTEGER
HUGE = 99999999999999999999  # past it
MAX_BODY = CommanderSettings().max_body_bytes


# --- fixtures and helpers ---------------------------------------------------------------------

def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: requests.Response, status: int, code: str | None = None, says: str | None = None) -> dict:
    """The status, and the one error shape: JSON, exactly {"error": {"code", "message"}}, no traceback."""
    assert response.status_code == status, f"{response.status_code} {response.text[:500]}"
    assert "Traceback" not in response.text
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    document = response.json()
    assert set(document) == {"error"}, document
    error = document["error"]
    assert set(error) == {"code", "message"}, error
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if says is not None:
        assert says in error["message"], error
    return error


def db_path(cmd) -> str:
    return str(cmd.home / "data" / "commander" / "commander.db")


def token_count(cmd) -> int:
    with sqlite3.connect(db_path(cmd)) as db:
        return db.execute("SELECT COUNT(*) FROM token").fetchone()[0]


def state(cmd) -> tuple:
    """What a refused request must not change: how many tasks (and the newest), nodes and tokens."""
    tasks = cmd.api.list_tasks(limit=500)
    return len(tasks), max((t["id"] for t in tasks), default=0), len(cmd.nodes()), token_count(cmd)


def park(cmd, prompt: str = "parked work") -> dict:
    return cmd.api.submit_task(prompt, requires=PARKED)


class FakeNode:
    """A registered node driven by hand: raw signed requests with whatever we want to break."""

    def __init__(self, cmd):
        self.cmd = cmd
        self.cap = f"cap-{uuid.uuid4().hex[:12]}"
        reply = ApiClient(cmd.url, cmd.join_token).register(
            machine_id=f"hostile-{uuid.uuid4().hex}", name=f"hostile-{self.cap}", capabilities=[self.cap], slots=1,
        )
        self.id, self.token, self.key_hex = reply["node_id"], reply["node_token"], reply["signing_key"]
        self.key = bytes.fromhex(self.key_hex)
        self.client = NodeClient(cmd.url, self.id, self.token, self.key_hex)

    def path(self, action: str, node_id: int | None = None) -> str:
        return f"/api/nodes/{self.id if node_id is None else node_id}/{action}"

    def post(self, action: str, body: bytes = b"{}", *, sign_body: bytes | None = None, sign_path: str | None = None,
             send_path: str | None = None, sign_method: str = "POST", now: float | None = None,
             key: bytes | None = None, token: str | None = None, headers: dict | None = None) -> requests.Response:
        path = self.path(action)
        signed = wire.sign_request(key or self.key, sign_method, sign_path or path,
                                   body if sign_body is None else sign_body, now=now)
        merged = {**auth(token or self.token), "Content-Type": "application/json", **signed, **(headers or {})}
        return requests.post(self.cmd.url + (send_path or path), data=body, headers=merged, timeout=15)

    def record(self) -> dict:
        return next(n for n in self.cmd.nodes() if n["id"] == self.id)

    def lease(self, **fields) -> tuple[dict, dict]:
        """A fresh task leased to this node (attempt 1)."""
        self.client.heartbeat(open_slots=1)  # active again if the reaper found it silent
        task = self.cmd.api.submit_task(f"lease for {self.cap}", requires=[self.cap], **fields)
        leases = self.client.claim(1, 0)
        assert [lease["task_id"] for lease in leases] == [task["id"]]
        return task, leases[0]

    def result(self, lease: dict, *, key: bytes | None = None, **fields) -> bytes:
        """A result document for `lease`, signed over its canonical JSON unless `signature` is given."""
        document = dict(task_id=lease["task_id"], attempt=lease["attempt"], lease_token=lease["lease_token"],
                        status="succeeded", output="done", **wire.binding(lease))
        document.update({k: v for k, v in fields.items() if k != "signature"})
        document["signature"] = fields.get("signature") or wire.sign_result(key or self.key, document)
        return wire.canonical_json(document)


@pytest.fixture
def node(cmd):
    return FakeNode(cmd)


def task_view(cmd, task_id: int) -> tuple:
    t = cmd.api.get_task(task_id)
    return t["state"], t["attempt"], t["node_id"], t["output"], t["error"], t["updated_at"]


def raw_get(cmd, path: str, headers: dict | None = None) -> tuple[int, str, bytes]:
    """GET a path byte for byte (requests would normalise dot segments)."""
    conn = cmd.http_connection(timeout=15)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


# --- request bodies ---------------------------------------------------------------------------

def deep(levels: int) -> bytes:
    return b'{"prompt": ' + b"[" * levels + b"]" * levels + b"}"


MACHINE = "machine-" + "a" * 16
BODY_CASES = [
    # id, route, body (bytes are sent raw, anything else as JSON), status, code
    ("malformed", "tasks", b'{"prompt": "x"', 400, "invalid_json"),
    ("trailing-garbage", "tasks", b'{"prompt": "x"} {}', 400, "invalid_json"),
    ("single-quotes", "tasks", b"{'prompt': 'x'}", 400, "invalid_json"),
    ("not-utf8", "tasks", b'{"prompt": "\xff\xfe"}', 400, "invalid_json"),
    ("whitespace-only", "tasks", b"  \n\t ", 400, "invalid_json"),
    ("form-encoded", "tasks", b"prompt=hello", 400, "invalid_json"),
    ("empty", "tasks", b"", 400, "invalid_request"),
    ("null", "tasks", b"null", 400, "invalid_request"),
    ("array", "tasks", [{"prompt": "x"}], 400, "invalid_request"),
    ("string", "tasks", "prompt", 400, "invalid_request"),
    ("number", "tasks", 5, 400, "invalid_request"),
    ("boolean", "tasks", True, 400, "invalid_request"),
    ("priority-str", "tasks", {"prompt": "x", "priority": "5"}, 400, "invalid_request"),
    ("priority-bool", "tasks", {"prompt": "x", "priority": True}, 400, "invalid_request"),
    ("priority-float", "tasks", {"prompt": "x", "priority": 1.5}, 400, "invalid_request"),
    ("priority-nan", "tasks", b'{"prompt": "x", "priority": NaN}', 400, "invalid_json"),
    ("priority-infinity", "tasks", b'{"prompt": "x", "priority": -Infinity}', 400, "invalid_json"),
    ("max-attempts-float", "tasks", {"prompt": "x", "max_attempts": 2.0}, 400, "invalid_request"),
    ("prompt-int", "tasks", {"prompt": 7}, 400, "invalid_request"),
    ("prompt-null", "tasks", {"prompt": None}, 400, "invalid_request"),
    ("prompt-list", "tasks", {"prompt": ["x"]}, 400, "invalid_request"),
    ("prompt-object", "tasks", {"prompt": {"text": "x"}}, 400, "invalid_request"),
    ("prompt-lone-surrogate", "tasks", b'{"prompt": "\\ud800"}', 400, "invalid_request"),
    ("requires-str", "tasks", {"prompt": "x", "requires": "gpu"}, 400, "invalid_request"),
    ("requires-ints", "tasks", {"prompt": "x", "requires": [1]}, 400, "invalid_request"),
    ("requires-null", "tasks", {"prompt": "x", "requires": None}, 400, "invalid_request"),
    ("model-int", "tasks", {"prompt": "x", "model": 5}, 400, "invalid_request"),
    ("idempotency-int", "tasks", {"prompt": "x", "idempotency_key": 5}, 400, "invalid_request"),
    ("missing-prompt", "tasks", {}, 400, "invalid_request"),
    ("missing-prompt-with-others", "tasks", {"requires": PARKED, "priority": 1}, 400, "invalid_request"),
    ("unknown-field", "tasks", {"prompt": "x", "bogus": 1}, 400, "invalid_request"),
    ("set-state", "tasks", {"prompt": "x", "state": "succeeded"}, 400, "invalid_request"),
    ("set-id", "tasks", {"prompt": "x", "id": 1}, 400, "invalid_request"),
    ("set-submitter", "tasks", {"prompt": "x", "submitted_by": 1}, 400, "invalid_request"),
    ("wrong-case-field", "tasks", {"Prompt": "x"}, 400, "invalid_request"),
    ("priority-high", "tasks", {"prompt": "x", "priority": 101}, 400, "invalid_request"),
    ("priority-low", "tasks", {"prompt": "x", "priority": -101}, 400, "invalid_request"),
    ("priority-huge", "tasks", {"prompt": "x", "priority": 10**30}, 400, "invalid_request"),
    ("max-attempts-0", "tasks", {"prompt": "x", "max_attempts": 0}, 400, "invalid_request"),
    ("max-attempts-21", "tasks", {"prompt": "x", "max_attempts": 21}, 400, "invalid_request"),
    ("prompt-empty", "tasks", {"prompt": ""}, 400, "invalid_request"),
    ("prompt-too-long", "tasks", {"prompt": "x" * 200_001}, 400, "invalid_request"),
    ("requires-too-many", "tasks", {"prompt": "x", "requires": [f"c{i}" for i in range(65)]}, 400, "invalid_request"),
    ("capability-too-long", "tasks", {"prompt": "x", "requires": ["c" * 129]}, 400, "invalid_request"),
    ("model-empty", "tasks", {"prompt": "x", "model": ""}, 400, "invalid_request"),
    ("model-too-long", "tasks", {"prompt": "x", "model": "m" * 129}, 400, "invalid_request"),
    ("idempotency-empty", "tasks", {"prompt": "x", "idempotency_key": ""}, 400, "invalid_request"),
    ("idempotency-too-long", "tasks", {"prompt": "x", "idempotency_key": "k" * 129}, 400, "invalid_request"),
    ("capability-space", "tasks", {"prompt": "x", "requires": ["g pu"]}, 400, "invalid_request"),
    ("capability-newline", "tasks", {"prompt": "x", "requires": ["gpu\n"]}, 400, "invalid_request"),
    ("capability-tab", "tasks", {"prompt": "x", "requires": ["gpu\tx"]}, 400, "invalid_request"),
    ("capability-nul", "tasks", {"prompt": "x", "requires": ["gpu\x00"]}, 400, "invalid_request"),
    ("capability-escape", "tasks", {"prompt": "x", "requires": ["\x1b[31mred"]}, 400, "invalid_request"),
    ("capability-rtl-override", "tasks", {"prompt": "x", "requires": ["gpu\u202e"]}, 400, "invalid_request"),
    ("capability-fullwidth", "tasks", {"prompt": "x", "requires": ["ｇｐｕ"]}, 400, "invalid_request"),
    ("capability-shell", "tasks", {"prompt": "x", "requires": ["gpu;rm"]}, 400, "invalid_request"),
    ("capability-empty", "tasks", {"prompt": "x", "requires": [""]}, 400, "invalid_request"),
    ("nested-500", "tasks", deep(500), 400, "invalid_request"),
    ("nested-100000", "tasks", deep(100_000), 400, "invalid_json"),
    ("nested-array-100000", "tasks", b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
    ("register-short-machine", "register", {"machine_id": "short", "name": "n"}, 400, "invalid_request"),
    ("register-traversal-machine", "register", {"machine_id": "../../etc/passwd", "name": "n"}, 400,
     "invalid_request"),
    ("register-no-name", "register", {"machine_id": MACHINE}, 400, "invalid_request"),
    ("register-empty-name", "register", {"machine_id": MACHINE, "name": ""}, 400, "invalid_request"),
    ("register-slots-0", "register", {"machine_id": MACHINE, "name": "n", "slots": 0}, 400, "invalid_request"),
    ("register-slots-65", "register", {"machine_id": MACHINE, "name": "n", "slots": 65}, 400, "invalid_request"),
    ("register-slots-str", "register", {"machine_id": MACHINE, "name": "n", "slots": "1"}, 400, "invalid_request"),
    ("register-capability-space", "register", {"machine_id": MACHINE, "name": "n", "capabilities": ["a b"]}, 400,
     "invalid_request"),
    ("register-pick-node-id", "register", {"machine_id": MACHINE, "name": "n", "node_id": 1}, 400,
     "invalid_request"),
    ("register-array", "register", [MACHINE], 400, "invalid_request"),
    ("token-empty-name", "tokens", {"name": ""}, 400, "invalid_request"),
    ("token-kind-node", "tokens", {"name": "t", "kind": "node"}, 400, "invalid_request"),
    ("token-role-unknown", "tokens", {"name": "t", "role": "root"}, 400, "invalid_request"),
    ("token-permission-unknown", "tokens", {"name": "t", "permissions": ["root"]}, 400, "invalid_request"),
    ("token-permissions-str", "tokens", {"name": "t", "permissions": "admin"}, 400, "invalid_request"),
    ("token-permissions-empty", "tokens", {"name": "t", "permissions": []}, 400, "invalid_request"),
    ("token-expires-0", "tokens", {"name": "t", "expires_in": 0}, 400, "invalid_request"),
    ("token-expires-negative", "tokens", {"name": "t", "expires_in": -5}, 400, "invalid_request"),
    ("token-expires-str", "tokens", {"name": "t", "expires_in": "60"}, 400, "invalid_request"),
    ("token-expires-too-far", "tokens", {"name": "t", "expires_in": 1e12}, 400, "invalid_request"),
    ("token-expires-infinity", "tokens", b'{"name": "t", "expires_in": Infinity}', 400, "invalid_json"),
    ("token-expires-nan", "tokens", b'{"name": "t", "expires_in": NaN}', 400, "invalid_json"),
    ("token-choose-secret", "tokens", {"name": "t", "token": "m3a_mine"}, 400, "invalid_request"),
]


@pytest.mark.parametrize("route, body, status, code", [pytest.param(*rest, id=name) for name, *rest in BODY_CASES])
def test_hostile_body_is_refused_and_changes_nothing(cmd, route, body, status, code):
    path, token = {"tasks": ("/api/tasks", cmd.admin_token), "register": ("/api/nodes/register", cmd.join_token),
                   "tokens": ("/api/tokens", cmd.admin_token)}[route]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    before = state(cmd)
    response = requests.post(cmd.url + path, data=data, headers={**auth(token), "Content-Type": "application/json"},
                             timeout=15)
    assert_error(response, status, code)
    assert state(cmd) == before


# --- accepted edge cases: what the code decides ------------------------------------------------

@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_valid_json_under_another_content_type_is_415(cmd, content_type):
    """Only a body declared as JSON is read as JSON: text/plain and forms are what a page of another
    site can send without a CORS preflight (audit 2, item 6)."""
    headers = auth(cmd.admin_token) | ({"Content-Type": content_type} if content_type else {})
    body = json.dumps({"prompt": f"typed {content_type}", "requires": PARKED}).encode()
    before = state(cmd)
    response = requests.post(cmd.url + "/api/tasks", data=body, headers=headers, timeout=15)
    assert_error(response, 415, "unsupported_media_type", says="Content-Type: application/json")
    assert state(cmd) == before


@pytest.mark.parametrize("prompt", [
    "héllo wörld ✓ 🚀 中文 עברית",
    "nul\x00inside\x00",
    "control \x01\x1b[31m\x7f and \u202e override",
    "\ufeffbom and \u2028 line separator",
    "x" * 200_000,  # the longest prompt allowed
], ids=["unicode", "nul", "controls", "bom-separators", "max-length"])
def test_unusual_but_valid_prompts_are_stored_intact(cmd, prompt):
    response = requests.post(cmd.url + "/api/tasks", json={"prompt": prompt, "requires": PARKED},
                             headers=auth(cmd.admin_token), timeout=15)
    assert response.status_code == 201, response.text[:300]
    task_id = response.json()["id"]
    assert response.json()["prompt"] == prompt
    assert cmd.api.get_task(task_id)["prompt"] == prompt
    listed = next(t for t in cmd.api.list_tasks(limit=500) if t["id"] == task_id)
    assert listed["prompt"] == prompt


def test_boundary_values_are_accepted(cmd):
    for priority, attempts in ((100, 1), (-100, 20)):
        response = requests.post(cmd.url + "/api/tasks", headers=auth(cmd.admin_token), timeout=15, json={
            "prompt": "edge", "requires": PARKED, "priority": priority, "max_attempts": attempts,
            "model": "m" * 128, "idempotency_key": f"{uuid.uuid4().hex}".ljust(128, "k"),
        })
        assert response.status_code == 201, response.text
        assert (response.json()["priority"], response.json()["max_attempts"]) == (priority, attempts)


def test_body_over_the_limit_is_413(cmd):
    before = state(cmd)
    big = json.dumps({"prompt": "x" * (MAX_BODY + 10), "requires": PARKED}).encode()
    response = requests.post(cmd.url + "/api/tasks", data=big, timeout=15,
                             headers={**auth(cmd.admin_token), "Content-Type": "application/json"})
    assert_error(response, 413, "body_too_large", says=str(MAX_BODY))
    assert state(cmd) == before


def test_body_over_the_limit_on_a_signed_route_is_413(cmd, node):
    before = node.record()
    big = json.dumps({"open_slots": 1, "problem": "p" * (MAX_BODY + 10)}).encode()
    assert_error(node.post("heartbeat", big), 413, "body_too_large")
    after = node.record()
    assert (after["last_seen"], after["problem"]) == (before["last_seen"], before["problem"])


@pytest.mark.parametrize("size", [0, MAX_BODY + 4096], ids=["small", "over-the-limit"])
def test_chunked_body_is_411(cmd, size):
    """Without a Content-Length the size limit cannot be enforced up front (werkzeug would silently cut
    the body at the limit), so chunked bodies are refused whatever their size."""
    before = state(cmd)
    document = json.dumps({"prompt": "chunked", "requires": PARKED}).encode() + b" " * size

    def chunks():
        for start in range(0, len(document), 65536):
            yield document[start:start + 65536]

    response = requests.post(cmd.url + "/api/tasks", data=chunks(), timeout=15,
                             headers={**auth(cmd.admin_token), "Content-Type": "application/json"})
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert_error(response, 411, "length_required")
    assert state(cmd) == before


# --- query strings, routes, methods -----------------------------------------------------------

QUERY_CASES = [
    ("/api/tasks?limit=0", "limit"),
    ("/api/tasks?limit=501", "limit"),
    ("/api/tasks?limit=-1", "limit"),
    ("/api/tasks?limit=abc", "limit"),
    ("/api/tasks?limit=1.5", "limit"),
    ("/api/tasks?limit=", "limit"),
    ("/api/tasks?limit=%00", "limit"),
    ("/api/tasks?limit=%FF", "limit"),
    ("/api/tasks?state=bogus", "state"),
    ("/api/tasks?state=QUEUED", "state"),
    ("/api/tasks?state=", "state"),
    ("/api/tasks?node_id=0", "node_id"),
    ("/api/tasks?node_id=abc", "node_id"),
    ("/api/tasks?before_id=-5", "before_id"),
    ("/api/tasks?bogus=1", "bogus"),
    ("/api/tasks?limit=1&limit=2", "more than once"),
    ("/api/tasks?state=queued&state=failed", "more than once"),
    ("/api/tasks/1?wait=abc", "wait"),
    ("/api/tasks/1?wait=-1", "wait"),
    ("/api/tasks/1?wait=301", "wait"),
    ("/api/tasks/1?wait=nan", "wait"),
    ("/api/tasks/1?wait=inf", "wait"),
    ("/api/tasks/1?wait=1&wait=2", "more than once"),
    ("/api/tasks/1?timeout=5", "timeout"),
    ("/api/events?after=-1", "after"),
    ("/api/events?after=abc", "after"),
    ("/api/events?after=1&after=2", "more than once"),
]


@pytest.mark.parametrize("path, names", QUERY_CASES, ids=[c[0].split("/api/")[1] for c in QUERY_CASES])
def test_bad_query_values_are_400(cmd, path, names):
    park(cmd)  # so /api/tasks/1 exists
    response = requests.get(cmd.url + path, headers=auth(cmd.admin_token), timeout=15)
    assert_error(response, 400, "invalid_request", says=names)


# Outside /api is the dashboard, whose 404 is a page (tests/e2e/test_dashboard.py).
UNKNOWN_ROUTES = [
    "/api/nope", "/api", "/api/", "/api/tasks/abc", "/api/tasks/-1", "/api/tasks/1.5",
    "/api/tasks/0x1", "/api/tasks/%00", "/api/tasks/1/extra", "/api/nodes/1/heartbeat/more", "/api/TASKS",
]


@pytest.mark.parametrize("path", UNKNOWN_ROUTES)
def test_unknown_routes_are_json_404(cmd, path):
    assert_error(requests.get(cmd.url + path, headers=auth(cmd.admin_token), timeout=15), 404, "not_found")


def test_missing_ids_are_json_404(cmd):
    for path in ("/api/tasks/0", "/api/tasks/987654321", "/api/nodes/987654321"):
        assert_error(requests.get(cmd.url + path, headers=auth(cmd.admin_token), timeout=15), 404, "not_found")
    before = state(cmd)
    assert_error(requests.post(cmd.url + "/api/tasks/987654321/cancel", headers=auth(cmd.admin_token), timeout=15),
                 404, "not_found", says="987654321")
    response = requests.put(cmd.url + "/api/nodes/987654321/state", json={"state": "paused"},
                            headers=auth(cmd.admin_token), timeout=15)
    assert_error(response, 404, "not_found")
    assert state(cmd) == before


TRAVERSALS = [
    "/api/tasks/../tokens", "/api/tasks/..%2F..%2Fetc%2Fpasswd", "/api/tasks/%2e%2e/nodes", "/api/tasks/1%2F..",
    "/api/../api/tasks", "/api/tasks/1/../2", "/api/nodes/1/..%2f2/heartbeat", "/api/tasks/%2e%2e%2f%2e%2e%2f",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_looking_paths_are_json_404(cmd, path):
    status, content_type, body = raw_get(cmd, path, auth(cmd.admin_token))
    assert status == 404, body
    assert content_type.startswith("application/json")
    assert b"Traceback" not in body
    assert json.loads(body)["error"]["code"] == "not_found"


WRONG_METHODS = [
    ("DELETE", "/api/tasks"), ("PUT", "/api/tasks"), ("PATCH", "/api/tasks/1"), ("DELETE", "/api/tasks/1"),
    ("GET", "/api/tasks/1/cancel"), ("PUT", "/api/tokens"), ("GET", "/api/nodes/register"),
    ("GET", "/api/nodes/1/heartbeat"), ("POST", "/api/nodes/1/state"), ("POST", "/api/health"),
    ("POST", "/api/events"), ("POST", "/api/nodes/1"), ("PUT", "/api/session"),
]


@pytest.mark.parametrize("method, path", WRONG_METHODS, ids=[f"{m} {p}" for m, p in WRONG_METHODS])
def test_wrong_methods_are_json_405(cmd, method, path):
    park(cmd)
    before = state(cmd)
    response = requests.request(method, cmd.url + path, headers=auth(cmd.admin_token), json={"prompt": "x"},
                                timeout=15)
    assert_error(response, 405, "method_not_allowed")
    assert state(cmd) == before


@pytest.mark.parametrize("method, path, status", [
    ("GET", f"/api/tasks/{HUGE}", 404),
    ("POST", f"/api/tasks/{HUGE}/cancel", 404),
    ("GET", f"/api/nodes/{HUGE}", 404),
    ("PUT", f"/api/nodes/{HUGE}/state", 404),
    ("GET", f"/api/tasks/{MAX_ID + 1}", 404),
    ("GET", f"/api/tasks/{MAX_ID}", 404),  # the largest id there can be: simply no such task
    ("GET", f"/api/tasks?before_id={HUGE}", 400),
    ("GET", f"/api/tasks?node_id={HUGE}", 400),
    ("GET", f"/api/tasks?before_id={MAX_ID + 1}", 400),
    ("GET", f"/api/events?after={HUGE}", 400),
], ids=["get-task", "cancel-task", "get-node", "node-state", "get-task-max+1", "get-task-max", "before_id",
        "node_id", "before_id-max+1", "events-after"])
def test_ids_past_the_database_range_are_refused_not_a_500(cmd, method, path, status):
    """Ids beyond SQLite's INTEGER once reached the database and answered 500 (OverflowError)."""
    before = state(cmd)
    response = requests.request(method, cmd.url + path, headers=auth(cmd.admin_token), json={"state": "paused"},
                                timeout=15, stream=True)
    with response:
        assert_error(response, status, "not_found" if status == 404 else "invalid_request")
    assert state(cmd) == before


def test_largest_id_is_a_valid_query(cmd):
    response = requests.get(cmd.url + f"/api/tasks?before_id={MAX_ID}&limit=1", headers=auth(cmd.admin_token),
                            timeout=15)
    assert response.status_code == 200
    assert response.json()["tasks"][0]["id"] == max(t["id"] for t in cmd.api.list_tasks(limit=500))


def test_huge_values_in_bounded_fields_are_400(cmd):
    """Where the schema does bound a number, a huge one is an ordinary 400."""
    for path in (f"/api/tasks?limit={HUGE}", f"/api/tasks/1?wait={HUGE}"):
        assert_error(requests.get(cmd.url + path, headers=auth(cmd.admin_token), timeout=15), 400, "invalid_request")


# --- authentication and permissions -----------------------------------------------------------

@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer    ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer m3a_unknown",
    "Bearer " + "a" * 4000, "Bearer\tm3a_tab",
], ids=["none", "empty", "bearer-only", "bearer-blank", "basic", "other-scheme", "unknown", "long", "tab"])
def test_missing_or_malformed_authorization_is_401(cmd, header):
    before = state(cmd)
    headers = {} if header is None else {"Authorization": header}
    for method, path, body in (("GET", "/api/tasks", None), ("POST", "/api/tasks", {"prompt": "x"})):
        response = requests.request(method, cmd.url + path, headers=headers, json=body, timeout=15)
        assert_error(response, 401, "unauthenticated")
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert state(cmd) == before


def test_token_without_the_scheme_or_altered_is_401(cmd):
    for header in (cmd.admin_token, f"Bearer {cmd.admin_token}x", f"Bearer {cmd.admin_token[:-1]}",
                   f"Bearer {cmd.admin_token.upper()}"):
        assert_error(requests.get(cmd.url + "/api/tasks", headers={"Authorization": header}, timeout=15),
                     401, "unauthenticated")


def test_scheme_is_case_insensitive(cmd):
    """RFC 7235: the auth scheme is case-insensitive; the code lower-cases it."""
    response = requests.get(cmd.url + "/api/tasks", headers={"Authorization": f"bEaReR {cmd.admin_token}"},
                            timeout=15)
    assert response.status_code == 200


def test_authentication_comes_before_body_parsing(cmd):
    before = state(cmd)
    response = requests.post(cmd.url + "/api/tasks", data=b"{not json", timeout=15,
                             headers={"Content-Type": "application/json"})
    assert_error(response, 401, "unauthenticated")
    response = requests.post(cmd.url + "/api/tasks", data=b"{not json", timeout=15,
                             headers={**auth(cmd.join_token), "Content-Type": "application/json"})
    assert_error(response, 403, "forbidden", says="tasks:submit")
    assert state(cmd) == before


def test_expired_token_is_401(cmd):
    created = requests.post(cmd.url + "/api/tokens", headers=auth(cmd.admin_token), timeout=15,
                            json={"name": "short-lived", "role": "mobile", "expires_in": 1})
    assert created.status_code == 201, created.text
    secret, expires_at = created.json()["token"], created.json()["expires_at"]
    assert expires_at is not None and expires_at - time.time() <= 1.5
    assert requests.get(cmd.url + "/api/tasks", headers=auth(secret), timeout=15).status_code == 200
    time.sleep(max(0.0, expires_at - time.time()) + 0.2)
    before = state(cmd)
    assert_error(requests.get(cmd.url + "/api/tasks", headers=auth(secret), timeout=15), 401, "unauthenticated",
                 says="expired")
    assert_error(requests.post(cmd.url + "/api/tasks", headers=auth(secret), json={"prompt": "late"}, timeout=15),
                 401, "unauthenticated", says="expired")
    assert state(cmd) == before


def test_revoked_token_is_401(cmd):
    secret = cmd.token("to-revoke", role="mobile")
    assert requests.get(cmd.url + "/api/tasks", headers=auth(secret), timeout=15).status_code == 200
    # There is no revoke route yet: mark it revoked where the Commander keeps it.
    with sqlite3.connect(db_path(cmd)) as db:
        changed = db.execute("UPDATE token SET revoked_at = ? WHERE token_hash = ?",
                             (time.time(), hashlib.sha256(secret.encode()).hexdigest())).rowcount
    assert changed == 1
    before = state(cmd)
    assert_error(requests.get(cmd.url + "/api/tasks", headers=auth(secret), timeout=15), 401, "unauthenticated",
                 says="revoked")
    assert_error(requests.post(cmd.url + "/api/tasks", headers=auth(secret), json={"prompt": "x"}, timeout=15),
                 401, "unauthenticated")
    assert state(cmd) == before


def test_join_token_on_task_routes_is_403(cmd):
    task = park(cmd)
    before = state(cmd)
    headers = auth(cmd.join_token)
    assert_error(requests.get(cmd.url + "/api/tasks", headers=headers, timeout=15), 403, "forbidden",
                 says="`tasks:read`")
    assert_error(requests.post(cmd.url + "/api/tasks", headers=headers, json={"prompt": "x"}, timeout=15),
                 403, "forbidden", says="`tasks:submit`")
    assert_error(requests.post(cmd.url + f"/api/tasks/{task['id']}/cancel", headers=headers, timeout=15),
                 403, "forbidden", says="`tasks:cancel`")
    assert_error(requests.post(cmd.url + "/api/tokens", headers=headers, json={"name": "x"}, timeout=15),
                 403, "forbidden", says="`tokens:manage`")
    assert state(cmd) == before
    assert cmd.api.get_task(task["id"])["state"] == "queued"


def test_api_token_lacking_the_permission_is_403_naming_it(cmd):
    reader = cmd.token("reader", permissions="tasks:read")
    task = park(cmd)
    before, before_task = state(cmd), task_view(cmd, task["id"])
    assert requests.get(cmd.url + "/api/tasks", headers=auth(reader), timeout=15).status_code == 200
    for method, path, body, permission in (
        ("POST", "/api/tasks", {"prompt": "x"}, "tasks:submit"),
        ("POST", f"/api/tasks/{task['id']}/cancel", None, "tasks:cancel"),
        ("GET", "/api/nodes", None, "nodes:read"),
        ("PUT", "/api/nodes/1/state", {"state": "paused"}, "nodes:manage"),
        ("POST", "/api/tokens", {"name": "escalate", "role": "admin"}, "tokens:manage"),
        ("POST", "/api/nodes/register", {"machine_id": MACHINE, "name": "n"}, "nodes:join"),
    ):
        response = requests.request(method, cmd.url + path, headers=auth(reader), json=body, timeout=15)
        assert_error(response, 403, "forbidden", says=f"`{permission}`")
    assert state(cmd) == before
    assert task_view(cmd, task["id"]) == before_task


def test_node_token_acts_only_for_its_own_node(cmd):
    a, b = FakeNode(cmd), FakeNode(cmd)
    before_b, before = b.record(), state(cmd)
    drain = json.dumps({"open_slots": 0, "draining": True}).encode()
    # A's token, signed with A's key, for B's path
    response = a.post("heartbeat", drain, sign_path=b.path("heartbeat"), send_path=b.path("heartbeat"))
    assert_error(response, 403, "forbidden", says="own node")
    # A's token with B's key (stolen key, wrong token) is still A's token
    response = a.post("heartbeat", drain, key=b.key, sign_path=b.path("heartbeat"), send_path=b.path("heartbeat"))
    assert_error(response, 403, "forbidden")
    # an id that is nobody's
    response = a.post("heartbeat", drain, sign_path=a.path("heartbeat", 987654), send_path=a.path("heartbeat", 987654))
    assert_error(response, 403, "forbidden")
    # node tokens have no business on the people's API
    assert_error(requests.get(cmd.url + "/api/tasks", headers=auth(a.token), timeout=15), 403, "forbidden",
                 says="`tasks:read`")
    after_b = b.record()
    assert after_b["last_seen"] == before_b["last_seen"] and after_b["state"] != "draining"
    assert state(cmd) == before


def test_non_node_tokens_cannot_use_node_routes(cmd, node):
    before = node.record()
    body = json.dumps({"open_slots": 0, "draining": True}).encode()
    # admin holds work:execute but is no node
    assert_error(node.post("heartbeat", body, token=cmd.admin_token), 403, "forbidden", says="own node")
    assert_error(node.post("heartbeat", body, token=cmd.join_token), 403, "forbidden", says="`work:execute`")
    after = node.record()
    assert after["last_seen"] == before["last_seen"] and after["state"] != "draining"


# --- node request signatures ------------------------------------------------------------------

DRAIN = json.dumps({"open_slots": 0, "draining": True}).encode()
SIGNATURE_CASES = {  # case -> the node.post options that break it (built when the test runs)
    "no-headers": lambda n: dict(headers={wire.HEADER_TIMESTAMP: None, wire.HEADER_NONCE: None,
                                          wire.HEADER_SIGNATURE: None}),
    "no-timestamp": lambda n: dict(headers={wire.HEADER_TIMESTAMP: None}),
    "no-nonce": lambda n: dict(headers={wire.HEADER_NONCE: None}),
    "no-signature": lambda n: dict(headers={wire.HEADER_SIGNATURE: None}),
    "bad-signature": lambda n: dict(headers={wire.HEADER_SIGNATURE: "0" * 64}),
    "signature-not-hex": lambda n: dict(headers={wire.HEADER_SIGNATURE: "zz"}),
    "other-key": lambda n: dict(key=b"k" * 32),
    "body-tampered": lambda n: dict(sign_body=json.dumps({"open_slots": 1}).encode()),
    "path-changed": lambda n: dict(sign_path=n.path("claim")),
    "query-added": lambda n: dict(send_path=n.path("heartbeat") + "?x=1"),
    "method-changed": lambda n: dict(sign_method="PUT"),
    "skew-past": lambda n: dict(now=time.time() - 400),
    "skew-future": lambda n: dict(now=time.time() + 400),
}
MALFORMED_SIGNATURE_HEADERS = {  # case -> headers that break their format: a bad request, 400
    "nonce-short": {wire.HEADER_NONCE: "abc"},
    "nonce-too-long": {wire.HEADER_NONCE: "a" * 65},
    "nonce-punctuation": {wire.HEADER_NONCE: "abcd-efgh-ijkl"},
    "timestamp-letters": {wire.HEADER_TIMESTAMP: "12ab"},
    "timestamp-negative": {wire.HEADER_TIMESTAMP: "-5"},
    "timestamp-float": {wire.HEADER_TIMESTAMP: "1.7e9"},
    "timestamp-superscript": {wire.HEADER_TIMESTAMP: "\u00b2"},
    "timestamp-400-digits": {wire.HEADER_TIMESTAMP: "9" * 400},  # was a 500: OverflowError in the skew check
    "timestamp-huge": {wire.HEADER_TIMESTAMP: "9" * 5000},
}


@pytest.mark.parametrize("case", list(SIGNATURE_CASES) + list(MALFORMED_SIGNATURE_HEADERS))
def test_bad_request_signatures_are_refused_and_change_nothing(cmd, node, case):
    malformed = MALFORMED_SIGNATURE_HEADERS.get(case)
    options = dict(headers=malformed) if malformed else SIGNATURE_CASES[case](node)
    before = node.record()
    status, code = (400, "invalid_request") if malformed else (401, "bad_signature")
    assert_error(node.post("heartbeat", DRAIN, **options), status, code)
    after = node.record()
    assert after["last_seen"] == before["last_seen"]
    assert after["state"] != "draining" and after["open_slots"] == before["open_slots"]


def test_signature_within_the_skew_window_is_accepted(node):
    response = node.post("heartbeat", json.dumps({"open_slots": 1}).encode(), now=time.time() - 200)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "active"


def test_replayed_request_is_401(cmd, node):
    body = json.dumps({"open_slots": 1}).encode()
    path = node.path("heartbeat")
    headers = {**auth(node.token), "Content-Type": "application/json",
               **wire.sign_request(node.key, "POST", path, body)}
    first = requests.post(cmd.url + path, data=body, headers=headers, timeout=15)
    assert first.status_code == 200, first.text
    seen = node.record()["last_seen"]
    second = requests.post(cmd.url + path, data=body, headers=headers, timeout=15)
    assert_error(second, 401, "replayed_request")
    assert node.record()["last_seen"] == seen
    # the same nonce under a fresh timestamp, correctly signed, is still a replay
    ts, nonce = str(int(time.time()) + 1), headers[wire.HEADER_NONCE]
    again = {**headers, wire.HEADER_TIMESTAMP: ts,
             wire.HEADER_SIGNATURE: hmac.new(node.key, wire.request_message(ts, nonce, "POST", path, body),
                                             hashlib.sha256).hexdigest()}
    assert_error(requests.post(cmd.url + path, data=body, headers=again, timeout=15), 401, "replayed_request")
    assert node.record()["last_seen"] == seen


def test_claim_with_a_bad_signature_takes_nothing(cmd, node):
    node.client.heartbeat(open_slots=1)
    task = cmd.api.submit_task("claim me properly", requires=[node.cap])
    body = json.dumps({"open_slots": 1, "wait": 0}).encode()
    assert_error(node.post("claim", body, sign_body=b'{"open_slots":1,"wait":5}'), 401, "bad_signature")
    assert_error(node.post("claim", body, now=time.time() - 400), 401, "bad_signature")
    view = cmd.api.get_task(task["id"])
    assert (view["state"], view["attempt"], view["node_id"]) == ("queued", 0, None)
    # and the task was there to be taken all along
    assert [lease["task_id"] for lease in node.client.claim(1, 0)] == [task["id"]]


@pytest.mark.parametrize("body", [
    {"open_slots": -1}, {"open_slots": 65}, {"open_slots": "1"}, {}, {"open_slots": 1, "bogus": True},
    {"open_slots": 1, "running": [{"task_id": 1, "attempt": 1, "lease_token": "not-a-token"}]},
    {"open_slots": 1, "running": "all"}, {"open_slots": 1, "capabilities": ["has space"]},
    {"open_slots": 1, "draining": "yes"}, [1],
], ids=["negative", "too-many", "str", "missing", "unknown", "bad-lease-token", "running-str", "bad-capability",
        "draining-str", "array"])
def test_signed_heartbeat_with_a_bad_body_is_400_and_changes_nothing(node, body):
    before = node.record()
    data = json.dumps(body).encode()
    assert_error(node.post("heartbeat", data), 400, "invalid_request")
    after = node.record()
    assert (after["last_seen"], after["capabilities"], after["open_slots"]) == (
        before["last_seen"], before["capabilities"], before["open_slots"])


# --- results ----------------------------------------------------------------------------------

def test_result_with_a_bad_signature_is_400(cmd, node):
    task, lease = node.lease()
    before = task_view(cmd, task["id"])
    cases = [
        node.result(lease, signature="0" * 64),
        node.result(lease, key=b"x" * 32),
        # signed, then the output was changed
        node.result(lease).replace(b'"output":"done"', b'"output":"evil"'),
    ]
    for body in cases:
        assert_error(node.post("results", body), 400, "bad_result_signature")
    # a signature that is not even hex is a validation error
    assert_error(node.post("results", node.result(lease, signature="nothex")), 400, "invalid_request")
    assert task_view(cmd, task["id"]) == before
    assert before[:2] == ("leased", 1)


def test_result_signature_covers_defaults_the_node_did_not_send(cmd, node):
    """A result signed without `usage`, then sent with `usage` added, is tampered."""
    task, lease = node.lease()
    document = json.loads(node.result(lease))
    document["usage"] = {"input_tokens": 5}
    assert_error(node.post("results", wire.canonical_json(document)), 400, "bad_result_signature")
    assert task_view(cmd, task["id"])[:2] == ("leased", 1)


def test_result_for_a_task_never_leased_is_409(cmd, node):
    node.client.heartbeat(open_slots=1)
    task = cmd.api.submit_task("never leased", requires=PARKED)
    before = task_view(cmd, task["id"])
    fake = dict(task_id=task["id"], attempt=1, lease_token="a" * 32)
    assert_error(node.post("results", node.result(fake)), 409, "stale_lease", says="queued")
    assert task_view(cmd, task["id"]) == before
    assert before[:3] == ("queued", 0, None)


def test_result_for_a_missing_task_is_404(cmd, node):
    before = state(cmd)
    fake = dict(task_id=987654321, attempt=1, lease_token="a" * 32)
    assert_error(node.post("results", node.result(fake)), 404, "not_found")
    assert state(cmd) == before


def test_result_with_a_wrong_lease_token_or_attempt_is_409(cmd, node):
    task, lease = node.lease()
    before = task_view(cmd, task["id"])
    for changed in (dict(lease, lease_token="b" * 32), dict(lease, attempt=2)):
        assert_error(node.post("results", node.result(changed)), 409, "stale_lease")
    assert task_view(cmd, task["id"]) == before


def test_result_for_another_nodes_lease_is_409(cmd, node):
    other = FakeNode(cmd)
    task, lease = node.lease()
    before = task_view(cmd, task["id"])
    assert_error(other.post("results", other.result(lease)), 409, "stale_lease")
    assert task_view(cmd, task["id"]) == before


def test_stale_attempt_is_409_and_leaves_the_retry_alone(cmd, node):
    task, first = node.lease(max_attempts=3)
    # the runner broke: the task goes back to the queue, then the next claim is attempt 2
    retry = node.post("results", node.result(first, status="failed", infra_failure=True, error="runner crashed"))
    assert retry.status_code == 200, retry.text
    assert retry.json()["task"]["state"] == "queued"
    second = node.client.claim(1, 0)[0]
    assert (second["task_id"], second["attempt"]) == (task["id"], 2)
    before = task_view(cmd, task["id"])
    # the node that "comes back from the dead" with attempt 1
    error = assert_error(node.post("results", node.result(first, output="zombie")), 409, "stale_lease")
    assert "attempt 1" in error["message"]
    assert task_view(cmd, task["id"]) == before
    assert before[:2] == ("leased", 2)


def test_duplicate_accepted_result_is_200_duplicate(cmd, node):
    task, lease = node.lease()
    body = node.result(lease, output="the answer")
    first = node.post("results", body)
    assert first.status_code == 200, first.text
    assert (first.json()["accepted"], first.json()["duplicate"]) == (True, False)
    stored = task_view(cmd, task["id"])
    assert stored[0] == "succeeded" and stored[3] == "the answer"
    again = node.post("results", body)  # same document, new nonce
    assert again.status_code == 200, again.text
    assert (again.json()["accepted"], again.json()["duplicate"]) == (True, True)
    assert again.json()["task"]["output"] == "the answer"
    assert task_view(cmd, task["id"]) == stored


@pytest.mark.parametrize("extra", [{"bogus": 1}, {"node_id": 1}, {"state": "succeeded"}, {"usage": {"bogus": 1}}],
                         ids=["bogus", "node_id", "state", "usage-bogus"])
def test_result_with_extra_fields_is_400(cmd, node, extra):
    task, lease = node.lease()
    before = task_view(cmd, task["id"])
    body = node.result(lease, **extra)  # validly signed, extra field included
    assert_error(node.post("results", body), 400, "invalid_request")
    assert task_view(cmd, task["id"]) == before


@pytest.mark.parametrize("fields", [
    dict(status="done"), dict(attempt=0), dict(output="o" * 900_001), dict(usage={"input_tokens": -1}),
    dict(cost_usd=-0.5), dict(duration_ms="5"), dict(error=7),
], ids=["status", "attempt-0", "output-too-long", "usage-negative", "cost-negative", "duration-str", "error-int"])
def test_result_with_invalid_values_is_400(cmd, node, fields):
    task, lease = node.lease()
    before = task_view(cmd, task["id"])
    assert_error(node.post("results", node.result(lease, **fields)), 400, "invalid_request")
    assert task_view(cmd, task["id"]) == before


@pytest.mark.parametrize("fields", [dict(task_id=HUGE), dict(attempt=HUGE), dict(usage={"input_tokens": HUGE}),
                                    dict(duration_ms=HUGE)], ids=["task_id", "attempt", "usage", "duration_ms"])
def test_result_with_huge_integers_is_not_a_500(cmd, node, fields):
    task, lease = node.lease()
    before = task_view(cmd, task["id"])
    target = dict(lease, task_id=fields.pop("task_id", lease["task_id"]), attempt=fields.pop("attempt", 1))
    assert_error(node.post("results", node.result(target, **fields)), 400, "invalid_request")
    assert task_view(cmd, task["id"]) == before


@pytest.mark.parametrize("value", [float("inf"), float("nan")], ids=["infinity", "nan"])
def test_result_with_a_non_json_number_is_refused(cmd, node, value):
    """Python's json writes Infinity/NaN; they are not JSON (RFC 8259), and a stored `inf` cost once made
    every later read of the task answer `"cost_usd":Infinity`."""
    task, lease = node.lease()
    before = task_view(cmd, task["id"])
    body = node.result(lease, cost_usd=value)  # validly signed over the same bytes
    assert b"Infinity" in body or b"NaN" in body
    assert_error(node.post("results", body), 400, "invalid_json")
    assert task_view(cmd, task["id"]) == before
    for response in (requests.get(cmd.url + f"/api/tasks/{task['id']}", headers=auth(cmd.admin_token), timeout=15),
                     requests.get(cmd.url + "/api/tasks?limit=500", headers=auth(cmd.admin_token), timeout=15)):
        json.loads(response.text, parse_constant=lambda name: pytest.fail(f"{name} in a response"))


def test_result_for_a_cancelled_task_is_409(cmd, node):
    task, lease = node.lease()
    cmd.api.cancel_task(task["id"])
    before = task_view(cmd, task["id"])
    assert_error(node.post("results", node.result(lease, output="too late")), 409, "stale_lease", says="cancelled")
    assert task_view(cmd, task["id"]) == before
    assert before[0] == "cancelled" and before[3] is None


def test_result_for_a_cancelled_retry_is_409(cmd, node):
    """A retry keeps attempt 1's result signature; a result for the cancelled attempt 2 must not pass for
    an accepted duplicate (it once answered 200 accepted=true duplicate=true, never applied)."""
    task, first = node.lease(max_attempts=3)
    retry = node.post("results", node.result(first, status="failed", infra_failure=True, error="runner crashed"))
    assert retry.status_code == 200 and retry.json()["task"]["state"] == "queued"
    second = node.client.claim(1, 0)[0]
    assert second["attempt"] == 2
    cmd.api.cancel_task(task["id"])
    before = task_view(cmd, task["id"])
    response = node.post("results", node.result(second, output="never applied"))
    assert_error(response, 409, "stale_lease")
    assert task_view(cmd, task["id"]) == before
    # nor does attempt 1's own (accepted) result, sent again now
    again = node.post("results", node.result(first, status="failed", infra_failure=True, error="runner crashed"))
    assert_error(again, 409, "stale_lease")
    assert task_view(cmd, task["id"]) == before


# --- events stream ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "1 2", "0x10", "+5"])
def test_bad_last_event_id_is_400(cmd, value):
    response = requests.get(cmd.url + "/api/events", headers={**auth(cmd.admin_token), "Last-Event-ID": value},
                            timeout=15, stream=True)
    with response:
        assert_error(response, 400, "invalid_request", says="Last-Event-ID")


def test_superscript_last_event_id_is_400(cmd):
    """'\u00b2'.isdigit() is true but int() refuses it: this was a 500."""
    status, content_type, body = raw_get(cmd, "/api/events", {**auth(cmd.admin_token), "Last-Event-ID": b"\xb2"})
    assert status == 400, body
    assert json.loads(body)["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("value", [str(HUGE), str(MAX_ID + 1)], ids=["huge", "max+1"])
def test_huge_last_event_id_is_400(cmd, value):
    """This once answered 200 and then broke the stream (OverflowError inside the generator)."""
    response = requests.get(cmd.url + "/api/events", headers={**auth(cmd.admin_token), "Last-Event-ID": value},
                            stream=True, timeout=15)
    with response:
        assert_error(response, 400, "invalid_request", says="Last-Event-ID")


def test_largest_last_event_id_streams(cmd):
    response = requests.get(cmd.url + "/api/events", headers={**auth(cmd.admin_token), "Last-Event-ID": str(MAX_ID)},
                            stream=True, timeout=(5, 1.5))
    with response:
        assert response.status_code == 200
        lines = response.iter_lines(decode_unicode=True)
        assert (next(lines), next(lines)) == ("retry: 2000", "")
        with pytest.raises(requests.exceptions.ConnectionError, match="timed out"):
            next(lines)  # idle and healthy: nothing to say, no broken stream


# --- cross-site requests and DNS rebinding (audit 2, item 6) ----------------------------------

# What a page of another site sends with fetch(url, {method: "POST", mode: "no-cors", body}).
FROM_A_PAGE = {"Origin": "https://evil.example", "Content-Type": "text/plain;charset=UTF-8"}


def pending_count(cmd) -> int:
    with sqlite3.connect(db_path(cmd)) as db:
        return db.execute("SELECT COUNT(*) FROM pending_node").fetchone()[0]


def test_a_web_page_can_neither_lock_an_account_out_nor_ask_to_join(cmd):
    """The audit's replay: five simple POSTs from any web page locked the admin out for 15 minutes
    (and others filled the pending joins). Now none of them reaches a route."""
    name, password = f"admin-{uuid.uuid4().hex[:8]}", "correct horse battery"
    cmd.api._send("POST", "/api/users", {"username": name, "password": password, "role": "admin"})
    before = pending_count(cmd)
    guess = json.dumps({"username": name, "password": "a wrong guess"})
    join = json.dumps({"machine_id": f"evil-{uuid.uuid4().hex}", "name": "evil"})
    for _ in range(5):
        assert_error(requests.post(cmd.url + "/api/session", data=guess, headers=FROM_A_PAGE, timeout=15),
                     403, "cross_origin")
        assert_error(requests.post(cmd.url + "/api/nodes/pending", data=join, headers=FROM_A_PAGE, timeout=15),
                     403, "cross_origin")
        # Without an Origin (a browser that sent none) the body still is not read as JSON.
        assert_error(requests.post(cmd.url + "/api/session", data=guess, timeout=15,
                                   headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")
    assert_error(requests.delete(cmd.url + "/api/session", headers={"Origin": "https://evil.example"}, timeout=15),
                 403, "cross_origin")
    assert pending_count(cmd) == before
    login = requests.post(cmd.url + "/api/session", json={"username": name, "password": password}, timeout=15)
    assert login.status_code == 200, login.text


@pytest.mark.parametrize("host", ["evil.example", f"evil.example:{harness.free_port()}", "127.0.0.1.evil.example"])
def test_a_host_name_that_is_not_the_commanders_is_421(cmd, host):
    """DNS rebinding: a name of the attacker's resolves to the Commander, and the browser sends it."""
    for method, path in (("GET", "/api/health"), ("POST", "/api/session"), ("GET", "/api/session")):
        response = requests.request(method, cmd.url + path, headers={"Host": host}, timeout=15,
                                    json={"username": "admin", "password": "a wrong guess"})
        assert_error(response, 421, "unknown_host", says="allowed_hosts")
    page = requests.get(cmd.url + "/login", headers={"Host": host}, timeout=15)
    assert page.status_code == 421 and "text/html" in page.headers["Content-Type"]
    for own in (f"127.0.0.1:{cmd.port}", f"localhost:{cmd.port}", "localhost"):
        assert requests.get(cmd.url + "/api/health", headers={"Host": own}, timeout=15).status_code == 200


# --- slow bodies and a busy database (audit 2, item 5) ----------------------------------------

def test_slow_bodies_starve_nobody_and_end_in_408(tmp_path):
    """The audit's DoS: 150 connections, each sending headers and 1 byte of a 100-byte body to a
    public route, held every pooled database connection; every request, /api/health included,
    then waited 30 s and got a 500 (and the log 15,750 tracebacks). Bodies are now read before
    any connection is taken, and a body that does not come within body_timeout gets 408."""
    slow = harness.Commander(tmp_path, {"M3SHD_COMMANDER_BODY_TIMEOUT": "6"})
    trickling = []
    try:
        for _ in range(150):
            connection = slow.open_socket(timeout=30)
            connection.sendall(b"POST /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 100\r\n\r\n{")
            trickling.append(connection)
        time.sleep(0.5)  # let the workers take them all in
        health = requests.get(slow.url + "/api/health", timeout=5)  # generous: it answered in milliseconds
        assert health.status_code == 200, health.text
        submitted = requests.post(slow.url + "/api/tasks", json={"prompt": "meanwhile", "requires": PARKED},
                                  headers=auth(slow.admin_token), timeout=5)
        assert submitted.status_code == 201, submitted.text
        statuses = [int(connection.recv(4096).split(b" ", 2)[1]) for connection in trickling]
        assert statuses == [408] * 150
    finally:
        for connection in trickling:
            connection.close()
        slow.stop()
    log = slow.process.text()
    assert "Traceback" not in log and "MaxConnectionsExceeded" not in log, log[-3000:]
