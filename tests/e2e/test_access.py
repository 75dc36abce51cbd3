"""Access control: the authorization matrix, accounts and sessions, tokens, audit, SQL hygiene."""

from __future__ import annotations

import ast
import json
import re
import stat
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from commander.models import User
from commander.passwords import ITERATIONS, hash_password
from commander.permissions import PERMISSIONS, PUBLIC, ROLES
from commander.wake import run_dir_for
from harness import ROOT, Commander, m3shd
from m3shd import wire
from m3shd.client import ApiClient

PASSWORD = "correct horse battery"


def login(cmd: Commander, username: str, password: str = PASSWORD) -> requests.Session:
    """A browser-like client: the cookie jar holds the session, the header carries the CSRF token."""
    browser = requests.Session()
    reply = browser.post(f"{cmd.url}/api/session", json={"username": username, "password": password}, timeout=15)
    assert reply.status_code == 200, reply.text
    browser.headers["X-CSRF-Token"] = reply.json()["csrf_token"]
    return browser


def make_user(cmd: Commander, role: str, password: str = PASSWORD) -> str:
    name = f"{role}-{uuid.uuid4().hex[:8]}"
    cmd.api._send("POST", "/api/users", {"username": name, "password": password, "role": role})
    return name


# --- the matrix ------------------------------------------------------------------------------

def operations(cmd: Commander) -> list[tuple[str, str, str, str]]:
    """(method, path, permission, how) for every route, from the route table via OpenAPI; `how` is
    "node" for a signed node request, "hook" for a webhook (its own secret, no token), else ""."""
    doc = requests.get(f"{cmd.url}/api/openapi.json", timeout=15).json()
    found = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            about = op.get("description", "")
            how = "node" if "X-M3SHD-Signature" in about else "hook" if about.startswith("Webhook:") else ""
            found.append((method.upper(), path, op["x-permission"], how))
    # Logging out ends the matrix's sessions, so it goes last.
    return sorted(found, key=lambda op: (op[:2] == ("DELETE", "/api/session"), op))


@pytest.fixture(scope="module")
def principals(cmd):
    """Every preset as an API token and as a logged-in session, a node's own token, and nobody."""
    node = ApiClient(cmd.url, cmd.join_token).register(machine_id=uuid.uuid4().hex, name="matrix", slots=1)
    found = {"none": dict(kind="none", permissions=set())}
    for role in ROLES:
        found[f"token:{role}"] = dict(kind="token", permissions=set(ROLES[role]), token=cmd.token(f"m-{role}", role=role))
        found[f"session:{role}"] = dict(kind="session", permissions=set(ROLES[role]), browser=login(cmd, make_user(cmd, role)))
    found["node"] = dict(kind="node", permissions={"work:execute"},
                         token=node["node_token"], key=bytes.fromhex(node["signing_key"]), node_id=node["node_id"])
    return found


def call(cmd: Commander, who: dict, method: str, path: str) -> requests.Response:
    path = re.sub(r"\{node_id\}", str(who.get("node_id", 999_999)), path)
    path = re.sub(r"\{[a-z_]+\}", "999999", path)
    body = b"{}" if method in ("POST", "PUT", "PATCH") else b""
    headers = {"Content-Type": "application/json"} if body else {}
    if "token" in who:
        headers["Authorization"] = f"Bearer {who['token']}"
    if "key" in who:
        headers.update(wire.sign_request(who["key"], method, path, body))
    client = who.get("browser", requests)
    return client.request(method, cmd.url + path, data=body or None, headers=headers, timeout=(5, 2), stream=True)


def test_the_route_table_declares_only_known_permissions(cmd):
    ops = operations(cmd)
    assert len(ops) >= 25
    assert {permission for _, _, permission, _ in ops} <= set(PERMISSIONS) | {PUBLIC}


