"""One pydantic model per request and response body; the OpenAPI document is built from them.

Request models refuse unknown fields and coerce nothing (`strict`): a wrong type is a 400.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from commander.models import (
    ACTIVE, CLOSED, DISABLED, DRAINING, HALF_OPEN, NODE_STATES, OPEN, PAUSED, PIPELINE_STATES, TASK_STATES,
)
from commander.memory import blocks
from commander.permissions import PERMISSIONS, ROLES
from m3shd import wire

# Plain strings, as in the *_STATES tuples (commander/models.py): a refusal names 'admin', not a repr.
Role = Literal[tuple(role.value for role in ROLES)]  # type: ignore[valid-type]
Kind = Literal[tuple(kind.value for kind in wire.CredentialKind)]  # type: ignore[valid-type]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def from_row(cls, row, **given):
        """This body from a database row: each of its fields is read from the row's attribute of
        that name, except those `given` (derived, or named otherwise in the table). A dict is
        built first: pydantic's from_attributes on a row with attributes overlaid cost three
        times as much (measured for a TaskOut: 55 µs against 17, what the hand-kept field lists
        this replaced cost)."""
        return cls.model_validate({name: given[name] if name in given else getattr(row, name)
                                   for name in cls.model_fields})


AgentName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,39}$")]
Capability = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/@+=-]+$")]
Capabilities = Annotated[list[Capability], Field(max_length=64)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
# What reaches `claude`'s command line on a N0D3 has the wire's strict form (m3shd/wire.py).
Model = Annotated[str, StringConstraints(max_length=128, pattern=wire.MODEL_PATTERN)]


def _not_blank(text: str) -> str:
    if not text.strip():  # the CLI refuses a blank prompt: it would fail on every node
        raise ValueError("a prompt needs some text, not only whitespace")
    return text


Prompt = Annotated[str, StringConstraints(max_length=200_000), AfterValidator(_not_blank)]
LeaseToken = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Slots = Annotated[int, Field(ge=0, le=64)]
MAX_ID = 2**63 - 1  # SQLite's INTEGER: a larger id can name nothing
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Count = Annotated[int, Field(ge=0, le=MAX_ID)]


class ErrorDetail(Response):
    code: str
    message: str


class ErrorBody(Response):
    error: ErrorDetail


class Health(Response):
    status: Literal["ok"]
    version: str
    schema_version: int


class CaOut(Response):
    certificate: str = Field(description="the mesh CA certificate (PEM) the Commander's own certificate is issued by")
    ca_hash: str = Field(description="sha256: of the CA's public key (SubjectPublicKeyInfo DER), what joins pin; "
                                     "a client computes it itself rather than trust this copy")


# --- nodes -----------------------------------------------------------------------------------

CredentialKinds = Annotated[list[Kind], Field(max_length=len(wire.CredentialKind), description=(
    "runner credentials this node would take from the Commander, preferred first (empty: it has its own)"))]


class RegisterIn(Request):
    machine_id: Annotated[str, StringConstraints(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
    name: Name
    capabilities: Capabilities = []
    slots: Annotated[int, Field(ge=1, le=64)] = 1
    priority: Annotated[int, Field(ge=-100, le=100)] = Field(0, description="breaks ties between equally good nodes")
    version: Annotated[str, StringConstraints(max_length=32)] = ""
    runner: Annotated[str, StringConstraints(max_length=32)] | None = None
    problem: Annotated[str, StringConstraints(max_length=1000)] | None = None
    public_key: Sha256Hex | None = Field(
        None, description="hex Ed25519 public key the node signs results with (kept in its state directory)")
    seal_key: Sha256Hex | None = Field(
        None, description="hex X25519 public key the Commander seals runner credentials to (given once, never changed)")


class RegisterOut(Response):
    node_id: int
    node_token: str
    signing_key: str = Field(description="hex HMAC-SHA256 key for signing requests and results")
    heartbeat_interval: float
    lease_ttl: float
    max_wait: float = Field(description="the longest long-poll the Commander holds")


class ReregisterOut(Response):
    node_id: int
    state: Literal[NODE_STATES]  # type: ignore[valid-type]
    capabilities: list[str] = Field(description="the approved capabilities: what tasks are matched against")
    requested_capabilities: list[str] | None = Field(
        description="what the node reported, while some of it waits for an operator's approval; else null")
    heartbeat_interval: float
    lease_ttl: float
    max_wait: float = Field(description="the longest long-poll the Commander holds")


class LeaseRef(Request):
    task_id: Id
    attempt: Id
    lease_token: LeaseToken


class HeartbeatIn(Request):
    open_slots: Slots
    running: Annotated[list[LeaseRef], Field(max_length=64)] = []
    runner: Annotated[str, StringConstraints(max_length=32)] | None = None
    problem: Annotated[str, StringConstraints(max_length=1000)] | None = None
    capabilities: Capabilities | None = None
    draining: bool = Field(False, description="the node is shutting down: finish running work, take nothing new")
    credential_kinds: CredentialKinds = []


class CancelOrder(Response):
    task_id: int
    attempt: int
    lease_token: str


class Orders(Response):
    drain: bool = False
    pause: bool = False
    cancel: list[CancelOrder] = []
    rotate_key: str | None = None  # hex: sign every later request and result with this key


class HeartbeatOut(Response):
    state: str
    orders: Orders
    heartbeat_interval: float
    credential: Kind | None = Field(None, description="the runner credential this node's leases carry now, of the "
                                                      "kinds it asked for (null: none on offer)")


class ClaimIn(Request):
    open_slots: Annotated[int, Field(ge=1, le=64)]
    wait: Annotated[float, Field(ge=0, le=3600, description=(
        "seconds to long-poll when no work is there (at most the Commander's max_wait); the empty answer comes "
        "after 50-100 % of it, at random, so a fleet's claims do not all renew at once"))] = 0
    credential_kinds: CredentialKinds = []


class SealedCredential(Response):
    kind: Kind
    sealed: str = Field(description="base64: an ephemeral X25519 key, then ChaCha20-Poly1305 ciphertext, sealed to "
                                    "the node's seal key and bound to this lease (m3shd/sealing.py)")


class AttachmentOut(Response):
    sha256: str = Field(description="SHA-256 of its bytes: the name a task submit uses")
    media_type: str
    size: int = Field(description="bytes")


class LeaseOut(Response):
    task_id: int
    attempt: int
    lease_token: str
    lease_until: float
    prompt: str
    model: str | None
    requires: list[str]
    agent: str | None = Field(description="the agent the task runs as (null: a task from before agents)")
    agent_version: int | None
    system_prompt: str | None = Field(description="the agent version's system prompt, appended to the runner's own")
    allowed_tools: list[str] = Field(description="Claude Code tools it may use without asking (--allowedTools)")
    disallowed_tools: list[str] = Field(description="Claude Code tools it may not use at all (--disallowedTools)")
    max_turns: int | None
    timeout_s: int | None = Field(description="the agent's time limit in seconds (the node's own limit may be lower)")
    attachments: list[AttachmentOut] = Field(
        [], description="images the task takes: fetch each with POST /nodes/{node_id}/attachments and check its SHA-256")
    runner_credential: SealedCredential | None = Field(
        None, description="for a node that asked for one: its runner credential, for this lease only")
    tools: list[str] = Field([], description="plugin tools the model may call with [TOOL_CALL] markers (the system "
                                             "prompt describes them): POST /nodes/{node_id}/tool-calls")
    tool_rounds: int | None = Field(None, description="tool calls an attempt may make")


class AttachmentFetch(Request):
    sha256: Sha256Hex


class ClaimOut(Response):
    leases: list[LeaseOut]


class Usage(Request):
    input_tokens: Count = 0
    output_tokens: Count = 0
    cache_read_tokens: Count = 0
    cache_write_tokens: Count = 0


class ResultIn(Request):
    task_id: Id
    attempt: Id
    lease_token: LeaseToken
    status: Literal["succeeded", "failed"]
    output: Annotated[str, StringConstraints(max_length=900_000)] = ""
    error: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    infra_failure: bool = Field(False, description="the runner broke (crash, spawn, auth, timeout): retry elsewhere")
    usage: Usage = Usage()
    cost_usd: Annotated[float, Field(ge=0)] | None = None
    runner: Annotated[str, StringConstraints(max_length=32)] | None = None
    model: Annotated[str, StringConstraints(max_length=128)] | None = None
    started_at: Annotated[float, Field(ge=0)] | None = None
    finished_at: Annotated[float, Field(ge=0)] | None = None
    duration_ms: Count | None = None
    prompt_sha256: Sha256Hex | None = Field(None, description="SHA-256 of the prompt the node answered")
    agent: AgentName | None = Field(None, description="the agent its lease named")
    agent_version: Id | None = None
    run_sha256: Sha256Hex | None = Field(
        None, description="m3shd.wire.run_sha256 of the system prompt and prompt the node ran, as leased")
    runner_notes: Annotated[list[Annotated[str, StringConstraints(max_length=500)]], Field(max_length=20)] = Field(
        [], description="what the runner could not apply of the agent's profile")
    signature: Sha256Hex = Field(description="HMAC-SHA256 with the node key over the canonical JSON of the rest")
    ed25519_signature: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{128}$")] | None = Field(
        None, description="Ed25519 over the same bytes; required from a node that registered a public key")


MACHINE_ID = Field(description="the id the machine registered with; shown only to callers with `nodes:manage` "
                               "(null otherwise)")


class NodeOut(Response):
    id: int
    name: str
    machine_id: str | None = MACHINE_ID
    state: Literal[NODE_STATES]  # type: ignore[valid-type]
    capabilities: list[str] = Field(description="the approved capabilities: what tasks are matched against")
    requested_capabilities: list[str] | None = Field(
        description="what the node last reported, while it holds labels an operator has not approved (approve them "
                    "with POST /nodes/{id}/capabilities); null when nothing waits")
    slots: int
    open_slots: int
    running: int
    runner: str | None
    problem: str | None
    version: str
    priority: int
    drain_deadline: float | None
    registered_at: float
    last_seen: float
    heartbeat_age: float
    breaker: Breaker
    reputation: Reputation


class KeyRotationOut(Response):
    node_id: int
    pending: bool = Field(description="the new key waits for the node's next heartbeat; the old key works until "
                                      "the node signs with the new one")


class CapabilitiesApproveIn(Request):
    capabilities: Capabilities = Field(description="exactly the node's `requested_capabilities` as you saw them; "
                                                   "if the node asks for something else by now, nothing is approved")


class NodeStateIn(Request):
    state: Literal[ACTIVE, PAUSED, DRAINING, DISABLED]  # type: ignore[valid-type]
    deadline: Annotated[float, Field(gt=0, le=7 * 86400)] | None = Field(
        None, description="draining only: seconds from now after which work still running is queued elsewhere")


class Breaker(Response):
    state: Literal[CLOSED, OPEN, HALF_OPEN]  # type: ignore[valid-type]
    failures: int = Field(description="infrastructure failures in a row")
    cooldown: float = Field(description="seconds of the current (or last) open period")
    until: float | None = Field(description="open until then; then one probe task is let through")
    probe_task_id: int | None


class OutcomeOut(Response):
    task_id: int
    ts: float
    kind: Literal["succeeded", "failed", "infra", "lost"]
    reward: float | None
    duration_ms: int | None


class Reputation(Response):
    mean: float = Field(description="decayed mean reward in [0, 1]")
    count: float = Field(description="decayed number of rewarded outcomes (0: untried)")
    ucb: float | None = Field(description="mean + c·sqrt(ln N / count) among the live nodes; null while untried")
    score: float | None = Field(description="this node's score for a plain task now; null when it can take none")
    window: list[OutcomeOut] = Field(description="the latest outcomes, newest first")


class NodeList(Response):
    nodes: list[NodeOut]


class PendingOut(Response):
    id: int
    state: Literal["pending"]
    poll_token: str = Field(description="send it to /nodes/pending/poll until approved; it opens nothing else")


class PendingPollIn(Request):
    poll_token: Annotated[str, StringConstraints(min_length=8, max_length=128)]


class PendingPollOut(Response):
    state: Literal["pending", "approved"]
    registration: RegisterOut | None = Field(None, description="once approved: the node's secrets, given once")


class PendingNodeOut(Response):
    id: int
    name: str
    machine_id: str | None = MACHINE_ID
    capabilities: list[str]
    slots: int
    version: str
    address: str | None
    requested_at: float
    approved: bool
    key_fingerprint: str | None = Field(
        None, description="SHA256: fingerprint of the key it will sign results with; the machine logs the same "
                          "while it waits, so an operator can tell it is the one they expect")


class PendingList(Response):
    pending: list[PendingNodeOut]


# --- runner credentials ----------------------------------------------------------------------

class CredentialIn(Request):
    kind: Kind = Field(description="api_key: an Anthropic API key (both runners); oauth_token: a Claude Code token "
                                   "from `claude setup-token` (the CLI runner only)")
    secret: Annotated[str, StringConstraints(min_length=20, max_length=1024, pattern=r"^[\x21-\x7e]+$")] = Field(
        description="never shown again: only its prefix and fingerprint are")
    capability: Capability | None = Field(None, description="only for nodes with this capability")
    node_id: Id | None = Field(None, description="only for this node")


class CredentialOut(Response):
    id: int
    kind: Kind
    scope: str = Field(description="mesh, capability:<label> or node:<id>: the nodes it is for")
    node_id: int | None
    prefix: str = Field(description="the key's format (e.g. sk-ant-api03-), never any of its secret part")
    fingerprint: str = Field(description="the first 16 hex digits of the secret's SHA-256")
    stored_at: float
    stored_by: str


class CredentialList(Response):
    credentials: list[CredentialOut]


# --- tasks -----------------------------------------------------------------------------------

class TaskSubmit(Request):
    prompt: Prompt
    requires: Capabilities = []
    priority: Annotated[int, Field(ge=-100, le=100)] = 0
    model: Model | None = Field(None, description="a Claude model id or alias, e.g. claude-sonnet-5-5")
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=20)] | None = None
    prefer: Capabilities = Field([], description="capabilities that make a node a better choice, not a requirement")
    approval_required: bool = Field(False, description="hold the task in awaiting_approval until approved or rejected")
    retry_on_lost: bool = Field(True, description="retry when the node running it is lost (else the task fails)")
    backoff: Annotated[float, Field(ge=0, le=3600)] | None = Field(
        None, description="seconds before a retry, doubling each attempt (default: the Commander's retry_backoff)")
    agent: AgentName | None = Field(None, description="the agent it runs as (default: the token's agent, else general)")
    attachments: Annotated[list[Sha256Hex], Field(max_length=20)] = Field(
        [], description="SHA-256 of images stored with POST /api/attachments, passed to Claude with the prompt")
    memory: bool = Field(True, description="add its agent's relevant memories to the prompt when it is leased")
    on_behalf_of: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:@+ -]+$")] \
        | None = Field(None, description="tokens only: the person the token submits for (the iMessage bridge names "
                                         "the sender); the submitter is then `<token> for <person>`, whose spend and "
                                         "daily cap are their own")


class RejectIn(Request):
    reason: Annotated[str, StringConstraints(max_length=1000)] | None = None


class TaskUsage(Response):
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int


class TaskOut(Response):
    id: int
    state: Literal[TASK_STATES]  # type: ignore[valid-type]
    prompt: str
    requires: list[str]
    prefer: list[str]
    priority: int
    submitter: str
    approval_required: bool
    decided_by: str | None = Field(description="who approved or rejected it")
    approver_must_differ: bool = Field(description="only a token or user other than its submitter may approve it")
    retry_on_lost: bool
    backoff: float
    not_before: float | None = Field(description="a retry waits until then")
    tried_nodes: list[int] = Field(description="nodes whose attempts broke; a retry prefers others")
    model: str | None
    agent: str | None = Field(description="the agent it runs as (null: submitted before agents existed)")
    agent_version: int | None
    attempt: int
    max_attempts: int
    node_id: int | None
    runner: str | None
    runner_notes: list[str] = Field(description="what the runner could not apply of the agent's profile")
    output: str | None = Field(description="the answer, without the [REMEMBER] blocks it stored (docs/memory.md)")
    error: str | None
    usage: TaskUsage
    cost_usd: float | None = Field(description="what all its attempts cost, retries and failures included, priced as "
                                               "the spend ledger priced them; null until one reported usage")
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    duration_ms: int | None
    waiting_reason: str | None = Field(None, description="why a queued task is not running yet")
    pipeline_id: int | None = None
    step_key: str | None = None
    chain_hash: str | None = Field(None, description="provenance hash over this result and its parents' hashes")
    attachments: list[AttachmentOut] = Field([], description="images the task takes, in order")

    @classmethod
    def of(cls, task, waiting_reason: str | None = None) -> TaskOut:
        """The task as the API shows it; its usage block is read from the row's token columns."""
        return cls.from_row(task, usage=TaskUsage.from_row(task), waiting_reason=waiting_reason,
                            output=blocks.shown(task.output))


