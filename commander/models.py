"""The Commander's tables. The models are bound to a database at start-up (see db.py)."""

from __future__ import annotations

import json
import time

import peewee as pw
from playhouse.sqlite_ext import FTS5Model, RowIDField, SearchField

from m3shd.wire import FINAL_STATES as FINAL_STATES, NodeState, PipelineState, TaskState  # the alias: a re-export

database_proxy = pw.DatabaseProxy()

# Task, pipeline and node states are the wire's (m3shd/wire.py), FINAL_STATES included; these are
# the names the Commander's modules use (unpacked in the enums' order: a new member fails here, loudly).
# The *_STATES tuples hold plain strings: pydantic names a Literal's choices by repr, and a refusal
# should say 'queued', not <TaskState.QUEUED: 'queued'>.
BLOCKED, AWAITING_APPROVAL, QUEUED, LEASED, SUCCEEDED, FAILED, CANCELLED, SKIPPED = TaskState
TASK_STATES = tuple(state.value for state in TaskState)

RUNNING = PipelineState.RUNNING
PIPELINE_STATES = tuple(state.value for state in PipelineState)

ACTIVE, PAUSED, DRAINING, DISABLED, LOST, OFFLINE = NodeState
NODE_STATES = tuple(state.value for state in NodeState)
LIVE_STATES = (ACTIVE, PAUSED, DRAINING, DISABLED)  # heartbeating, whether or not taking work
OPERATOR_STATES = (PAUSED, DISABLED)  # kept when the machine registers again

# Circuit breaker states (commander/breakers.py).
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


def now() -> float:
    return time.time()


