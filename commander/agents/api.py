"""The /api/agents routes: reading needs `tasks:read`, every change `agents:manage`."""

from __future__ import annotations

from flask import Blueprint

from commander.agents import service, stats
from commander.auth import principal
from commander.exceptions import NotFound
from commander.models import Agent
from commander.routes import api_route, commander
from commander.schemas import (
    AgentDeleteQuery, AgentList, AgentOut, AgentProblem, AgentPut, AgentReloadOut, AgentRollback, AgentSettings,
    AgentStats, AgentVersionList, AgentVersionOut,
)

bp = Blueprint("agents", __name__)


def agent_views(agents: list[Agent], full: bool = False) -> list[AgentOut]:
    """Agents as the API shows them: the current version's settings and the live state; `full`
    adds the system prompt and the profile text (one agent's view)."""
    figures = stats.of([agent.name for agent in agents])
    views = []
    for agent in agents:
        # The settings from the worker's cache of versions (one query per agent less); the text
        # from the row, for one agent's view.
        profile = service.version_of(commander(), agent.name, agent.current).profile if agent.current else None
        settings = {name: getattr(profile, name) for name in AgentSettings.model_fields} if profile else NO_SETTINGS
        views.append(AgentOut.from_row(
            agent, **settings, state="deleted" if agent.deleted_at else "broken" if agent.error else "ready",
            version=agent.current, stats=AgentStats(**vars(figures[agent.name])),
            system_prompt=profile.system_prompt if full and profile else None,
            text=service.version_row(agent, agent.current).text if full and profile else None))
    return views


# The settings shown for an agent that has no working version yet.
NO_SETTINGS = dict(title="", description="", model=None, allowed_models=[], requires=[], prefers=[], allowed_tools=[],
                   disallowed_tools=[], max_turns=None, timeout=None, memory="own")


def reading() -> None:
    """Before any read: pick up edited profile files (at most once every few seconds)."""
    service.check_files(commander())


@api_route(bp, "GET", "/agents", permission="tasks:read", response=AgentList, agent_scoped=True)
def list_agents():
    """Every agent with its current version's settings and live state: queued, running, success rate, cost."""
    reading()
    caller = principal().agent
    shown = [agent for agent in service.listing() if caller is None or agent.name == caller]
    return AgentList(agents=agent_views(shown))


@api_route(bp, "GET", "/agents/<name>", permission="tasks:read", response=AgentOut, agent_scoped=True)
def get_agent(name: str):
    """One agent: its current version's settings, system prompt and profile text, and its live state."""
    reading()
    visible(name)
    return agent_views([service.get(name, deleted=True)], full=True)[0]


@api_route(bp, "GET", "/agents/<name>/versions", permission="tasks:read", response=AgentVersionList,
           agent_scoped=True)
def list_versions(name: str):
    """Every version of an agent, newest first, each with its profile text and where it came from."""
    reading()
    visible(name)
    agent = service.get(name, deleted=True)
    return AgentVersionList(name=name, current=agent.current,
                            versions=[AgentVersionOut.from_row(row) for row in service.versions(agent)])


@api_route(bp, "PUT", "/agents/<name>", permission="agents:manage", body=AgentPut, response=AgentOut, status=200,
           also=(201,))
def put_agent(name: str, body: AgentPut):
    """Create an agent, or give it a new version with this profile text (the same text changes nothing)."""
    agent, created = service.put(commander(), name, body.profile, principal().actor)
    return agent_views([agent], full=True)[0], 201 if created else 200


@api_route(bp, "POST", "/agents/<name>/rollback", permission="agents:manage", body=AgentRollback, response=AgentOut)
def rollback(name: str, body: AgentRollback):
    """Make an old version's profile current again (as a new version, so the history keeps the change)."""
    return agent_views([service.rollback(commander(), name, body.version, principal().actor)], full=True)[0]


@api_route(bp, "DELETE", "/agents/<name>", permission="agents:manage", query=AgentDeleteQuery, status=204)
def delete_agent(name: str, query: AgentDeleteQuery):
    """Delete an agent; refused (409) while tasks of it wait or run, unless `fallback` moves the waiting ones to general."""
    service.delete(commander(), name, principal().actor, query.fallback)


@api_route(bp, "POST", "/agents/reload", permission="agents:manage", response=AgentReloadOut)
def reload_agents():
    """Read the profile files again: changed files make new versions, broken ones are reported."""
    done = service.reload(commander(), principal().actor)
    return AgentReloadOut(created=done.created, updated=done.updated, unchanged=done.unchanged,
                          broken=[AgentProblem(name=name, error=error) for name, error in done.broken],
                          missing=done.missing)


def visible(name: str) -> None:
    """A token scoped to an agent sees that agent only (as if the others did not exist)."""
    caller = principal().agent
    if caller is not None and name != caller:
        raise NotFound("unknown_agent", f"there is no agent named {name!r}")
