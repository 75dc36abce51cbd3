"""Agents: create, edit, roll back, delete and reload profiles; give a new task its agent; give a
lease the profile it runs with.

Versions are append-only: every change (an edit, a changed file, a rollback) writes a new
AgentVersion and makes it current, so the current version is always the latest and a task's
`agent_version` names exactly what it ran. A rollback to version N is a new version with N's
profile (the history shows it as a change, and diffs between any two versions stay meaningful).
Because a version never changes once written, each worker caches it by (name, version) for
good: a claim adds a profile to its lease without touching the database.

A task takes its agent's current version when it is submitted and keeps it: an edit changes
what later tasks run, never what is already queued.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import peewee as pw

from commander import audit, events
from commander.agents import loader
from commander.agents.profile import Profile, ProfileError, parse
from commander.context import Commander
from commander.db import Compiled, Param
from commander.exceptions import Conflict, Forbidden, Invalid, NotFound
from commander.models import LEASED, Agent, AgentVersion, Task, now

log = logging.getLogger("m3shd.commander")

GENERAL = "general"  # the default agent, and where a deleted agent's tasks may fall back to

AGENT_BY_NAME = Compiled(Agent, lambda: Agent.select().where(Agent.name == Param("name")))
# What every submit reads of its agent, as raw values (a model instance costs three times as much).
AGENT_CURRENT = Compiled(Agent, lambda: Agent.select(Agent.current, Agent.error, Agent.deleted_at).where(
    Agent.name == Param("name")))
VERSION = Compiled(AgentVersion, lambda: AgentVersion.select().join(Agent).where(
    (Agent.name == Param("name")) & (AgentVersion.version == Param("version"))))


@dataclass(frozen=True)
class Version:
    """One version of a profile as the hot paths use it (cached: versions never change)."""
    name: str
    version: int
    profile: Profile
    lease: dict       # what a lease carries of it (LeaseOut's profile fields)


@dataclass(frozen=True)
class Assignment:
    """What a new task takes from its agent."""
    agent: str
    version: int
    requires: tuple[str, ...]
    prefers: tuple[str, ...]
    model: str | None


# --- reading -----------------------------------------------------------------------------------

def find(name: str) -> Agent | None:
    found = AGENT_BY_NAME.rows(name=name)
    return found[0] if found else None


def live_names() -> list[str]:
    return [name for (name,) in Agent.select(Agent.name).where(Agent.deleted_at.is_null()).order_by(Agent.name)
            .tuples()]


def unknown(name: str) -> NotFound:
    return NotFound("unknown_agent", f"there is no agent named {name!r}; the agents are: {', '.join(live_names())}")


def get(name: str, deleted: bool = False) -> Agent:
    """The agent called `name` (a deleted one too when `deleted`); NotFound lists the names there are."""
    agent = find(name)
    if agent is None or (agent.deleted_at is not None and not deleted):
        raise unknown(name)
    return agent


def listing() -> list[Agent]:
    """Every agent not deleted, by name."""
    return list(Agent.select().where(Agent.deleted_at.is_null()).order_by(Agent.name))


def versions(agent: Agent) -> list[AgentVersion]:
    """Every version of the agent, newest first."""
    return list(AgentVersion.select().where(AgentVersion.agent == agent.id).order_by(AgentVersion.version.desc()))


def version_row(agent: Agent, version: int) -> AgentVersion:
    found = AgentVersion.get_or_none((AgentVersion.agent == agent.id) & (AgentVersion.version == version))
    if found is None:
        raise NotFound("not_found", f"agent {agent.name} has no version {version} (it has 1 to {last_version(agent)})")
    return found


def last_version(agent: Agent) -> int:
    return AgentVersion.select(pw.fn.MAX(AgentVersion.version)).where(AgentVersion.agent == agent.id).scalar() or 0


def version_of(cmdr: Commander, name: str, version: int) -> Version:
    """A version as the lease and submit paths use it, cached for good in this worker."""
    def load() -> Version:
        found = VERSION.rows(name=name, version=version)
        if not found:
            raise NotFound("not_found", f"agent {name} has no version {version}")
        profile = profile_of(name, found[0])
        return Version(name, version, profile, lease_fields(name, version, profile))

    return cmdr.cached(f"agent-version:{name}:{version}", math.inf, load)


def profile_of(name: str, row: AgentVersion) -> Profile:
    """A stored version's profile (validated when it was written)."""
    return Profile.model_construct(
        name=name, title=row.title, description=row.description, model=row.model, allowed_models=row.allowed_models,
        requires=row.requires, prefers=row.prefers, allowed_tools=row.allowed_tools,
        disallowed_tools=row.disallowed_tools, max_turns=row.max_turns, timeout=row.timeout, memory=row.memory,
        plugin_tools=row.plugin_tools, system_prompt=row.system_prompt)


