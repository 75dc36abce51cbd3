"""The permissions every route is born with, and the role presets that bundle them."""

from __future__ import annotations

PUBLIC = "public"  # a route anyone may call (health); declared, never implied

PERMISSIONS = (
    "tasks:read", "tasks:submit", "tasks:cancel", "tasks:approve",
    "nodes:read", "nodes:manage", "nodes:join", "work:execute",
    "memory:read", "memory:write", "spend:read", "spend:manage",
    "agents:manage", "federation:relay", "webhooks:ingest", "tokens:manage", "admin",
)

ROLES: dict[str, tuple[str, ...]] = {
    "worker": ("nodes:join", "work:execute", "memory:read", "memory:write"),
    "mobile": (
        "tasks:read", "tasks:submit", "tasks:cancel", "tasks:approve",
        "nodes:read", "memory:read", "spend:read",
    ),
    "commander": (
        "tasks:read", "tasks:submit", "tasks:cancel", "tasks:approve",
        "nodes:read", "nodes:manage", "memory:read", "memory:write",
        "spend:read", "spend:manage", "agents:manage", "federation:relay", "webhooks:ingest",
    ),
    "admin": PERMISSIONS,
}

JOIN_PERMISSIONS = ("nodes:join",)
NODE_PERMISSIONS = ("work:execute", "memory:read", "memory:write")
