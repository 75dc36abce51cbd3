"""Clients of the Commander API: `ApiClient` for people and tools, `NodeClient` for a N0D3.

requests + stdlib only, so a Raspberry Pi N0D3 installs nothing heavier.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import quote
from pathlib import Path

import requests

from m3shd import trust, wire
from m3shd.config import ConfigError
from m3shd.errors import CommanderError, CommanderUnreachable, CommanderUntrusted
from m3shd.wire import FINAL_STATES

__all__ = ["ApiClient", "NodeClient", "CommanderError", "CommanderUnreachable", "CommanderUntrusted", "FINAL_STATES"]


class _Base:
    """`ca_file`: the Commander's CA (PEM) every connection is verified against (m3shd/trust.py);
    None: the system's trust store. One session, so connections (and TLS sessions) are reused."""

    def __init__(self, url: str, token: str, timeout: float = 30.0, ca_file: str | None = None):
        if not url:
            raise ValueError("no Commander URL configured")
        if ca_file and not Path(ca_file).is_file():
            raise ConfigError(f"the Commander's CA file {ca_file} does not exist: pin it again with `m3shd login URL`")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.ca_file = ca_file or None
        # Given with each request: a Session's own `verify` loses to REQUESTS_CA_BUNDLE in the
        # environment (requests issue #3829), which would drop the pin on machines that set it.
        self.verify = str(ca_file) if ca_file else None
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["User-Agent"] = "m3shd"

    def _send(self, method: str, path: str, body=None, headers=None, timeout=None, params=None, data=None,
              raw: bool = False):
        """The answer's JSON (`raw`: its bytes); a refusal raises CommanderError with its code."""
        if body is not None:
            data = wire.canonical_json(body)
        merged = {"Content-Type": "application/json", **(headers or {})} if data is not None else headers
        try:
            response = self.session.request(method, self.url + path, data=data, headers=merged, params=params,
                                            timeout=timeout or self.timeout, verify=self.verify)
        except requests.exceptions.SSLError as exc:
            raise CommanderUntrusted(trust.explain(self.url, self.ca_file, exc)) from None
        except requests.RequestException as exc:
            raise CommanderUnreachable(f"cannot reach the Commander at {self.url}: {exc.__class__.__name__}") from None
        if response.status_code == 204:
            return None
        if raw and response.status_code < 400:
            return response.content
        try:
            document = response.json()
        except ValueError:
            document = None
        if response.status_code >= 400:
            error = (document or {}).get("error", {}) if isinstance(document, dict) else {}
            raise CommanderError(response.status_code, error.get("code", "http_error"),
                                 error.get("message", response.text[:200] or response.reason))
        return document


