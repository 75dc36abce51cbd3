"""Runner credentials in process (commander/credentials.py and its routes): stored encrypted and
never shown again, chosen per node by scope and kind, sealed to the node and bound to each lease,
and withheld from a node that may not have them."""

from __future__ import annotations

import base64

import pytest

from commander import credentials, leases, nodes
from commander.models import AuditEntry, Node, RunnerCredential
from m3shd import sealing
from m3shd.wire import CredentialKind
from mesh import join, submit

KEY = "sk-ant-api03-" + "K" * 80 + "-mesh"
GPU_KEY = "sk-ant-api03-" + "G" * 80 + "-gpu"
TOKEN = "sk-ant-oat01-" + "T" * 80 + "-cli"
API, OAUTH = CredentialKind.API_KEY, CredentialKind.OAUTH_TOKEN


def sealed_node(cmdr, name: str, capabilities=()) -> tuple[Node, bytes]:
    """A node that registered a seal key, and the private half of it."""
    private, public = sealing.new_private_key()
    return join(cmdr, name, slots=8, capabilities=capabilities, seal_key=public.hex()), private


def claimed(cmdr, node: Node, kinds) -> list[dict]:
    """Claim a fresh task as the claim route does, sealing what the node asked for."""
    submit(cmdr)
    return credentials.seal_into(cmdr, node.id, leases.claim(cmdr, node.id, open_slots=1), kinds)


def opened(node: Node, lease: dict, private: bytes) -> tuple[str, str]:
    given = lease["runner_credential"]
    bound = sealing.context(node.id, lease["task_id"], lease["attempt"], given["kind"])
    return given["kind"], sealing.open_sealed(private, given["sealed"], bound).decode()


# --- the routes ---------------------------------------------------------------------------------

def test_a_stored_key_is_encrypted_and_never_shown_again(app, client, bearer):
    admin = bearer("admin")
    stored = client.post("/api/runners/credentials", json={"kind": "api_key", "secret": KEY}, headers=admin)
    assert stored.status_code == 201, stored.get_json()
    shown = stored.get_json()
    assert shown["scope"] == "mesh" and shown["prefix"] == "sk-ant-api03-" and len(shown["fingerprint"]) == 16
    listed = client.get("/api/runners/credentials", headers=admin)
    assert listed.get_json()["credentials"] == [shown]
    assert KEY not in stored.get_data(as_text=True) + listed.get_data(as_text=True)
    again = client.post("/api/runners/credentials", json={"kind": "api_key", "secret": GPU_KEY}, headers=admin)
    assert again.status_code == 200 and again.get_json()["id"] == shown["id"]   # the scope's key, replaced
    cmdr = app.extensions["m3shd"]
    with cmdr.db.connection_context():
        row = RunnerCredential.get_by_id(shown["id"])
        assert KEY not in row.secret and GPU_KEY not in row.secret
        assert cmdr.box.decrypt(row.secret).decode() == GPU_KEY
        audited = [(e.action, e.details["replaced"]) for e in AuditEntry.select().order_by(AuditEntry.id)
                   if e.action.startswith("runner_credential")]
        assert audited == [("runner_credential.stored", False), ("runner_credential.stored", True)]
        assert not any(KEY in str(e.details) or GPU_KEY in str(e.details) for e in AuditEntry.select())
    assert client.delete(f"/api/runners/credentials/{shown['id']}", headers=admin).status_code == 204
    assert client.get("/api/runners/credentials", headers=admin).get_json()["credentials"] == []
    assert client.delete(f"/api/runners/credentials/{shown['id']}", headers=admin).status_code == 404


