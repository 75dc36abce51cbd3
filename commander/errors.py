"""JSON errors: `{"error": {"code", "message"}}` with the right status, never a stack trace
(the dashboard's pages answer in HTML through the `page` hook).

The one place where the domain's refusals (commander/exceptions.py) become HTTP: `STATUS`
gives each its status, `describe` the whole answer.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, jsonify, request
from playhouse.pool import MaxConnectionsExceeded
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from commander.exceptions import (
    CommanderError, Conflict, Forbidden, Invalid, NotFound, TooLarge, TooManyRequests, Unauthenticated,
)

log = logging.getLogger("m3shd.commander")


OVERLOAD_RETRY_S = 2        # what Retry-After tells a client the database pool was too busy for
OVERLOAD_LOG_EVERY_S = 60   # at most one log line per this long about it, however many requests


STATUS = {Invalid: 400, Unauthenticated: 401, Forbidden: 403, NotFound: 404, Conflict: 409, TooLarge: 413,
          TooManyRequests: 429}

def describe(exc: CommanderError) -> tuple[int, str, str, dict]:
    """(status, code, message, headers) of the answer to a refusal."""
    status = next((STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS), 500)  # 500: a bare CommanderError
    retry_after = getattr(exc, "retry_after", None)
    return status, exc.code, exc.message, {"Retry-After": str(retry_after)} if retry_after is not None else {}


def json_error(status: int, code: str, message: str, headers: dict | None = None):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    response.headers.update(headers or {})
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="m3shd"'
    return response


def describe_validation(exc: ValidationError) -> str:
    """One readable line per problem, e.g. `prompt: String should have at least 1 character`."""
    parts = []
    for problem in exc.errors(include_url=False)[:10]:
        where = ".".join(str(item) for item in problem["loc"]) or "body"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


class OverloadLog:
    """Counts requests refused because every database connection was in use, and logs one line
    per `every` seconds at most: a burst of a thousand is one line with its count, not a thousand
    tracebacks."""

    def __init__(self, every: float = OVERLOAD_LOG_EVERY_S):
        self.every, self.refused, self.logged_at = every, 0, None

    def refused_one(self) -> None:
        self.refused += 1
        t = time.monotonic()
        if self.logged_at is None or t - self.logged_at >= self.every:
            log.warning("every database connection is in use: %d request(s) answered 503 since the last report "
                        "(more workers, or [commander] db_pool_size, if this persists)", self.refused)
            self.refused, self.logged_at = 0, t


def register_error_handlers(app: Flask, page=None) -> None:
    """`page(status, code, message, headers)`, when given, answers every request outside /api."""

    def error_response(status: int, code: str, message: str, headers: dict | None = None):
        if page is not None and not (request.path + "/").startswith("/api/"):
            return page(status, code, message, headers or {})
        return json_error(status, code, message, headers)

    @app.errorhandler(CommanderError)
    def refused(exc: CommanderError):
        return error_response(*describe(exc))

    @app.errorhandler(ValidationError)
    def invalid(exc: ValidationError):
        return error_response(400, "invalid_request", describe_validation(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 408: "body_timeout", 411: "length_required",
                 413: "body_too_large", 415: "unsupported_media_type", 421: "unknown_host"}
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
        return error_response(exc.code or 500, codes.get(exc.code, exc.name.lower().replace(" ", "_")), message)

    overloads = OverloadLog()

    @app.errorhandler(MaxConnectionsExceeded)
    def overloaded(_exc: MaxConnectionsExceeded):
        overloads.refused_one()
        return error_response(503, "overloaded", "the Commander is busy (every database connection is in use); "
                                                 f"retry in {OVERLOAD_RETRY_S} s", {"Retry-After": str(OVERLOAD_RETRY_S)})

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "the Commander hit an unexpected error; see its log")