class TaskList(Response):
    tasks: list[TaskOut]


class TaskQuery(Request):
    model_config = ConfigDict(extra="forbid")  # query strings are text: let pydantic parse numbers
    state: Literal[TASK_STATES] | None = None  # type: ignore[valid-type]
    node_id: Id | None = None
    agent: AgentName | None = None
    before_id: Id | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 50


class TaskWaitQuery(Request):
    model_config = ConfigDict(extra="forbid")
    wait: Annotated[float, Field(ge=0, le=300)] = 0


class ResultOut(Response):
    accepted: bool
    duplicate: bool
    task: TaskOut


# --- pipelines -------------------------------------------------------------------------------

MAX_PIPELINE_STEPS = 50
StepKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class Dependency(Request):
    step: StepKey
    allow_failure: bool = Field(False, description="run even if that parent fails, is skipped or cancelled")


NtfyTopic = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
EmojiTag = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_+-]{1,40}$")]


class Notification(Request):
    """An ntfy notification: the `notify` tool's arguments, and a pipeline notify step's."""

    topic: NtfyTopic = Field(description="the topic name on the Commander's ntfy server")
    message: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="in a notify step, may use {{ steps.KEY.output }} (and error, state) of a parent")
    title: Annotated[str, StringConstraints(max_length=250)] = ""
    priority: Annotated[int, Field(ge=1, le=5)] | None = Field(None, description="1 (min) to 5 (urgent); 3 is default")
    tags: Annotated[list[EmojiTag], Field(max_length=8)] = Field([], description="emoji short codes, e.g. warning")
    click: Annotated[str, StringConstraints(pattern=r"^https?://\S{1,2000}$")] | None = Field(
        None, description="a URL opened when the notification is tapped")


