"""Attachments: a client uploads an image (raw bytes, its media type as Content-Type) and names
it by SHA-256 in a task submit; the node running that task fetches it with a signed request."""

from __future__ import annotations

from flask import Blueprint, current_app, g, request

from commander import attachments
from commander.auth import principal
from commander.routes import api_route, commander
from commander.schemas import AttachmentFetch, AttachmentOut
from m3shd.images import MEDIA_TYPES

bp = Blueprint("attachments", __name__)


@api_route(bp, "POST", "/attachments", permission="tasks:submit", accepts=MEDIA_TYPES,
           response=AttachmentOut, status=201, also=(200,))
def upload():
    """Store an image (PNG, JPEG, GIF or WebP, as its Content-Type) for tasks; answers the SHA-256 a task names it by."""
    cmdr = commander()
    attachments.check_size(cmdr, request.content_length)  # before the body is read
    stored, created = attachments.store(cmdr, request.get_data(), request.mimetype, principal().actor)
    return AttachmentOut.from_row(stored), 201 if created else 200


@api_route(bp, "POST", "/nodes/<id:node_id>/attachments", permission="work:execute", signed=True,
           body=AttachmentFetch, stream="image/*")
def fetch(node_id: int, body: AttachmentFetch):
    """The bytes of an attachment of a task this node holds a live lease on (check them against the SHA-256)."""
    stored, data = attachments.for_node(commander(), g.node.id, body.sha256)
    response = current_app.response_class(data, mimetype=stored.media_type)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
