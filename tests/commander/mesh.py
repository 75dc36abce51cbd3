"""A mesh in process: the Commander's services called with plain arguments, as its routes call
them, on the real SQLite file of the `cmdr` fixture (tests/commander/conftest.py)."""

from __future__ import annotations

import uuid
from dataclasses import fields, replace

from nacl.signing import SigningKey

from commander import leases, nodes, provenance as commander_provenance, tasks
from commander.models import Node, Task, now
from m3shd import provenance, wire

SPEC_FIELDS = {field.name for field in fields(tasks.TaskSpec)}


def configure(cmdr, **settings) -> None:
    """Change the Commander's settings for the rest of the test."""
    cmdr.settings = replace(cmdr.settings, **settings)


def join(cmdr, name: str = "n1", slots: int = 4, **machine) -> Node:
    """Register a machine (nodes.Machine fields in `machine`); its node row."""
    registered = nodes.register(cmdr, nodes.Machine(machine_id=f"machine-{name}", name=name, slots=slots, **machine),
                                "test")
    return Node.get_by_id(registered["node_id"])


def join_signing(cmdr, name: str = "n1", **machine) -> tuple[Node, SigningKey]:
    """A node that registered an Ed25519 public key, and its private key (`report`'s signer)."""
    signer = provenance.new_private_key()
    return join(cmdr, name, public_key=provenance.public_key_hex(signer), **machine), signer


def submit(cmdr, prompt: str = "hello", submitter: str = "test", **options) -> Task:
    """A new task; `options` are TaskSpec fields and tasks.submit's keywords alike."""
    spec = tasks.TaskSpec(prompt=prompt, **{k: v for k, v in options.items() if k in SPEC_FIELDS})
    rest = {k: v for k, v in options.items() if k not in SPEC_FIELDS}
    return tasks.submit(cmdr, spec, submitter=submitter, **rest)[0]


def lease_of(cmdr, node: Node, task: Task) -> dict:
    """Claim until `task` is leased to `node` (another queued task may come first)."""
    for lease in leases.claim(cmdr, node.id, open_slots=node.slots):
        if lease["task_id"] == task.id:
            return lease
    raise AssertionError(f"task {task.id} was not leased to node {node.id}")


def result(lease: dict, status: str = "succeeded", **fields) -> leases.Result:
    """A result for `lease` as a node would send it, with a stand-in signature (see `report` for a real one)."""
    return leases.Result(task_id=lease["task_id"], attempt=lease["attempt"], lease_token=lease["lease_token"],
                         status=status, signature=fields.pop("signature", "ab" * 32), **wire.binding(lease), **fields)


def apply(cmdr, node: Node, sent: leases.Result) -> tuple[Task, bool]:
    return leases.apply_result(cmdr, node, sent, b"{}", None)


def report(cmdr, node: Node, lease: dict, status: str = "succeeded", signer: SigningKey | None = None,
           **fields) -> tuple[Task, bool]:
    """Sign a result as a N0D3 does (HMAC with the node's key; Ed25519 with `signer`, the key it
    registered the public half of) and apply it as the results route does. `fields` are the
    result's JSON fields (`usage` a dict). Like a N0D3, it names the prompt it answered."""
    payload = dict(task_id=lease["task_id"], attempt=lease["attempt"], lease_token=lease["lease_token"],
                   status=status, prompt_sha256=wire.sha256_hex(lease["prompt"].encode()), **wire.binding(lease),
                   **{"output": "", **fields})
    node = Node.get_by_id(node.id)
    document = wire.result_document(payload)
    signature = wire.sign_result(bytes.fromhex(cmdr.box.decrypt(node.signing_key).decode()), payload)
    ed25519 = provenance.sign(signer, document) if signer else None
    carried = {key: value for key, value in payload.items() if key != "prompt_sha256"}  # only in the document
    sent = leases.Result(**{**carried, "usage": leases.Usage(**payload.get("usage", {}))}, signature=signature,
                         ed25519_signature=ed25519)
    return leases.apply_result(cmdr, node, sent, document, commander_provenance.keys_in_use(node))


def expire_now(cmdr, task: Task) -> int:
    """Let the task's lease run out and the reaper look."""
    Task.update(lease_until=now() - 1).where(Task.id == task.id).execute()
    return leases.expire(cmdr)


class SignedNode:
    """A node registered through the API that signs its requests (m3shd.client.NodeClient's wire
    format), for tests of the routes themselves (`client`: the app's test client)."""

    def __init__(self, client, bearer):
        self.client = client
        reply = client.post("/api/nodes/register", json={"machine_id": uuid.uuid4().hex, "name": "n"},
                            headers=bearer(permissions=["nodes:join"]))
        assert reply.status_code == 200, reply.get_json()
        found = reply.get_json()
        self.id, self.token, self.key = found["node_id"], found["node_token"], bytes.fromhex(found["signing_key"])

    def signed(self, action: str, body: dict) -> tuple[str, bytes, dict]:
        """The path, body and headers of one signed POST (send it twice to replay it)."""
        path = f"/api/nodes/{self.id}/{action}"
        payload = wire.canonical_json(body)
        return path, payload, {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                               **wire.sign_request(self.key, "POST", path, payload)}

    def post(self, action: str, body: dict):
        path, payload, headers = self.signed(action, body)
        return self.client.post(path, data=payload, headers=headers)