def test_the_permissions_listed_as_reserved_are_those_no_route_declares(cmd):
    listed = cmd.api._send("GET", "/api/permissions")["permissions"]
    used = {permission for _, _, permission, _ in operations(cmd)} - {PUBLIC}
    assert [p["name"] for p in listed] == list(PERMISSIONS)
    assert used <= {p["name"] for p in listed if not p["reserved"]}
    assert not used & {p["name"] for p in listed if p["reserved"]}


def test_authorization_matrix(cmd, principals):
    """Every route × every preset (token and session) × a node token × no credentials."""
    mistakes = []
    for method, path, permission, how in operations(cmd):
        signed = how == "node"
        for name, who in principals.items():
            if permission == PUBLIC:
                allowed = True
            elif signed:  # work:execute acts only for the node the token belongs to
                allowed = who["kind"] == "node" and permission in who["permissions"]
            elif how == "hook":  # only the hook's own secret gets in; hook 999999 does not exist: 404
                allowed = False
            else:
                allowed = permission in who["permissions"]
            with call(cmd, who, method, path) as response:
                status = response.status_code
                error = response.json().get("error", {}) if status >= 400 else {}
            if permission == PUBLIC and status == 403:
                mistakes.append(f"{name} forbidden a public route {method} {path}: {error}")
            elif permission != PUBLIC and allowed and status in (401, 403):
                mistakes.append(f"{name} refused {method} {path}: {status} {error}")
            elif not allowed:
                expected = 404 if how == "hook" else 401 if who["kind"] == "none" else 403
                if status != expected:
                    mistakes.append(f"{name} got {status} (wanted {expected}) for {method} {path}")
                elif expected == 403 and not signed and f"`{permission}`" not in error.get("message", ""):
                    mistakes.append(f"{name} {method} {path}: refusal does not name {permission}: {error}")
            assert status < 500, f"{name} {method} {path}: {status}"
    assert mistakes == []


# --- accounts and sessions -------------------------------------------------------------------

def test_passwords_are_pbkdf2_with_salt_and_count_and_rehash_upward(cmd):
    name = make_user(cmd, "mobile")
    stored = sqlite_value(cmd, "SELECT password_hash FROM user WHERE username = ?", name)
    algorithm, rounds, salt, digest = stored.split("$")
    assert (algorithm, int(rounds)) == ("pbkdf2_sha256", ITERATIONS) and ITERATIONS >= 600_000
    assert len(salt) >= 21 and PASSWORD not in stored
    twin = make_user(cmd, "mobile")
    assert sqlite_value(cmd, "SELECT password_hash FROM user WHERE username = ?", twin) != stored  # salted
    # A hash from a weaker past is upgraded at the next login.
    sqlite_write(cmd, "UPDATE user SET password_hash = ? WHERE username = ?", hash_password(PASSWORD, 1000), name)
    login(cmd, name)
    assert sqlite_value(cmd, "SELECT password_hash FROM user WHERE username = ?", name).startswith(
        f"pbkdf2_sha256${ITERATIONS}$")


def test_session_cookie_flags_and_csrf(cmd):
    name = make_user(cmd, "mobile")
    reply = requests.post(f"{cmd.url}/api/session", json={"username": name, "password": PASSWORD}, timeout=15)
    cookie = reply.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert ("Secure" in cookie) is cmd.tls  # Secure only over HTTPS (`pytest --tls`); see test_secure_cookie_over_tls
    browser = login(cmd, name)
    csrf = browser.headers.pop("X-CSRF-Token")
    assert browser.get(f"{cmd.url}/api/tasks", timeout=15).status_code == 200  # reading needs no CSRF token
    submit = {"prompt": "from a browser", "requires": ["nowhere"]}
    refused = browser.post(f"{cmd.url}/api/tasks", json=submit, timeout=15)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    wrong = browser.post(f"{cmd.url}/api/tasks", json=submit, headers={"X-CSRF-Token": "x" * 43}, timeout=15)
    assert wrong.status_code == 403
    assert browser.post(f"{cmd.url}/api/tasks", json=submit, headers={"X-CSRF-Token": csrf}, timeout=15).status_code == 201
    # Logging out needs the token too, then the cookie is dead.
    assert browser.delete(f"{cmd.url}/api/session", timeout=15).status_code == 403
    assert browser.delete(f"{cmd.url}/api/session", headers={"X-CSRF-Token": csrf}, timeout=15).status_code == 204
    assert browser.get(f"{cmd.url}/api/session", timeout=15).status_code == 401