class PipelineStep(Request):
    key: StepKey
    prompt: Prompt | None = Field(
        None, description="may use {{ steps.KEY.output }}, {{ steps.KEY.error }} or {{ steps.KEY.state }} of a "
                          "parent; every step but a notify step has one")
    notify: Notification | None = Field(
        None, description="instead of a prompt: the Commander sends this ntfy notification itself, no model involved")
    requires: Capabilities = []
    prefer: Capabilities = []
    priority: Annotated[int, Field(ge=-100, le=100)] = 0
    model: Model | None = Field(None, description="a Claude model id or alias, e.g. claude-sonnet-5-5")
    max_attempts: Annotated[int, Field(ge=1, le=20)] | None = None
    agent: AgentName | None = Field(None, description="the agent it runs as (default: the token's agent, else general)")
    depends_on: Annotated[list[StepKey | Dependency], Field(max_length=MAX_PIPELINE_STEPS)] = Field(
        [], description="parent step keys, or {step, allow_failure} objects")

    @model_validator(mode="after")
    def prompt_or_notify(self) -> PipelineStep:
        if (self.prompt is None) == (self.notify is None):
            raise ValueError("a step has either a prompt or a notify, not both or neither")
        return self


class PipelineSubmit(Request):
    name: Annotated[str, StringConstraints(max_length=128)] = ""
    steps: Annotated[list[PipelineStep], Field(min_length=1, max_length=MAX_PIPELINE_STEPS)]


