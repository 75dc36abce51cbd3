"""The permissions every route is born with, and the role presets that bundle them."""

from __future__ import annotations

from m3shd.wire import Role

PUBLIC = "public"  # a route anyone may call (health); declared, never implied

PERMISSIONS = (
    "tasks:read", "tasks:submit", "tasks:cancel", "tasks:approve",
    "nodes:read", "nodes:manage", "nodes:join", "work:execute",
    "memory:read", "memory:write", "spend:read", "spend:manage",
    "agents:manage", "federation:relay", "webhooks:ingest", "tokens:manage", "admin",
)

# Each role's permissions; the role names are the wire's.
ROLES: dict[Role, tuple[str, ...]] = {
    Role.WORKER: ("nodes:join", "work:execute", "memory:read", "memory:write"),
    Role.MOBILE: (
        "tasks:read", "tasks:submit", "tasks:cancel", "tasks:approve",
        "nodes:read", "memory:read", "spend:read",
    ),
    Role.COMMANDER: (
        "tasks:read", "tasks:submit", "tasks:cancel", "tasks:approve",
        "nodes:read", "nodes:manage", "memory:read", "memory:write",
        "spend:read", "spend:manage", "agents:manage", "federation:relay", "webhooks:ingest",
    ),
    Role.ADMIN: PERMISSIONS,
}

JOIN_PERMISSIONS = ("nodes:join",)
NODE_PERMISSIONS = ("work:execute", "memory:read", "memory:write")