def test_secure_cookie_over_tls(make_app):
    app = make_app(allowed_hosts=["commander.example"])  # the name a TLS proxy is reached by
    with app.app_context():
        from commander import accounts

        with app.extensions["m3shd"].db.connection_context():
            accounts.create_user(app.extensions["m3shd"], "tls", PASSWORD, "mobile", "test")
    reply = app.test_client().post("/api/session", json={"username": "tls", "password": PASSWORD},
                                   base_url="https://commander.example")
    assert reply.status_code == 200 and "Secure" in reply.headers["Set-Cookie"]


def test_sessions_expire(tmp_path):
    short = Commander(tmp_path, {"M3SHD_COMMANDER_SESSION_TTL": "1"})
    try:
        name = make_user(short, "mobile")
        browser = login(short, name)
        assert browser.get(f"{short.url}/api/tasks", timeout=15).status_code == 200
        cookie = browser.cookies.get("m3shd_session")
        time.sleep(1.2)
        # A browser drops the expired cookie; the server must refuse it even if it is replayed.
        expired = requests.get(f"{short.url}/api/tasks", cookies={"m3shd_session": cookie}, timeout=15)
        assert expired.status_code == 401 and "log in again" in expired.json()["error"]["message"]
    finally:
        short.stop()


def test_login_throttling_per_account_and_per_address(tmp_path):
    fresh = Commander(tmp_path)
    try:
        victim = make_user(fresh, "mobile")
        for _ in range(5):
            bad = requests.post(f"{fresh.url}/api/session", json={"username": victim, "password": "wrong-password"}, timeout=15)
            assert bad.status_code == 401 and bad.json()["error"]["message"] == "wrong user name or password"
        locked = requests.post(f"{fresh.url}/api/session", json={"username": victim, "password": PASSWORD}, timeout=15)
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
        assert "this account" in locked.json()["error"]["message"]
        # Another account from the same address still works until the address itself is throttled.
        login(fresh, make_user(fresh, "mobile"))
        for i in range(15):  # 5 + 15 = 20 failures from this address
            requests.post(f"{fresh.url}/api/session", json={"username": f"nobody{i}", "password": "x"}, timeout=15)
        spray = requests.post(f"{fresh.url}/api/session", json={"username": make_user(fresh, "mobile"), "password": PASSWORD},
                              timeout=15)
        assert spray.status_code == 429 and "this address" in spray.json()["error"]["message"]
    finally:
        fresh.stop()


def test_parallel_guesses_are_counted_before_any_is_checked(tmp_path):
    """Audit 2, item 4: 40 parallel wrong logins all got 401, none 429, and 29 wrong guesses plus
    the right one in one burst logged in. Each attempt is now counted (in a write transaction)
    before its password is checked, so a burst gets as many checks as the limit allows."""
    from commander.accounts import ACCOUNT_FAILURES

    fresh = Commander(tmp_path)
    try:
        def burst(name: str, passwords: list[str]) -> list[int]:
            """Every request on its own connection, all sent at once."""
            connections = [fresh.http_connection(timeout=60) for _ in passwords]
            for connection in connections:
                connection.connect()
            start = threading.Barrier(len(passwords))

            def attempt(connection, password):
                body = json.dumps({"username": name, "password": password})
                start.wait()
                connection.request("POST", "/api/session", body, {"Content-Type": "application/json"})
                return connection.getresponse().status

            with ThreadPoolExecutor(len(passwords)) as pool:
                statuses = list(pool.map(attempt, connections, passwords))
            for connection in connections:
                connection.close()
            return statuses

        wrong = burst(make_user(fresh, "mobile"), [f"wrong guess {i}" for i in range(40)])
        assert sorted(wrong) == [401] * ACCOUNT_FAILURES + [429] * (40 - ACCOUNT_FAILURES)
        guessed = burst(make_user(fresh, "admin"), [f"wrong guess {i}" for i in range(29)] + [PASSWORD])
        checked = [status for status in guessed if status != 429]
        assert len(checked) == ACCOUNT_FAILURES and set(checked) <= {200, 401}, guessed
    finally:
        fresh.stop()