class DependencyOut(Response):
    step: str
    task_id: int
    allow_failure: bool


class PipelineStepOut(Response):
    key: str
    task_id: int
    state: Literal[TASK_STATES]  # type: ignore[valid-type]
    depends_on: list[DependencyOut]
    node_id: int | None
    attempt: int
    output: str | None
    error: str | None
    waiting_reason: str | None = Field(None, description="why a queued step is not running yet (a spend cap, …)")


class PipelineOut(Response):
    id: int
    name: str
    state: Literal[PIPELINE_STATES]  # type: ignore[valid-type]
    submitter: str
    error: str | None
    created_at: float
    finished_at: float | None
    steps: list[PipelineStepOut] = Field(description="in dependency order: every step after its parents")

    @classmethod
    def of(cls, pipeline, steps, reasons=lambda step: None) -> PipelineOut:
        """The pipeline with its `steps` (task rows, in dependency order); `reasons(step)` says why
        a queued one waits (tasks.WaitingReasons)."""
        return cls.from_row(pipeline, steps=[PipelineStepOut.from_row(step, key=step.step_key, task_id=step.id,
                                                                      waiting_reason=reasons(step))
                                             for step in steps])


# --- provenance ------------------------------------------------------------------------------

class ProvenanceLink(Response):
    task_id: int
    step: str | None
    node_id: int | None
    state: str
    prompt: str = Field(description="the prompt the node ran: the task's, after any memories it was given")
    memories: list[int] = Field([], description="the ids of the memories its prompt was given")
    agent: str | None = Field(None, description="the agent it ran as")
    agent_version: int | None = None
    system_prompt: str | None = Field(None, description="that agent version's system prompt, which the result is bound to")
    output: str | None
    error: str | None
    parents: list[int]
    document: str | None = Field(description="the canonical JSON both of the node's signatures cover")
    ed25519: str | None
    key_id: int | None = Field(description="which of public_keys signed it")
    chain_hash: str | None
    verified: bool = Field(description="the Commander's verdict on this link: no problems, nor in its ancestors")
    problems: list[str] = Field(description="what the Commander found wrong with this link")


