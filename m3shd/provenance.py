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


# A link as a bundle carries it: each field the verifier reads, with the types it may hold.
LINK_FIELDS: dict[str, tuple[type, ...]] = {
    "task_id": (int,), "parents": (list,), "state": (str,), "prompt": (str,), "output": (str, type(None)),
    "error": (str, type(None)), "document": (str, type(None)), "ed25519": (str, type(None)),
    "key_id": (int, type(None)), "chain_hash": (str, type(None)),
}
# A task run as an agent also names it, its version and the system prompt it ran with; the
# signed result binds them (run_sha256). Bundles from before agents have none of them.
AGENT_FIELDS: dict[str, tuple[type, ...]] = {
    "agent": (str, type(None)), "agent_version": (int, type(None)), "system_prompt": (str, type(None)),
}
# What the Commander adds for people to read, which no signature covers: the step's name, the
# node it ran on, the ids of the memories its prompt was given (the prompt itself, which carries
# them, is signed), and the Commander's own verdict. They are shown, never vouched for.
LINK_LABELS: dict[str, tuple[type, ...]] = {
    "step": (str, type(None)), "node_id": (int, type(None)), "memories": (list,), "verified": (bool,),
    "problems": (list,),
}
TASK_STATES = frozenset(wire.TaskState)
# Hex as the Commander writes it: lower case, whole bytes. One spelling per value, so a verified
# bundle says exactly what was signed (an upper-case copy of a signature is not accepted).
HEX_LENGTHS = {"ed25519": 128, "chain_hash": 64}
PUBLIC_KEY_HEX = 64

VERIFIED, INCOMPLETE, BROKEN = "verified", "incomplete", "broken"


def check_links(links: list[dict], public_keys: dict[str, str]) -> dict[int, list[str]]:
    """Verify links ordered parents first (as in a bundle); returns each task's problems (none: ok).

    A link is {task_id, state, prompt, output, error, parents: [task ids], document, ed25519,
    key_id, chain_hash}, and for a task run as an agent {agent, agent_version, system_prompt},
    with those types (`link_problems`). Each chain hash is recomputed from the
    document and the parents' *recomputed* hashes, so an edited hash is pinned on the link that
    carries it and every descendant reports the broken ancestor. Fail closed: a link is judged by
    what it carries, never by its own `state`: an output, signature, key or chain hash without a
    signed document is a problem, and so is a signed document that does not say what the link
    says (its prompt included).
    A link with no signed result and nothing that needs one (a step that has not run yet, or
    never did) has no problem here; `unsigned` names those.
    """
    recomputed: dict[int, str | None] = {}
    problems: dict[int, list[str]] = {}
    for link in links:
        task_id = link["task_id"]
        if task_id in problems:
            problems[task_id].append("the task appears more than once in the chain")
            continue
        found = []
        for parent in link["parents"]:  # before this link joins `problems`: it cannot be its own parent
            if problems.get(parent):
                found.append(f"parent task {parent} failed verification")
            elif parent not in problems:
                found.append(f"parent task {parent} is missing from the chain (or comes after it)")
        problems[task_id] = found
        document = link["document"]
        recomputed[task_id] = None
        if document is None:
            found.extend(_unsigned_problems(link))
            continue
        document_bytes = _utf8(document)
        found.extend(_content_problems(link, document_bytes))
        public_key = public_keys.get(str(link["key_id"])) if link["key_id"] is not None else None
        if public_key is None:
            found.append("no Ed25519 public key for the node that signed it")
        elif not signature_ok(public_key, document_bytes, link["ed25519"] or ""):
            found.append("the Ed25519 signature does not match the result")
        parent_hashes = [recomputed[p] for p in link["parents"] if recomputed.get(p)]
        recomputed[task_id] = chain_hash(document_bytes, parent_hashes)
        if not _same(recomputed[task_id], link["chain_hash"]):
            found.append("the chain hash does not match the result and its parents")
    return problems


def unsigned(links: list[dict]) -> dict[int, str]:
    """The links with no signed result, each with its state: nothing in them can be verified."""
    return {link["task_id"]: link["state"] for link in links if link["document"] is None}


def _unsigned_problems(link: dict) -> list[str]:
    """A link without a signed document may carry nothing that a signature would vouch for."""
    found = []
    if link["state"] == wire.TaskState.SUCCEEDED:
        found.append("no signed result")
    if link["output"]:
        found.append("an output without a signed result")
    if link["ed25519"] is not None or link["key_id"] is not None or link["chain_hash"] is not None:
        found.append("a signature, key or chain hash without the result it covers")
    return found


def _content_problems(link: dict, document: bytes) -> list[str]:
    """Does the stored task say what its signed document says?"""
    try:
        signed = json.loads(document)
    except (ValueError, RecursionError):
        return ["the signed result is not JSON"]
    if not isinstance(signed, dict):
        return ["the signed result is not a JSON object"]
    found = []
    if signed.get("task_id") != link["task_id"] or type(signed.get("task_id")) is not int:
        found.append("the signed result belongs to another task")
    if signed.get("status") != link["state"]:
        found.append("the task's state differs from its signed result")
    if "output" not in signed or signed["output"] != link["output"]:
        found.append("the output differs from the signed result")
    if signed.get("error") != link["error"]:
        found.append("the error differs from the signed result")
    prompt_hash = signed.get("prompt_sha256")
    if not isinstance(prompt_hash, str):
        found.append("the signed result does not say which prompt it answered")
    elif not _same(prompt_hash, wire.sha256_hex(_utf8(link["prompt"]))):
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
    return isinstance(a, str) and isinstance(b, str) and hmac.compare_digest(_utf8(a), _utf8(b))


