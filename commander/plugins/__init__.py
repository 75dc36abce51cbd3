"""Plugins: tools agents call mid-task with [TOOL_CALL] markers, and pipeline notify steps.

- manager.py: finds plugins (entry points `m3shd.plugins`, files in `plugins_dir`), runs their
  setup(manager), keeps their tools and what failed to load;
- lease.py: the tools section a lease adds to its agent's system prompt, kept for provenance;
- calls.py: a node's tool call under its lease: checked, run with a timeout, capped, recorded;
- steps.py: notify steps, sent by the Commander itself once their parents are done;
- builtin/: the plugins that come with m3shd (notify; web: web_search, fetch_url);
- api.py: GET /api/plugins, a task's tool calls, and the node's POST of a call.
"""

from __future__ import annotations

from commander.plugins import manager, steps


def init(cmdr) -> None:
    """Load the enabled plugins (one that fails is kept as failed, with the reason)."""
    cmdr.plugins = manager.load(cmdr.settings)


def start(cmdr) -> None:
    """Per worker process: the notify step delivery loop."""
    steps.start(cmdr)
