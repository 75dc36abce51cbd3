"""Runner credentials (commander/credentials.py): stored, listed and removed by whoever manages the
nodes, since approving a node already decides who receives them; their secrets are never sent back."""

from __future__ import annotations

from flask import Blueprint

from commander import credentials
from commander.auth import principal
from commander.routes import api_route, commander
from commander.schemas import CredentialIn, CredentialList, CredentialOut

bp = Blueprint("credentials", __name__)


@api_route(bp, "POST", "/runners/credentials", permission="nodes:manage", body=CredentialIn,
           response=CredentialOut, status=201, also=(200,))
def store(body: CredentialIn):
    """Store a runner credential for the mesh, a capability or a node (replacing that scope's one of its kind)."""
    row, replaced = credentials.store(commander(), body.kind, body.secret, principal().actor, body.capability,
                                      body.node_id)
    return CredentialOut.from_row(row), 200 if replaced else 201


@api_route(bp, "GET", "/runners/credentials", permission="nodes:read", response=CredentialList)
def list_credentials():
    """Stored runner credentials: kind, scope, prefix and fingerprint (never the secret)."""
    return CredentialList(credentials=[CredentialOut.from_row(row) for row in credentials.listing()])


@api_route(bp, "DELETE", "/runners/credentials/<id:credential_id>", permission="nodes:manage", status=204)
def remove(credential_id: int):
    """Remove a runner credential: from now on no lease carries it."""
    credentials.remove(commander(), credential_id, principal().actor)