def test_unknown_and_wrong_passwords_get_the_same_answer(cmd):
    name = make_user(cmd, "mobile")
    unknown = requests.post(f"{cmd.url}/api/session", json={"username": "ghost-user", "password": PASSWORD}, timeout=15)
    wrong = requests.post(f"{cmd.url}/api/session", json={"username": name, "password": "not-the-password"}, timeout=15)
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()


def test_disabling_a_user_ends_its_sessions(cmd):
    name = make_user(cmd, "commander")
    browser = login(cmd, name)
    user_id = next(u["id"] for u in cmd.api._send("GET", "/api/users")["users"] if u["username"] == name)
    cmd.api._send("PATCH", f"/api/users/{user_id}", {"disabled": True})
    assert browser.get(f"{cmd.url}/api/tasks", timeout=15).status_code == 401
    refused = requests.post(f"{cmd.url}/api/session", json={"username": name, "password": PASSWORD}, timeout=15)
    assert refused.status_code == 401


def test_password_hashing_never_holds_the_write_lock(cmd):
    """Hashing runs on a thread; done inside a write transaction it left the lock held while
    other requests in that worker blocked on it, freezing the worker (found by schemathesis)."""
    headers = {"Authorization": f"Bearer {cmd.admin_token}"}

    def create(i):
        return requests.post(f"{cmd.url}/api/users", headers=headers, timeout=30,
                             json={"username": f"crowd-{uuid.uuid4().hex[:6]}-{i}", "password": PASSWORD}).status_code

    def submit(i):
        return requests.post(f"{cmd.url}/api/tasks", headers=headers, timeout=30,
                             json={"prompt": f"meanwhile {i}", "requires": ["nowhere"]}).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda i: (create if i % 3 == 0 else submit)(i), range(36)))
    assert statuses == [201] * 36


def test_user_admin_refuses_weak_passwords_duplicates_and_unknown_roles(cmd):
    name = make_user(cmd, "mobile")
    for body, status in [({"username": name, "password": PASSWORD}, 409),
                         ({"username": "weak", "password": "short"}, 400),
                         ({"username": "bad name", "password": PASSWORD}, 400),
                         ({"username": "role", "password": PASSWORD, "role": "root"}, 400)]:
        reply = requests.post(f"{cmd.url}/api/users", json=body, headers={"Authorization": f"Bearer {cmd.admin_token}"},
                              timeout=15)
        assert reply.status_code == status, (body, reply.text)