class ProvenanceOut(Response):
    format: str
    task_id: int
    ok: bool = Field(description="every link verified: signatures (HMAC and Ed25519), content and chain hashes")
    public_keys: dict[str, str] = Field(description="key id → hex Ed25519 public key")
    links: list[ProvenanceLink] = Field(description="from the roots to this task, every link after its parents")


# --- tokens ----------------------------------------------------------------------------------

class TokenCreate(Request):
    kind: Literal["api", "join"] = "api"
    name: Name
    role: Role | None = None
    permissions: Annotated[list[Literal[PERMISSIONS]], Field(max_length=len(PERMISSIONS))] | None = None  # type: ignore[valid-type]
    expires_in: Annotated[float, Field(gt=0, le=10 * 365 * 86400)] | None = Field(
        None, description="seconds until the token expires; without it a join token, or an API token of the worker "
                          "preset or less, lasts a day, any other API token never expires"
    )
    agent: AgentName | None = Field(
        None, description="an API token that may only submit tasks as this agent and read its own tasks "
                          "(without a role or permissions: tasks:submit and tasks:read)")


class TokenCreated(Response):
    id: int
    kind: str
    name: str
    agent: str | None
    token: str = Field(description="shown once; only its hash is stored")
    permissions: list[str]
    expires_at: float | None
    join: str | None = Field(None, description="a join token's join string: the token and the hash of the mesh CA "
                                               "it pins, TOKEN#sha256:HEX (the token alone without a mesh CA)")


