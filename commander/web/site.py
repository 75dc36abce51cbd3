"""The dashboard's plumbing: page routes that declare their permission like API routes do,
partial renders for live regions, HTML error pages, and the headers every page carries."""

from __future__ import annotations

import functools
import time
from datetime import datetime, timezone

from flask import Blueprint, Flask, g, redirect, render_template, request, url_for

from commander import events
from commander.exceptions import NotFound
from commander.models import FINAL_STATES
from commander.permissions import PUBLIC
from commander.auth import authenticate
from commander.routes import RouteSpec, commander

PART_HEADER = "X-Live-Part"   # a live region asks for its part of the page only
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")

# How a state reads on screen: a word and a sign, so colour never carries it alone.
STATE_LABELS = {
    "blocked": ("waiting on parents", "◌"), "awaiting_approval": ("awaiting approval", "?"),
    "queued": ("queued", "○"), "leased": ("running", "▶"), "succeeded": ("succeeded", "✓"),
    "failed": ("failed", "✗"), "cancelled": ("cancelled", "⊘"), "skipped": ("skipped", "↷"),
    "running": ("running", "▶"),
    "active": ("active", "●"), "paused": ("paused", "Ⅱ"), "draining": ("draining", "↘"),
    "disabled": ("disabled", "⊘"), "lost": ("lost", "?"), "offline": ("offline", "○"),
    "closed": ("closed", "✓"), "open": ("open", "✗"), "half_open": ("half-open", "◐"),
    "verified": ("verified", "✓"), "unverified": ("does not verify", "✗"),
    "ready": ("ready", "✓"), "broken": ("broken", "✗"), "deleted": ("deleted", "⊘"), "current": ("current", "●"),
}


def page_route(bp: Blueprint, method: str, rule: str, *, permission: str):
    """A page or form action. It is authenticated and authorized by auth.authenticate, as API
    routes are (a session needs its CSRF token on a POST); its spec is kept on the view as
    `page_spec`, so `pages(app)` lists every page with the permission it needs."""

    def decorator(handler):
        spec = RouteSpec(method=method, rule=rule, permission=permission,
                         summary=(handler.__doc__ or "").strip().splitlines()[0])

        @functools.wraps(handler)
        def view(**path):
            g.principal = None if permission == PUBLIC else authenticate(commander(), permission, path)
            return handler(**path)

        view.page_spec = spec
        bp.add_url_rule(rule, endpoint=handler.__name__, view_func=view, methods=[method])
        return view

    return decorator


def pages(app: Flask):
    """(flask rule, spec) for every page and form action."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, sorted(r.methods))):
        spec = getattr(app.view_functions[rule.endpoint], "page_spec", None)
        if spec is not None:
            yield rule, spec


def render(template: str, parts: tuple[str, ...] = (), **context):
    """The page, or only one of its live `parts` (templates/parts/NAME.html, which the page
    includes) when a live region asks for it with the X-Live-Part header."""
    part = request.headers.get(PART_HEADER)
    if part is None:
        return render_template(template, last_event_id=events.latest_id(), **context)
    if part not in parts:
        raise NotFound("not_found", f"this page has no live part {part!r}")
    return render_template(f"parts/{part}.html", **context)


def error_page(status: int, code: str, message: str, headers: dict):
    """Errors outside /api/: without a session, the login page; otherwise an HTML page saying why."""
    if status == 401:
        target = request.full_path.rstrip("?") if request.method == "GET" and PART_HEADER not in request.headers else None
        return redirect(url_for("dashboard.login_form", next=target), 303)
    return render_template("error.html", status=status, code=code, message=message), status, headers


def local_path(target: str | None, default: str = "/") -> str:
    """`target` if it is a path on this site: never another host (`//evil`, `/\\evil` which
    browsers read as `//evil`, `https:`), nor a header's worth of control characters."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target if target.isprintable() else default


def secure_headers(response):
    """Every response outside /api/: no sniffing; HTML pages: a strict CSP, no framing, no caching."""
    if (request.path + "/").startswith("/api/"):
        return response
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
    return response


# --- what templates use ----------------------------------------------------------------------

def can(permission: str) -> bool:
    principal = g.get("principal")
    return principal is not None and permission in principal.permissions


def csrf_token() -> str:
    return g.principal.csrf_token or ""


def ago(ts: float | None, now: float | None = None) -> str:
    """`12 s ago`, `4 min ago`, `in 30 s` (static/live.js says the same as time passes)."""
    if ts is None:
        return "—"
    seconds = (time.time() if now is None else now) - ts
    span = abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if span >= size:
            amount = f"{int(span // size)} {unit}"
            break
    else:
        amount = f"{int(span)} s"
    return f"{amount} ago" if seconds >= 0 else f"in {amount}"


def iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else ""


def money(usd: float | None) -> str:
    if usd is None:
        return "—"
    return f"${usd:,.4f}" if usd < 1 else f"${usd:,.2f}"


def duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def label(state: str) -> tuple[str, str]:
    """(word, sign) for a state."""
    return STATE_LABELS.get(state, (state.replace("_", " "), "•"))


def install(bp: Blueprint) -> None:
    """The template helpers and response headers, for the whole app."""
    bp.after_app_request(secure_headers)
    for helper in (can, csrf_token):
        bp.add_app_template_global(helper)
    bp.add_app_template_global(events.KINDS, "event_kinds")
    bp.add_app_template_global(FINAL_STATES, "final_states")
    bp.add_app_template_global(time.time, "now")
    for helper in (ago, iso, money, duration):
        bp.add_app_template_filter(helper)
    bp.add_app_template_filter(label)