def test_a_token_holding_only_admin_cannot_become_full_admin(cmd):
    """Audit 2, item 3, replayed: a token with only `admin` created an admin user, logged in as it
    with all 18 permissions, minted an admin token, and reset the real admin's password."""
    real_admin = make_user(cmd, "admin")
    real_id = next(u["id"] for u in cmd.api._send("GET", "/api/users")["users"] if u["username"] == real_admin)
    users_before = len(cmd.api._send("GET", "/api/users")["users"])
    tokens_before = len(cmd.api.list_tokens())
    admin_only = {"Authorization": f"Bearer {cmd.token('admin-only', permissions='admin')}"}

    created = requests.post(f"{cmd.url}/api/users", headers=admin_only, timeout=15,
                            json={"username": "takeover", "password": PASSWORD, "role": "admin"})
    assert created.status_code == 403 and "create a user with the admin role" in created.json()["error"]["message"]
    logged_in = requests.post(f"{cmd.url}/api/session", json={"username": "takeover", "password": PASSWORD}, timeout=15)
    assert logged_in.status_code == 401
    minted = requests.post(f"{cmd.url}/api/tokens", headers=admin_only, json={"name": "root", "role": "admin"},
                           timeout=15)
    assert minted.status_code == 403 and "`tokens:manage`" in minted.json()["error"]["message"]
    reset = requests.patch(f"{cmd.url}/api/users/{real_id}", headers=admin_only, timeout=15,
                           json={"password": "attacker-chosen-password"})
    assert reset.status_code == 403 and f"change user {real_admin} (admin)" in reset.json()["error"]["message"]
    demoted = requests.patch(f"{cmd.url}/api/users/{real_id}", headers=admin_only, json={"disabled": True}, timeout=15)
    assert demoted.status_code == 403

    assert len(cmd.api._send("GET", "/api/users")["users"]) == users_before
    assert len(cmd.api.list_tokens()) == tokens_before + 1  # only the admin-only token made for this test
    login(cmd, real_admin)  # the real admin's password still works


# --- tokens ----------------------------------------------------------------------------------

def test_tokens_expire_and_revoke_everywhere_including_the_event_stream(cmd):
    created = cmd.api.create_token("short-lived", role="mobile", expires_in=1)
    client = ApiClient(cmd.url, created["token"])
    assert client.list_tasks() is not None
    time.sleep(1.2)
    for path in ("/api/tasks", "/api/events"):
        expired = requests.get(cmd.url + path, headers={"Authorization": f"Bearer {created['token']}"}, timeout=15)
        assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]

    kept = cmd.api.create_token("revocable", role="mobile")
    listed = {t["id"]: t for t in cmd.api.list_tokens()}
    assert listed[kept["id"]]["prefix"] == kept["token"][:8] and "token" not in listed[kept["id"]]
    cmd.api.revoke_token(kept["id"])
    for path in ("/api/tasks", "/api/events", "/api/nodes"):
        revoked = requests.get(cmd.url + path, headers={"Authorization": f"Bearer {kept['token']}"}, timeout=15)
        assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]
    assert {t["id"]: t for t in cmd.api.list_tokens()}[kept["id"]]["revoked_at"] is not None


def test_tokens_are_stored_as_hashes_only(cmd):
    created = cmd.api.create_token("hashed", role="mobile")
    db = _db(cmd)
    dump = db.read_bytes() + db.with_name(db.name + "-wal").read_bytes()  # WAL mode: fresh rows are here
    assert created["token"].encode() not in dump
    assert wire.sha256_hex(created["token"].encode()).encode() in dump


def test_a_token_with_no_permissions_is_refused(cmd):
    created = cmd.api.create_token("emptied", role="mobile")
    sqlite_write(cmd, "UPDATE token SET permissions = '[]' WHERE id = ?", created["id"])
    for path in ("/api/tasks", "/api/events", "/api/nodes"):
        reply = requests.get(cmd.url + path, headers={"Authorization": f"Bearer {created['token']}"}, timeout=15)
        assert reply.status_code == 401 and "no permissions" in reply.json()["error"]["message"]


def test_join_tokens_expire_after_a_day_unless_told(cmd):
    created = cmd.api.create_token("new pi", kind="join")
    assert abs(created["expires_at"] - (time.time() + 86_400)) < 60
    longer = cmd.api.create_token("rack", kind="join", expires_in=7 * 86_400)
    assert abs(longer["expires_at"] - (time.time() + 7 * 86_400)) < 60
    assert cmd.api.create_token("person", role="mobile")["expires_at"] is None


