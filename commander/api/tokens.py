from __future__ import annotations

from flask import Blueprint

from commander import tokens
from commander.routing import api_route, commander, principal
from commander.schemas import TokenCreate, TokenCreated

bp = Blueprint("tokens", __name__)


@api_route(bp, "POST", "/tokens", permission="tokens:manage", body=TokenCreate, response=TokenCreated, status=201)
def create(body: TokenCreate):
    """Create an API token (a role or a list of permissions) or a join token; shown once."""
    with commander().writing():
        token, secret = tokens.create(body.name, body.kind, body.permissions, body.role, body.expires_in,
                                      granter=principal().permissions)
    return TokenCreated(**tokens.as_created(token, secret))
