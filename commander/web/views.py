"""The dashboard: server-rendered pages over the same logic modules as the API, and form
actions that work without JavaScript (static/live.js adds live updates and in-place actions)."""

from __future__ import annotations

import difflib
import time
from datetime import date, timedelta
from pathlib import Path

from flask import Blueprint, redirect, request, send_from_directory, url_for
from pydantic import ValidationError

from commander import accounts, events, nodes, pending, pipelines, provenance, tasks, tokens
from commander.agents import service as agents
from commander.agents.api import agent_views
from commander.memory import api as memory_api, store as memory_store
from commander.plugins import calls as tool_calls
from commander.api import tasks as tasks_api
from commander.api.nodes import node_views
from commander.api.pending import pending_out
from commander.api.pipelines import pipeline_out
from commander.auth import SESSION_COOKIE, end_session, principal, set_session_cookie
from commander.errors import describe
from commander.exceptions import Invalid, TooManyRequests, Unauthenticated
from commander.models import AWAITING_APPROVAL, Node, Task
from commander.permissions import PUBLIC, ROLES
from commander.routes import commander, parse_query
from commander.schemas import (
    AgentRollback, AgentVersionOut, CapabilitiesApproveIn, CapIn, CapQuery, LoginIn, NodeStateIn, TaskOut, TaskQuery,
    TaskSubmit, TokenCreate, TokenOut,
)
from commander.spend import caps as spend_caps, fold as spend_fold, policy as spend_policy, report as spend_report
from commander.web import charts, graph, site
from commander.webhooks import deliveries as webhook_deliveries, hooks as webhook_hooks
from commander.web.site import local_path, page_route, render

HERE = Path(__file__).parent
bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder=None)
site.install(bp)

# Expiry choices on the token form, in seconds; none: a day for a join or worker token, else never.
EXPIRY_CHOICES = (("", "the default"), ("3600", "1 hour"), ("86400", "1 day"), ("2592000", "30 days"),
                  ("31536000", "1 year"))


def back(default: str):
    """After a form action: the page the form was on, else `default`."""
    return redirect(local_path(request.form.get("next"), default), 303)


@page_route(bp, "GET", "/static/<path:filename>", permission=PUBLIC)
def static_file(filename: str):
    """The stylesheet and the script, shared by every page."""
    return send_from_directory(HERE / "static", filename, max_age=300)


# --- signing in ------------------------------------------------------------------------------

@page_route(bp, "GET", "/login", permission=PUBLIC)
def login_form():
    """The login form; says who is signed in already, if anyone."""
    found = accounts.session_for(request.cookies.get(SESSION_COOKIE, ""))
    return render("login.html", next=local_path(request.args.get("next")), signed_in=found)


@page_route(bp, "POST", "/login", permission=PUBLIC)
def login():
    """Log in with the form: sets the same session cookie as POST /api/session."""
    # Login CSRF (a form on another site signing this browser in to an account of its choosing)
    # is refused before any route: a foreign Origin on a POST never gets here (intake.check_origin).
    target = local_path(request.form.get("next"))
    username = request.form.get("username", "")
    try:
        body = LoginIn(username=username, password=request.form.get("password", ""))
        key, _, _ = accounts.login(commander(), body.username, body.password, request.remote_addr)
    except ValidationError:
        return render("login.html", next=target, username=username, error="Enter your user name and password."), 400
    except (Unauthenticated, TooManyRequests) as refused:
        status, _, message, headers = describe(refused)
        return render("login.html", next=target, username=username, error=message), status, headers
    response = redirect(target, 303)
    set_session_cookie(commander(), response, key)
    return response


@page_route(bp, "POST", "/logout", permission=PUBLIC)
def logout():
    """Log out (the form carries the CSRF token)."""
    return end_session(commander(), redirect(url_for(".login_form"), 303))


# --- the fleet -------------------------------------------------------------------------------

@page_route(bp, "GET", "/", permission="nodes:read")
def fleet():
    """Every N0D3: capabilities, slots in use, heartbeat age, state, breaker and reputation."""
    return render("fleet.html", parts=("fleet",), nodes=[view.model_dump() for view in node_views(nodes.listing())])


@page_route(bp, "GET", "/nodes/<id:node_id>", permission="nodes:read")
def node(node_id: int):
    """One N0D3: its details, recent outcomes and recent tasks; pause, drain, disable, resume."""
    shown = node_views([nodes.get(node_id)])[0].model_dump()
    recent = task_views(tasks.listing(node_id=node_id, limit=20))
    return render("node.html", parts=("node",), node=shown, tasks=recent)


