"""The route table: every API route declares its permission and its body models here, once.

`api_route` wraps a view so that authentication (commander/auth.py), authorization, request
parsing and response serialization happen the same way everywhere; `RouteSpec` on each view
feeds the OpenAPI document and the authorization tests.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, g, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import UnsupportedMediaType
from werkzeug.routing import IntegerConverter

from commander.auth import authenticate
from commander.errors import describe_validation
from commander.exceptions import Invalid
from commander.permissions import PUBLIC
from commander.schemas import MAX_ID


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
    nonce_with_write: bool = False  # signed, and its handler's own small write spends the nonce (g.spend_nonce)
    stream: str | None = None      # media type of a streamed (or raw, not JSON) response
    accepts: tuple[str, ...] = ()  # media types of a raw (not JSON) request body
    agent_scoped: bool = False     # open to a token scoped to one agent (the route keeps it to that agent)
    hook: bool = False             # a webhook: no token or session; the view checks the hook's own secret
    body_limit: str | None = None  # the setting that caps this route's body (below max_body_bytes), checked unread


def api_route(bp: Blueprint, method: str, rule: str, *, permission: str, **options):
    spec = RouteSpec(method=method, rule=rule, permission=permission, summary="", **options)

    def decorator(handler):
        route = RouteSpec(**{**spec.__dict__, "summary": (handler.__doc__ or "").strip().splitlines()[0]})

        @functools.wraps(handler)
        def view(**path):
            g.principal = None if route.permission == PUBLIC or route.hook else authenticate(
                commander(), route.permission, path, signed=route.signed, agent_scoped=route.agent_scoped,
                nonce_with_write=route.nonce_with_write)
            kwargs = dict(path)
            if route.body:
                kwargs["body"] = parse_body(route.body)
            if route.query:
                kwargs["query"] = parse_query(route.query)
            result = handler(**kwargs)
            if route.nonce_with_write and "spend_nonce" in g:
                raise RuntimeError(f"{handler.__name__} left its nonce unspent: a replay would be accepted")
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
    # Declared JSON only: a browser sends text/plain or a form cross-site without asking first
    # (a "simple" request), while application/json needs a CORS preflight this API never grants.
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send the body as JSON with the header Content-Type: application/json")
    raw = request.get_data(cache=True)
    try:
        # NaN and Infinity are Python's extensions, not JSON: they would be stored and echoed back.
        document = json.loads(raw or b"null", parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Invalid("invalid_json", "the request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise Invalid("invalid_request", "the request body must be a JSON object")
    return model.model_validate(document)


def parse_query(model: type[BaseModel]) -> BaseModel:
    args = request.args
    if any(len(args.getlist(key)) > 1 for key in args):
        raise Invalid("invalid_request", "a query parameter was given more than once")
    try:
        return model.model_validate(dict(args), strict=False)
    except ValidationError as exc:
        raise Invalid("invalid_request", describe_validation(exc)) from None


def commander():
    """This process's Commander (see context.py)."""
    return current_app.extensions["m3shd"]
