"""The offline verifier (m3shd/provenance.py) on bundles built with real Ed25519 keys, the way
N0D3S sign results and the Commander chains them: it fails closed (issue 17, item 2)."""

from __future__ import annotations

import copy
import json

import pytest

from m3shd import provenance, wire
from provenance_fuzz import forgeries, substance

KEYS = {"1": provenance.new_private_key(), "2": provenance.new_private_key()}


def signed_link(task_id: int, prompt: str, output: str, parents: list[dict], key_id: str = "1",
                status: str = "succeeded", error: str | None = None, step: str | None = None) -> dict:
    """A link as the Commander exports it, for a result a N0D3 signed with KEYS[key_id]."""
    result = dict(task_id=task_id, attempt=1, lease_token="ab" * 16, status=status, output=output, error=error,
                  infra_failure=False, runner="claude-cli", model="claude-sonnet-5-5", duration_ms=12,
                  usage=dict(input_tokens=3, output_tokens=5, cache_read_tokens=0, cache_write_tokens=0),
                  prompt_sha256=wire.sha256_hex(prompt.encode()))
    document = wire.result_document(result)
    return dict(task_id=task_id, step=step, node_id=int(key_id), state=status, prompt=prompt, output=output,
                error=error, parents=[p["task_id"] for p in parents], document=document.decode(),
                ed25519=provenance.sign(KEYS[key_id], document), key_id=int(key_id),
                chain_hash=provenance.chain_hash(document, [p["chain_hash"] for p in parents]),
                verified=True, problems=[])


def unsigned_link(task_id: int, prompt: str, parents: list[dict], state: str, error: str | None = None,
                  step: str | None = None) -> dict:
    return dict(task_id=task_id, step=step, node_id=None, state=state, prompt=prompt, output=None, error=error,
                parents=[p["task_id"] for p in parents], document=None, ed25519=None, key_id=None,
                chain_hash=None, verified=True, problems=[])


def bundle_of(links: list[dict]) -> dict:
    used = {str(link["key_id"]) for link in links if link["key_id"] is not None}
    return dict(format=provenance.BUNDLE_FORMAT, task_id=links[-1]["task_id"], ok=True, links=links,
                public_keys={k: provenance.public_key_hex(KEYS[k]) for k in sorted(used)})


def diamond() -> dict:
    """a → (b, c) → d, b signed by the second node and failed on its own merits."""
    a = signed_link(11, "root", "echo: root", [], step="a")
    b = signed_link(12, "left echo: root", "", [a], key_id="2", status="failed", error="the model refused", step="b")
    c = signed_link(13, "right echo: root", "echo: right", [a], step="c")
    d = signed_link(14, "join", "echo: join", [b, c], step="d")
    return bundle_of([a, b, c, d])


def running() -> dict:
    """A pipeline still running: its root answered, its last step is queued."""
    a = signed_link(21, "root", "echo: root", [], step="a")
    return bundle_of([a, unsigned_link(22, "next {{ steps.a.output }}", [a], "queued", step="b")])


def test_an_untouched_bundle_verifies():
    verdict = provenance.verify_bundle(diamond())
    assert verdict["verdict"] == "verified" and verdict["ok"] is True
    assert verdict["links"] == {11: [], 12: [], 13: [], 14: []} and verdict["problems"] == []
    assert verdict["steps"] == {11: "a", 12: "b", 13: "c", 14: "d"}


def test_the_audits_forgery_is_broken_not_verified():
    """Issue 17's probe: a link's signature and chain hash removed, its state set to queued and its
    output changed still printed `verified`: the signature was asked for only of a success."""
    for index in range(4):
        forged = diamond()
        link = forged["links"][index]
        for field in ("document", "ed25519", "chain_hash"):
            del link[field]
        link.update(state="queued", output="FORGED")
        assert provenance.verify_bundle(forged)["verdict"] == "broken", index
        # The same with the fields kept but emptied, as the Commander writes an unsigned link.
        forged = diamond()
        forged["links"][index].update(document=None, ed25519=None, chain_hash=None, state="queued", output="FORGED")
        verdict = provenance.verify_bundle(forged)
        assert verdict["verdict"] == "broken", index
        assert "an output without a signed result" in verdict["links"][forged["links"][index]["task_id"]]


def test_an_output_without_a_signature_is_broken_whatever_the_state_says():
    for state in wire.TaskState:
        forged = diamond()
        forged["links"][-1].update(document=None, ed25519=None, chain_hash=None, state=state, output="FORGED")
        assert provenance.verify_bundle(forged)["verdict"] == "broken", state


