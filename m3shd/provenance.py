"""Provenance: Ed25519 result signatures and the Merkle-DAG chain of results.

One module for every party, so they cannot disagree on a byte: the N0D3 signs with it, the
Commander verifies with it before a parent's output reaches a child, and
`m3shd provenance verify` checks an exported bundle offline with nothing but public keys.

A result's *document* is the canonical JSON of what the node posted, minus its signatures
(m3shd.wire.result_document). Its chain hash is

    H(DOMAIN ‖ H(document) ‖ parent chain hashes, sorted)

with H = SHA-256 over raw bytes, so changing any result changes the hash of every descendant.
"""

from __future__ import annotations

import hashlib
import hmac
import json

# PyNaCl (libsodium) rather than cryptography: an idle N0D3 on a Pi keeps it loaded, and it
# costs about 1.3 MB resident against cryptography's 8.7 MB. Ed25519 is the same either way.
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from m3shd import wire

DOMAIN = b"m3shd/provenance/v1\x00"
BUNDLE_FORMAT = "m3shd-provenance/1"


def chain_hash(document: bytes, parent_hashes: list[str]) -> str:
    """The hex chain hash of one result; raises ValueError for a parent hash that is not hex."""
    parents = b"".join(bytes.fromhex(h) for h in sorted(parent_hashes))
    return hashlib.sha256(DOMAIN + hashlib.sha256(document).digest() + parents).hexdigest()


def new_private_key() -> SigningKey:
    return SigningKey.generate()


def private_key_from_hex(seed: str) -> SigningKey:
    return SigningKey(bytes.fromhex(seed))


def private_key_hex(key: SigningKey) -> str:
    return bytes(key).hex()


def public_key_hex(key: SigningKey) -> str:
    return bytes(key.verify_key).hex()


def sign(key: SigningKey, document: bytes) -> str:
    return key.sign(document).signature.hex()


def signature_ok(public_key: str, document: bytes, signature: str) -> bool:
    try:
        VerifyKey(bytes.fromhex(public_key)).verify(document, bytes.fromhex(signature))
    except (CryptoError, ValueError, TypeError):
        return False
    return True


def check_links(links: list[dict], public_keys: dict[str, str]) -> dict[int, list[str]]:
    """Verify links ordered parents first (as in a bundle); returns each task's problems (none: ok).

    A link is {task_id, state, prompt, output, error, parents: [task ids], document, ed25519,
    key_id, chain_hash}, and for a task run as an agent {agent, agent_version, system_prompt}. Each chain hash is recomputed from the document and the parents'
    *recomputed* hashes, so an edited hash is pinned on the link that carries it and every
    descendant reports the broken ancestor.
    """
    recomputed: dict[int, str | None] = {}
    problems: dict[int, list[str]] = {}
    for link in links:
        task_id = link["task_id"]
        found = problems[task_id] = []
        for parent in link["parents"]:
            if problems.get(parent):
                found.append(f"parent task {parent} failed verification")
            elif parent not in problems:
                found.append(f"parent task {parent} is missing from the chain")
        document = link.get("document")
        if document is None:
            # Steps that never ran (skipped, cancelled, a lost lease) have nothing to sign;
            # a success always does.
            if link.get("state") == "succeeded":
                found.append("no signed result")
            recomputed[task_id] = None
            continue
        document_bytes = document.encode()
        found.extend(_content_problems(link, document_bytes))
        public_key = public_keys.get(str(link.get("key_id")))
        if public_key is None:
            found.append("no Ed25519 public key for the node that signed it")
        elif not signature_ok(public_key, document_bytes, link.get("ed25519") or ""):
            found.append("the Ed25519 signature does not match the result")
        parent_hashes = [recomputed[p] for p in link["parents"] if recomputed.get(p)]
        recomputed[task_id] = chain_hash(document_bytes, parent_hashes)
        if not _same(recomputed[task_id], link.get("chain_hash")):
            found.append("the chain hash does not match the result and its parents")
    return problems


def _content_problems(link: dict, document: bytes) -> list[str]:
    """Does the stored task say what its signed document says?"""
    try:
        signed = json.loads(document)
    except ValueError:
        return ["the signed result is not JSON"]
    if not isinstance(signed, dict):
        return ["the signed result is not a JSON object"]
    found = []
    if signed.get("task_id") != link["task_id"]:
        found.append("the signed result belongs to another task")
    if signed.get("status") != link.get("state"):
        found.append("the task's state differs from its signed result")
    if signed.get("output", "") != (link.get("output") or ""):
        found.append("the output differs from the signed result")
    if signed.get("error") != link.get("error"):
        found.append("the error differs from the signed result")
    prompt_hash = signed.get("prompt_sha256")
    if prompt_hash is not None and not _same(prompt_hash, wire.sha256_hex((link.get("prompt") or "").encode())):
        found.append("the prompt differs from the one the node answered")
    found.extend(_agent_problems(link, signed))
    return found


def _agent_problems(link: dict, signed: dict) -> list[str]:
    """Is the result bound to the agent, version and system prompt the task names? Results from
    before agents (and from N0D3s that predate them, for a profile with no system prompt) carry
    no `run_sha256`: there is nothing to bind, as there was nothing beyond the prompt to apply."""
    run_hash = signed.get("run_sha256")
    if run_hash is None:
        return ["the signed result is not bound to its agent's system prompt"] if link.get("system_prompt") else []
    found = []
    if (signed.get("agent"), signed.get("agent_version")) != (link.get("agent"), link.get("agent_version")):
        found.append("the agent or its version differs from the signed result")
    if not _same(run_hash, wire.run_sha256(link.get("system_prompt") or "", link.get("prompt") or "")):
        found.append("the system prompt or prompt differs from the ones the node answered")
    return found


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


def verify_bundle(bundle: dict) -> dict:
    """The verdict on an exported bundle: {ok, links: {task_id: problems}} (offline, public keys only)."""
    if bundle.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"not a {BUNDLE_FORMAT} bundle")
    problems = check_links(bundle["links"], bundle["public_keys"])
    return dict(ok=all(not p for p in problems.values()), links=problems)
