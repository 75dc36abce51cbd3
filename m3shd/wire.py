"""Wire protocol v1: canonical JSON and the HMAC signatures both ends compute, the names of
task, pipeline and node states, of roles and of runner credentials that both ends use, and the forms of the lease
fields that reach a command line.

Stdlib only: the N0D3 imports this on a Raspberry Pi.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from enum import StrEnum


class TaskState(StrEnum):
    """A task's states (DESIGN.md §4), stored and sent as these strings. `blocked`: a pipeline
    step waiting on its parents; `skipped`: a step that never ran because a parent it needed did
    not succeed."""

    BLOCKED = "blocked"
    AWAITING_APPROVAL = "awaiting_approval"
    QUEUED = "queued"
    LEASED = "leased"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


# Nothing happens to a task after these.
FINAL_STATES = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED)


class PipelineState(StrEnum):
    """`running` until every step is final."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class NodeState(StrEnum):
    """`offline` is a clean deregistration, `lost` a node that stopped heartbeating, `disabled` an
    operator's lasting "no": it survives re-registration, unlike `active`."""

    ACTIVE = "active"
    PAUSED = "paused"
    DRAINING = "draining"
    DISABLED = "disabled"
    LOST = "lost"
    OFFLINE = "offline"


# Lease fields a N0D3 hands to `claude` as arguments (n0d3/runners.py). The Commander refuses
# any other value at its API (a 400 naming the field), and the N0D3 checks again before it
# starts anything: a task whose own input breaks these fails as the task's error, never its node's.
# A model: an id, alias or provider id (claude-sonnet-5-5, sonnet[1m], claude-x@2025, a Bedrock
# ARN); never a leading dash, which could read as an option.
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/\[\]-]{0,127}$"
# An allowed tool: a name, with an optional rule in parentheses (Bash(git log:*), Read(./src/**));
# no commas, which join the list into one argument.
TOOL_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,127}(\([^\x00-\x1f\x7f(),]{1,256}\))?$"


class Role(StrEnum):
    """The role presets a token or account can have; what each permits is the Commander's
    (commander/permissions.py)."""

    WORKER = "worker"
    MOBILE = "mobile"
    COMMANDER = "commander"
    ADMIN = "admin"


class CredentialKind(StrEnum):
    """Runner credentials a Commander can hand its N0D3S, sealed to each (m3shd/sealing.py): an
    Anthropic API key, which both runners use, or a Claude Code long-lived token (`claude
    setup-token`), which only the Claude Code CLI takes (as CLAUDE_CODE_OAUTH_TOKEN)."""

    API_KEY = "api_key"
    OAUTH_TOKEN = "oauth_token"


PROTOCOL_VERSION = 1
MAX_SKEW_S = 300
# A claim's long-poll that finds no work ends empty after 50-100 % of its wait, at random: a
# fleet that connected at once (a Commander restart) would otherwise renew every claim in one
# burst, every `wait` seconds, for good. Measured at 1,000 nodes: that burst was the heartbeat's p99.
LONG_POLL_SPREAD = 0.5  # "equal jitter": the first renewals after a restart spread over half a wait


def shortest_long_poll(wait: float) -> float:
    """The soonest a claim long-polling `wait` seconds ends empty when the Commander holds it as
    usual (an earlier empty answer means the node may not take work now)."""
    return (1.0 - LONG_POLL_SPREAD) * wait


# Whole seconds since the epoch: 10 digits until 2286. The bound keeps a huge number from
# overflowing the float arithmetic of the skew check.
MAX_TIMESTAMP_DIGITS = 12

HEADER_TIMESTAMP = "X-M3SHD-Timestamp"
HEADER_NONCE = "X-M3SHD-Nonce"
HEADER_SIGNATURE = "X-M3SHD-Signature"


