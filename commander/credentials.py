"""Runner credentials: an Anthropic API key or a Claude Code token, stored once on the Commander
(Fernet-encrypted like every secret at rest) and handed to each N0D3 that has none of its own,
inside its leases, sealed to that node (m3shd/sealing.py: to the X25519 key it registered, bound
to the lease; only the node's private key opens it, and nothing the Commander keeps or sends can).

Which one a node gets: among those of a kind it takes (its claims and heartbeats list the kinds
in its order of preference), the one whose scope names it most closely: the node itself, then one
of its capabilities, then the whole mesh; between equals, the kind it prefers, then the newest.
A node gets none unless it is active and registered a seal key: disabling or removing it, or
revoking its token, stops its credentials at its next claim, as they are sealed afresh into
every lease.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence

from commander import audit
from commander.context import Commander
from commander.exceptions import Invalid, NotFound
from commander.models import ACTIVE, DRAINING, PAUSED, Node, RunnerCredential, now
from m3shd import sealing
from m3shd.wire import CredentialKind

log = logging.getLogger("m3shd.commander")

MESH = "mesh"
# Scope kind -> how closely it names a node.
SPECIFICITY = {"node": 2, "capability": 1, MESH: 0}
# The format part of Anthropic's keys and tokens (sk-ant-api03-, sk-ant-oat01-): the only part shown.
KNOWN_PREFIX = re.compile(r"sk-ant-[a-z]{3}\d{2}-")
OAUTH_PREFIX = "sk-ant-oat"


def scope_of(capability: str | None = None, node_id: int | None = None) -> str:
    if capability is not None and node_id is not None:
        raise Invalid("invalid_request", "a credential is for one capability or one node, not both")
    if node_id is not None:
        return f"node:{node_id}"
    return f"capability:{capability}" if capability is not None else MESH


def check_secret(kind: str, secret: str) -> None:
    """A key stored as the wrong kind would fail every task with an authentication error."""
    if kind == CredentialKind.API_KEY and secret.startswith(OAUTH_PREFIX):
        raise Invalid("wrong_kind", "that is a Claude Code token, not an API key: store it as oauth_token "
                                    "(`m3shd runners set-token`)")
    if kind == CredentialKind.OAUTH_TOKEN and not secret.startswith(OAUTH_PREFIX):
        raise Invalid("wrong_kind", f"a Claude Code token (from `claude setup-token`) starts with {OAUTH_PREFIX}; "
                                    "store an API key as api_key (`m3shd runners set-key`)")


def store(cmdr: Commander, kind: str, secret: str, actor: str, capability: str | None = None,
          node_id: int | None = None) -> tuple[RunnerCredential, bool]:
    """Keep `secret` for the scope (replacing the one of that kind there); returns the row and
    whether it replaced one."""
    scope = scope_of(capability, node_id)
    check_secret(kind, secret)
    known = KNOWN_PREFIX.match(secret)
    fields = dict(secret=cmdr.box.encrypt(secret.encode()), prefix=known.group() if known else "",
                  fingerprint=hashlib.sha256(secret.encode()).hexdigest()[:16], stored_at=now(),
                  stored_by=actor[:200])
    with cmdr.writing():
        if node_id is not None and not Node.select().where(Node.id == node_id).exists():
            raise NotFound("not_found", f"node {node_id} does not exist")
        replaced = RunnerCredential.get_or_none((RunnerCredential.kind == kind) & (RunnerCredential.scope == scope))
        if replaced:
            RunnerCredential.update(**fields).where(RunnerCredential.id == replaced.id).execute()
            row_id = replaced.id
        else:
            row_id = RunnerCredential.create(kind=kind, scope=scope, node=node_id, **fields).id
        audit.record(actor, "runner_credential.stored", f"{kind} for {scope}", fingerprint=fields["fingerprint"],
                     replaced=replaced is not None)
    return RunnerCredential.get_by_id(row_id), replaced is not None


def listing() -> list[RunnerCredential]:
    """Every stored credential (their secrets stay encrypted), oldest first."""
    return list(RunnerCredential.select().order_by(RunnerCredential.id))


def remove(cmdr: Commander, credential_id: int, actor: str) -> None:
    """Forget a credential: no lease carries it from now on."""
    with cmdr.writing():
        found = RunnerCredential.get_or_none(RunnerCredential.id == credential_id)
        if found is None:
            raise NotFound("not_found", f"runner credential {credential_id} does not exist")
        RunnerCredential.delete().where(RunnerCredential.id == credential_id).execute()
        audit.record(actor, "runner_credential.removed", f"{found.kind} for {found.scope}",
                     fingerprint=found.fingerprint)


def entitled(node_id: int, capabilities: Sequence[str], kinds: Sequence[str]) -> RunnerCredential | None:
    """The credential a node with these capabilities is given, of `kinds` (its preference order)."""
    if not kinds:
        return None
    kinds = list(kinds)
    scopes = [scope_of(node_id=node_id), *(scope_of(capability=c) for c in capabilities), MESH]
    found = list(RunnerCredential.select().where(RunnerCredential.kind.in_(kinds)
                                                  & RunnerCredential.scope.in_(scopes)))
    if not found:
        return None
    return max(found, key=lambda c: (SPECIFICITY[c.scope.split(":")[0]], -kinds.index(c.kind), c.id))


def offer(node_id: int, state: str, kinds: Sequence[str]) -> str | None:
    """The kind of credential this node's leases would carry now (a heartbeat's answer, so the
    node knows whether its runner can work), or None. Its approved capabilities count, never
    those it merely reports."""
    if not kinds or state not in (ACTIVE, PAUSED, DRAINING):
        return None
    node = Node.select(Node.capabilities, Node.seal_key).where(Node.id == node_id).first()
    if node is None or not node.seal_key:
        return None
    credential = entitled(node_id, node.capabilities, kinds)
    return credential.kind if credential else None


def mesh_key(cmdr: Commander) -> str | None:
    """The mesh-wide API key, for the Commander's own calls to the Messages API (file_summary)."""
    found = RunnerCredential.get_or_none((RunnerCredential.kind == CredentialKind.API_KEY)
                                         & (RunnerCredential.scope == MESH))
    return cmdr.box.decrypt(found.secret).decode() if found else None


def seal_into(cmdr: Commander, node_id: int, leases: list[dict], kinds: Sequence[str]) -> list[dict]:
    """The leases just claimed, each carrying the node's credential sealed to it and bound to
    that lease, when it asks for one and may have it. The node is read afresh: one disabled or
    removed since its lease was taken gets none."""
    if not leases or not kinds:
        return leases
    node = Node.select(Node.state, Node.capabilities, Node.seal_key).where(Node.id == node_id).first()
    if node is None or node.state != ACTIVE or not node.seal_key:
        return leases
    credential = entitled(node_id, node.capabilities, kinds)
    if credential is None:
        return leases
    secret = cmdr.box.decrypt(credential.secret)
    recipient = bytes.fromhex(node.seal_key)
    try:
        return [dict(lease, runner_credential=dict(kind=credential.kind, sealed=sealing.seal(
            recipient, secret, sealing.context(node_id, lease["task_id"], lease["attempt"], credential.kind))))
                for lease in leases]
    except sealing.Unsealable:  # a seal key no one could hold the private half of (a low-order point)
        log.warning("node %s registered an unusable seal key; its leases carry no credential", node_id)
        return leases
