"""Posting to ntfy, for spend alerts (commander/spend/alerts.py), the `notify` tool and notify
steps (commander/plugins/): ntfy's publish API is a POST of the message to the topic's URL with
`Title`, `Priority` (1–5; 3 default), `Tags` (emoji short codes) and `Click` (a URL opened on
tap) headers, and `Authorization: Bearer` when the topic needs a token.
"""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

import requests

TIMEOUT = 10.0


def header_value(text: str) -> str:
    """HTTP headers are Latin-1: a name in another script goes RFC 2047-encoded, which ntfy decodes."""
    if text.isascii():
        return text
    return f"=?UTF-8?B?{base64.b64encode(text.encode()).decode()}?="


def publish(url: str, token: str, text: str, title: str = "", priority: int | None = None, tags: str = "",
            click: str = "", timeout: float = TIMEOUT) -> str | None:
    """Post one message to the topic at `url`; None when ntfy took it, else what went wrong."""
    headers = {name: value for name, value in (("Title", header_value(title)), ("Tags", tags), ("Click", click))
               if value}
    if priority is not None:
        headers["Priority"] = str(priority)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = requests.post(url, data=text.encode(), headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        return f"cannot reach ntfy: {type(exc).__name__}"
    if response.status_code >= 300:
        return f"ntfy answered {response.status_code}: {response.text[:200]}"
    return None


def topic_url(settings, topic: str) -> str | None:
    """The URL of `topic` on the mesh's ntfy server (`ntfy_server`, else `ntfy_url`'s), or None
    when neither is set."""
    server = settings.ntfy_server
    if not server and settings.ntfy_url:
        parts = urlsplit(settings.ntfy_url)
        server = f"{parts.scheme}://{parts.netloc}"
    return f"{server.rstrip('/')}/{topic}" if server else None
