"""Agents: profiles that tasks run as (a system prompt, a model, tools, capabilities, turns and a
timeout), versioned, loaded from files and edited through the API.

- profile.py: the profile format (Markdown with TOML front matter, or TOML) and its validation;
- loader.py: the profile files, shipped (bench/) and the operator's own, and the cheap look that
  tells whether any changed;
- service.py: agents and their versions (create, edit, roll back, delete, reload), what a new
  task takes from its agent, and what its lease carries;
- stats.py: each agent's live state (queued, running, recent outcomes, tokens and cost);
- api.py: the /api/agents routes.

docs/agents.md describes the format and the lease fields.
"""

from __future__ import annotations

from commander.agents import service


def init(cmdr) -> None:
    """Load the profile files as the Commander starts (each worker looks too; unchanged files
    change nothing)."""
    with cmdr.db.connection_context():
        service.reload(cmdr, "commander")