def _utf8(text: str) -> bytes:
    """UTF-8, keeping a lone surrogate (JSON can carry one) as bytes no real result has."""
    return text.encode("utf-8", "surrogatepass")


def link_problems(link) -> list[str]:
    """What is wrong with a link's shape: a missing or unknown field, or a value of the wrong type."""
    if not isinstance(link, dict):
        return ["a link must be a JSON object"]
    known = LINK_FIELDS.keys() | AGENT_FIELDS.keys() | LINK_LABELS.keys()
    found = [f"unknown field {name!r}" for name in link if name not in known]
    for fields, required in ((LINK_FIELDS, True), (AGENT_FIELDS, False), (LINK_LABELS, False)):
        for name, types in fields.items():
            if name not in link:
                if required:
                    found.append(f"field {name!r} is missing")
            elif not _typed(link[name], types):
                found.append(f"field {name!r} must be {' or '.join(_type_name(t) for t in types)}")
    if not found:
        for name, length in HEX_LENGTHS.items():
            if link[name] is not None and not _hex(link[name], length):
                found.append(f"field {name!r} must be {length} lower-case hex digits")
        if link["state"] not in TASK_STATES:
            found.append(f"unknown state {link['state']!r}")
        if not all(_typed(parent, (int,)) for parent in link["parents"]):
            found.append("parents must be task ids")
        elif len(set(link["parents"])) != len(link["parents"]):
            found.append("a parent is named twice")
    return found


def _hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


def _typed(value, types: tuple[type, ...]) -> bool:
    # type(), not isinstance(): JSON's true is not the task id 1.
    return type(value) in types


def _type_name(kind: type) -> str:
    return {int: "an integer", str: "a string", list: "a list", bool: "true or false", type(None): "null"}[kind]


def chain_order(links: list[dict], target: int) -> list[int]:
    """The task ids of `target`'s chain in the order a bundle lists them: each after its parents,
    parents in the order the link names them (as the Commander's ancestry walks them)."""
    by_id = {}
    for link in links:
        by_id.setdefault(link["task_id"], link)
    order: list[int] = []
    seen: set[int] = set()
    stack: list[tuple[int, int]] = [(target, 0)]  # (task, next parent to visit): no recursion limit
    seen.add(target)
    while stack:
        task_id, next_parent = stack.pop()
        parents = by_id[task_id]["parents"] if task_id in by_id else []
        if next_parent < len(parents):
            stack.append((task_id, next_parent + 1))
            parent = parents[next_parent]
            if parent not in seen:
                seen.add(parent)
                stack.append((parent, 0))
        else:
            order.append(task_id)
    return order


def verify_bundle(bundle) -> dict:
    """The verdict on an exported bundle (offline, public keys only), whatever the file holds:

    {verdict, ok, problems, links: {task_id: problems}, unsigned: {task_id: state}, steps}, where
    `verdict` is `verified` (every link signed, chained and as its signature says), `incomplete`
    (nothing is wrong, but some links have no signed result: not run yet, or never run) or
    `broken` (anything wrong: a bad signature, a chain hash, a missing or extra link, a field
    missing or of the wrong type, links out of order). `ok` is `verdict == "verified"`; `steps`
    names the links' steps, as labels for a report (no signature covers them)."""
    problems: list[str] = []
    link_verdicts: dict[int, list[str]] = {}
    if not isinstance(bundle, dict):
        return _verdict(["the bundle must be a JSON object"], {}, [])
    if bundle.get("format") != BUNDLE_FORMAT:
        problems.append(f"not a {BUNDLE_FORMAT} bundle")
    keys = bundle.get("public_keys")
    if not (isinstance(keys, dict) and all(isinstance(v, str) and _hex(v, PUBLIC_KEY_HEX) for v in keys.values())):
        problems.append(f"public_keys must map key ids to public keys ({PUBLIC_KEY_HEX} lower-case hex digits)")
        keys = {}
    links = bundle.get("links")
    if not (isinstance(links, list) and links):
        return _verdict(problems + ["the bundle has no links"], {}, [])
    well_formed = []
    for index, link in enumerate(links):
        shape = link_problems(link)
        if not shape:
            well_formed.append(link)
        elif isinstance(link, dict) and _typed(link.get("task_id"), (int,)):
            link_verdicts.setdefault(link["task_id"], []).extend(shape)
        else:
            problems.append(f"link {index + 1}: " + "; ".join(shape))
    target = bundle.get("task_id")
    if not _typed(target, (int,)):
        problems.append("task_id must be the id of the task the bundle is for")
    elif len(well_formed) == len(links):
        if links[-1]["task_id"] != target:
            problems.append(f"the last link must be task {target}, the one the bundle is for")
        elif [link["task_id"] for link in links] != chain_order(links, target):
            problems.append(f"the links are not task {target}'s chain in order: each once, after its parents, "
                            "every one an ancestor of it")
    for task_id, found in check_links(well_formed, keys).items():
        link_verdicts.setdefault(task_id, []).extend(found)
    used = {str(link["key_id"]) for link in well_formed}
    problems.extend(f"public key {key_id!r} signs no link" for key_id in keys if key_id not in used)
    return _verdict(problems, link_verdicts, well_formed)


def _verdict(problems: list[str], links: dict[int, list[str]], well_formed: list[dict]) -> dict:
    waiting = unsigned(well_formed)
    if problems or any(links.values()) or not links:
        verdict = BROKEN
    else:
        verdict = INCOMPLETE if waiting else VERIFIED
    return dict(verdict=verdict, ok=verdict == VERIFIED, problems=problems, links=links, unsigned=waiting,
                steps={link["task_id"]: link["step"] for link in well_formed if link.get("step")})
