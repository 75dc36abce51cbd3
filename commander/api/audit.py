from __future__ import annotations

from flask import Blueprint

from commander.models import AuditEntry
from commander.routes import api_route
from commander.schemas import AuditList, AuditOut, AuditQuery

bp = Blueprint("audit", __name__)


@api_route(bp, "GET", "/audit", permission="admin", query=AuditQuery, response=AuditList)
def list_entries(query: AuditQuery):
    """The audit log, newest first: logins, tokens, users, and nodes (joins, keys, capabilities, orders)."""
    select = AuditEntry.select().order_by(AuditEntry.id.desc()).limit(query.limit)
    if query.action:
        select = select.where(AuditEntry.action == query.action)
    if query.before_id:
        select = select.where(AuditEntry.id < query.before_id)
    return AuditList(entries=[AuditOut.from_row(e) for e in select])