def canonical_json(value) -> bytes:
    """Sorted keys, compact separators, UTF-8: the bytes every signature covers."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_sha256(system_prompt: str, prompt: str) -> str:
    """What a result is bound to: the exact system prompt (its agent's) and prompt its node ran.
    Both go in as one canonical JSON object, so no two different pairs hash alike."""
    return sha256_hex(canonical_json({"prompt": prompt, "system_prompt": system_prompt}))


def binding(lease: dict) -> dict:
    """The fields that bind a result to the lease it answers: the agent, its version and the
    run_sha256 of the system prompt and prompt. None for a lease from a Commander that predates
    agents (it names none, and would refuse fields it does not know)."""
    if "agent" not in lease:
        return {}
    return dict(agent=lease["agent"], agent_version=lease["agent_version"],
                run_sha256=run_sha256(lease.get("system_prompt") or "", lease["prompt"]))


def _hmac_hex(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def request_message(ts: str, nonce: str, method: str, path: str, body: bytes) -> bytes:
    """What a node request's signature covers; `path` includes the query string."""
    return "\n".join((ts, nonce, method.upper(), path, sha256_hex(body))).encode()


def sign_request(key: bytes, method: str, path: str, body: bytes, now: float | None = None) -> dict:
    """Headers that authenticate one node request."""
    ts = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    return {
        HEADER_TIMESTAMP: ts,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: _hmac_hex(key, request_message(ts, nonce, method, path, body)),
    }


class MalformedSignature(ValueError):
    """The signature headers are there but not in their format: a bad request, not a bad signature."""


def check_request(key: bytes, headers, method: str, path: str, body: bytes, now: float | None = None) -> str:
    """Verify a signed request; returns its nonce (the caller refuses a replay), raises ValueError
    (MalformedSignature when a header breaks its format)."""
    ts = headers.get(HEADER_TIMESTAMP, "")
    nonce = headers.get(HEADER_NONCE, "")
    signature = headers.get(HEADER_SIGNATURE, "")
    if not (ts and nonce and signature):
        raise ValueError("missing request signature headers")
    if not (ts.isascii() and ts.isdigit() and len(ts) <= MAX_TIMESTAMP_DIGITS):
        raise MalformedSignature(f"{HEADER_TIMESTAMP} must be whole seconds since the epoch "
                                 f"(at most {MAX_TIMESTAMP_DIGITS} ASCII digits)")
    if not (8 <= len(nonce) <= 64 and nonce.isascii() and nonce.isalnum()):
        raise MalformedSignature(f"{HEADER_NONCE} must be 8-64 ASCII letters and digits")
    now = time.time() if now is None else now
    if abs(now - int(ts)) > MAX_SKEW_S:
        raise ValueError(f"request timestamp is more than {MAX_SKEW_S} s away from the Commander's clock")
    expected = _hmac_hex(key, request_message(ts, nonce, method, path, body))
    if not hmac.compare_digest(expected, signature):
        raise ValueError("bad request signature")
    return nonce


# A result's HMAC and its Ed25519 signature (m3shd/provenance.py) both cover everything else.
RESULT_SIGNATURES = ("signature", "ed25519_signature")


def result_payload(result: dict) -> dict:
    """The part of a result that its signatures cover (everything but the signatures)."""
    return {k: v for k, v in result.items() if k not in RESULT_SIGNATURES}


def result_document(result: dict) -> bytes:
    """The bytes both signatures of a result cover, and the Commander keeps for provenance."""
    return canonical_json(result_payload(result))


def sign_result(key: bytes, result: dict) -> str:
    return _hmac_hex(key, result_document(result))


def check_result(key: bytes, result: dict) -> bool:
    return check_document(key, result_document(result), str(result.get("signature", "")))


def check_document(key: bytes, document: bytes, signature: str) -> bool:
    """Does `signature` sign these canonical bytes (a result as the Commander stored it)?"""
    return hmac.compare_digest(_hmac_hex(key, document).encode(), signature.encode())