class PermissionOut(Response):
    name: str
    about: str = Field(description="what it lets its holder do (a reserved one: what its feature will)")
    presets: list[str] = Field(description="the role presets that grant it")
    reserved: bool = Field(description="no route declares it yet: it guards nothing until its feature lands")


class PermissionList(Response):
    permissions: list[PermissionOut]


# --- agents ----------------------------------------------------------------------------------

class AgentStats(Response):
    queued: int
    running: int
    window: int = Field(description="its latest finished (succeeded or failed) tasks counted here, at most 100")
    succeeded: int
    failed: int
    success_rate: float | None = Field(description="succeeded / window; null before any finished")
    median_duration_ms: int | None
    input_tokens: int
    output_tokens: int
    cost_usd: float


class AgentSettings(Response):
    title: str
    description: str
    model: str | None = Field(description="the default model (null: the node's)")
    allowed_models: list[str] = Field(description="models a task may ask for (empty: any)")
    requires: list[str] = Field(description="capabilities a node must have to run it")
    prefers: list[str]
    allowed_tools: list[str]
    disallowed_tools: list[str]
    max_turns: int | None
    timeout: int | None = Field(description="seconds")
    memory: Literal["own", "shared", "off"] = Field(
        description="own: its memories are its own (and it reads the shared ones); shared: what it remembers is "
                    "shared; off: it gets no memories and stores none")


class AgentOut(AgentSettings):
    name: str
    state: Literal["ready", "broken", "deleted"] = Field(
        description="broken: its profile file does not parse (see error); it keeps serving its current version, if any")
    error: str | None
    version: int = Field(description="the current version (0: none works yet)")
    origin: str | None = Field(description="the profile file it was last loaded from (null: made through the API)")
    updated_at: float
    stats: AgentStats
    system_prompt: str | None = Field(None, description="the current version's (one agent's view only)")
    text: str | None = Field(None, description="the current version's profile as written (one agent's view only)")


class AgentList(Response):
    agents: list[AgentOut]


class AgentVersionOut(AgentSettings):
    version: int
    cause: str = Field(description="where it came from: a file, an edit, a rollback")
    created_at: float
    system_prompt: str
    text: str


class AgentVersionList(Response):
    name: str
    current: int
    versions: list[AgentVersionOut] = Field(description="newest first")


class AgentPut(Request):
    profile: Annotated[str, StringConstraints(min_length=1, max_length=100_000)] = Field(
        description="the whole profile: Markdown with TOML front matter (+++), or TOML (docs/agents.md)")


class AgentRollback(Request):
    version: Id


class AgentDeleteQuery(Request):
    model_config = ConfigDict(extra="forbid")
    fallback: bool = Field(False, description="move its waiting tasks to general instead of refusing")


class AgentProblem(Response):
    name: str
    error: str


class AgentReloadOut(Response):
    created: list[str]
    updated: list[str]
    unchanged: int
    broken: list[AgentProblem]
    missing: list[str] = Field(description="agents whose file is gone: they stay as they were")


# --- events ----------------------------------------------------------------------------------

class EventsQuery(Request):
    model_config = ConfigDict(extra="forbid")
    after: Count | None = Field(None, description="replay events after this id (else: only new ones)")


# --- accounts, sessions, audit ---------------------------------------------------------------

Username = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class LoginIn(Request):
    username: Username
    password: Password


