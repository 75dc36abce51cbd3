"""Attachments (commander/attachments.py): images stored content-addressed and capped, named by a
task, listed in its lease, and served only to the node holding a live lease on that task.

In process: the Commander's Flask app on a real SQLite file, called as clients and N0D3s call it
(node requests signed as NodeClient signs them)."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from commander.models import Task
from m3shd import wire
from mesh import SignedNode

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(60))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(100)


def upload(client, headers, data: bytes, media_type: str = "image/png"):
    return client.post("/api/attachments", data=data, headers={**headers, "Content-Type": media_type})


class Node(SignedNode):
    """A registered node that signs its requests, and what these tests ask of it."""

    def claim(self) -> list[dict]:
        reply = self.post("claim", {"open_slots": 1, "wait": 0})
        assert reply.status_code == 200, reply.get_json()
        return reply.get_json()["leases"]

    def fetch(self, sha256: str):
        return self.post("attachments", {"sha256": sha256})


def error(reply) -> tuple[int, str]:
    return reply.status_code, reply.get_json()["error"]["code"]


def test_an_upload_is_stored_once_under_its_sha256_readable_only_by_the_commander(app, client, bearer):
    headers = bearer(role="mobile")
    first = upload(client, headers, PNG)
    digest = hashlib.sha256(PNG).hexdigest()
    assert first.status_code == 201
    assert first.get_json() == {"sha256": digest, "media_type": "image/png", "size": len(PNG)}
    again = upload(client, headers, PNG)
    assert (again.status_code, again.get_json()["sha256"]) == (200, digest)

    root = Path(app.extensions["m3shd"].settings.data_dir) / "attachments"
    stored = root / digest[:2] / digest
    assert stored.read_bytes() == PNG
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert {stat.S_IMODE(p.stat().st_mode) for p in (root, stored.parent)} == {0o700}
    assert [p.name for p in root.rglob("*") if p.is_file()] == [digest]  # no temporary files left

    stored.unlink()  # lost from the data directory: the next upload of the same bytes restores it
    assert upload(client, headers, PNG).status_code == 200 and stored.read_bytes() == PNG


def test_bad_uploads_get_clear_errors_and_store_nothing(app, client, bearer):
    headers = bearer(role="mobile")
    cap = app.extensions["m3shd"].settings.max_attachment_bytes
    too_big = upload(client, headers, PNG + bytes(cap))
    assert error(too_big) == (413, "attachment_too_large")
    assert f"at most {cap:,} bytes" in too_big.get_json()["error"]["message"]
    assert error(upload(client, headers, b"%PDF-1.7\n", "application/pdf")) == (400, "unsupported_media_type")
    assert error(upload(client, headers, b"\x00\x00\x00\x18ftypheic" + bytes(20), "image/heic")) == (
        400, "unsupported_media_type")
    mismatch = upload(client, headers, PNG, "image/jpeg")
    assert error(mismatch) == (400, "media_type_mismatch")
    assert error(upload(client, headers, b"")) == (400, "empty_attachment")
    assert error(upload(client, {}, PNG)) == (401, "unauthenticated")
    assert error(upload(client, bearer(permissions=["tasks:read"]), PNG)) == (403, "forbidden")
    assert not (Path(app.extensions["m3shd"].settings.data_dir) / "attachments").exists()


def test_a_task_names_its_images_by_hash_and_an_unknown_hash_is_refused(app, client, bearer):
    headers = bearer(role="mobile")
    png, jpeg = (upload(client, headers, data, kind).get_json() for data, kind in ((PNG, "image/png"),
                                                                                      (JPEG, "image/jpeg")))
    unknown = "0" * 64
    refused = client.post("/api/tasks", json={"prompt": "look", "attachments": [png["sha256"], unknown]},
                          headers=headers)
    assert error(refused) == (400, "unknown_attachment") and unknown in refused.get_json()["error"]["message"]
    with app.extensions["m3shd"].db.connection_context():
        assert Task.select().count() == 0  # nothing half-made
    assert error(client.post("/api/tasks", json={"prompt": "look", "attachments": ["not-a-hash"]},
                             headers=headers)) == (400, "invalid_request")

    made = client.post("/api/tasks", json={"prompt": "look", "attachments": [jpeg["sha256"], png["sha256"],
                                                                             jpeg["sha256"]]}, headers=headers)
    assert made.status_code == 201
    assert made.get_json()["attachments"] == [jpeg, png]  # in order, each once
    assert client.get(f"/api/tasks/{made.get_json()['id']}", headers=headers).get_json()["attachments"] == [jpeg, png]


def test_only_the_node_holding_a_live_lease_on_a_task_that_takes_it_may_fetch_it(app, client, bearer):
    headers = bearer(role="mobile")
    png = upload(client, headers, PNG).get_json()
    other = upload(client, headers, JPEG, "image/jpeg").get_json()
    holder, stranger = Node(client, bearer), Node(client, bearer)
    assert error(holder.fetch(png["sha256"])) == (403, "not_leased")  # stored, but no task takes it yet

    task = client.post("/api/tasks", json={"prompt": "look", "attachments": [png["sha256"]]}, headers=headers).get_json()
    (lease,) = holder.claim()
    assert lease["attachments"] == [png]

    fetched = holder.fetch(png["sha256"])
    assert fetched.status_code == 200 and fetched.data == PNG
    assert fetched.mimetype == "image/png" and fetched.headers["X-Content-Type-Options"] == "nosniff"
    assert error(stranger.fetch(png["sha256"])) == (403, "not_leased")
    assert error(holder.fetch(other["sha256"])) == (403, "not_leased")  # stored, but not this task's
    assert error(holder.fetch("f" * 64)) == (404, "not_found")
    assert error(holder.post("attachments", {"sha256": "short"})) == (400, "invalid_request")

    # The node's token without the signature, or another node's token: refused before anything is read.
    unsigned = client.post(f"/api/nodes/{holder.id}/attachments", json={"sha256": png["sha256"]},
                           headers={"Authorization": f"Bearer {holder.token}"})
    assert unsigned.status_code in (400, 401)
    assert error(client.post(f"/api/nodes/{holder.id}/attachments", json={"sha256": png["sha256"]},
                             headers={"Authorization": f"Bearer {stranger.token}"})) == (403, "forbidden")

    result = dict(task_id=task["id"], attempt=lease["attempt"], lease_token=lease["lease_token"],
                  status="succeeded", output="a cat", prompt_sha256=wire.sha256_hex(lease["prompt"].encode()),
                  **wire.binding(lease))  # as a N0D3 binds its result to what it answered
    assert holder.post("results", dict(result, signature=wire.sign_result(holder.key, result))).status_code == 200
    assert error(holder.fetch(png["sha256"])) == (403, "not_leased")  # the lease ended with the task


def test_the_routes_are_in_the_route_table_and_the_openapi_document(client):
    doc = client.get("/api/openapi.json").get_json()
    upload_op = doc["paths"]["/api/attachments"]["post"]
    fetch_op = doc["paths"]["/api/nodes/{node_id}/attachments"]["post"]
    assert (upload_op["x-permission"], fetch_op["x-permission"]) == ("tasks:submit", "work:execute")
    assert set(upload_op["requestBody"]["content"]) == {"image/jpeg", "image/png", "image/gif", "image/webp"}
    assert "X-M3SHD-Signature" in fetch_op["description"] and "image/*" in fetch_op["responses"]["200"]["content"]