class JSONField(pw.TextField):
    """JSON stored as text; lists of capabilities are stored sorted so equal sets compare equal."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class SealedTextField(pw.TextField):
    """Text encrypted before it reaches the database and decrypted when read, with the keys the
    Commander bound to the database (`database.box`, commander/keyring.py): prompts, outputs and
    errors, which no query filters or sorts on. Columns filtered on hold no content."""

    def db_value(self, value):
        return None if value is None else self.model._meta.database.box.encrypt(value.encode())

    def python_value(self, value):
        return None if value is None else self.model._meta.database.box.decrypt(value).decode()


class CipherTextField(pw.TextField):
    """What `cmdr.box.encrypt` made, decrypted by the service that needs it (keys, secrets,
    payloads): stored as given, but re-encrypted by a key rotation like SealedTextField."""


class BaseModel(pw.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class Node(BaseModel):
    machine_id = pw.CharField(max_length=128, unique=True)
    name = pw.CharField(max_length=128)
    state = pw.CharField(max_length=16, default=ACTIVE, index=True)
    capabilities = JSONField(default=list)   # approved: what the scheduler matches tasks against
    # What the node last reported while that holds labels an operator has not approved yet
    # (commander/capabilities.py); None: nothing is waiting for approval.
    requested_capabilities = JSONField(null=True)
    slots = pw.IntegerField(default=1)
    open_slots = pw.IntegerField(default=0)
    runner = pw.CharField(max_length=32, null=True)
    problem = pw.TextField(null=True)        # why this node cannot run tasks, in its own words
    version = pw.CharField(max_length=32, default="")
    signing_key = CipherTextField()             # Fernet-encrypted HMAC key
    next_signing_key = CipherTextField(null=True)  # ordered by a key rotation; current once the node uses it
    registered_at = pw.FloatField(default=now)
    last_seen = pw.FloatField(default=now, index=True)
    priority = pw.IntegerField(default=0)    # breaks ties between equally good nodes
    drain_deadline = pw.FloatField(null=True)  # work still running then goes back to the queue
    # Reputation (commander/reputation.py): decayed mean reward and decayed count at `rep_at`.
    rep_mean = pw.FloatField(default=0.0)
    rep_count = pw.FloatField(default=0.0)
    rep_at = pw.FloatField(default=0.0)
    # Circuit breaker (commander/breakers.py).
    breaker_state = pw.CharField(max_length=16, default=CLOSED)
    breaker_failures = pw.IntegerField(default=0)   # consecutive infrastructure failures
    breaker_cooldown = pw.FloatField(default=0.0)   # the current open period, doubling
    breaker_until = pw.FloatField(null=True)        # open until then, then half-open
    breaker_probe = pw.IntegerField(null=True)      # the one task a half-open node may hold
    seal_key = pw.CharField(max_length=64, null=True)  # hex X25519: runner credentials are sealed to it


class Token(BaseModel):
    """API, join and node tokens; only a SHA-256 of each token is stored."""

    kind = pw.CharField(max_length=8, index=True)  # api | join | node
    name = pw.CharField(max_length=128)
    token_hash = pw.CharField(max_length=64, unique=True)
    prefix = pw.CharField(max_length=16)           # shown in listings, never enough to use
    permissions = JSONField(default=list)
    node = pw.ForeignKeyField(Node, null=True, backref="tokens", on_delete="CASCADE")
    agent = pw.CharField(max_length=40, null=True)  # set: it may only submit as this agent, and read its own tasks
    created_at = pw.FloatField(default=now)
    expires_at = pw.FloatField(null=True)
    revoked_at = pw.FloatField(null=True)
    last_used_at = pw.FloatField(null=True)


class NodeKey(BaseModel):
    """The keys a node signed results with at one registration. A node gets a fresh HMAC key each
    time it registers; keeping the old ones lets older results be verified again later."""

    node = pw.ForeignKeyField(Node, null=True, backref="keys", on_delete="SET NULL")
    hmac_key = CipherTextField()                            # Fernet-encrypted, like Node.signing_key
    public_key = pw.CharField(max_length=64, null=True)  # hex Ed25519; null for a N0D3 without one
    created_at = pw.FloatField(default=now)


class Pipeline(BaseModel):
    """A graph of tasks submitted in one call; each step is a Task with `pipeline` set."""

    name = pw.CharField(max_length=128, default="")
    state = pw.CharField(max_length=16, default=RUNNING)
    submitter = pw.CharField(max_length=200, default="")
    submitted_by = pw.ForeignKeyField(Token, null=True, backref="pipelines", on_delete="SET NULL")
    error = SealedTextField(null=True)
    created_at = pw.FloatField(default=now)
    finished_at = pw.FloatField(null=True)


class Agent(BaseModel):
    """An agent profile (commander/agents): its versions are AgentVersion rows, one of them current.
    `origin` and `file_sha256` say which profile file it was last loaded from, so a reload knows
    whether that file changed; `error` is why that file does not parse (the agent is broken)."""

    name = pw.CharField(max_length=40, unique=True)
    current = pw.IntegerField(default=0)          # the current version; 0: none works yet
    origin = pw.TextField(null=True)               # the profile file's path; None: made through the API
    file_sha256 = pw.CharField(max_length=64, null=True)
    error = pw.TextField(null=True)
    created_at = pw.FloatField(default=now)
    updated_at = pw.FloatField(default=now)
    deleted_at = pw.FloatField(null=True)          # deleted: its versions stay readable for old tasks


class AgentVersion(BaseModel):
    """One version of an agent's profile; never changed once written (so it may be cached)."""

    agent = pw.ForeignKeyField(Agent, backref="versions", on_delete="CASCADE")
    version = pw.IntegerField()
    text = pw.TextField()                          # the profile as written (Markdown with TOML front matter, or TOML)
    title = pw.CharField(max_length=80, default="")
    description = pw.CharField(max_length=300, default="")
    system_prompt = pw.TextField(default="")
    model = pw.CharField(max_length=128, null=True)
    allowed_models = JSONField(default=list)
    requires = JSONField(default=list)
    prefers = JSONField(default=list)
    allowed_tools = JSONField(default=list)
    disallowed_tools = JSONField(default=list)
    max_turns = pw.IntegerField(null=True)
    timeout = pw.IntegerField(null=True)           # seconds
    memory = pw.CharField(max_length=8, default="own")
    plugin_tools = JSONField(default=list)         # [TOOL_CALL] tools it may call (commander/plugins)
    cause = pw.CharField(max_length=200)           # how it came: a file's path, an edit by whom, a rollback to N
    created_at = pw.FloatField(default=now)

    class Meta:
        indexes = ((("agent", "version"), True),)


