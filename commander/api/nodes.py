from __future__ import annotations

import json
from dataclasses import fields

from flask import Blueprint, g, request

from commander import credentials, leases, nodes, provenance
from commander.auth import principal
from commander.exceptions import Invalid
from commander.models import Node
from commander.routes import api_route, commander
from commander.schemas import (
    CapabilitiesApproveIn, ClaimIn, ClaimOut, HeartbeatIn, HeartbeatOut, KeyRotationOut, NodeList, NodeOut,
    NodeStateIn, RegisterIn, RegisterOut, ReregisterOut, ResultIn, ResultOut, TaskOut,
)
from m3shd import wire

bp = Blueprint("nodes", __name__)

RESULT_FIELDS = {field.name for field in fields(leases.Result)} - {"usage"}


def may_see_machine_ids() -> bool:
    """Machine ids go only to those who manage nodes (removing one, letting one in): they name
    a machine to the Commander, so the fewer who read them the better."""
    return "nodes:manage" in principal().permissions


def node_views(listed: list[Node]) -> list[NodeOut]:
    """Nodes as the API shows them to this caller: each row with its standing (nodes.standing)."""
    standing = nodes.standing(listed, commander().settings)
    shown = may_see_machine_ids()
    return [NodeOut.from_row(node, machine_id=node.machine_id if shown else None, **standing[node.id])
            for node in listed]


@api_route(bp, "POST", "/nodes/register", permission="nodes:join", body=RegisterIn, response=RegisterOut)
def register(body: RegisterIn):
    """Register a new machine; returns its node token and signing key. 409 for a machine already a node."""
    return RegisterOut(**nodes.register(commander(), nodes.Machine(**body.model_dump()), principal().actor))


@api_route(bp, "POST", "/nodes/<id:node_id>/register", permission="work:execute", signed=True,
           body=RegisterIn, response=ReregisterOut)
def reregister(node_id: int, body: RegisterIn):
    """A node registers again, proving its key: same token and key; new capabilities wait for approval."""
    return ReregisterOut(**nodes.reregister(commander(), node_id, nodes.Machine(**body.model_dump()),
                                            principal().actor))


@api_route(bp, "GET", "/nodes", permission="nodes:read", response=NodeList)
def list_nodes():
    """Every node with its state, capabilities, slots and heartbeat age."""
    return NodeList(nodes=node_views(nodes.listing()))


@api_route(bp, "GET", "/nodes/<id:node_id>", permission="nodes:read", response=NodeOut)
def get_node(node_id: int):
    """One node, with its breaker, reputation and recent outcomes."""
    return node_views([nodes.get(node_id)])[0]


@api_route(bp, "PUT", "/nodes/<id:node_id>/state", permission="nodes:manage", body=NodeStateIn, response=NodeOut)
def set_node_state(node_id: int, body: NodeStateIn):
    """Pause, drain (optionally with a deadline), disable, or make a node active again."""
    node = nodes.set_state(commander(), node_id, body.state, principal().actor, body.deadline)
    return node_views([node])[0]


@api_route(bp, "POST", "/nodes/<id:node_id>/rotate-key", permission="nodes:manage", response=KeyRotationOut)
def rotate_key(node_id: int):
    """Give a node a fresh request-signing key; it takes it up at its next heartbeat."""
    nodes.rotate_key(commander(), node_id, principal().actor)
    return KeyRotationOut(node_id=node_id, pending=True)


@api_route(bp, "POST", "/nodes/<id:node_id>/capabilities/approve", permission="nodes:manage",
           body=CapabilitiesApproveIn, response=NodeOut)
def approve_capabilities(node_id: int, body: CapabilitiesApproveIn):
    """Approve the capabilities a node asks for (send exactly its `requested_capabilities`)."""
    node = nodes.approve_capabilities(commander(), node_id, body.capabilities, principal().actor)
    return node_views([node])[0]


@api_route(bp, "DELETE", "/nodes/<id:node_id>", permission="nodes:manage", status=204)
def remove_node(node_id: int):
    """Remove a node: its tokens stop working and the tasks it held are queued again."""
    nodes.remove(commander(), node_id, principal().actor)


@api_route(bp, "POST", "/nodes/<id:node_id>/heartbeat", permission="work:execute", signed=True,
           nonce_with_write=True, body=HeartbeatIn, response=HeartbeatOut)
def heartbeat(node_id: int, body: HeartbeatIn):
    """Liveness, open slots and running attempts (their leases are renewed); returns orders."""
    running = [nodes.LeaseRef(**ref.model_dump()) for ref in body.running]
    reply = nodes.heartbeat(commander(), g.node, principal().actor, first=g.pop("spend_nonce"),
                            **body.model_dump(exclude={"running", "credential_kinds"}), running=running)
    return HeartbeatOut(**reply, credential=credentials.offer(node_id, reply["state"], body.credential_kinds))


@api_route(bp, "POST", "/nodes/<id:node_id>/claim", permission="work:execute", signed=True,
           body=ClaimIn, response=ClaimOut)
def claim(node_id: int, body: ClaimIn):
    """Long-poll up to `wait` seconds for at most `open_slots` leases, each carrying the runner
    credential the node asked for and may have, sealed to it."""
    claimed = leases.claim_or_wait(commander(), g.node.id, principal().token_id, body.open_slots, body.wait)
    return ClaimOut(leases=credentials.seal_into(commander(), node_id, claimed, body.credential_kinds))


@api_route(bp, "POST", "/nodes/<id:node_id>/results", permission="work:execute", signed=True,
           body=ResultIn, response=ResultOut)
def post_result(node_id: int, body: ResultIn):
    """A signed result for a lease this node holds; 409 if the lease has moved on."""
    # Verify the document as sent: the parsed model fills in defaults the node never signed.
    document = wire.result_document(json.loads(request.get_data()))
    if not wire.check_document(g.node_key, document, body.signature):
        raise Invalid("bad_result_signature", "the result's signature does not match its content")
    key = provenance.keys_in_use(g.node)
    provenance.check_signatures(key, document, body.ed25519_signature)
    result = leases.Result(**body.model_dump(include=RESULT_FIELDS), usage=leases.Usage(**body.usage.model_dump()))
    task, duplicate = leases.apply_result(commander(), g.node, result, document, key)
    return ResultOut(accepted=True, duplicate=duplicate, task=TaskOut.of(task))


@api_route(bp, "POST", "/nodes/<id:node_id>/deregister", permission="work:execute", signed=True, status=204)
def deregister(node_id: int):
    """A clean exit: the node goes offline."""
    nodes.deregister(commander(), g.node)
