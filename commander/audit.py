"""The audit log: who did what, when and from where. Written inside the caller's transaction."""

from __future__ import annotations

from flask import has_request_context, request

from commander.models import AuditEntry


def client_address() -> str | None:
    return request.remote_addr if has_request_context() else None


def record(actor: str, action: str, target: str | None = None, **details) -> None:
    AuditEntry.create(actor=actor[:200], action=action, target=target and target[:200], address=client_address(),
                      details=details)
