from __future__ import annotations

from flask import Blueprint

from commander import pki, tokens
from commander.auth import principal
from commander.routes import api_route, commander
from commander.schemas import TokenCreate, TokenCreated, TokenList, TokenOut

bp = Blueprint("tokens", __name__)


@api_route(bp, "POST", "/tokens", permission="tokens:manage", body=TokenCreate, response=TokenCreated, status=201)
def create(body: TokenCreate):
    """Create an API token (a role or a subset of your permissions) or a join token; shown once."""
    with commander().writing():
        token, secret = tokens.create(body.name, principal().actor, body.kind, body.permissions, body.role,
                                      body.expires_in, granter=principal().permissions, agent=body.agent)
    created = tokens.as_created(token, secret)
    return TokenCreated(**created, join=pki.join_for(commander().settings, created))


@api_route(bp, "GET", "/tokens", permission="tokens:manage", response=TokenList)
def list_tokens():
    """API and join tokens with their prefix, permissions, expiry and last use (never the secret)."""
    return TokenList(tokens=[TokenOut.from_row(token) for token in tokens.listing()])


@api_route(bp, "DELETE", "/tokens/<id:token_id>", permission="tokens:manage", response=TokenOut)
def revoke(token_id: int):
    """Revoke a token holding no more than you do: refused everywhere from now on."""
    with commander().writing():
        return TokenOut.from_row(tokens.revoke(token_id, principal().actor, revoker=principal().permissions))