class Task(BaseModel):
    state = pw.CharField(max_length=16, default=QUEUED)
    prompt = SealedTextField()
    requires = JSONField(default=list)
    prefer = JSONField(default=list)          # capabilities that earn a node a bonus
    priority = pw.IntegerField(default=0)
    submitter = pw.CharField(max_length=200, default="")  # fairness is shared out between these
    model = pw.CharField(max_length=128, null=True)
    idempotency_key = pw.CharField(max_length=128, null=True)
    submitted_by = pw.ForeignKeyField(Token, null=True, backref="tasks", on_delete="SET NULL")
    agent = pw.CharField(max_length=40, null=True)   # the agent it runs as (None: submitted before agents existed)
    agent_version = pw.IntegerField(null=True)       # ... and which of its versions, fixed at submit
    max_attempts = pw.IntegerField(default=3)
    retry_on_lost = pw.BooleanField(default=True)
    backoff = pw.FloatField(default=0.0)      # seconds before a retry; doubles per attempt
    not_before = pw.FloatField(null=True)     # a retry waiting out its backoff
    tried_nodes = JSONField(default=list)     # nodes whose attempts broke: a retry avoids them
    approval_required = pw.BooleanField(default=False)
    decided_by = pw.CharField(max_length=200, null=True)  # who approved or rejected it
    approver_must_differ = pw.BooleanField(default=False)  # its submitter may not approve it (tasks.decide)
    created_at = pw.FloatField(default=now)
    updated_at = pw.FloatField(default=now)
    # The current lease: fencing token for results (attempt + lease_token must both match).
    attempt = pw.IntegerField(default=0)
    lease_token = pw.CharField(max_length=64, null=True, index=True)
    lease_until = pw.FloatField(null=True)
    node = pw.ForeignKeyField(Node, null=True, backref="tasks", on_delete="SET NULL")
    # The accepted result.
    output = SealedTextField(null=True)
    error = SealedTextField(null=True)
    runner = pw.CharField(max_length=32, null=True)
    input_tokens = pw.IntegerField(default=0)
    output_tokens = pw.IntegerField(default=0)
    cache_read_tokens = pw.IntegerField(default=0)
    cache_write_tokens = pw.IntegerField(default=0)
    cost_usd = pw.FloatField(null=True)
    started_at = pw.FloatField(null=True)
    finished_at = pw.FloatField(null=True)
    duration_ms = pw.IntegerField(null=True)
    runner_notes = JSONField(default=list)   # what the runner could not apply of the profile (e.g. tools)
    result_signature = pw.CharField(max_length=64, null=True)   # HMAC-SHA256 by the node's key
    # Provenance (m3shd/provenance.py): the exact document both signatures cover, the node's
    # Ed25519 signature over it, the keys that signed it, and the Merkle-DAG hash over its parents.
    result_document = SealedTextField(null=True)
    result_ed25519 = pw.CharField(max_length=128, null=True)
    signed_with = pw.ForeignKeyField(NodeKey, null=True, backref="tasks", on_delete="SET NULL")
    chain_hash = pw.CharField(max_length=64, null=True)
    # Pipelines: the step's key in its pipeline, and its parents as
    # [{"task_id", "step", "allow_failure"}]; `prompt` holds the template until the step is queued.
    pipeline = pw.ForeignKeyField(Pipeline, null=True, backref="steps", on_delete="CASCADE")
    step_key = pw.CharField(max_length=64, null=True)
    depends_on = JSONField(default=list)
    # Images the task takes (commander/attachments.py), in order: [{"sha256", "media_type", "size"}].
    attachments = JSONField(default=list)
    memory = pw.BooleanField(default=True)  # its agent's memories are added to its prompt (commander/memory)

    class Meta:
        indexes = (
            (("state", "requires", "priority"), False),
            (("submitted_by", "idempotency_key"), True),
            (("started_at",), False),  # fair shares count each submitter's recent tasks
            (("agent", "finished_at"), False),  # an agent's live tasks (finished_at null) and its latest finished
        )


class Outcome(BaseModel):
    """How each attempt on a node ended: the rolling window behind reputation and breakers."""

    node = pw.ForeignKeyField(Node, backref="outcomes", on_delete="CASCADE")
    task = pw.IntegerField()
    ts = pw.FloatField(default=now)
    kind = pw.CharField(max_length=16)       # succeeded | failed | infra | lost
    reward = pw.FloatField(null=True)        # None: says nothing about the node (the task failed)
    duration_ms = pw.IntegerField(null=True)
    task_class = pw.CharField(max_length=200)

    class Meta:
        indexes = ((("node", "id"), False), (("task_class", "kind"), False))