# What a lease of a task submitted before agents existed carries: nothing beyond the prompt.
NO_PROFILE = dict(agent=None, agent_version=None, system_prompt=None, allowed_tools=[], disallowed_tools=[],
                  max_turns=None, timeout_s=None)


def lease_fields(name: str, version: int, profile: Profile) -> dict:
    return dict(agent=name, agent_version=version, system_prompt=profile.system_prompt,
                allowed_tools=list(profile.allowed_tools), disallowed_tools=list(profile.disallowed_tools),
                max_turns=profile.max_turns, timeout_s=profile.timeout)


def plugin_tools(cmdr: Commander, name: str | None, version: int | None) -> list[str]:
    """The plugin tools a task run as `name` at `version` may call (commander/plugins)."""
    return [] if name is None else version_of(cmdr, name, version).profile.plugin_tools


def for_lease(cmdr: Commander, name: str | None, version: int | None) -> dict:
    """The profile fields of a lease for a task run as `name` at `version`."""
    return NO_PROFILE if name is None else version_of(cmdr, name, version).lease


# --- tasks -------------------------------------------------------------------------------------

def chosen(requested: str | None, token_agent: str | None) -> str:
    """The agent a new task runs as: the one asked for, else the token's own, else `general`. A
    token scoped to an agent may ask for no other."""
    name = requested or token_agent or GENERAL
    if token_agent and name != token_agent:
        raise Forbidden("agent_scope", f"this token may only submit tasks as agent `{token_agent}`, not `{name}`")
    return name


def assign(cmdr: Commander, name: str, model: str | None) -> Assignment:
    """The agent and version a new task runs as, what it adds to the task's capabilities, and the
    model (the one asked for, which must be one the agent allows; else the agent's)."""
    found = AGENT_CURRENT.tuples(name=name)
    if not found or found[0][2] is not None:
        raise unknown(name)
    current, error, _ = found[0]
    if not current:
        raise Conflict("agent_broken", f"agent {name} has no working profile yet: {error}")
    profile = version_of(cmdr, name, current).profile
    if model and profile.allowed_models and model not in profile.allowed_models:
        raise Invalid("model_not_allowed", f"agent {name} runs only on {', '.join(profile.allowed_models)}; "
                                           f"not on {model}")
    return Assignment(name, current, tuple(profile.requires), tuple(profile.prefers), model or profile.model)


# --- changing ----------------------------------------------------------------------------------

def parsed(text: str, name: str) -> Profile:
    try:
        return parse(text, name)
    except ProfileError as exc:
        raise Invalid("invalid_profile", str(exc)) from None


def put(cmdr: Commander, name: str, text: str, actor: str) -> tuple[Agent, bool]:
    """Create the agent, or give it a new version with this profile text (the same text as the
    current version changes nothing). Returns (agent, created)."""
    profile = parsed(text, name)
    with cmdr.writing():
        agent = find(name)
        created = agent is None or agent.deleted_at is not None
        if agent is None:
            agent = Agent.create(name=name)
            events.publish("agent.created", name=name)
        changed = add_version(agent, profile, text, f"{'created' if created else 'edited'} by {actor}", created)
        if changed or agent.error:
            Agent.update(error=None, deleted_at=None).where(Agent.id == agent.id).execute()
        if changed:
            audit.record(actor, "agent.created" if created else "agent.edited", f"agent {name}",
                         version=find(name).current)
    return get(name), created


def add_version(agent: Agent, profile: Profile, text: str, cause: str, force: bool = False) -> bool:
    """Inside a write: make `profile` the agent's new current version, unless the current one is
    this very text already (and `force` is off). Returns whether a version was added."""
    if agent.current and not force and version_row(agent, agent.current).text == text:
        return False
    number = last_version(agent) + 1
    AgentVersion.create(
        agent=agent.id, version=number, text=text, cause=cause[:200], title=profile.title,
        description=profile.description, system_prompt=profile.system_prompt, model=profile.model,
        allowed_models=list(profile.allowed_models), requires=sorted(set(profile.requires)),
        prefers=sorted(set(profile.prefers)), allowed_tools=list(profile.allowed_tools),
        disallowed_tools=list(profile.disallowed_tools), max_turns=profile.max_turns, timeout=profile.timeout,
        memory=profile.memory, plugin_tools=list(profile.plugin_tools))
    Agent.update(current=number, updated_at=now()).where(Agent.id == agent.id).execute()
    agent.current = number
    events.publish("agent.version", name=agent.name, version=number, cause=cause[:200])
    return True