def test_a_bundle_whose_links_are_not_all_final_is_incomplete_never_verified():
    verdict = provenance.verify_bundle(running())
    assert verdict["verdict"] == "incomplete" and verdict["ok"] is False
    assert verdict["unsigned"] == {22: "queued"} and verdict["links"] == {21: [], 22: []}
    # Stripping a finished link's signature (and its output) makes a bundle incomplete at best.
    stripped = diamond()
    stripped["links"][-1].update(document=None, ed25519=None, key_id=None, chain_hash=None, state="cancelled",
                                 output=None)
    assert provenance.verify_bundle(stripped)["verdict"] == "incomplete"


def test_a_chain_hash_recomputed_by_the_forger_does_not_help_without_the_key():
    forged = diamond()
    a, b, c, d = forged["links"]
    payload = json.loads(c["document"])
    payload["output"] = c["output"] = "FORGED"
    c["document"] = wire.canonical_json(payload).decode()
    c["chain_hash"] = provenance.chain_hash(c["document"].encode(), [a["chain_hash"]])
    d["chain_hash"] = provenance.chain_hash(d["document"].encode(), [b["chain_hash"], c["chain_hash"]])
    verdict = provenance.verify_bundle(forged)
    assert verdict["verdict"] == "broken"
    assert verdict["links"][13] == ["the Ed25519 signature does not match the result"]
    assert verdict["links"][14] == ["parent task 13 failed verification"]


@pytest.mark.parametrize("edit, problem", [
    (lambda b: b["links"].insert(0, b["links"].pop()), "parent task 12 is missing from the chain (or comes after it)"),
    (lambda b: b["links"].insert(2, copy.deepcopy(b["links"][0])), "the task appears more than once in the chain"),
    (lambda b: b["links"].pop(0), "parent task 11 is missing from the chain (or comes after it)"),
    (lambda b: b["links"].insert(1, b["links"].pop(2)), "not task 14's chain in order"),
    (lambda b: b["links"][0].pop("document"), "field 'document' is missing"),
    (lambda b: b["links"][0].update(task_id=True), "link 1: field 'task_id' must be an integer"),
    (lambda b: b["links"][0].update(parents=["11"]), "parents must be task ids"),
    (lambda b: b["links"][3].update(parents=[12, 12, 13]), "a parent is named twice"),
    (lambda b: b["links"][0].update(parents=[11]), "parent task 11 is missing from the chain (or comes after it)"),
    (lambda b: b["links"][0].update(surprise=1), "unknown field 'surprise'"),
    (lambda b: b["links"][0].update(ed25519=b["links"][0]["ed25519"].upper()), "128 lower-case hex digits"),
    (lambda b: b["links"][0].update(state="done"), "unknown state 'done'"),
    (lambda b: b.update(task_id=13), "the last link must be task 13"),
    (lambda b: b["public_keys"].update({"7": b["public_keys"]["1"]}), "public key '7' signs no link"),
    (lambda b: b.update(format="m3shd-provenance/0"), "not a m3shd-provenance/1 bundle"),
    (lambda b: b.update(links=[]), "the bundle has no links"),
], ids=["target-first", "duplicated", "root-dropped", "siblings-swapped", "field-dropped", "bool-id",
        "string-parent", "parent-twice", "own-parent", "unknown-field", "upper-case-hex", "unknown-state", "other-target",
        "unused-key", "format", "no-links"])
def test_each_kind_of_damage_is_named(edit, problem):
    damaged = diamond()
    edit(damaged)
    verdict = provenance.verify_bundle(damaged)
    assert verdict["verdict"] == "broken"
    said = verdict["problems"] + [p for found in verdict["links"].values() for p in found]
    assert any(problem in p for p in said), said


@pytest.mark.parametrize("build", [diamond, running])
def test_fuzz_no_forgery_verifies_unless_it_says_what_the_original_says(build):
    original = build()
    expected = provenance.verify_bundle(original)["verdict"]
    tried = 0
    for what, forged in forgeries(original):
        verdict = provenance.verify_bundle(json.loads(json.dumps(forged)))  # as read from a file
        tried += 1
        assert verdict["verdict"] in ("verified", "incomplete", "broken"), what
        if verdict["verdict"] == "verified":
            assert expected == "verified" and substance(forged) == substance(original), what
        if verdict["verdict"] == "incomplete":
            assert substance(forged) != substance(original) or expected == "incomplete", what
    assert tried > 500  # every field of every link, each several ways, and every move of every link


@pytest.mark.parametrize("junk", [None, [], "bundle", 7, {"format": provenance.BUNDLE_FORMAT},
                                  {"format": provenance.BUNDLE_FORMAT, "links": [None], "public_keys": []}])
def test_anything_that_is_not_a_bundle_is_broken_not_an_exception(junk):
    assert provenance.verify_bundle(junk)["verdict"] == "broken"