def test_worker_tokens_enrol_machines_for_a_day_unless_told(cmd):
    """A worker token holds nodes:join, as a join token does, and sits in a machine's config too."""
    local = json.loads(m3shd("token", "create", "local-pi", "--local", "--json", "--role", "worker",
                             env=cmd.env).stdout)
    for created in (cmd.api.create_token("pi-fleet", role="worker"), local,
                    cmd.api.create_token("enrol-only", permissions=["nodes:join"])):
        assert abs(created["expires_at"] - (time.time() + 86_400)) < 60, created
    longer = cmd.api.create_token("pi-fleet-for-a-week", role="worker", expires_in=7 * 86_400)
    assert abs(longer["expires_at"] - (time.time() + 7 * 86_400)) < 60
    for role in ("commander", "admin"):  # an operator's token (admin's holds nodes:join too) never expires
        assert cmd.api.create_token(f"operator-{role}", role=role)["expires_at"] is None


# --- secrets at rest -------------------------------------------------------------------------

def test_node_keys_are_encrypted_and_key_files_private(cmd):
    node = ApiClient(cmd.url, cmd.join_token).register(machine_id=uuid.uuid4().hex, name="sealed", slots=1)
    db = _db(cmd)
    dump = db.read_bytes() + db.with_name(db.name + "-wal").read_bytes()
    assert node["signing_key"].encode() not in dump and node["node_token"].encode() not in dump
    stored = sqlite_value(cmd, "SELECT signing_key FROM node WHERE id = ?", node["node_id"])
    assert stored.startswith("gAAAAA")  # a Fernet token
    assert oct((db.parent / "keyring").stat().st_mode & 0o777) == "0o600"


def test_what_the_commander_writes_in_its_data_dir_is_readable_by_it_alone(commander, spawn_n0d3):
    """Every file and socket 0600, every directory 0700, after a real start and some traffic;
    database files an older version left readable to others are made private at the next start."""
    data = Path(commander.env["M3SHD_DATA_DIR"]) / "commander"
    run_dir = run_dir_for(str(data))
    spawn_n0d3("busy")

    def traffic_then_modes() -> dict[str, str]:
        assert commander.wait_task(commander.api.submit_task("some traffic")["id"])["state"] == "succeeded"
        login(commander, make_user(commander, "mobile"))
        found = {}
        for path in [data, *data.rglob("*"), run_dir, *run_dir.iterdir()]:
            mode = path.lstat().st_mode
            found[str(path.relative_to(path.anchor))] = (stat.S_IFMT(mode), oct(stat.S_IMODE(mode)))
        return found

    for start in ("first start", "after a start over files another version made"):
        found = traffic_then_modes()
        names = {Path(path).name for path in found}
        assert {"commander.db", "commander.db-wal", "commander.db-shm", "keyring", "reaper.lock",
                "write.lock"} <= names, (start, names)
        assert any(name.startswith("wake-") for name in names)
        loose = {path: mode for path, (kind, mode) in found.items()
                 if mode != ("0o700" if kind == stat.S_IFDIR else "0o600")}
        assert loose == {}, start
        commander.stop()
        for name in ("commander.db", "commander.db-wal", "commander.db-shm"):
            (data / name).chmod(0o644)
        commander.start()


# --- audit -----------------------------------------------------------------------------------

