"""Real webhook payloads for the tests, and the requests their senders make.

tests/fixtures/webhooks/github-*.json are octokit/webhooks' payload examples (payload-examples/
api.github.com/: ping, pull_request/opened, issues/opened, workflow_run/completed), trimmed of
the URLs and nested objects nothing here reads. Uptime Kuma's body is the one its webhook
notification posts (server/notification-providers/webhook.js: `{heartbeat, monitor, msg}`, the
heartbeat as server/model/heartbeat.js's toJSON makes it, status 0 DOWN and 1 UP).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from functools import cache

from harness import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "webhooks"


@cache
def _github(name: str) -> dict:
    return json.loads((FIXTURES / f"github-{name}.json").read_text())


def github(name: str, **changes) -> dict:
    """A copy of the example `name` (e.g. "pull_request.opened"), with dotted-path `changes`."""
    payload = copy.deepcopy(_github(name))
    for path, value in changes.items():
        *parents, last = path.split("__")
        at = payload
        for key in parents:
            at = at[key]
        at[last] = value
    return payload


def github_request(secret: str, event: str, payload, delivery: str | None = None) -> tuple[bytes, dict]:
    """The body and headers GitHub sends: compact JSON, signed with the hook's secret."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                  "X-Hub-Signature-256": signature, "Content-Type": "application/json",
                  "User-Agent": "GitHub-Hookshot/0e2a4b1"}


def kuma(status: int, monitor_id: int = 7, name: str = "home-assistant", time: str = "2026-12-02 04:50:12.345") -> dict:
    """Uptime Kuma's webhook body for one heartbeat of one monitor."""
    word = "Down" if status == 0 else "Up"
    return {
        "heartbeat": {"monitorID": monitor_id, "status": status, "time": time, "msg": "connect ECONNREFUSED" if status == 0
                      else "200 - OK", "ping": None if status == 0 else 41, "important": True, "duration": 60,
                      "retries": 0},
        "monitor": {"id": monitor_id, "name": name, "url": "http://192.168.1.20:8123", "type": "http", "interval": 60,
                    "active": True, "hostname": None, "port": None, "maxretries": 0},
        "msg": f"[{name}] [{'🔴' if status == 0 else '✅'} {word}] "
               + ("connect ECONNREFUSED" if status == 0 else "200 - OK"),
    }
