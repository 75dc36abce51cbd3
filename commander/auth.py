"""Who is asking: API, join and node tokens, browser sessions with their CSRF tokens, and the
signatures on node requests (timestamp, nonce, HMAC; a pending key rotation finishes here).

`authenticate` turns a request into a `Principal` and checks the permission a route or page
declares (commander/routes.py, commander/web/site.py); it raises the domain's refusals
(Unauthenticated, Forbidden), which commander/errors.py answers.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from flask import Response, g, request

from commander import accounts, nodes, tokens
from commander.context import Commander
from commander.db import Compiled, Param
from commander.exceptions import Forbidden, Invalid, NotFound, Unauthenticated
from commander.models import Node, Nonce, Token
from commander.permissions import ROLES
from commander.secrets import token_hash
from m3shd import wire


@dataclass(frozen=True)
class Principal:
    kind: str                       # api | join | node (tokens) or session (a logged-in user)
    name: str
    permissions: frozenset[str]
    token_id: int | None = None
    node_id: int | None = None
    user_id: int | None = None
    csrf_token: str | None = None   # a session's, for the dashboard's forms
    agent: str | None = None        # a token scoped to one agent (see `authenticate`)

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"{'user' if self.kind == 'session' else self.kind + ' token'}:{self.name}"


SESSION_COOKIE = "m3shd_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


# Every node request runs these: compiled once (see db.Compiled).
TOKEN_BY_HASH = Compiled(Token, lambda: Token.select(
    Token.id, Token.kind, Token.name, Token.permissions, Token.node, Token.agent, Token.expires_at, Token.revoked_at,
    Token.last_used_at).where(Token.token_hash == Param("token_hash")))
NODE_FOR_REQUEST = Compiled(Node, lambda: Node.select(
    Node.id, Node.name, Node.state, Node.runner, Node.problem, Node.signing_key, Node.next_signing_key
).where(Node.id == Param("node_id")))
NONCE_INSERT = Compiled(Nonce, lambda: Nonce.insert(
    node=Param("node_id"), value=Param("nonce"), seen_at=Param("seen_at")).on_conflict_ignore())


def authenticate(cmdr: Commander, permission: str, path: dict, signed: bool = False,
                 agent_scoped: bool = False, nonce_with_write: bool = False) -> Principal:
    """A bearer token if one is sent, else the session cookie; then the `permission` a route
    needs, and for a `signed` (node) request its signature and nonce (see check_node_request for
    `nonce_with_write`). A token scoped to one agent reaches only `agent_scoped` routes (which
    then keep it to that agent and its own tasks)."""
    if "Authorization" in request.headers or SESSION_COOKIE not in request.cookies:
        principal = token_principal(cmdr)
    else:
        principal = session_principal()
    if permission not in principal.permissions:
        raise Forbidden("forbidden", f"this {'session' if principal.kind == 'session' else 'token'} "
                                     f"lacks the `{permission}` permission")
    if principal.agent is not None and not agent_scoped:
        raise Forbidden("agent_scope", f"this token is scoped to agent `{principal.agent}`: it may only submit "
                                       f"tasks as that agent and read its own tasks")
    if signed:
        check_node_request(cmdr, principal, path, nonce_with_write)
    return principal


def token_principal(cmdr: Commander) -> Principal:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("unauthenticated", "send `Authorization: Bearer <token>` or log in")
    found = TOKEN_BY_HASH.rows(token_hash=token_hash(secret.strip()))
    token = found[0] if found else None
    now = time.time()
    if reason := tokens.refusal(token, now):
        raise Unauthenticated("unauthenticated", reason)
    # Last-used time at minute resolution: a write per request would cost more than it tells.
    if token.last_used_at is None or now - token.last_used_at > 60:
        with cmdr.write_turn():
            Token.update(last_used_at=now).where(Token.id == token.id).execute()
    return Principal(token.kind, token.name, frozenset(token.permissions), token_id=token.id, node_id=token.node_id,
                     agent=token.agent)


def session_principal() -> Principal:
    found = accounts.session_for(request.cookies[SESSION_COOKIE])
    if found is None:
        raise Unauthenticated("unauthenticated", "the session has expired or ended; log in again")
    session, user = found
    if request.method not in SAFE_METHODS:
        presented = request.headers.get(CSRF_HEADER) or request.form.get("csrf_token")
        if not accounts.csrf_ok(session, presented):
            raise Forbidden("csrf_failed", f"state-changing requests from a session need the {CSRF_HEADER} header")
    return Principal("session", user.username, frozenset(ROLES[user.role]), user_id=user.id,
                     csrf_token=session.csrf_token)


def principal() -> Principal:
    """Who is making this request (set by the route's authentication)."""
    return g.principal


def set_session_cookie(cmdr: Commander, response: Response, key: str) -> None:
    """HttpOnly, SameSite=Lax, and Secure whenever the request came over TLS."""
    response.set_cookie(SESSION_COOKIE, key, max_age=int(cmdr.settings.session_ttl), httponly=True,
                        samesite="Lax", secure=request.is_secure, path="/")


def end_session(cmdr: Commander, response: Response) -> Response:
    """Log out: end the session behind the cookie (the request must carry its CSRF token, in the
    header or a form field) and clear the cookie on `response`."""
    key = request.cookies.get(SESSION_COOKIE, "")
    found = accounts.session_for(key)
    if found and not accounts.csrf_ok(found[0], request.headers.get(CSRF_HEADER) or request.form.get("csrf_token")):
        raise Forbidden("csrf_failed", f"logging out needs the session's CSRF token (the {CSRF_HEADER} header)")
    accounts.logout(cmdr, key)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def check_node_request(cmdr: Commander, principal: Principal, path: dict, nonce_with_write: bool = False) -> None:
    """A node token acts only for its own node, with a fresh signature and an unused nonce;
    the node row and the key that signed go to `g.node` and `g.node_key`. The nonce is spent
    here, or with `nonce_with_write` by the route's own group-committed write: it pops
    `g.spend_nonce` and runs it first in that write, so the request waits for one write turn, not two."""
    node_id = path.get("node_id")
    if principal.node_id is None or principal.node_id != node_id:
        raise Forbidden("forbidden", "a node token may only act for its own node")
    found = NODE_FOR_REQUEST.rows(node_id=node_id)
    node = found[0] if found else None
    if node is None:
        raise NotFound("not_found", f"node {node_id} does not exist")
    nonce, key = verify_node_signature(cmdr, node, principal.actor)
    g.node, g.node_key = node, key
    # A plain function of its values: the group's leader, in another request's greenlet, runs it.
    spend = functools.partial(spend_nonce, node_id, nonce)
    if nonce_with_write:
        g.spend_nonce = spend
    else:  # every signed request writes its nonce: these commit in groups (commander/batch.py)
        cmdr.small_writes.run(spend)


def spend_nonce(node_id: int, nonce: str) -> None:
    """Record a signed request's nonce (in a write transaction); a nonce seen before is a replay."""
    if not NONCE_INSERT.execute(node_id=node_id, nonce=nonce, seen_at=time.time()):
        raise Unauthenticated("replayed_request", "this request nonce was already used")


def verify_node_signature(cmdr: Commander, node: Node, actor: str) -> tuple[str, bytes]:
    """The request's nonce and the key that signed it: the node's key, or the pending key of a
    rotation, which the node's first request signed with it makes current (the old one then dies)."""
    box = cmdr.box
    query = request.query_string.decode()
    signed_path = request.path + (f"?{query}" if query else "")
    body = request.get_data(cache=True)
    key = bytes.fromhex(box.decrypt(node.signing_key).decode())
    try:
        return wire.check_request(key, request.headers, request.method, signed_path, body), key
    except wire.MalformedSignature as exc:
        raise Invalid("invalid_request", str(exc)) from None
    except ValueError as exc:
        refusal = Unauthenticated("bad_signature", str(exc))
    if node.next_signing_key is None:
        raise refusal
    pending = bytes.fromhex(box.decrypt(node.next_signing_key).decode())
    try:
        nonce = wire.check_request(pending, request.headers, request.method, signed_path, body)
    except ValueError:
        raise refusal from None
    if not nodes.finish_rotation(cmdr, node.id, node.next_signing_key, actor):
        raise refusal
    node.signing_key, node.next_signing_key = node.next_signing_key, None
    return nonce, pending