class Event(BaseModel):
    """Everything a dashboard or bridge follows; the id is the SSE event id."""

    ts = pw.FloatField(default=now)
    kind = pw.CharField(max_length=48)
    task = pw.IntegerField(null=True, index=True)
    node = pw.IntegerField(null=True)
    data = JSONField(default=dict)


class Nonce(BaseModel):
    """Request nonces seen inside the skew window, shared by all workers to refuse replays."""

    node = pw.IntegerField()
    value = pw.CharField(max_length=64)
    seen_at = pw.FloatField(index=True)

    class Meta:
        primary_key = pw.CompositeKey("node", "value")


class User(BaseModel):
    """An operator who logs in to the dashboard; `role` is one of permissions.ROLES."""

    username = pw.CharField(max_length=64, unique=True)
    password_hash = pw.CharField(max_length=256)
    role = pw.CharField(max_length=16)
    created_at = pw.FloatField(default=now)
    last_login_at = pw.FloatField(null=True)
    disabled_at = pw.FloatField(null=True)


class Session(BaseModel):
    """A browser session; the cookie holds the key, the table only its hash."""

    key_hash = pw.CharField(max_length=64, unique=True)
    user = pw.ForeignKeyField(User, backref="sessions", on_delete="CASCADE")
    csrf_token = pw.CharField(max_length=64)
    created_at = pw.FloatField(default=now)
    expires_at = pw.FloatField(index=True)
    address = pw.CharField(max_length=64, null=True)


class LoginFailure(BaseModel):
    """Login attempts inside the throttling window, keyed by account and by address: each is
    counted before its password is checked and stays unless it succeeds (accounts.login)."""

    key = pw.CharField(max_length=200, index=True)
    ts = pw.FloatField(index=True)


class AuditEntry(BaseModel):
    """Who did what, when and from where: logins, tokens, users, approvals, node removal."""

    ts = pw.FloatField(default=now, index=True)
    actor = pw.CharField(max_length=200)
    action = pw.CharField(max_length=48, index=True)
    target = pw.CharField(max_length=200, null=True)
    address = pw.CharField(max_length=64, null=True)
    details = JSONField(default=dict)


class PendingNode(BaseModel):
    """A machine that asked to join without a token: it waits here, holding no secret of the
    mesh, until an operator approves it (it then registers as a node) or rejects it."""

    machine_id = pw.CharField(max_length=128, unique=True)
    name = pw.CharField(max_length=128)
    capabilities = JSONField(default=list)
    slots = pw.IntegerField(default=1)
    version = pw.CharField(max_length=32, default="")
    address = pw.CharField(max_length=64, null=True, index=True)   # where the request came from
    poll_hash = pw.CharField(max_length=64, unique=True)          # SHA-256 of the node's poll token
    public_key = pw.CharField(max_length=64, null=True)           # hex Ed25519 key it will sign results with
    seal_key = pw.CharField(max_length=64, null=True)             # hex X25519, registered with the node
    requested_at = pw.FloatField(default=now, index=True)
    approved_at = pw.FloatField(null=True)
    approved_by = pw.CharField(max_length=200, null=True)


class Attachment(BaseModel):
    """An image stored for tasks, named by the SHA-256 of its bytes (commander/attachments.py);
    the bytes are a file under the data directory, not in the database."""

    sha256 = pw.CharField(max_length=64, unique=True)
    media_type = pw.CharField(max_length=32)
    size = pw.IntegerField()
    created_at = pw.FloatField(default=now)
    created_by = pw.CharField(max_length=200, default="")


class Hold(BaseModel):
    """A scope that starts no new work until `until`: every task (scope `all`, name ""), an
    agent's, a submitter's, or a node (by name). The planner skips held tasks and nodes; running
    work goes on. Spend caps set them (commander/spend); `refuse`: new tasks of the scope are
    refused at submit instead of held (commander/holds.py)."""

    scope = pw.CharField(max_length=16)
    name = pw.CharField(max_length=200, default="")
    reason = pw.TextField()
    refuse = pw.BooleanField(default=False)
    until = pw.FloatField()

    class Meta:
        indexes = ((("scope", "name"), True),)


