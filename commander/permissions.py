"""The permissions every route is born with, and the role presets that bundle them.

A permission that no route declares is *reserved*: its name is kept for a feature still to come
(federation) and the presets that will need it grant it
already, but it guards nothing yet. Which ones are reserved is read from the route table
(`declared` in commander/api/permissions.py), never kept as a list: a permission stops being
reserved the moment a route declares it.
"""

from __future__ import annotations

from collections.abc import Iterable

from commander.exceptions import Forbidden
from m3shd.wire import Role

PUBLIC = "public"  # a route anyone may call (health); declared, never implied

PERMISSIONS = (
    "tasks:read", "tasks:submit", "tasks:cancel", "tasks:approve",
    "nodes:read", "nodes:manage", "nodes:join", "work:execute",
    "memory:read", "memory:write", "spend:read", "spend:manage",
    "agents:manage", "federation:relay", "webhooks:ingest", "webhooks:manage", "tokens:manage", "admin",
)

# What each permission lets its holder do; for a reserved one, what its feature will let it do.
ABOUT: dict[str, str] = {
    "tasks:read": "read tasks (and their tool calls), pipelines, provenance, the event stream and the plugins",
    "tasks:submit": "submit tasks and pipelines, and upload the images tasks take",
    "tasks:cancel": "cancel tasks and pipelines",
    "tasks:approve": "approve or reject tasks that wait for approval",
    "nodes:read": "read nodes, the machines asking to join (not their machine ids) and which runner credentials "
                  "are stored (never their secrets)",
    "nodes:manage": "pause, drain or remove nodes, rotate their keys, approve their capabilities, approve or turn "
                    "away joins, read machine ids, and store or remove runner credentials",
    "nodes:join": "register a machine as a N0D3",
    "work:execute": "a N0D3's heartbeats, claims, results, its tasks' images and tool calls, for its own node only",
    "memory:read": "read agents' memories",
    "memory:write": "write agents' memories",
    "spend:read": "read the spend figures, the dearest tasks and the daily caps",
    "spend:manage": "set and clear daily spend caps",
    "agents:manage": "create, edit, roll back, delete and reload agent profiles",
    "federation:relay": "relay work between meshes",
    "webhooks:ingest": "deliver GitHub, Uptime Kuma and signed JSON webhooks that start tasks and pipelines (held "
                       "by each hook's own secret, which authenticates its deliveries instead of a token)",
    "webhooks:manage": "create, list, rotate the secrets of and delete webhooks, and read their deliveries",
    "tokens:manage": "create, list and revoke tokens, and list the permissions they can hold",
    "admin": "manage users and read the audit log",
}

# Each role's permissions; the role names are the wire's.
ROLES: dict[Role, tuple[str, ...]] = {
    Role.WORKER: ("nodes:join", "work:execute"),
    Role.MOBILE: (
        "tasks:read", "tasks:submit", "tasks:cancel", "tasks:approve",
        "nodes:read", "memory:read", "memory:write", "spend:read",
    ),
    Role.COMMANDER: (
        "tasks:read", "tasks:submit", "tasks:cancel", "tasks:approve",
        "nodes:read", "nodes:manage", "memory:read", "memory:write",
        "spend:read", "spend:manage", "agents:manage", "federation:relay", "webhooks:ingest", "webhooks:manage",
    ),
    Role.ADMIN: PERMISSIONS,
}

JOIN_PERMISSIONS = ("nodes:join",)
# A node gets its task's memories in the lease; reading or writing any agent's would be more than it needs.
NODE_PERMISSIONS = ("work:execute",)


# Roles whose users hold every permission: the last enabled one may not be disabled or demoted.
FULL_ROLES = tuple(role for role, granted in ROLES.items() if set(granted) == set(PERMISSIONS))


def check_held(held: frozenset[str] | None, needed: Iterable[str], doing: str) -> None:
    """Nobody grants, obtains or overrides permissions they do not hold: refuse `doing` unless
    `held` (the caller's permissions) includes every one of `needed`. None is this machine's
    own operator at the command line (`--local`), who owns the database anyway."""
    missing = sorted(set(needed) - held) if held is not None else []
    if missing:
        raise Forbidden("forbidden", f"you cannot {doing}: you do not hold {', '.join(missing)}")


def reserved(declared: Iterable[str]) -> list[str]:
    """The permissions outside `declared` (those the route table declares), in PERMISSIONS order."""
    declared = set(declared)
    return [name for name in PERMISSIONS if name not in declared]


def presets_granting(permission: str) -> list[str]:
    return [role for role, granted in ROLES.items() if permission in granted]
