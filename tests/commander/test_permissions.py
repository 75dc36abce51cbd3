"""Permissions, in process: the catalogue `GET /api/permissions` serves, reserved ones read from
the route table, and the README's tables, which must not promise what no route does."""

from __future__ import annotations

import re

from flask import Blueprint

from commander import openapi
from commander.api.permissions import declared
from commander.permissions import ABOUT, PERMISSIONS, PUBLIC, ROLES, reserved
from commander.routes import api_route
from commander.web import site
from harness import ROOT


def route_table_permissions(app) -> set[str]:
    """What the API routes and dashboard pages declare, walked here independently of the API."""
    specs = [spec for _, spec in openapi.routes(app)] + [spec for _, spec in site.pages(app)]
    return {spec.permission for spec in specs} - {PUBLIC}


def test_every_permission_is_listed_with_its_presets_and_reserved_when_no_route_declares_it(app, client, bearer):
    reply = client.get("/api/permissions", headers=bearer("admin"))
    assert reply.status_code == 200, reply.get_json()
    listed = reply.get_json()["permissions"]
    assert [p["name"] for p in listed] == list(PERMISSIONS) and len(PERMISSIONS) == 18
    assert all(p["about"] == ABOUT[p["name"]] for p in listed)
    assert all(set(p["presets"]) == {role for role, granted in ROLES.items() if p["name"] in granted} for p in listed)
    in_use = route_table_permissions(app)
    assert {p["name"] for p in listed if not p["reserved"]} == in_use
    assert {p["name"] for p in listed if p["reserved"]} == set(PERMISSIONS) - in_use != set()


def test_a_permission_stops_being_reserved_when_a_route_declares_it(app, client, bearer):
    assert "federation:relay" in reserved(declared(app))
    later = Blueprint("federation", __name__)

    @api_route(later, "GET", "/federation", permission="federation:relay")
    def federation():
        """Federation (a feature landing)."""
        return {"peers": []}

    app.register_blueprint(later, url_prefix="/api")
    listed = {p["name"]: p for p in client.get("/api/permissions", headers=bearer("admin")).get_json()["permissions"]}
    assert listed["federation:relay"]["reserved"] is False and listed["memory:write"]["reserved"] is False


def test_listing_the_permissions_needs_tokens_manage(client, bearer):
    refused = client.get("/api/permissions", headers=bearer("mobile"))
    assert refused.status_code == 403 and "`tokens:manage`" in refused.get_json()["error"]["message"]
    assert client.get("/api/permissions").status_code == 401
    assert client.get("/api/permissions", headers=bearer(None, ["tokens:manage"])).status_code == 200


def readme_table(after: str) -> list[str]:
    """The rows of the first Markdown table in the README after the line starting `after`."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(after))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    return rows[2:]  # past the header and its rule


def test_the_readme_promises_nothing_a_reserved_permission_would_guard(app):
    unused = set(reserved(declared(app)))
    expected = [
        f"| `{name}` | "
        + (f"reserved for a feature to come ({ABOUT[name]}); guards nothing yet" if name in unused else ABOUT[name])
        + f" | {', '.join(role for role, granted in ROLES.items() if name in granted)} |"
        for name in PERMISSIONS
    ]
    table = readme_table("There are 18 permissions.")
    assert table == expected, "README.md's table of permissions should read:\n" + "\n".join(expected)
    # The presets' "can" column names no reserved feature (e.g. `spend:manage` → "spend").
    for row in readme_table("Every API route and dashboard page declares"):
        preset, can = re.fullmatch(r"\| `(\w+)` \| [^|]+ \| ([^|]+) \|", row).groups()
        for name in unused & set(ROLES[preset]):
            feature = name.split(":")[0].removesuffix("s")
            assert feature not in can.lower(), f"the {preset} preset promises {feature!r}, which {name} would guard"
