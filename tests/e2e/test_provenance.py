"""Provenance through the real API with live N0D3S: Ed25519 + HMAC signed results, the chain
hash over parents, tampering in the SQLite file caught by the Commander and by the offline
verifier (which sees only the exported bundle and its public keys)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
import sys
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from m3shd import provenance, wire
from m3shd.client import ApiClient, CommanderError, NodeClient
from harness import base_env, m3shd, sse_events, wait_until
from provenance_fuzz import forgeries, substance


def database(cmd) -> sqlite3.Connection:
    return sqlite3.connect(cmd.home / "data" / "commander" / "commander.db", timeout=10)


def sql(cmd, statement: str, *params) -> list[tuple]:
    with database(cmd) as conn:
        return conn.execute(statement, params).fetchall()


def finished_pipeline(cmd, steps: list[dict]) -> dict:
    submitted = cmd.api.submit_pipeline({"steps": steps})
    return wait_until(lambda: (p := cmd.api.get_pipeline(submitted["id"]))["state"] != "running" and p, 40,
                      what="the pipeline to finish")


def task_of(pipeline: dict, key: str) -> int:
    return next(s["task_id"] for s in pipeline["steps"] if s["key"] == key)


def problems_by_step(bundle: dict) -> dict[str, list[str]]:
    return {link["step"]: link["problems"] for link in bundle["links"]}


def offline_verdict(cmd, tmp_path, task_id: int) -> tuple[int, str]:
    """Export with the CLI, then verify with the CLI in an environment that knows no Commander."""
    path = tmp_path / f"bundle-{uuid.uuid4().hex}.json"
    m3shd("provenance", "export", str(task_id), "-o", str(path),
          env=cmd.env | {"M3SHD_CLIENT_URL": cmd.url, "M3SHD_CLIENT_TOKEN": cmd.admin_token})
    return verify_file(tmp_path, path)


def verify_file(tmp_path, path) -> tuple[int, str]:
    done = m3shd("provenance", "verify", str(path), env=base_env(tmp_path / "offline"), check=False)
    return done.returncode, done.stdout + done.stderr


DIAMOND = [
    {"key": "a", "prompt": "root"},
    {"key": "b", "prompt": "left {{ steps.a.output }}", "depends_on": ["a"]},
    {"key": "c", "prompt": "right {{ steps.a.output }}", "depends_on": ["a"]},
    {"key": "d", "prompt": "join {{ steps.b.output }} {{ steps.c.output }}", "depends_on": ["b", "c"]},
]


def test_an_untouched_chain_verifies_online_and_offline(commander, spawn_n0d3, tmp_path):
    alpha = spawn_n0d3("alpha")
    spawn_n0d3("beta")
    pipeline = finished_pipeline(commander, DIAMOND)
    assert pipeline["state"] == "succeeded"
    bundle = commander.api.task_provenance(task_of(pipeline, "d"))
    assert bundle["ok"] is True
    assert [link["step"] for link in bundle["links"]] == ["a", "b", "c", "d"]
    assert all(link["problems"] == [] and link["verified"] for link in bundle["links"])

    # The chain hash, restated from the issue: H(domain ‖ H(result) ‖ sorted parent hashes).
    links = {link["step"]: link for link in bundle["links"]}
    for key, parents in (("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])):
        parent_bytes = b"".join(sorted(bytes.fromhex(links[p]["chain_hash"]) for p in parents))
        expected = hashlib.sha256(b"m3shd/provenance/v1\x00" + hashlib.sha256(links[key]["document"].encode()).digest()
                                  + parent_bytes).hexdigest()
        assert links[key]["chain_hash"] == expected, key
        assert commander.api.get_task(links[key]["task_id"])["chain_hash"] == expected
    signed = json.loads(links["d"]["document"])
    assert signed["output"] == links["d"]["output"] and signed["task_id"] == links["d"]["task_id"]
    assert signed["prompt_sha256"] == hashlib.sha256(links["d"]["prompt"].encode()).hexdigest()

    # The N0D3's private key stays in its state directory, readable by its user only; the
    # public key the Commander holds is the one derived from it.
    key_file = alpha.state_dir / "result-key.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(json.loads(key_file.read_text())["ed25519_private_key"]))
    assert private.public_key().public_bytes_raw().hex() in bundle["public_keys"].values()
    assert "ed25519_private_key" not in alpha.process.text()

    code, said = offline_verdict(commander, tmp_path, links["d"]["task_id"])
    assert code == 0 and "chain verified" in said and said.count(": verified") == 4, said


def flip_last_byte(hex_text: str) -> str:
    return hex_text[:-2] + ("01" if hex_text[-2:] == "00" else "00")


OTHER_PUBLIC_KEY = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()

# (what, table, column, the step whose row it is, the tampered value from the original and the
#  same column of another step's row, the problem the verifiers must name on that step).
# Outputs are encrypted at rest, so forging one takes the keys; without them, the tamper open to
# a database writer is moving another step's sealed output into this row.
TAMPERS = [
    ("the stored output", "task", "output", "a", lambda _, other: other, "the output differs from the signed result"),
    ("the Ed25519 signature", "task", "result_ed25519", "b", lambda original, _: flip_last_byte(original),
     "the Ed25519 signature does not match the result"),
    ("a parent's chain hash", "task", "chain_hash", "a", lambda original, _: flip_last_byte(original),
     "the chain hash does not match the result and its parents"),
    ("the signer's public key", "node_key", "public_key", "c", lambda *_: OTHER_PUBLIC_KEY,
     "the Ed25519 signature does not match the result"),
]


def test_each_tamper_in_the_database_is_caught_by_both_verifiers(commander, spawn_n0d3, tmp_path):
    spawn_n0d3("alpha")
    pipeline = finished_pipeline(commander, DIAMOND)
    last = task_of(pipeline, "d")
    for what, table, column, victim, tamper, problem in TAMPERS:
        row_id = task_of(pipeline, victim)
        if table == "node_key":
            row_id = sql(commander, "SELECT signed_with_id FROM task WHERE id = ?", row_id)[0][0]
        [(original,)] = sql(commander, f"SELECT {column} FROM {table} WHERE id = ?", row_id)
        [(other,)] = sql(commander, f"SELECT {column} FROM {table} WHERE id = ?", last) if table == "task" else [(None,)]
        sql(commander, f"UPDATE {table} SET {column} = ? WHERE id = ?", tamper(original, other), row_id)

        bundle = commander.api.task_provenance(last)
        assert bundle["ok"] is False, what
        found = problems_by_step(bundle)
        assert problem in found[victim], f"{what}: {found}"
        assert found["d"], f"{what}: the last step must not verify when an ancestor does not"
        code, said = offline_verdict(commander, tmp_path, last)
        assert code == 1 and "chain BROKEN" in said and problem in said, f"{what}: {said}"

        sql(commander, f"UPDATE {table} SET {column} = ? WHERE id = ?", original, row_id)
        assert commander.api.task_provenance(last)["ok"] is True, f"{what}: restored"


def test_an_hmac_edit_is_caught_by_the_commander_which_holds_the_node_keys(commander, spawn_n0d3, tmp_path):
    spawn_n0d3("alpha")
    pipeline = finished_pipeline(commander, DIAMOND[:2])
    sql(commander, "UPDATE task SET result_signature = ? WHERE id = ?", "0" * 64, task_of(pipeline, "a"))
    found = problems_by_step(commander.api.task_provenance(task_of(pipeline, "b")))
    assert found["a"] == ["the HMAC does not match the result"]
    assert found["b"] == ["an ancestor failed verification"]
    assert commander.api.task_provenance(task_of(pipeline, "a"))["links"][0]["verified"] is False
    # Offline, only public keys: the Ed25519 signatures and the chain still hold.
    code, said = offline_verdict(commander, tmp_path, task_of(pipeline, "b"))
    assert code == 0, said


def test_an_edited_bundle_fails_offline(commander, spawn_n0d3, tmp_path):
    spawn_n0d3("alpha")
    pipeline = finished_pipeline(commander, DIAMOND[:2])
    bundle = commander.api.task_provenance(task_of(pipeline, "b"))
    edits = {
        "output": lambda b: b["links"][0].update(output="FORGED"),
        "public key": lambda b: b["public_keys"].update(
            {k: Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex() for k in b["public_keys"]}),
        "document": lambda b: b["links"][1].update(document=b["links"][1]["document"].replace("echo", "ECHO")),
    }
    for what, edit in edits.items():
        copy = json.loads(json.dumps(bundle))
        edit(copy)
        path = tmp_path / f"{what}.json"
        path.write_text(json.dumps(copy))
        code, said = verify_file(tmp_path, path)
        assert code == 1 and "chain BROKEN" in said, f"{what}: {said}"


def test_the_audits_forged_bundle_is_broken_offline(commander, spawn_n0d3, tmp_path):
    """Issue 17: with a link's document, signature and chain hash removed, its state set to
    queued and its output changed, `verify` printed `verified` and exited 0."""
    spawn_n0d3("alpha")
    pipeline = finished_pipeline(commander, DIAMOND[:2])
    bundle = commander.api.task_provenance(task_of(pipeline, "b"))
    for index in (1, 0):  # the task itself (the audit's probe), then its parent
        for dropped, problem in ((True, "field 'document' is missing"), (False, "an output without a signed result")):
            forged = json.loads(json.dumps(bundle))
            link = forged["links"][index]
            for field in ("document", "ed25519", "chain_hash"):
                if dropped:
                    del link[field]
                else:
                    link[field] = None  # as the Commander exports a link with no signed result
            link.update(state="queued", output="FORGED")
            path = tmp_path / f"forged-{index}-{dropped}.json"
            path.write_text(json.dumps(forged))
            code, said = verify_file(tmp_path, path)
            assert code == 1 and "chain BROKEN" in said and problem in said, said


def test_fuzz_no_forgery_of_a_live_bundle_verifies(commander, spawn_n0d3):
    """Every field of every link dropped, retyped, emptied and bit-flipped; every link dropped,
    doubled and moved: only what leaves the signed substance as it was may verify."""
    spawn_n0d3("alpha")
    spawn_n0d3("beta")
    bundle = commander.api.task_provenance(task_of(finished_pipeline(commander, DIAMOND), "d"))
    assert provenance.verify_bundle(bundle)["verdict"] == "verified"
    for what, forged in forgeries(bundle):
        verdict = provenance.verify_bundle(json.loads(json.dumps(forged)))["verdict"]
        assert verdict != "verified" or substance(forged) == substance(bundle), what


def test_a_chain_still_running_is_incomplete_offline(commander, spawn_n0d3, tmp_path):
    spawn_n0d3("alpha")
    submitted = commander.api.submit_pipeline({"steps": [
        {"key": "first", "prompt": "quick"},
        {"key": "stuck", "prompt": "needs a gpu {{ steps.first.output }}", "depends_on": ["first"], "requires": ["gpu"]},
    ]})
    stuck = task_of(submitted, "stuck")
    wait_until(lambda: commander.api.get_task(stuck)["state"] == "queued", 20, what="the second step to queue")
    code, said = offline_verdict(commander, tmp_path, stuck)
    assert code == 8 and "chain incomplete: 1 of 2 links have no signed result" in said, said
    assert f"task {stuck} (stuck): no signed result (queued)" in said and "chain verified" not in said


def test_a_result_tampered_mid_pipeline_never_reaches_the_next_stage(commander, spawn_n0d3):
    spawn_n0d3("alpha", slots=2)
    submitted = commander.api.submit_pipeline({"steps": [
        {"key": "fast", "prompt": "quick"},
        {"key": "slow", "prompt": "[sleep=3] slow"},
        {"key": "merge", "prompt": "merge {{ steps.fast.output }}", "depends_on": ["fast", "slow"]},
    ]})
    fast, merge = task_of(submitted, "fast"), task_of(submitted, "merge")
    decoy = commander.wait_task(commander.api.submit_task("decoy")["id"])
    commander.wait_task(fast)
    # Outputs are sealed at rest: a database writer without the keys can move another task's
    # sealed output into this row, not write one of its own.
    sql(commander, "UPDATE task SET output = (SELECT output FROM task WHERE id = ?) WHERE id = ?", decoy["id"], fast)
    pipeline = wait_until(lambda: (p := commander.api.get_pipeline(submitted["id"]))["state"] != "running" and p, 20,
                          what="the pipeline to stop")
    assert pipeline["state"] == "failed"
    assert pipeline["error"].startswith(f"provenance check failed at step 'fast' (task {fast}): "
                                        "the output differs from the signed result")
    child = commander.api.get_task(merge)
    assert child["state"] == "cancelled" and child["attempt"] == 0
    assert decoy["output"] not in child["prompt"] and child["prompt"] == "merge {{ steps.fast.output }}"
    tampered = [e for e in sse_events(commander, until="pipeline.failed") if e["kind"] == "pipeline.tampered"]
    assert len(tampered) == 1 and tampered[0]["task_id"] == fast
    assert tampered[0]["data"]["step"] == "fast" and tampered[0]["data"]["blocked_step"] == "merge"


def test_a_result_without_a_valid_ed25519_signature_is_refused(commander):
    """A node that registered a public key must sign every result with it."""
    own = Ed25519PrivateKey.generate()
    reply = ApiClient(commander.url, commander.join_token).register(
        machine_id=uuid.uuid4().hex, name="signer", slots=1, public_key=own.public_key().public_bytes_raw().hex())
    task = commander.api.submit_task("sign me")
    lease = NodeClient(commander.url, reply["node_id"], reply["node_token"], reply["signing_key"]).claim(1, 5)[0]
    result = dict(task_id=task["id"], attempt=lease["attempt"], lease_token=lease["lease_token"], status="succeeded",
                  output="done", prompt_sha256=wire.sha256_hex(lease["prompt"].encode()), **wire.binding(lease))
    stranger = Ed25519PrivateKey.generate()
    for signer, message in ((None, "the result has no Ed25519 signature"),
                            (lambda doc: stranger.sign(doc).hex(), "Ed25519 signature does not match")):
        node = NodeClient(commander.url, reply["node_id"], reply["node_token"], reply["signing_key"], sign_document=signer)
        with pytest.raises(CommanderError) as refused:
            node.post_result(result)
        assert refused.value.status == 400 and message in refused.value.message
        assert commander.api.get_task(task["id"])["state"] == "leased"  # nothing applied
    node = NodeClient(commander.url, reply["node_id"], reply["node_token"], reply["signing_key"],
                      sign_document=lambda doc: own.sign(doc).hex())
    assert node.post_result(result)["task"]["state"] == "succeeded"
    link = commander.api.task_provenance(task["id"])["links"][0]
    assert link["document"] == wire.result_document(result).decode() and link["problems"] == []


def test_a_n0d3_without_its_extra_says_what_to_install(monkeypatch, capsys):
    """PyNaCl signs results; a Pi with only the base install gets told, not a traceback."""
    from m3shd import cli

    for name in [n for n in sys.modules if n.split(".")[0] == "nacl"] + ["nacl"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed, however much is loaded
    with pytest.raises(SystemExit) as exited:
        cli.main(["n0d3", "run", "--url", "http://127.0.0.1:9"])
    assert exited.value.code == cli.EXIT_USAGE
    assert "n0d3 commands: pip install 'm3shd[n0d3]'" in capsys.readouterr().err