class SpendEntry(BaseModel):
    """The spend ledger: one row per attempt that spent tokens (commander/spend/ledger.py)."""

    task = pw.IntegerField()
    attempt = pw.IntegerField()
    kind = pw.CharField(max_length=16)               # how the attempt ended: succeeded | failed | infra
    agent = pw.CharField(max_length=40, default="")
    agent_version = pw.IntegerField(null=True)
    node = pw.IntegerField(null=True)
    node_name = pw.CharField(max_length=128, default="")
    capabilities = pw.CharField(max_length=1000, default="")  # the task's required ones, comma-separated
    model = pw.CharField(max_length=128, default="")  # as the runner reported it ("" if it named none)
    submitter = pw.CharField(max_length=200, default="")
    input_tokens = pw.IntegerField(default=0)
    output_tokens = pw.IntegerField(default=0)
    cache_read_tokens = pw.IntegerField(default=0)
    cache_write_tokens = pw.IntegerField(default=0)
    cost_usd = pw.FloatField()
    cost_source = pw.CharField(max_length=8)         # runner (its total_cost_usd) | prices (the price table)
    priced_as = pw.CharField(max_length=128, null=True)  # the price table's model, when priced by it
    day = pw.CharField(max_length=10)                # YYYY-MM-DD in the mesh's time zone
    ts = pw.FloatField()

    class Meta:
        indexes = ((("task", "attempt"), True),)


class SpendTask(BaseModel):
    """Each task's spend over all its attempts, counted on the day of its first: what "the
    dearest tasks" read (ranking a range of the ledger by task would group a million rows)."""

    task = pw.IntegerField(unique=True)
    day = pw.CharField(max_length=10)
    agent = pw.CharField(max_length=40)
    submitter = pw.CharField(max_length=200)
    model = pw.CharField(max_length=128)
    attempts = pw.IntegerField(default=0)
    input_tokens = pw.IntegerField(default=0)
    output_tokens = pw.IntegerField(default=0)
    cost_usd = pw.FloatField(default=0.0)

    class Meta:
        indexes = ((("cost_usd", "task"), False),)


class SpendTotals(BaseModel):
    """The figures a roll-up adds up (no table of its own: SpendDay and SpendAgentDay have them)."""

    attempts = pw.IntegerField(default=0)
    input_tokens = pw.IntegerField(default=0)
    output_tokens = pw.IntegerField(default=0)
    cache_read_tokens = pw.IntegerField(default=0)
    cache_write_tokens = pw.IntegerField(default=0)
    cost_usd = pw.FloatField(default=0.0)


class SpendDay(SpendTotals):
    """The ledger rolled up per day and per (agent, submitter, node, model, capabilities): what
    caps and analytics read (a day holds a few rows where the ledger holds thousands)."""

    day = pw.CharField(max_length=10)
    agent = pw.CharField(max_length=40)
    submitter = pw.CharField(max_length=200)
    node_name = pw.CharField(max_length=128)
    model = pw.CharField(max_length=128)
    capabilities = pw.CharField(max_length=1000)

    class Meta:
        indexes = ((("day", "agent", "submitter", "node_name", "model", "capabilities"), True),)


class SpendAgentDay(SpendTotals):
    """The same roll-up per day and agent only: the spend-per-day-by-agent chart and the caps of the
    mesh and of agents read a few rows a day here instead of every combination of SpendDay."""

    day = pw.CharField(max_length=10)
    agent = pw.CharField(max_length=40)

    class Meta:
        indexes = ((("day", "agent"), True),)


class SpendCap(BaseModel):
    """A daily cap set at run time; it overrides the configured one of the same scope."""

    scope = pw.CharField(max_length=16)    # all | agent | submitter | node
    name = pw.CharField(max_length=200, default="")
    usd = pw.FloatField()
    set_by = pw.CharField(max_length=200)
    set_at = pw.FloatField(default=now)

    class Meta:
        indexes = ((("scope", "name"), True),)


class SpendAlert(BaseModel):
    """A cap's threshold crossed on a day: made once (the unique index), then delivered to ntfy
    by a background loop (commander/spend/alerts.py) with retries."""

    day = pw.CharField(max_length=10)
    scope = pw.CharField(max_length=16)
    name = pw.CharField(max_length=200, default="")
    threshold = pw.IntegerField()                   # percent of the cap
    spent_usd = pw.FloatField()
    cap_usd = pw.FloatField()
    created_at = pw.FloatField(default=now)
    state = pw.CharField(max_length=8)              # pending | sent | failed | off (no ntfy_url)
    attempts = pw.IntegerField(default=0)
    next_at = pw.FloatField(default=now)
    last_error = pw.TextField(null=True)
    sent_at = pw.FloatField(null=True)

    class Meta:
        indexes = ((("day", "scope", "name", "threshold"), True), (("state", "next_at"), False))