@pytest.mark.parametrize("body, status, words", [
    ({"kind": "api_key", "secret": TOKEN}, 400, "Claude Code token, not an API key"),
    ({"kind": "oauth_token", "secret": KEY}, 400, "starts with sk-ant-oat"),
    ({"kind": "api_key", "secret": KEY, "capability": "gpu", "node_id": 1}, 400, "not both"),
    ({"kind": "api_key", "secret": KEY, "node_id": 4242}, 404, "node 4242 does not exist"),
    ({"kind": "api_key", "secret": "sk-ant api03 with spaces in it"}, 400, "secret"),
    ({"kind": "api_key", "secret": "short"}, 400, "secret"),
    ({"kind": "password", "secret": KEY}, 400, "kind"),
])
def test_bad_credentials_are_refused_and_nothing_is_stored(client, bearer, body, status, words):
    reply = client.post("/api/runners/credentials", json=body, headers=bearer("admin"))
    assert reply.status_code == status and words in reply.get_json()["error"]["message"], reply.get_json()
    assert body["secret"] not in reply.get_data(as_text=True)
    assert client.get("/api/runners/credentials", headers=bearer("admin")).get_json()["credentials"] == []


def test_storing_needs_nodes_manage_and_listing_nodes_read(client, bearer):
    body = {"kind": "api_key", "secret": KEY}
    phone = bearer("mobile")   # reads nodes, manages none
    refused = client.post("/api/runners/credentials", json=body, headers=phone)
    assert refused.status_code == 403 and "`nodes:manage`" in refused.get_json()["error"]["message"]
    assert client.get("/api/runners/credentials", headers=phone).status_code == 200
    assert client.get("/api/runners/credentials", headers=bearer("worker")).status_code == 403
    assert client.post("/api/runners/credentials", json=body, headers=bearer("commander")).status_code == 201
    assert client.delete("/api/runners/credentials/1", headers=phone).status_code == 403


# --- which one a node gets ----------------------------------------------------------------------

def test_the_most_specific_scope_wins_then_the_kind_the_node_prefers(cmdr):
    plain, gpu = join(cmdr, "plain", capabilities=["os=linux"]), join(cmdr, "gpu", capabilities=["os=linux", "gpu"])
    credentials.store(cmdr, API, KEY, "test")
    credentials.store(cmdr, API, GPU_KEY, "test", capability="gpu")
    cli, sdk = [OAUTH, API], [API]

    def given(node, kinds):
        found = credentials.entitled(node.id, node.capabilities, kinds)
        return cmdr.box.decrypt(found.secret).decode() if found else None

    assert given(plain, sdk) == KEY and given(gpu, sdk) == GPU_KEY
    assert given(plain, []) is None                                 # it has its own: it asks for none
    credentials.store(cmdr, OAUTH, TOKEN, "test")
    assert given(plain, cli) == TOKEN and given(plain, sdk) == KEY   # a token serves only the CLI
    assert given(gpu, cli) == GPU_KEY                               # its capability's key beats the mesh's token
    credentials.store(cmdr, API, KEY, "test", node_id=gpu.id)
    assert given(gpu, cli) == KEY                                   # and its own beats its capability's


def test_a_lease_carries_the_credential_sealed_to_its_node_and_bound_to_that_lease(cmdr):
    node, private = sealed_node(cmdr, "pi", ["board=pi5"])
    credentials.store(cmdr, API, KEY, "test", capability="board=pi5")
    [lease] = claimed(cmdr, node, [API])
    assert opened(node, lease, private) == (API, KEY)
    assert KEY.encode() not in base64.b64decode(lease["runner_credential"]["sealed"])
    [other] = claimed(cmdr, node, [API])
    assert other["runner_credential"]["sealed"] != lease["runner_credential"]["sealed"]  # a fresh seal per lease
    # Moved into another lease (or said to be another kind), it does not open.
    moved = dict(other, runner_credential=lease["runner_credential"])
    with pytest.raises(sealing.Unsealable):
        opened(node, moved, private)
    with pytest.raises(sealing.Unsealable):
        opened(node, dict(lease, runner_credential=dict(lease["runner_credential"], kind=OAUTH)), private)
    with pytest.raises(sealing.Unsealable):
        opened(node, lease, sealing.new_private_key()[0])   # another node's key
    [own] = claimed(cmdr, node, [])
    assert "runner_credential" not in own                           # a node with its own key gets none
    assert credentials.offer(node.id, "active", [API]) == API
    assert credentials.offer(node.id, "active", [OAUTH]) is None