class SessionOut(Response):
    username: str
    role: str
    permissions: list[str]
    csrf_token: str = Field(description="send it as the X-CSRF-Token header on state-changing requests")
    expires_at: float


class UserCreate(Request):
    username: Username
    password: Password
    role: Role = "commander"


class UserUpdate(Request):
    role: Role | None = None
    disabled: bool | None = None
    password: Password | None = None


class UserOut(Response):
    id: int
    username: str
    role: str
    created_at: float
    last_login_at: float | None
    disabled: bool


class UserList(Response):
    users: list[UserOut]


class TokenOut(Response):
    id: int
    kind: str
    name: str
    prefix: str
    permissions: list[str]
    node_id: int | None
    agent: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


class TokenList(Response):
    tokens: list[TokenOut]


class AuditOut(Response):
    id: int
    ts: float
    actor: str
    action: str
    target: str | None
    address: str | None
    details: dict


class AuditList(Response):
    entries: list[AuditOut]


class AuditQuery(Request):
    model_config = ConfigDict(extra="forbid")
    action: Annotated[str, StringConstraints(min_length=1, max_length=48)] | None = None
    before_id: Id | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 100


# --- spend -----------------------------------------------------------------------------------

Day = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")]
CapScope = Literal["all", "agent", "submitter", "node"]


class SpendQuery(Request):
    model_config = ConfigDict(extra="forbid")
    group: Annotated[str, StringConstraints(max_length=100)] = Field(
        "", description="comma-separated: day, agent, model, node, capability, submitter (none: the totals only)")
    first: Day | None = Field(None, alias="from", description="the first local day (default: today)")
    last: Day | None = Field(None, alias="to", description="the last local day (default: today)")
    days: Annotated[int, Field(ge=1, le=400)] | None = Field(
        None, description="instead of from and to: the last this many local days, today included")


class SpendTopQuery(Request):
    model_config = ConfigDict(extra="forbid")
    n: Annotated[int, Field(ge=1, le=100)] = 10
    first: Day | None = Field(None, alias="from")
    last: Day | None = Field(None, alias="to")
    days: Annotated[int, Field(ge=1, le=400)] | None = None


class SpendFigures(Response):
    attempts: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float


class SpendRow(SpendFigures):
    """A group's figures; it names only the keys the report is grouped by."""
    day: str | None = None
    agent: str | None = None
    model: str | None = None
    node: str | None = None
    capability: str | None = Field(None, description="the task's required capabilities, comma-separated")
    submitter: str | None = None


class SpendReport(Response):
    first_day: str
    last_day: str
    time_zone: str
    group: list[str]
    rows: list[SpendRow]
    total: SpendFigures


class SpendTask(Response):
    task_id: int
    agent: str
    submitter: str
    model: str
    day: str = Field(description="the day its first attempt that spent counted on")
    attempts: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class SpendTop(Response):
    first_day: str
    last_day: str
    tasks: list[SpendTask]


class CapIn(Request):
    scope: CapScope
    name: Annotated[str, StringConstraints(max_length=200)] = Field("", description='what it caps; "" for `all`')
    usd: Annotated[float, Field(gt=0, le=1_000_000)] = Field(description="USD a local day")


class CapQuery(Request):
    model_config = ConfigDict(extra="forbid")
    scope: CapScope
    name: Annotated[str, StringConstraints(max_length=200)] = ""


class CapOut(Response):
    scope: CapScope
    name: str
    cap_usd: float
    spent_usd: float = Field(description="spent today")
    left_usd: float
    source: Literal["config", "runtime"]
    held: bool = Field(description="its new work is held (or refused) until the reset")


class CapList(Response):
    day: str
    time_zone: str
    resets_at: float = Field(description="the next local midnight (Unix time)")
    at_cap: Literal["hold", "refuse"]
    spent_usd: float = Field(description="the whole mesh's spend today")
    caps: list[CapOut]


class AlertQuery(Request):
    model_config = ConfigDict(extra="forbid")
    days: Annotated[int, Field(ge=1, le=400)] = 1


class AlertOut(Response):
    id: int
    day: str
    scope: CapScope
    name: str
    threshold: int = Field(description="percent of the cap")
    spent_usd: float
    cap_usd: float
    created_at: float
    state: Literal["pending", "sent", "failed", "off"] = Field(description="off: no ntfy_url was set")
    attempts: int
    next_at: float
    last_error: str | None
    sent_at: float | None


class AlertList(Response):
    alerts: list[AlertOut]


# --- webhooks --------------------------------------------------------------------------------

