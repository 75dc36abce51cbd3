"""The `notify` tool: an agent sends an ntfy notification to a topic on the mesh's ntfy server
(commander/ntfy.py). Only a topic name is taken, never a URL: a model cannot make the
Commander post anywhere else. Pipeline notify steps (commander/plugins/steps.py) send through
`send` too."""

from __future__ import annotations

from commander import ntfy
from commander.plugins.manager import ToolError
from commander.schemas import Notification


def send(settings, note: Notification, timeout: float = ntfy.TIMEOUT) -> str | None:
    """Post `note`; None when ntfy took it, else what went wrong."""
    url = ntfy.topic_url(settings, note.topic)
    if url is None:
        return "no ntfy server is configured on the Commander (ntfy_server or ntfy_url)"
    return ntfy.publish(url, settings.ntfy_token, note.message, title=note.title, priority=note.priority,
                        tags=",".join(note.tags), click=note.click or "", timeout=timeout)


def notify(call, args: Notification) -> dict:
    error = send(call.cmdr.settings, args, timeout=call.timeout)
    if error:
        raise ToolError(error)
    return {"sent": True, "topic": args.topic}


def setup(manager) -> None:
    manager.tool("notify", "Send a push notification (ntfy) to a topic: message, optional title, priority (1-5), "
                           "tags and click URL.", Notification, notify, timeout=15)
