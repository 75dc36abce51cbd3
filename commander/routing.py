"""The route table: every API route declares its permission and its body models here, once.

`api_route` wraps a view so that authentication, authorization, request parsing and response
serialization happen the same way everywhere; `RouteSpec` on each view feeds the OpenAPI
document and the authorization tests.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, g, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.routing import IntegerConverter

from commander import accounts, nodes, tokens
from commander.db import Compiled
from commander.errors import ApiError, describe_validation
from commander.models import Node, Nonce, Token
from commander.permissions import PUBLIC, ROLES
from commander.schemas import MAX_ID
from commander.secrets import token_hash
from m3shd import wire


class IdConverter(IntegerConverter):
    """`<id:…>` in a rule: a positive id that fits the database; anything else is a 404."""

    def __init__(self, url_map):
        super().__init__(url_map, min=1, max=MAX_ID)


@dataclass(frozen=True)
class RouteSpec:
    method: str
    rule: str
    permission: str
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    also: tuple[int, ...] = ()     # other success statuses the response model also answers with
    signed: bool = False           # a node request: HMAC headers, and only the token's own node
    stream: str | None = None      # media type of a streamed response


@dataclass(frozen=True)
class Principal:
    kind: str                       # api | join | node (tokens) or session (a logged-in user)
    name: str
    permissions: frozenset[str]
    token_id: int | None = None
    node_id: int | None = None
    user_id: int | None = None
    csrf_token: str | None = None   # a session's, for the dashboard's forms

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"{'user' if self.kind == 'session' else self.kind + ' token'}:{self.name}"


SESSION_COOKIE = "m3shd_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def api_route(bp: Blueprint, method: str, rule: str, *, permission: str, **options):
    spec = RouteSpec(method=method, rule=rule, permission=permission, summary="", **options)

    def decorator(handler):
        route = RouteSpec(**{**spec.__dict__, "summary": (handler.__doc__ or "").strip().splitlines()[0]})

        @functools.wraps(handler)
        def view(**path):
            g.principal = None if route.permission == PUBLIC else authenticate(route, path)
            kwargs = dict(path)
            if route.body:
                kwargs["body"] = parse_body(route.body)
            if route.query:
                kwargs["query"] = parse_query(route.query)
            result = handler(**kwargs)
            if result is None:
                return current_app.response_class(status=route.status)
            if isinstance(result, Response):
                return result
            status = route.status
            if isinstance(result, tuple):
                result, status = result
            return jsonify(result.model_dump(mode="json")), status

        view.route_spec = route
        bp.add_url_rule(rule, endpoint=handler.__name__, view_func=view, methods=[method])
        return view

    return decorator


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_body(model: type[BaseModel]) -> BaseModel:
    raw = request.get_data(cache=True)
    try:
        # NaN and Infinity are Python's extensions, not JSON: they would be stored and echoed back.
        document = json.loads(raw or b"null", parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise ApiError(400, "invalid_request", "the request body must be a JSON object")
    return model.model_validate(document)


def parse_query(model: type[BaseModel]) -> BaseModel:
    args = request.args
    if any(len(args.getlist(key)) > 1 for key in args):
        raise ApiError(400, "invalid_request", "a query parameter was given more than once")
    try:
        return model.model_validate(dict(args), strict=False)
    except ValidationError as exc:
        raise ApiError(400, "invalid_request", describe_validation(exc)) from None


# Every node request runs these: compiled once (see db.Compiled), parameters in this order.
TOKEN_BY_HASH = Compiled(Token, lambda: Token.select(  # (token_hash)
    Token.id, Token.kind, Token.name, Token.permissions, Token.node, Token.expires_at, Token.revoked_at,
    Token.last_used_at).where(Token.token_hash == ""))
NODE_FOR_REQUEST = Compiled(Node, lambda: Node.select(  # (node id)
    Node.id, Node.state, Node.capabilities, Node.runner, Node.problem, Node.signing_key, Node.next_signing_key
).where(Node.id == 0))
NONCE_INSERT = Compiled(Nonce, lambda: Nonce.insert(  # (node id, nonce, seen_at)
    node=0, value="", seen_at=0.0).on_conflict_ignore())


def authenticate(route: RouteSpec, path: dict) -> Principal:
    """A bearer token if one is sent, else the session cookie; then the route's permission."""
    if "Authorization" in request.headers or SESSION_COOKIE not in request.cookies:
        principal = token_principal()
    else:
        principal = session_principal()
    if route.permission not in principal.permissions:
        raise ApiError(403, "forbidden", f"this {'session' if principal.kind == 'session' else 'token'} "
                                         f"lacks the `{route.permission}` permission")
    if route.signed:
        check_node_request(principal, path)
    return principal