HOOK_KINDS = ("github", "uptime-kuma", "json")
HookName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
EventName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{1,64}$")]
EVENT_PROMPT = "may use {{ event.PATH }}: a dotted path into the delivery's JSON, e.g. {{ event.pull_request.title }}"


class HookTask(Request):
    agent: AgentName | None = Field(None, description="the agent it runs as (default: general)")
    prompt: Prompt = Field(description=EVENT_PROMPT)
    requires: Capabilities = []
    priority: Annotated[int, Field(ge=-100, le=100)] = 0
    approval_required: bool = Field(False, description="hold the task until someone approves it")


class HookPipeline(Request):
    name: Annotated[str, StringConstraints(max_length=128)] = ""
    steps: Annotated[list[PipelineStep], Field(min_length=1, max_length=MAX_PIPELINE_STEPS)] = Field(
        description="as POST /api/pipelines takes them; prompts may also use {{ event.PATH }}")


class HookRule(Request):
    event: EventName = Field(description="GitHub: the X-GitHub-Event (pull_request, issues, workflow_run, …); "
                                         "Uptime Kuma: `down`; json: the X-M3SHD-Event header")
    actions: Annotated[list[EventName], Field(max_length=20)] = Field(
        [], description="the payload's `action` values it takes (none: any)")
    when: Annotated[dict[Annotated[str, StringConstraints(max_length=200)], str | int | bool | None],
                    Field(max_length=10)] = Field(
        {}, description="dotted paths into the payload and the value each must have, e.g. "
                        "{\"workflow_run.conclusion\": \"failure\"}")
    task: HookTask | None = None
    pipeline: HookPipeline | None = None

    @model_validator(mode="after")
    def one_response(self):
        if (self.task is None) == (self.pipeline is None):
            raise ValueError("a rule starts either a task or a pipeline: give exactly one of `task`, `pipeline`")
        return self


class HookIn(Request):
    name: HookName
    kind: Literal[HOOK_KINDS]  # type: ignore[valid-type]
    rules: Annotated[list[HookRule], Field(max_length=20)] = Field(description="the first rule an event matches starts")
    debounce: Annotated[float, Field(ge=0, le=86_400)] | None = Field(
        None, description="Uptime Kuma: seconds a DOWN waits for an UP before its response starts (default: the "
                          "webhook_debounce setting)")


class HookOut(Response):
    name: str
    kind: str
    url: str = Field(description="the path to give the sender, under the Commander's address")
    rules: list[dict]
    debounce: float | None
    created_by: str
    created_at: float
    rotated_at: float | None
    secret: str | None = Field(None, description="shown once, when the hook is created or its secret rotated")


class HookList(Response):
    hooks: list[HookOut]


class DeliveryOut(Response):
    id: int
    key: str
    event: str
    action: str | None
    status: str
    error: str | None
    task_ids: list[int]
    pipeline_id: int | None
    received_at: float
    due_at: float | None
    note: str | None


class HookDetail(Response):
    hook: HookOut
    deliveries: list[DeliveryOut]


class DeliveryQuery(Request):
    model_config = ConfigDict(extra="forbid")
    limit: Annotated[int, Field(ge=1, le=200)] = 20


class Receipt(Response):
    delivery: int
    status: str
    duplicate: bool = Field(False, description="a redelivery: nothing new started; these are the first one's")
    task_ids: list[int]
    pipeline_id: int | None
    message: str


# --- plugins ---------------------------------------------------------------------------------

class ToolOut(Response):
    name: str
    description: str
    permission: str = Field(description="what the node asking must hold")
    timeout: float
    max_result_chars: int
    args_schema: dict = Field(description="the JSON schema of its arguments, as the model is shown it")


class PluginOut(Response):
    name: str
    source: str = Field(description="its entry point (module) or file")
    state: Literal["loaded", "failed"]
    error: str | None = Field(description="why it did not load")
    tools: list[ToolOut]


class PluginList(Response):
    plugins: list[PluginOut]


class ToolCallIn(Request):
    task_id: int
    attempt: Annotated[int, Field(ge=1)]
    lease_token: LeaseToken
    tool: Annotated[str, StringConstraints(max_length=64)]
    args: dict = {}


class ToolCallOut(Response):
    tool: str
    ok: bool
    result: object = None
    error: str | None = None


class ToolCallRecord(Response):
    attempt: int
    tool: str
    args: dict
    ok: bool
    error: str | None
    result_sha256: str | None = Field(description="SHA-256 of the result as the model got it (JSON)")
    result_chars: int
    duration_ms: int
    created_at: float


class ToolCallList(Response):
    tool_calls: list[ToolCallRecord]
