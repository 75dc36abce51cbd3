from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from commander import openapi
from commander.permissions import PUBLIC
from commander.routes import api_route, commander
from commander.schemas import Health
from m3shd import __version__

bp = Blueprint("meta", __name__)


@api_route(bp, "GET", "/health", permission=PUBLIC, response=Health)
def health():
    """Liveness and versions; needs no token, and takes no database connection."""
    return Health(status="ok", version=__version__, schema_version=commander().schema_version)


@api_route(bp, "GET", "/openapi.json", permission=PUBLIC, stream="application/json")
def openapi_document():
    """This document."""
    return jsonify(openapi.document(current_app))