class SpendFold(BaseModel):
    """One row: the last ledger row added to the roll-ups (commander/spend/fold.py)."""

    entry = pw.IntegerField(default=0)


# What came of a webhook delivery (commander/webhooks/deliveries.py says what each means).
DELIVERY_STATUSES = ("received", "started", "pending", "cancelled", "recovered", "resolved", "ignored", "failed",
                     "unauthorized", "ping")


class Webhook(BaseModel):
    """A webhook an operator configured (commander/webhooks/): its secret sealed with the
    Commander's SecretBox, and the rules saying what each event starts."""

    name = pw.CharField(max_length=64, unique=True)
    kind = pw.CharField(max_length=16)              # github | uptime-kuma | json
    secret = CipherTextField()                         # sealed (cmdr.box)
    rules = JSONField()
    debounce = pw.FloatField(null=True)             # Uptime Kuma: None → the webhook_debounce setting
    created_by = pw.CharField(max_length=200)
    created_at = pw.FloatField(default=now)
    rotated_at = pw.FloatField(null=True)


class WebhookDelivery(BaseModel):
    """One request to a hook and what came of it. `key` is the sender's delivery id
    (X-GitHub-Delivery) or one made up; unique per hook, it makes redeliveries idempotent."""

    hook = pw.ForeignKeyField(Webhook, on_delete="CASCADE")
    key = pw.CharField(max_length=128)
    event = pw.CharField(max_length=64, default="")
    action = pw.CharField(max_length=64, null=True)
    status = pw.CharField(max_length=16)            # one of DELIVERY_STATUSES
    error = pw.TextField(null=True)
    task_ids = JSONField(default=list)
    pipeline = pw.IntegerField(null=True)
    monitor = pw.CharField(max_length=64, null=True)  # Uptime Kuma monitor id: which response an UP ends
    payload = CipherTextField(null=True)               # sealed
    received_at = pw.FloatField(default=now)
    due_at = pw.FloatField(null=True)               # a debounced response starts then
    note = pw.TextField(null=True)                  # what an UP did to this response

    class Meta:
        indexes = ((("hook", "key"), True), (("hook", "received_at"), False), (("status", "due_at"), False))


class RunnerCredential(BaseModel):
    """An Anthropic API key or a Claude Code token that N0D3S without one of their own receive,
    sealed to each node per lease (commander/credentials.py). One per kind and scope."""

    kind = pw.CharField(max_length=16)                  # m3shd.wire.CredentialKind
    scope = pw.CharField(max_length=140)                # mesh | capability:<label> | node:<id>
    node = pw.ForeignKeyField(Node, null=True, backref="credentials", on_delete="CASCADE")  # node scope
    secret = CipherTextField()                             # Fernet-encrypted (cmdr.box), never sent back
    prefix = pw.CharField(max_length=16)                # the key's format, never any of its secret part
    fingerprint = pw.CharField(max_length=16)           # the first hex of its SHA-256, to tell keys apart
    stored_at = pw.FloatField(default=now)
    stored_by = pw.CharField(max_length=200)

    class Meta:
        indexes = ((("kind", "scope"), True),)


class Memory(BaseModel):
    """One thing an agent remembers (commander/memory/store.py). Its key, value and tags are
    Fernet-encrypted (cmdr.box); what is clear says nothing of the content: the scope (an agent's
    name, or `shared`), times, counts, and keyed hashes that find equal keys and contents."""

    scope = pw.CharField(max_length=40)
    key_hash = pw.CharField(max_length=32, null=True)   # HMAC of the normalised key: one memory per key
    key = CipherTextField(null=True)                    # sealed
    value = CipherTextField()                           # sealed
    tags = CipherTextField()                            # sealed JSON list
    content_hash = pw.CharField(max_length=32)          # HMAC of key and value: equal contents, equal hashes
    source_task = pw.ForeignKeyField(Task, null=True, backref="memories", on_delete="SET NULL")
    created_at = pw.FloatField(default=now)
    updated_at = pw.FloatField(default=now)
    last_used_at = pw.FloatField(null=True)
    use_count = pw.IntegerField(default=0)
    merged_into = pw.IntegerField(null=True, index=True)  # consolidation kept this one's content in that memory

    class Meta:
        indexes = ((("scope", "key_hash"), True), (("scope", "content_hash"), False), (("scope", "updated_at"), False))