def test_a_node_without_a_seal_key_or_out_of_service_gets_nothing(cmdr):
    credentials.store(cmdr, API, KEY, "test")
    old = join(cmdr, "old")                                          # a N0D3 from before seal keys
    [lease] = claimed(cmdr, old, [API])
    assert "runner_credential" not in lease
    assert credentials.offer(old.id, "active", [API]) is None

    node, private = sealed_node(cmdr, "pi")
    [taken] = claimed(cmdr, node, [API])
    assert opened(node, taken, private) == (API, KEY)
    nodes.set_state(cmdr, node.id, "disabled", "test")
    # Disabled between handing out a lease and sealing into it: the lease goes without.
    bare = {k: v for k, v in taken.items() if k != "runner_credential"}
    assert credentials.seal_into(cmdr, node.id, [bare], [API]) == [bare]
    assert credentials.offer(node.id, "disabled", [API]) is None
    assert claimed(cmdr, node, [API]) == []                          # and it is handed no lease at all
    nodes.remove(cmdr, node.id, "test")
    assert credentials.seal_into(cmdr, node.id, [bare], [API]) == [bare]


def test_an_unusable_seal_key_gets_nothing_and_breaks_nothing(cmdr):
    credentials.store(cmdr, API, KEY, "test")
    node = join(cmdr, "odd", seal_key="00" * 32)                     # a low-order point: no shared secret
    [lease] = claimed(cmdr, node, [API])
    assert "runner_credential" not in lease and lease["prompt"] == "hello"


def test_the_seal_key_is_given_once_and_never_changed(cmdr):
    node, _ = sealed_node(cmdr, "pi")
    machine = dict(machine_id=node.machine_id, name="pi", slots=8)
    _, other = sealing.new_private_key()
    with pytest.raises(nodes.Conflict, match="seal key"):
        nodes.reregister(cmdr, node.id, nodes.Machine(**machine, seal_key=other.hex()), "test")
    nodes.reregister(cmdr, node.id, nodes.Machine(**machine), "test")   # a N0D3 that says none keeps its key
    assert Node.get_by_id(node.id).seal_key == node.seal_key
    old = join(cmdr, "old")
    nodes.reregister(cmdr, old.id, nodes.Machine(machine_id=old.machine_id, name="old", seal_key=other.hex()),
                     "test")                                         # upgraded: it registers one now
    assert Node.get_by_id(old.id).seal_key == other.hex()


def test_a_node_scoped_credential_goes_with_its_node(cmdr):
    node, _ = sealed_node(cmdr, "pi")
    credentials.store(cmdr, API, KEY, "test", node_id=node.id)
    nodes.remove(cmdr, node.id, "test")
    assert credentials.listing() == []


def test_the_secret_never_reaches_the_database_file_in_plaintext(client, bearer, tmp_path):
    client.post("/api/runners/credentials", json={"kind": "oauth_token", "secret": TOKEN}, headers=bearer("admin"))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".db-wal") or p.name.endswith(".db") for p in files)
    assert not [p for p in files if TOKEN.encode() in p.read_bytes()]


def test_a_capability_the_node_only_asks_for_earns_it_nothing_until_approved(cmdr):
    node, private = sealed_node(cmdr, "pi", ["os=linux"])
    credentials.store(cmdr, API, GPU_KEY, "test", capability="gpu")
    machine = nodes.Machine(machine_id=node.machine_id, name="pi", slots=8, capabilities=["os=linux", "gpu"],
                            seal_key=node.seal_key)
    assert nodes.reregister(cmdr, node.id, machine, "test")["requested_capabilities"] == ["gpu", "os=linux"]
    assert credentials.offer(node.id, "active", [API]) is None
    [lease] = claimed(cmdr, node, [API])
    assert "runner_credential" not in lease
    nodes.approve_capabilities(cmdr, node.id, ["gpu", "os=linux"], "test")
    assert credentials.offer(node.id, "active", [API]) == API
    [lease] = claimed(cmdr, node, [API])
    assert opened(node, lease, private) == (API, GPU_KEY)