@page_route(bp, "POST", "/nodes/<id:node_id>/state", permission="nodes:manage")
def set_node_state(node_id: int):
    """An operator's order to a N0D3: active, paused, draining or disabled."""
    order = NodeStateIn(state=request.form.get("state", ""))
    nodes.set_state(commander(), node_id, order.state, principal().actor)
    return back(url_for(".node", node_id=node_id))


@page_route(bp, "POST", "/nodes/<id:node_id>/capabilities/approve", permission="nodes:manage")
def approve_capabilities(node_id: int):
    """Approve the capabilities a N0D3 asks for, exactly those the page showed."""
    shown = CapabilitiesApproveIn(capabilities=request.form.getlist("capabilities"))
    nodes.approve_capabilities(commander(), node_id, shown.capabilities, principal().actor)
    return back(url_for(".node", node_id=node_id))


# --- tasks -----------------------------------------------------------------------------------

def task_views(listed: list[Task]) -> list[dict]:
    reasons = tasks.WaitingReasons(commander())
    return [TaskOut.of(task, reasons(task)).model_dump() for task in listed]


def node_names() -> dict[int, str]:
    return dict(Node.select(Node.id, Node.name).tuples())


@page_route(bp, "GET", "/tasks", permission="tasks:read")
def task_list():
    """The queue, newest first, filtered by state, with a count per state."""
    query = parse_query(TaskQuery)
    listed = tasks.listing(**query.model_dump())
    return render("tasks.html", parts=("tasks",), tasks=task_views(listed), state=query.state,
                  counts=tasks.counts(), node_names=node_names(), agent_names=agents.live_names())


@page_route(bp, "POST", "/tasks", permission="tasks:submit")
def submit_task():
    """Queue a prompt from the form; then its page."""
    requires = [label.strip() for label in request.form.get("requires", "").split(",") if label.strip()]
    body = TaskSubmit(prompt=request.form.get("prompt", ""), requires=requires, agent=request.form.get("agent") or None,
                      approval_required=request.form.get("approval_required") == "on")
    task, _ = tasks_api.submit_task(body)
    return redirect(url_for(".task", task_id=task.id), 303)


@page_route(bp, "GET", "/tasks/<id:task_id>", permission="tasks:read")
def task(task_id: int):
    """One task: prompt, output, node, attempts and history, tokens and cost, provenance verdicts."""
    found = tasks.get(task_id)
    shown = task_views([found])[0]
    chain = provenance.bundle(commander(), found)
    return render("task.html", parts=("task",), task=shown, chain=chain, history=events.of_task(task_id),
                  node_names=node_names(), tool_calls=tool_calls.listing(commander(), task_id))


@page_route(bp, "POST", "/tasks/<id:task_id>/approve", permission="tasks:approve")
def approve_task(task_id: int):
    """Approve a task awaiting approval: it joins the queue."""
    tasks.decide(commander(), task_id, True, principal().actor, token_id=principal().token_id)
    return back(url_for(".task", task_id=task_id))


@page_route(bp, "POST", "/tasks/<id:task_id>/reject", permission="tasks:approve")
def reject_task(task_id: int):
    """Reject a task awaiting approval, with the form's reason if any: it is cancelled."""
    reason = request.form.get("reason", "").strip()[:500] or None
    tasks.decide(commander(), task_id, False, principal().actor, reason, token_id=principal().token_id)
    return back(url_for(".task", task_id=task_id))


@page_route(bp, "POST", "/tasks/<id:task_id>/cancel", permission="tasks:cancel")
def cancel_task(task_id: int):
    """Cancel a task that has not finished."""
    tasks.cancel(commander(), task_id)
    return back(url_for(".task", task_id=task_id))


# --- pipelines -------------------------------------------------------------------------------

@page_route(bp, "GET", "/pipelines", permission="tasks:read")
def pipeline_list():
    """The latest pipelines with the state of each step."""
    return render("pipelines.html", parts=("pipelines",),
                  pipelines=[pipeline_out(found).model_dump() for found in pipelines.listing()])


@page_route(bp, "GET", "/pipelines/<id:pipeline_id>", permission="tasks:read")
def pipeline(pipeline_id: int):
    """One pipeline: its graph drawn with live step states, and its steps."""
    shown = pipeline_out(pipelines.get(pipeline_id)).model_dump()
    return render("pipeline.html", parts=("pipeline",), pipeline=shown, graph=graph.layout(shown["steps"]),
                  node_names=node_names())