def rollback(cmdr: Commander, name: str, version: int, actor: str) -> Agent:
    """Make version `version`'s profile current again, as a new version."""
    with cmdr.writing():
        agent = get(name)
        old = version_row(agent, version)
        if version == agent.current:
            raise Conflict("already_current", f"version {version} is agent {name}'s current version")
        add_version(agent, parsed(old.text, name), old.text, f"rollback to version {version} by {actor}", force=True)
        audit.record(actor, "agent.rolled_back", f"agent {name}", to=version, version=agent.current)
    return get(name)


def delete(cmdr: Commander, name: str, actor: str, fallback: bool = False) -> int:
    """Delete an agent (its versions stay readable for the tasks that ran them). Refused while
    tasks of it wait or run, unless `fallback`: then the waiting ones move to `general` (with the
    capabilities they were submitted with) and the running ones finish as they are. Returns how
    many tasks moved."""
    if name == GENERAL:
        raise Conflict("default_agent", f"{GENERAL} is the default agent and the fallback; it cannot be deleted")
    with cmdr.writing():
        agent = get(name)
        unfinished = list(Task.select(Task.id, Task.state).where((Task.agent == name) & Task.finished_at.is_null()))
        waiting = [task.id for task in unfinished if task.state != LEASED]
        running = len(unfinished) - len(waiting)
        if unfinished and not fallback:
            raise Conflict("agent_busy", f"agent {name} has {len(waiting)} waiting and {running} running task(s); "
                                         f"cancel them, wait for them, or delete with fallback to move the waiting "
                                         f"ones to {GENERAL}")
        if waiting:
            general = assign(cmdr, GENERAL, None)
            Task.update(agent=GENERAL, agent_version=general.version, updated_at=now()).where(
                Task.id.in_(waiting) & Task.finished_at.is_null() & (Task.state != LEASED)).execute()
        Agent.update(deleted_at=now(), updated_at=now()).where(Agent.id == agent.id).execute()
        events.publish("agent.deleted", name=name, moved=len(waiting))
        audit.record(actor, "agent.deleted", f"agent {name}", moved=len(waiting), running=running)
    return len(waiting)


# --- profile files -------------------------------------------------------------------------------

@dataclass
class Reloaded:
    created: list[str]
    updated: list[str]
    unchanged: int
    broken: list[tuple[str, str]]  # (name, error)
    missing: list[str]             # loaded from a file that is gone: they stay as they were


def reload(cmdr: Commander, actor: str) -> Reloaded:
    """Read every profile file: a file that changed since it was last read makes a new version
    (or a new agent), an unchanged one changes nothing, one that does not parse marks its agent
    broken (a working agent keeps serving its current version meanwhile)."""
    dirs = loader.directories(cmdr.settings)
    cmdr.agent_files = (time.monotonic(), loader.signature(dirs))
    files = loader.scan(dirs)
    outcome = Reloaded([], [], 0, [], [])
    with cmdr.writing():
        known = {agent.name: agent for agent in Agent.select()}
        for name, file in files.items():
            agent = known.get(name)
            if agent is not None and agent.origin == file.path and agent.file_sha256 == file.sha256:
                outcome.unchanged += 1
                continue
            if agent is None:
                agent = Agent.create(name=name)
                events.publish("agent.created", name=name)
            seen = dict(origin=file.path, file_sha256=file.sha256)
            if file.error:
                Agent.update(error=file.error, **seen).where(Agent.id == agent.id).execute()
                events.publish("agent.broken", name=name, error=file.error)
                log.error("agents: %s is broken: %s", name, file.error)
                outcome.broken.append((name, file.error))
                continue
            revived = agent.deleted_at is not None
            added = add_version(agent, file.profile, file.text, f"file {file.path}", force=revived)
            Agent.update(error=None, deleted_at=None, **seen).where(Agent.id == agent.id).execute()
            if not added:
                outcome.unchanged += 1
            elif agent.current == 1:
                outcome.created.append(name)
            else:
                outcome.updated.append(name)
        outcome.missing = sorted(name for name, agent in known.items()
                                 if agent.origin and agent.deleted_at is None and name not in files)
        if outcome.created or outcome.updated:
            audit.record(actor, "agents.reloaded", None, created=outcome.created, updated=outcome.updated)
    if outcome.created or outcome.updated:
        log.info("agents: %d new, %d changed, %d unchanged", len(outcome.created), len(outcome.updated),
                 outcome.unchanged)
    return outcome


def check_files(cmdr: Commander) -> None:
    """Reload if a profile file changed; looks (a stat per file) at most once every
    `agents_check_every` seconds, so a file edit is picked up without a restart or a reload.
    Call it outside any write (it may write)."""
    every = cmdr.settings.agents_check_every
    checked_at, seen = cmdr.agent_files
    if not every or time.monotonic() - checked_at < every:
        return
    current = loader.signature(loader.directories(cmdr.settings))
    cmdr.agent_files = (time.monotonic(), current)
    if current != seen:
        reload(cmdr, "commander")
