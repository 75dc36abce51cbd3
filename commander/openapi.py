"""The OpenAPI 3.1 document, generated from the route table and the pydantic models."""

from __future__ import annotations

import re

from flask import Flask
from pydantic.json_schema import models_json_schema

from commander.permissions import PUBLIC
from commander.schemas import MAX_ID, ErrorBody
from m3shd import __version__

_CONVERTER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def routes(app: Flask):
    """(flask rule, spec) for every API route, in a stable order."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, sorted(r.methods))):
        spec = getattr(app.view_functions[rule.endpoint], "route_spec", None)
        if spec is not None:
            yield rule, spec


def document(app: Flask) -> dict:
    specs = [spec for _, spec in routes(app)]
    models = {ErrorBody}
    for spec in specs:
        models.update(m for m in (spec.body, spec.response) if m)
    pairs = [(model, "validation") for model in sorted(models, key=lambda m: m.__name__)]
    keys, schemas = models_json_schema(pairs, ref_template="#/components/schemas/{model}")
    ref = {model: keys[(model, "validation")] for model in models}
    error = {"description": "error", "content": {"application/json": {"schema": ref[ErrorBody]}}}

    paths: dict = {}
    for rule, spec in routes(app):
        path = "/api" + _CONVERTER.sub(r"{\1}", spec.rule)
        operation: dict = {
            "operationId": rule.endpoint.replace(".", "_"),
            "summary": spec.summary,
            "x-permission": spec.permission,
            **({"x-agent-scoped": True} if spec.agent_scoped else {}),
            "responses": {"default": error},
        }
        if spec.permission != PUBLIC:
            operation["security"] = [] if spec.hook else [{"bearer": []}]  # a hook: its own secret, described below
        parameters = [
            {"name": name, "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID} if f"<id:{name}>" in spec.rule
             else {"type": "string"}}
            for name in _CONVERTER.findall(spec.rule)  # in path order (rule.arguments is a set: any order)
        ]
        if spec.query:
            schema = spec.query.model_json_schema()
            for name, prop in schema.get("properties", {}).items():
                parameters.append({"name": name, "in": "query", "required": name in schema.get("required", []),
                                   "schema": prop})
        if parameters:
            operation["parameters"] = parameters
        if spec.body:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref[spec.body]}}}
        elif spec.accepts:
            raw = {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}
            operation["requestBody"] = {"required": True, "content": {kind: raw for kind in spec.accepts}}
        if spec.signed:
            operation["description"] = ("Node request: also send X-M3SHD-Timestamp, X-M3SHD-Nonce and "
                                        "X-M3SHD-Signature (HMAC-SHA256 with the node's signing key).")
        if spec.hook:
            operation["description"] = ("Webhook: authenticated by the hook's own secret (X-Hub-Signature-256, or for "
                                        "Uptime Kuma `Authorization: Bearer <secret>` or ?secret=), not by a token; "
                                        "the body is capped at webhook_max_body bytes.")
        if spec.response:
            content = {"application/json": {"schema": ref[spec.response]}}
            for status in (spec.status, *spec.also):
                operation["responses"][str(status)] = {"description": "ok", "content": content}
        elif spec.stream:
            operation["responses"]["200"] = {"description": "stream", "content": {spec.stream: {"schema": {"type": "string"}}}}
        else:
            operation["responses"][str(spec.status)] = {"description": "done"}
        paths.setdefault(path, {})[spec.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "M3SHD Commander API", "version": __version__},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