@page_route(bp, "POST", "/pipelines/<id:pipeline_id>/cancel", permission="tasks:cancel")
def cancel_pipeline(pipeline_id: int):
    """Cancel a running pipeline: steps not yet final end."""
    pipelines.cancel(commander(), pipeline_id)
    return back(url_for(".pipeline", pipeline_id=pipeline_id))


# --- webhooks --------------------------------------------------------------------------------

WEBHOOK_DELIVERIES = 10  # per hook on the page, as GitHub's "Recent Deliveries" shows the latest


@page_route(bp, "GET", "/webhooks", permission="webhooks:manage")
def webhook_list():
    """Webhooks, each with its latest deliveries: status, the task or pipeline started, the error."""
    found = [(webhook_hooks.out(hook), [webhook_deliveries.out(d) for d in webhook_deliveries.recent(hook, WEBHOOK_DELIVERIES)])
             for hook in webhook_hooks.listing()]
    return render("webhooks.html", hooks=found, base=request.host_url.rstrip("/"))


# --- spend -----------------------------------------------------------------------------------

SPEND_DAYS = 14  # the Spend page's span: two weeks of daily bars fit a phone


@page_route(bp, "GET", "/spend", permission="spend:read")
def spend_page():
    """Spend: per day stacked by agent with the mesh's cap, per capability, the dearest tasks, the caps."""
    cmdr, t = commander(), time.time()
    first, last = spend_report.day_range(cmdr, None, None, SPEND_DAYS, t)
    spend_fold.up_to_date(cmdr)
    by_day, total = spend_report.grouped(first, last, ["day", "agent"])
    by_capability, _ = spend_report.grouped(first, last, ["capability"])
    days = [(date.fromisoformat(first) + timedelta(days=n)).isoformat() for n in range(SPEND_DAYS)]
    listed = spend_caps.listing(cmdr, t)
    mesh_cap = next((cap["cap_usd"] for cap in listed if cap["scope"] == "all"), None)
    rules = spend_policy.of(cmdr.settings)
    return render("spend.html", first=first, last=last, total=total, zone=rules.zone.key,
                  at_cap="refused" if rules.refuse else "held",
                  daily=charts.stacked_days(by_day, days, mesh_cap), capabilities=charts.ranked(by_capability, "capability"),
                  top=spend_report.top(first, last, 10), caps=listed)


@page_route(bp, "POST", "/spend/caps", permission="spend:manage")
def set_spend_cap():
    """Set a daily cap (a USD amount), or clear the one set here (no amount)."""
    scope, name, usd = (request.form.get(key, "").strip() for key in ("scope", "name", "usd"))
    if usd:
        cap = CapIn(scope=scope, name=name, usd=parse_usd(usd))
        spend_caps.set_cap(commander(), cap.scope, cap.name, cap.usd, principal().actor)
    else:
        spend_caps.clear_cap(commander(), CapQuery(scope=scope, name=name).scope, name, principal().actor)
    return back(url_for(".spend_page"))


def parse_usd(text: str) -> float:
    try:
        return float(text.lstrip("$"))
    except ValueError:
        raise Invalid("invalid_request", f"a cap is an amount in USD, such as 2.50, not {text!r}") from None


# --- agents ----------------------------------------------------------------------------------

VERSIONS_SHOWN = 20  # the latest versions on an agent's page, each with its diff from the one before


@page_route(bp, "GET", "/agents", permission="tasks:read")
def agent_list():
    """Every agent: state, version, model, required capabilities, queue and recent results."""
    agents.check_files(commander())
    return render("agents.html", parts=("agents",), agents=[view.model_dump() for view in agent_views(agents.listing())],
                  plugins=commander().plugins.plugins)


@page_route(bp, "GET", "/agents/<name>", permission="tasks:read")
def agent(name: str):
    """One agent: its settings and live state, its system prompt, its versions with what each
    changed, and its recent tasks; roll back to an old version."""
    agents.check_files(commander())
    found = agents.get(name, deleted=True)
    rows = agents.versions(found)[:VERSIONS_SHOWN + 1]
    versions = [dict(AgentVersionOut.from_row(row).model_dump(),
                     diff=diff_lines(older.text if older else "", row.text, older.version if older else None))
                for row, older in zip(rows, rows[1:] + [None])][:VERSIONS_SHOWN]
    return render("agent.html", parts=("agent",), agent=agent_views([found], full=True)[0].model_dump(),
                  versions=versions, tasks=task_views(tasks.listing(agent=name, limit=20)))