def test_the_audit_log_records_who_what_when_and_where(cmd):
    started = time.time()
    name = make_user(cmd, "mobile")
    login(cmd, name)
    requests.post(f"{cmd.url}/api/session", json={"username": name, "password": "wrong-password"}, timeout=15)
    token = cmd.api.create_token("audited", role="mobile")
    cmd.api.revoke_token(token["id"])
    user_id = next(u["id"] for u in cmd.api._send("GET", "/api/users")["users"] if u["username"] == name)
    cmd.api._send("PATCH", f"/api/users/{user_id}", {"role": "commander", "password": "another-long-password"})
    node = ApiClient(cmd.url, cmd.join_token).register(machine_id=uuid.uuid4().hex, name="doomed", slots=1)
    cmd.api._send("PUT", f"/api/nodes/{node['node_id']}/state", {"state": "paused"})
    cmd.api._send("POST", f"/api/nodes/{node['node_id']}/rotate-key")
    cmd.api._send("DELETE", f"/api/nodes/{node['node_id']}")

    entries = [e for e in cmd.api._send("GET", "/api/audit", params={"limit": 500})["entries"] if e["ts"] >= started]
    seen = {(e["action"], e["target"]) for e in entries}
    for action, target in [("user.created", name), ("login", name), ("login.failed", name),
                           ("user.role", name), ("user.password_reset", name),
                           ("token.created", f"api token {token['id']} audited"),
                           ("token.revoked", f"api token {token['id']} audited"),
                           ("node.registered", f"node {node['node_id']} doomed"),
                           ("node.state", f"node {node['node_id']} doomed"),
                           ("node.rotate_key", f"node {node['node_id']} doomed"),
                           ("node.removed", f"node {node['node_id']} doomed")]:
        assert (action, target) in seen, (action, target)
    by_admin = [e for e in entries if e["action"] == "token.created"]
    assert by_admin[0]["actor"] == "api token:admin" and by_admin[0]["address"] == "127.0.0.1"
    only_failed = cmd.api._send("GET", "/api/audit", params={"action": "login.failed"})["entries"]
    assert only_failed and {e["action"] for e in only_failed} == {"login.failed"}
    mobile = ApiClient(cmd.url, cmd.token("nosy", role="mobile"))
    with pytest.raises(Exception, match="admin"):
        mobile._send("GET", "/api/audit")


# --- hygiene ---------------------------------------------------------------------------------

SQL_CALLS = {"execute_sql", "execute", "executescript", "SQL", "raw"}


def assembled_sql(tree: ast.AST) -> list[int]:
    """Lines where SQL text handed to the database is built from strings at run time."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name not in SQL_CALLS:
            continue
        first = node.args[0]
        built = (isinstance(first, ast.JoinedStr) and any(isinstance(v, ast.FormattedValue) for v in first.values)) \
            or isinstance(first, ast.BinOp) \
            or (isinstance(first, ast.Call) and isinstance(first.func, ast.Attribute) and first.func.attr == "format")
        if built:
            lines.append(node.lineno)
    return lines


def test_no_sql_is_assembled_from_strings():
    offenders = []
    for package in ("m3shd", "commander", "n0d3", "bridge"):
        for path in (ROOT / package).rglob("*.py"):
            offenders += [f"{path.relative_to(ROOT)}:{line}" for line in assembled_sql(ast.parse(path.read_text()))]
    assert offenders == [], "use parameters, not string formatting, for SQL"


def test_the_sql_check_catches_what_it_should():
    bad = ast.parse('db.execute_sql(f"SELECT * FROM t WHERE id = {x}")\n'
                    'db.execute_sql("SELECT * FROM t WHERE id = " + x)\n'
                    'cur.execute("SELECT %s" % x)\nSQL("x {}".format(y))\n')
    good = ast.parse('db.execute_sql("SELECT * FROM t WHERE id = ?", (x,))\nSQL("LOWER(name)")\n')
    assert assembled_sql(bad) == [1, 2, 3, 4] and assembled_sql(good) == []


# --- helpers ---------------------------------------------------------------------------------

def _db(cmd: Commander) -> Path:
    return Path(cmd.env["M3SHD_DATA_DIR"]) / "commander" / "commander.db"


def sqlite_value(cmd: Commander, sql: str, *params):
    import sqlite3

    with sqlite3.connect(_db(cmd)) as conn:
        return conn.execute(sql, params).fetchone()[0]


def sqlite_write(cmd: Commander, sql: str, *params) -> None:
    """Change the database behind the Commander's back, as an attacker with the file could."""
    import sqlite3

    with sqlite3.connect(_db(cmd), timeout=10) as conn:
        conn.execute(sql, params)


def test_user_model_is_what_the_api_reports(cmd):
    """The users listing never carries password material."""
    listed = cmd.api._send("GET", "/api/users")["users"]
    assert listed and all(set(u) == {"id", "username", "role", "created_at", "last_login_at", "disabled"} for u in listed)
    assert User._meta.table_name == "user"