def token_principal() -> Principal:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "unauthenticated", "send `Authorization: Bearer <token>` or log in")
    found = TOKEN_BY_HASH.rows(token_hash(secret.strip()))
    token = found[0] if found else None
    now = time.time()
    if reason := tokens.refusal(token, now):
        raise ApiError(401, "unauthenticated", reason)
    # Last-used time at minute resolution: a write per request would cost more than it tells.
    if token.last_used_at is None or now - token.last_used_at > 60:
        with commander().write_turn():
            Token.update(last_used_at=now).where(Token.id == token.id).execute()
    return Principal(token.kind, token.name, frozenset(token.permissions), token_id=token.id, node_id=token.node_id)


def session_principal() -> Principal:
    found = accounts.session_for(request.cookies[SESSION_COOKIE])
    if found is None:
        raise ApiError(401, "unauthenticated", "the session has expired or ended; log in again")
    session, user = found
    if request.method not in SAFE_METHODS:
        presented = request.headers.get(CSRF_HEADER) or request.form.get("csrf_token")
        if not accounts.csrf_ok(session, presented):
            raise ApiError(403, "csrf_failed", f"state-changing requests from a session need the {CSRF_HEADER} header")
    return Principal("session", user.username, frozenset(ROLES[user.role]), user_id=user.id,
                     csrf_token=session.csrf_token)


def set_session_cookie(response: Response, key: str) -> None:
    """HttpOnly, SameSite=Lax, and Secure whenever the request came over TLS."""
    response.set_cookie(SESSION_COOKIE, key, max_age=int(commander().settings["session_ttl"]), httponly=True,
                        samesite="Lax", secure=request.is_secure, path="/")


def end_session(response: Response) -> Response:
    """Log out: end the session behind the cookie (the request must carry its CSRF token, in the
    header or a form field) and clear the cookie on `response`."""
    key = request.cookies.get(SESSION_COOKIE, "")
    found = accounts.session_for(key)
    if found and not accounts.csrf_ok(found[0], request.headers.get(CSRF_HEADER) or request.form.get("csrf_token")):
        raise ApiError(403, "csrf_failed", f"logging out needs the session's CSRF token (the {CSRF_HEADER} header)")
    accounts.logout(commander(), key)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def check_node_request(principal: Principal, path: dict) -> None:
    node_id = path.get("node_id")
    if principal.node_id is None or principal.node_id != node_id:
        raise ApiError(403, "forbidden", "a node token may only act for its own node")
    found = NODE_FOR_REQUEST.rows(node_id)
    node = found[0] if found else None
    if node is None:
        raise ApiError(404, "not_found", f"node {node_id} does not exist")
    nonce, key = verify_node_signature(node)
    with commander().write_turn():
        inserted = NONCE_INSERT.execute(node_id, nonce, time.time())
    if not inserted:
        raise ApiError(401, "replayed_request", "this request nonce was already used")
    g.node, g.node_key = node, key


def verify_node_signature(node: Node) -> tuple[str, bytes]:
    """The request's nonce and the key that signed it: the node's key, or the pending key of a
    rotation, which the node's first request signed with it makes current (the old one then dies)."""
    box = commander().box
    query = request.query_string.decode()
    signed_path = request.path + (f"?{query}" if query else "")
    body = request.get_data(cache=True)
    key = bytes.fromhex(box.decrypt(node.signing_key).decode())
    try:
        return wire.check_request(key, request.headers, request.method, signed_path, body), key
    except wire.MalformedSignature as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    except ValueError as exc:
        refusal = ApiError(401, "bad_signature", str(exc))
    if node.next_signing_key is None:
        raise refusal
    pending = bytes.fromhex(box.decrypt(node.next_signing_key).decode())
    try:
        nonce = wire.check_request(pending, request.headers, request.method, signed_path, body)
    except ValueError:
        raise refusal from None
    if not nodes.finish_rotation(commander(), node.id, node.next_signing_key):
        raise refusal
    node.signing_key, node.next_signing_key = node.next_signing_key, None
    return nonce, pending


def principal() -> Principal:
    return g.principal


def commander():
    """This process's Commander (see context.py)."""
    return current_app.extensions["m3shd"]