class MemoryWords(FTS5Model):
    """The blind index (commander/memory/words.py): per memory (rowid = Memory.id), the keyed
    HMAC tokens of its words, never the words."""

    rowid = RowIDField()
    words = SearchField()

    class Meta:
        database = database_proxy
        table_name = "memory_words"
        options = {"tokenize": "ascii"}


class MemoryTokenDocs(BaseModel):
    """How many memories hold each blind token (what FTS5's own vocabulary would count by reading
    the token's whole posting list): a lease searches only the prompt's rarest words
    (commander/memory/store.py relevant)."""

    token = pw.CharField(max_length=16, primary_key=True)
    docs = pw.IntegerField()

    class Meta:
        table_name = "memory_token_docs"
        without_rowid = True


class MemoryGiven(BaseModel):
    """The memories a task's current lease was given, and the section added to its prompt as the
    node got it (sealed): provenance rebuilds the prompt the node ran from it."""

    task = pw.ForeignKeyField(Task, unique=True, backref="memory_given", on_delete="CASCADE")
    attempt = pw.IntegerField()
    memory_ids = JSONField(default=list)
    section = CipherTextField()                         # sealed
    given_at = pw.FloatField(default=now)


class RekeyProgress(BaseModel):
    """How far a pass of commander/rekey.py got through one encrypted column: a crash resumes
    after `after_id`. `purpose`: seal (plaintext left by an older version) or rotate."""

    column = pw.CharField(max_length=96, primary_key=True)   # table.column
    purpose = pw.CharField(max_length=8)
    after_id = pw.IntegerField(default=0)


class SchemaMigration(BaseModel):
    version = pw.IntegerField(primary_key=True)
    name = pw.CharField(max_length=128)
    applied_at = pw.FloatField(default=now)


class ToolCall(BaseModel):
    """One [TOOL_CALL] a task's model made through its node (commander/plugins/calls.py), as it
    went: refused, failed or answered. What it returned is kept as a digest and a size only."""

    task = pw.ForeignKeyField(Task, backref="tool_calls", on_delete="CASCADE")
    attempt = pw.IntegerField()
    tool = pw.CharField(max_length=64)
    args = CipherTextField()                              # Fernet-encrypted JSON (cmdr.box)
    ok = pw.BooleanField()
    error = pw.TextField(null=True)
    result_sha256 = pw.CharField(max_length=64, null=True)
    result_chars = pw.IntegerField(default=0)
    duration_ms = pw.IntegerField(default=0)
    created_at = pw.FloatField(default=now)

    class Meta:
        indexes = ((("task", "attempt"), False),)


class TaskTools(BaseModel):
    """The tools section a task's lease added to its agent's system prompt (m3shd/tool_calls.py),
    kept so provenance recomputes the exact system prompt the result is bound to."""

    task = pw.ForeignKeyField(Task, unique=True, on_delete="CASCADE")
    section = pw.TextField()


class StepAction(BaseModel):
    """A pipeline step the Commander carries out itself, without a model (a notify step): its
    spec, and how its delivery goes once its parents are done (commander/plugins/steps.py)."""

    task = pw.ForeignKeyField(Task, unique=True, on_delete="CASCADE")
    kind = pw.CharField(max_length=16)                  # notify
    spec = JSONField()                                  # the step's settings (topic, title, …)
    state = pw.CharField(max_length=16, default="waiting")  # waiting | due | done
    message = CipherTextField(null=True)                # rendered when due; Fernet-encrypted
    attempts = pw.IntegerField(default=0)
    next_at = pw.FloatField(default=0.0)
    last_error = pw.TextField(null=True)


MODELS = (
    Node, Token, NodeKey, Pipeline, Agent, AgentVersion, Task, Outcome, Event, Nonce, User, Session, LoginFailure, AuditEntry,
    PendingNode, Attachment, Hold, SpendEntry, SpendTask, SpendDay, SpendAgentDay, SpendCap,
    SpendAlert, SpendFold, Webhook, WebhookDelivery, RunnerCredential, ToolCall, TaskTools, StepAction, Memory,
    MemoryWords, MemoryTokenDocs, MemoryGiven, RekeyProgress,
    SchemaMigration,
)