class ApiClient(_Base):
    def health(self) -> dict:
        return self._send("GET", "/api/health")

    def ca(self) -> dict:
        """The mesh CA this Commander serves (`certificate`, `ca_hash`); 404 when it has none."""
        return self._send("GET", "/api/ca")

    def submit_task(self, prompt: str, **fields) -> dict:
        return self._send("POST", "/api/tasks", {"prompt": prompt, **{k: v for k, v in fields.items() if v is not None}})

    def upload_attachment(self, data: bytes, media_type: str) -> dict:
        """Store an image for tasks; answers its sha256, media_type and size."""
        return self._send("POST", "/api/attachments", data=data, headers={"Content-Type": media_type})

    def get_task(self, task_id: int, wait: float = 0) -> dict:
        params = {"wait": wait} if wait else None
        return self._send("GET", f"/api/tasks/{task_id}", params=params, timeout=wait + self.timeout)

    def wait_task(self, task_id: int, timeout: float | None = None, on_poll=None, every: float = 25.0) -> dict:
        """The task once it is final, or as it stands after `timeout` seconds (None: no limit).

        Long-polls in rounds of at most `every` seconds, so no proxy in between drops an idle
        request; `on_poll(task)` sees the task after each round (to report why it still waits)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = every if deadline is None else max(0.0, min(every, deadline - time.monotonic()))
            task = self.get_task(task_id, wait=remaining)
            if task["state"] in FINAL_STATES or (deadline is not None and time.monotonic() >= deadline):
                return task
            if on_poll:
                on_poll(task)

    def list_tasks(self, **filters) -> list[dict]:
        params = {k: v for k, v in filters.items() if v is not None}
        return self._send("GET", "/api/tasks", params=params)["tasks"]

    def cancel_task(self, task_id: int) -> dict:
        return self._send("POST", f"/api/tasks/{task_id}/cancel")

    def approve_task(self, task_id: int) -> dict:
        return self._send("POST", f"/api/tasks/{task_id}/approve")

    def reject_task(self, task_id: int, reason: str | None = None) -> dict:
        return self._send("POST", f"/api/tasks/{task_id}/reject", {"reason": reason} if reason else {})

    def submit_pipeline(self, definition: dict) -> dict:
        return self._send("POST", "/api/pipelines", definition)

    def get_pipeline(self, pipeline_id: int) -> dict:
        return self._send("GET", f"/api/pipelines/{pipeline_id}")

    def cancel_pipeline(self, pipeline_id: int) -> dict:
        return self._send("POST", f"/api/pipelines/{pipeline_id}/cancel")

    def task_provenance(self, task_id: int) -> dict:
        return self._send("GET", f"/api/tasks/{task_id}/provenance")

    def events(self, after: int | None = None, idle: float = 45.0):
        """Yield events from the SSE stream as dicts, resuming after event id `after`; the
        Commander sends a keep-alive every 15 s, so `idle` seconds of silence mean it is gone."""
        params = {"after": after} if after is not None else None
        try:
            response = self.session.get(self.url + "/api/events", params=params, stream=True,
                                        timeout=(self.timeout, idle), verify=self.verify)
        except requests.exceptions.SSLError as exc:
            raise CommanderUntrusted(trust.explain(self.url, self.ca_file, exc)) from None
        except requests.RequestException as exc:
            raise CommanderUnreachable(f"cannot reach the Commander at {self.url}: {exc.__class__.__name__}") from None
        with response:
            if response.status_code >= 400:
                raise CommanderError(response.status_code, "http_error", response.reason)
            try:
                for line in response.iter_lines(decode_unicode=True):
                    if line and line.startswith("data: "):
                        yield json.loads(line[6:])
            except requests.RequestException as exc:
                raise CommanderUnreachable(f"the event stream from {self.url} broke: {exc.__class__.__name__}") from None

    def list_nodes(self) -> list[dict]:
        return self._send("GET", "/api/nodes")["nodes"]

    def get_node(self, node_id: int) -> dict:
        return self._send("GET", f"/api/nodes/{node_id}")

    def set_node_state(self, node_id: int, state: str, deadline: float | None = None) -> dict:
        body = {"state": state} if deadline is None else {"state": state, "deadline": deadline}
        return self._send("PUT", f"/api/nodes/{node_id}/state", body)

    def rotate_node_key(self, node_id: int) -> dict:
        return self._send("POST", f"/api/nodes/{node_id}/rotate-key")

    def remove_node(self, node_id: int) -> None:
        self._send("DELETE", f"/api/nodes/{node_id}")

    def approve_node_capabilities(self, node_id: int, capabilities: list[str]) -> dict:
        """Approve exactly `capabilities`, the node's `requested_capabilities` as the caller saw them."""
        return self._send("POST", f"/api/nodes/{node_id}/capabilities/approve", {"capabilities": capabilities})

    def create_token(self, name: str, **fields) -> dict:
        return self._send("POST", "/api/tokens", {"name": name, **{k: v for k, v in fields.items() if v is not None}})

    def list_tokens(self) -> list[dict]:
        return self._send("GET", "/api/tokens")["tokens"]

    def revoke_token(self, token_id: int) -> dict:
        return self._send("DELETE", f"/api/tokens/{token_id}")

    def store_runner_credential(self, kind: str, secret: str, capability: str | None = None,
                                node_id: int | None = None) -> dict:
        body = {"kind": kind, "secret": secret, "capability": capability, "node_id": node_id}
        return self._send("POST", "/api/runners/credentials", {k: v for k, v in body.items() if v is not None})

    def list_runner_credentials(self) -> list[dict]:
        return self._send("GET", "/api/runners/credentials")["credentials"]

    def remove_runner_credential(self, credential_id: int) -> None:
        self._send("DELETE", f"/api/runners/credentials/{credential_id}")

    def list_agents(self) -> list[dict]:
        return self._send("GET", "/api/agents")["agents"]

    def get_agent(self, name: str) -> dict:
        return self._send("GET", f"/api/agents/{quote(name, safe='')}")

    def agent_versions(self, name: str) -> dict:
        return self._send("GET", f"/api/agents/{quote(name, safe='')}/versions")

    def put_agent(self, name: str, profile: str) -> dict:
        """Create the agent or give it a new version with this profile text."""
        return self._send("PUT", f"/api/agents/{quote(name, safe='')}", {"profile": profile})

    def rollback_agent(self, name: str, version: int) -> dict:
        return self._send("POST", f"/api/agents/{quote(name, safe='')}/rollback", {"version": version})

    def delete_agent(self, name: str, fallback: bool = False) -> None:
        self._send("DELETE", f"/api/agents/{quote(name, safe='')}", params={"fallback": "true"} if fallback else None)

    def reload_agents(self) -> dict:
        return self._send("POST", "/api/agents/reload")

    def plugins(self) -> dict:
        """The Commander's plugins: each loaded with its tools, or failed with the reason."""
        return self._send("GET", "/api/plugins")

    def tool_calls(self, task_id: int) -> dict:
        """The [TOOL_CALL]s a task's model made."""
        return self._send("GET", f"/api/tasks/{task_id}/tool-calls")

    def spend(self, group: str = "", days: int | None = None) -> dict:
        """Spend over the last `days` local days (None: today), grouped by `group` (comma-separated)."""
        return self._send("GET", "/api/spend", params={"group": group, **({"days": days} if days else {})})

    def spend_top(self, n: int = 10, days: int | None = None) -> dict:
        return self._send("GET", "/api/spend/top", params={"n": n, **({"days": days} if days else {})})

    def spend_alerts(self, days: int = 1) -> list[dict]:
        return self._send("GET", "/api/spend/alerts", params={"days": days})["alerts"]

    def spend_caps(self) -> dict:
        return self._send("GET", "/api/spend/caps")

    def set_spend_cap(self, scope: str, name: str, usd: float) -> dict:
        return self._send("PUT", "/api/spend/caps", {"scope": scope, "name": name, "usd": usd})

    def clear_spend_cap(self, scope: str, name: str) -> dict:
        return self._send("DELETE", "/api/spend/caps", params={"scope": scope, "name": name})

    def memories(self, agent: str, query: str | None = None, limit: int = 50) -> list[dict]:
        """An agent's memories (`shared`: every agent's), newest first; with `query`, the best matches first."""
        params = {"limit": limit, **({"q": query} if query else {})}
        return self._send("GET", f"/api/agents/{quote(agent, safe='')}/memory", params=params)["memories"]

    def remember(self, agent: str, value: str, key: str | None = None, tags: list[str] | None = None) -> dict:
        body = {"value": value, **({"key": key} if key else {}), **({"tags": tags} if tags else {})}
        return self._send("PUT", f"/api/agents/{quote(agent, safe='')}/memory", body)

    def forget(self, agent: str, memory_id: int) -> None:
        self._send("DELETE", f"/api/agents/{quote(agent, safe='')}/memory/{memory_id}")

    def consolidate_memories(self) -> list[dict]:
        return self._send("POST", "/api/memory/consolidate")["merges"]

    def webhooks(self) -> list[dict]:
        return self._send("GET", "/api/webhooks")["hooks"]

    def webhook(self, name: str, limit: int = 20) -> dict:
        """The hook and its latest `limit` deliveries."""
        return self._send("GET", f"/api/webhooks/{quote(name, safe='')}", params={"limit": limit})

    def create_webhook(self, name: str, kind: str, rules: list, debounce: float | None = None) -> dict:
        return self._send("POST", "/api/webhooks", {"name": name, "kind": kind, "rules": rules,
                                                    **({"debounce": debounce} if debounce is not None else {})})

    def rotate_webhook_secret(self, name: str) -> dict:
        return self._send("POST", f"/api/webhooks/{quote(name, safe='')}/rotate-secret")

    def delete_webhook(self, name: str) -> None:
        self._send("DELETE", f"/api/webhooks/{quote(name, safe='')}")

    def register(self, **fields) -> dict:
        return self._send("POST", "/api/nodes/register", fields)

    def request_join(self, **fields) -> dict:
        """Ask to join without a token (no credentials needed): the machine waits as pending."""
        return self._send("POST", "/api/nodes/pending", fields)

    def poll_join(self, poll_token: str) -> dict:
        return self._send("POST", "/api/nodes/pending/poll", {"poll_token": poll_token})

    def list_pending(self) -> list[dict]:
        return self._send("GET", "/api/nodes/pending")["pending"]

    def approve_pending(self, pending_id: int) -> dict:
        return self._send("POST", f"/api/nodes/pending/{pending_id}/approve")

    def reject_pending(self, pending_id: int) -> None:
        self._send("DELETE", f"/api/nodes/pending/{pending_id}")


