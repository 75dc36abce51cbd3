"""Provenance on the Commander: record each result's signed document and chain hash, and
rebuild and verify a task's chain from its roots (m3shd/provenance.py does the checking that
needs only public keys; the HMAC check, which needs the node keys, is added here)."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from commander.agents import service as agents
from commander.context import Commander
from commander.db import Compiled, Param
from commander.exceptions import Invalid
from commander.memory import inject as memory
from commander.models import Node, NodeKey, Task
from commander.plugins import lease as tool_lease
from m3shd import provenance, wire


RECORD_FIELDS = ("result_document", "result_ed25519", "signed_with", "chain_hash")  # what `record` fills in
KEYS_IN_USE = Compiled(NodeKey, lambda: NodeKey.select().where(
    (NodeKey.node == Param("node_id")) & (NodeKey.hmac_key == Param("sealed_key"))).order_by(NodeKey.id.desc()))


def keys_in_use(node: Node) -> NodeKey | None:
    """The registration keys whose HMAC key authenticated this request (the same sealed value,
    so a re-registration racing the request cannot pair it with the wrong record); the latest,
    should a re-registration have added the node's first Ed25519 key to that HMAC key."""
    found = KEYS_IN_USE.rows(node_id=node.id, sealed_key=node.signing_key)
    return found[0] if found else None


def check_signatures(key: NodeKey | None, document: bytes, ed25519_signature: str | None) -> None:
    """Refuse a result whose Ed25519 signature is missing (from a node that registered a public
    key) or wrong; the HMAC has been checked with the request."""
    if key is None or key.public_key is None:
        return
    if ed25519_signature is None:
        raise Invalid("bad_result_signature", "the result has no Ed25519 signature")
    if not provenance.signature_ok(key.public_key, document, ed25519_signature):
        raise Invalid("bad_result_signature", "the result's Ed25519 signature does not match its content")


def check_binding(cmdr: Commander, task: Task, result) -> None:
    """Refuse a result that is not bound to what its task was leased with: the agent, the version
    and the hash of the system prompt and prompt (wire.run_sha256). A N0D3 from before agents
    sends none of these: its result is taken only for a profile that asks nothing of a runner
    beyond the prompt (profile.restricts), since such a node could not have applied the rest."""
    if task.agent is None:
        return  # submitted before agents existed: leased with the prompt alone
    version = agents.version_of(cmdr, task.agent, task.agent_version)
    if result.run_sha256 is None:
        if version.profile.restricts:
            raise Invalid("unbound_result", f"task {task.id} runs as agent {task.agent} (version "
                                            f"{task.agent_version}), whose system prompt and tools this N0D3 did not "
                                            f"say it applied: it predates agent profiles; upgrade m3shd on it")
        return
    if (result.agent, result.agent_version) != (task.agent, task.agent_version):
        raise Invalid("unbound_result", f"the result says agent {result.agent} version {result.agent_version}; task "
                                        f"{task.id} was leased as {task.agent} version {task.agent_version}")
    expected = wire.run_sha256(tool_lease.system_prompt(version.profile.system_prompt, task.id), memory.leased(cmdr, task)[0])
    if not hmac.compare_digest(result.run_sha256.encode(), expected.encode()):
        raise Invalid("unbound_result", f"the result answers another system prompt or prompt than task {task.id} "
                                        f"was leased with")


def record(task: Task, key: NodeKey | None, document: bytes, ed25519_signature: str | None) -> dict:
    """The provenance fields of a task's accepted final result, chained to its parents' hashes."""
    parent_ids = [dep["task_id"] for dep in task.depends_on]
    parent_hashes = [row.chain_hash for row in Task.select(Task.chain_hash).where(Task.id.in_(parent_ids))
                     if row.chain_hash] if parent_ids else []
    return dict(result_document=document.decode(), result_ed25519=ed25519_signature,
                signed_with=key.id if key else None, chain_hash=provenance.chain_hash(document, parent_hashes))


def ancestry(task: Task, lookup: Callable[[int], Task]) -> list[Task]:
    """The task and all its ancestors, every one after its parents."""
    order: list[Task] = []
    seen: set[int] = set()

    def visit(node: Task) -> None:
        if node.id in seen:
            return
        seen.add(node.id)
        for dep in node.depends_on:
            visit(lookup(dep["task_id"]))
        order.append(node)

    visit(task)
    return order


def link(cmdr: Commander, task: Task) -> dict:
    system_prompt = tool_lease.system_prompt(agents.version_of(cmdr, task.agent, task.agent_version).profile.system_prompt,
                                             task.id) if task.agent else None
    prompt, memories = memory.leased(cmdr, task)  # the prompt the node ran, with any memories it was given
    return dict(
        task_id=task.id, step=task.step_key, node_id=task.node_id, state=task.state, prompt=prompt, memories=memories,
        agent=task.agent, agent_version=task.agent_version, system_prompt=system_prompt, output=task.output, error=task.error, parents=[dep["task_id"] for dep in task.depends_on],
        document=task.result_document, ed25519=task.result_ed25519, key_id=task.signed_with_id,
        chain_hash=task.chain_hash,
    )


def verify(cmdr: Commander, chain: list[Task]) -> tuple[list[dict], dict[str, str]]:
    """Links (each with its problems) and the public keys that sign them, for tasks ordered
    parents first: public-key checks shared with the offline verifier, plus each HMAC."""
    key_ids = {task.signed_with_id for task in chain if task.signed_with_id}
    keys = {key.id: key for key in NodeKey.select().where(NodeKey.id.in_(list(key_ids)))} if key_ids else {}
    public_keys = {str(key_id): key.public_key for key_id, key in keys.items() if key.public_key}
    links = [link(cmdr, task) for task in chain]
    problems = provenance.check_links(links, public_keys)
    for task, entry in zip(chain, links):
        entry["problems"] = problems[task.id]
        if task.result_document is not None and (problem := _hmac_problem(cmdr, keys.get(task.signed_with_id), task)):
            entry["problems"].append(problem)
    _spread_to_descendants(links)
    for entry in links:
        entry["verified"] = not entry["problems"]
    return links, public_keys


def _hmac_problem(cmdr: Commander, key: NodeKey | None, task: Task) -> str | None:
    if key is None:
        return "the node key that signed it is gone"
    try:
        secret = bytes.fromhex(cmdr.box.decrypt(key.hmac_key).decode())
    except ValueError:  # sealed with a Fernet key no longer configured: say so, never a 500
        return "the node key that signed it cannot be decrypted with the configured secret keys"
    if not wire.check_document(secret, task.result_document.encode(), task.result_signature or ""):
        return "the HMAC does not match the result"
    return None


def _spread_to_descendants(links: list[dict]) -> None:
    """A link whose parent failed only its HMAC check is not trustworthy either."""
    broken: set[int] = set()
    for entry in links:
        if any(parent in broken for parent in entry["parents"]) and not entry["problems"]:
            entry["problems"].append("an ancestor failed verification")
        if entry["problems"]:
            broken.add(entry["task_id"])


def bundle(cmdr: Commander, task: Task) -> dict:
    """The self-contained provenance bundle of a task: `m3shd provenance verify` checks it offline."""
    steps = {step.id: step for step in Task.select().where(Task.pipeline == task.pipeline_id)} \
        if task.pipeline_id else {task.id: task}
    links, public_keys = verify(cmdr, ancestry(task, steps.__getitem__))
    return dict(format=provenance.BUNDLE_FORMAT, task_id=task.id, ok=all(e["verified"] for e in links),
                public_keys=public_keys, links=links)
