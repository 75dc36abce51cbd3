"""`GET /api/permissions`: every permission, what it allows, its presets, and whether it is reserved."""

from __future__ import annotations

from flask import Blueprint, Flask, current_app

from commander import permissions
from commander.permissions import ABOUT, PERMISSIONS, PUBLIC
from commander.routes import api_route
from commander.schemas import PermissionList, PermissionOut

bp = Blueprint("permissions", __name__)


def declared(app: Flask) -> frozenset[str]:
    """The permissions the route table puts to use: those an API route or a dashboard page declares."""
    specs = (getattr(view, kind, None) for view in app.view_functions.values() for kind in ("route_spec", "page_spec"))
    return frozenset(spec.permission for spec in specs if spec is not None) - {PUBLIC}


@api_route(bp, "GET", "/permissions", permission="tokens:manage", response=PermissionList)
def list_permissions():
    """Every permission a token can hold, its presets, and whether it is reserved (guards nothing yet)."""
    unused = set(permissions.reserved(declared(current_app)))
    return PermissionList(permissions=[
        PermissionOut(name=name, about=ABOUT[name], presets=permissions.presets_granting(name), reserved=name in unused)
        for name in PERMISSIONS
    ])