class NodeClient(_Base):
    """Every request signed with the node key (DESIGN.md §3)."""

    def __init__(self, url: str, node_id: int, token: str, signing_key: str, timeout: float = 30.0,
                 sign_document: Callable[[bytes], str] | None = None, ca_file: str | None = None):
        super().__init__(url, token, timeout, ca_file)
        self.node_id = node_id
        self.key = bytes.fromhex(signing_key)
        self.sign_document = sign_document  # the node's Ed25519 signature over a result document

    def _signed(self, action: str, body=None, timeout=None, key: bytes | None = None, raw: bool = False):
        path = f"/api/nodes/{self.node_id}/{action}"
        payload = wire.canonical_json(body if body is not None else {})
        headers = wire.sign_request(key or self.key, "POST", path, payload)
        return self._send("POST", path, data=payload, headers=headers, timeout=timeout, raw=raw)

    def use_key(self, signing_key: str) -> None:
        """Sign every later request and result with this key (a rotation order's)."""
        self.key = bytes.fromhex(signing_key)

    def register_again(self, **fields) -> dict:
        """Register this node again (it may have changed), proving its key: it keeps its token and key."""
        return self._signed("register", fields)

    def heartbeat(self, **fields) -> dict:
        return self._signed("heartbeat", fields)

    def claim(self, open_slots: int, wait: float, credential_kinds: list[str] = ()) -> list[dict]:
        body = {"open_slots": open_slots, "wait": wait}
        if credential_kinds:
            body["credential_kinds"] = list(credential_kinds)
        return self._signed("claim", body, timeout=wait + self.timeout)["leases"]

    def post_result(self, result: dict) -> dict:
        # One key for the result and its request: the Commander checks the result's HMAC with the
        # key that signed the request, and a rotation may switch keys in between.
        key = self.key
        signed = dict(result, signature=wire.sign_result(key, result))
        if self.sign_document:
            signed["ed25519_signature"] = self.sign_document(wire.result_document(result))
        return self._signed("results", signed, key=key)

    def fetch_attachment(self, sha256: str) -> bytes:
        """An attachment of a task this node holds a lease on, checked against its SHA-256."""
        data = self._signed("attachments", {"sha256": sha256}, raw=True)
        if wire.sha256_hex(data) != sha256:
            raise CommanderError(502, "attachment_corrupt", f"attachment {sha256} arrived with other content")
        return data

    def call_tool(self, task_id: int, attempt: int, lease_token: str, tool: str, args: dict,
                  timeout: float | None = None) -> dict:
        """Run a plugin tool for a task this node holds the lease on: {tool, ok, result | error}."""
        return self._signed("tool-calls", dict(task_id=task_id, attempt=attempt, lease_token=lease_token, tool=tool,
                                               args=args), timeout=timeout)

    def deregister(self) -> None:
        self._signed("deregister")