def diff_lines(before: str, after: str, before_version: int | None) -> list[tuple[str, str]]:
    """(kind, line) of a unified diff from `before` to `after`, kind add, del, hunk or same,
    for the template to mark up (the first version: all of it, added)."""
    if before_version is None:
        return [("add", "+" + line) for line in after.splitlines()]
    kinds = {"+": "add", "-": "del", "@": "hunk"}
    return [(kinds.get(line[:1], "same"), line) for line in difflib.unified_diff(
        before.splitlines(), after.splitlines(), f"version {before_version}", "this version", lineterm="")][2:]


MEMORIES_SHOWN = 100


@page_route(bp, "GET", "/agents/<name>/memory", permission="memory:read")
def agent_memory(name: str):
    """An agent's memories (or the shared ones, as `shared`), newest first, or those matching a search."""
    cmdr, scope = commander(), memory_api.scope_of(name)
    query = parse_query(memory_api.MemoryQuery)
    if query.q:
        found = [memory_store.opened(cmdr, row) for row in memory_store.search(cmdr, [scope], query.q, MEMORIES_SHOWN)]
    else:
        found = memory_store.listing(cmdr, scope, MEMORIES_SHOWN)
    return render("memory.html", scope=scope, q=query.q or "", memories=found)


@page_route(bp, "POST", "/agents/<name>/memory/<id:memory_id>/forget", permission="memory:write")
def forget_memory(name: str, memory_id: int):
    """Forget a memory, and what consolidation merged into it."""
    cmdr, scope = commander(), memory_api.scope_of(name)
    with cmdr.writing():
        memory_store.forget(scope, memory_id)
    return back(url_for(".agent_memory", name=name))


@page_route(bp, "POST", "/agents/<name>/rollback", permission="agents:manage")
def rollback_agent(name: str):
    """Make an old version's profile current again (as a new version)."""
    body = AgentRollback.model_validate(dict(version=request.form.get("version") or None), strict=False)
    agents.rollback(commander(), name, body.version, principal().actor)
    return back(url_for(".agent", name=name))


# --- approvals and machines asking to join ---------------------------------------------------

@page_route(bp, "GET", "/pending", permission="tasks:read")
def pending_list():
    """Tasks awaiting approval and machines asking to join, each a click from yes or no."""
    waiting = task_views(tasks.listing(state=AWAITING_APPROVAL, limit=500))
    joins = [pending_out(row).model_dump() for row in pending.listing()] if site.can("nodes:read") else None
    return render("pending.html", parts=("approvals", "joins"), approvals=waiting, joins=joins)


@page_route(bp, "POST", "/pending/<id:pending_id>/approve", permission="nodes:manage")
def approve_join(pending_id: int):
    """Let a pending machine in: it registers at its next poll."""
    pending.approve(commander(), pending_id, principal().actor)
    return back(url_for(".pending_list"))


@page_route(bp, "POST", "/pending/<id:pending_id>/reject", permission="nodes:manage")
def reject_join(pending_id: int):
    """Turn a pending machine away."""
    pending.reject(commander(), pending_id, principal().actor)
    return back(url_for(".pending_list"))


# --- tokens ----------------------------------------------------------------------------------

def tokens_page(created: dict | None = None, status: int = 200):
    presets = {" ".join(sorted(permissions)): role for role, permissions in ROLES.items()}  # to name a token's preset
    listed = [TokenOut.from_row(token).model_dump() for token in tokens.listing()]
    return render("tokens.html", tokens=listed, roles=ROLES, presets=presets, expiry_choices=EXPIRY_CHOICES,
                  created=created), status


@page_route(bp, "GET", "/tokens", permission="tokens:manage")
def token_list():
    """API and join tokens: prefix, permissions, expiry, last use; create and revoke."""
    return tokens_page()


@page_route(bp, "POST", "/tokens", permission="tokens:manage")
def create_token():
    """Create a token from the form; its secret is shown on this one answer only."""
    form = request.form
    join = form.get("kind") == "join"
    body = TokenCreate.model_validate(  # form fields are text: let pydantic read the number
        dict(name=form.get("name", ""), kind=form.get("kind", "api"), role=None if join else form.get("role"),
             expires_in=form.get("expires_in") or None), strict=False)
    caller = principal()
    with commander().writing():
        token, secret = tokens.create(body.name, caller.actor, body.kind, None, body.role, body.expires_in,
                                      granter=caller.permissions)
    return tokens_page(tokens.as_created(token, secret), 201)


@page_route(bp, "POST", "/tokens/<id:token_id>/revoke", permission="tokens:manage")
def revoke_token(token_id: int):
    """Revoke a token: refused everywhere from now on."""
    with commander().writing():
        tokens.revoke(token_id, principal().actor, revoker=principal().permissions)
    return back(url_for(".token_list"))
