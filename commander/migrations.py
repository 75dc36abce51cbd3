"""Schema versions. A new database is created from the models at the latest version;
an existing one is upgraded in place by the steps it has not applied yet.

To change the schema: change the model, then append a step here that brings a database
of the previous version to the same shape (playhouse.migrate), and refresh
tests/fixtures/schema_v1.sql only for a new baseline. tests/commander/test_migrations.py checks that
migrating the oldest fixture yields exactly the tables a fresh database has.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import peewee as pw

from commander.models import MODELS, SchemaMigration

Step = tuple[int, str, Callable[[pw.Database], None] | None]


def _frozen_base(database: pw.Database) -> type[pw.Model]:
    """Steps declare the tables they create as they were then, not as the models are today."""

    class Frozen(pw.Model):
        class Meta:
            legacy_table_names = False

    Frozen._meta.set_database(database)
    return Frozen


def v2_accounts(database: pw.Database) -> None:
    """Operator accounts, browser sessions, login throttling and the audit log."""
    Frozen = _frozen_base(database)

    class User(Frozen):
        username = pw.CharField(max_length=64, unique=True)
        password_hash = pw.CharField(max_length=256)
        role = pw.CharField(max_length=16)
        created_at = pw.FloatField()
        last_login_at = pw.FloatField(null=True)
        disabled_at = pw.FloatField(null=True)

    class Session(Frozen):
        key_hash = pw.CharField(max_length=64, unique=True)
        user = pw.ForeignKeyField(User, on_delete="CASCADE")
        csrf_token = pw.CharField(max_length=64)
        created_at = pw.FloatField()
        expires_at = pw.FloatField(index=True)
        address = pw.CharField(max_length=64, null=True)

    class LoginFailure(Frozen):
        key = pw.CharField(max_length=200, index=True)
        ts = pw.FloatField(index=True)

    class AuditEntry(Frozen):
        ts = pw.FloatField(index=True)
        actor = pw.CharField(max_length=200)
        action = pw.CharField(max_length=48, index=True)
        target = pw.CharField(max_length=200, null=True)
        address = pw.CharField(max_length=64, null=True)
        details = pw.TextField()

    database.create_tables([User, Session, LoginFailure, AuditEntry])


def v3_scheduling(database: pw.Database) -> None:
    """Node priority, drain deadlines, reputation and breakers; task preferences, fairness,
    retry policy and approvals; the outcomes table behind reputation and breakers."""
    from playhouse.migrate import SchemaMigrator, migrate as apply

    Frozen = _frozen_base(database)

    class Node(Frozen):
        pass

    class Outcome(Frozen):
        node = pw.ForeignKeyField(Node, on_delete="CASCADE")
        task = pw.IntegerField()
        ts = pw.FloatField()
        kind = pw.CharField(max_length=16)
        reward = pw.FloatField(null=True)
        duration_ms = pw.IntegerField(null=True)
        task_class = pw.CharField(max_length=200)

        class Meta:
            indexes = ((("node", "id"), False), (("task_class", "kind"), False))

    migrator = SchemaMigrator.from_database(database)
    columns = {
        "node": dict(
            priority=pw.IntegerField(default=0), drain_deadline=pw.FloatField(null=True),
            rep_mean=pw.FloatField(default=0.0), rep_count=pw.FloatField(default=0.0),
            rep_at=pw.FloatField(default=0.0), breaker_state=pw.CharField(max_length=16, default="closed"),
            breaker_failures=pw.IntegerField(default=0), breaker_cooldown=pw.FloatField(default=0.0),
            breaker_until=pw.FloatField(null=True), breaker_probe=pw.IntegerField(null=True),
        ),
        "task": dict(
            prefer=pw.TextField(default="[]"), submitter=pw.CharField(max_length=200, default=""),
            retry_on_lost=pw.BooleanField(default=True), backoff=pw.FloatField(default=0.0),
            not_before=pw.FloatField(null=True), tried_nodes=pw.TextField(default="[]"),
            approval_required=pw.BooleanField(default=False), decided_by=pw.CharField(max_length=200, null=True),
        ),
    }
    apply(*(migrator.add_column(table, name, field) for table, fields in columns.items() for name, field in fields.items()),
          migrator.add_index("task", ("started_at",), False))
    database.create_tables([Outcome])


def v4_pending_nodes(database: pw.Database) -> None:
    """Machines that asked to join without a token, waiting for an operator's approval."""
    Frozen = _frozen_base(database)

    class PendingNode(Frozen):
        machine_id = pw.CharField(max_length=128, unique=True)
        name = pw.CharField(max_length=128)
        capabilities = pw.TextField()
        slots = pw.IntegerField()
        version = pw.CharField(max_length=32)
        address = pw.CharField(max_length=64, null=True, index=True)
        poll_hash = pw.CharField(max_length=64, unique=True)
        requested_at = pw.FloatField(index=True)
        approved_at = pw.FloatField(null=True)
        approved_by = pw.CharField(max_length=200, null=True)

    database.create_tables([PendingNode])


def v5_pipelines_provenance(database: pw.Database) -> None:
    """Pipelines (steps are tasks with parents), every node registration's keys, and each
    task's signed result document, Ed25519 signature and chain hash."""
    from playhouse.migrate import SchemaMigrator, migrate as apply

    Frozen = _frozen_base(database)

    class Node(Frozen):
        pass

    class Token(Frozen):
        pass

    class NodeKey(Frozen):
        node = pw.ForeignKeyField(Node, null=True, on_delete="SET NULL")
        hmac_key = pw.TextField()
        public_key = pw.CharField(max_length=64, null=True)
        created_at = pw.FloatField()

    class Pipeline(Frozen):
        name = pw.CharField(max_length=128, default="")
        state = pw.CharField(max_length=16)
        submitter = pw.CharField(max_length=200, default="")
        submitted_by = pw.ForeignKeyField(Token, null=True, on_delete="SET NULL")
        error = pw.TextField(null=True)
        created_at = pw.FloatField()
        finished_at = pw.FloatField(null=True)

    database.create_tables([NodeKey, Pipeline])
    # Nodes registered before this version keep signing with their current HMAC key: record it,
    # so the results they post until they next register can be verified again later.
    database.execute_sql('INSERT INTO "node_key" ("node_id", "hmac_key", "public_key", "created_at") '
                         'SELECT "id", "signing_key", NULL, "registered_at" FROM "node"')
    migrator = SchemaMigrator.from_database(database)
    columns = dict(
        result_document=pw.TextField(null=True), result_ed25519=pw.CharField(max_length=128, null=True),
        signed_with_id=pw.ForeignKeyField(NodeKey, null=True, on_delete="SET NULL", field=NodeKey.id),
        chain_hash=pw.CharField(max_length=64, null=True),
        pipeline_id=pw.ForeignKeyField(Pipeline, null=True, on_delete="CASCADE", field=Pipeline.id),
        step_key=pw.CharField(max_length=64, null=True), depends_on=pw.TextField(default="[]"),
    )
    apply(*(migrator.add_column("task", name, field) for name, field in columns.items()))


def v6_key_rotation(database: pw.Database) -> None:
    """A node's pending HMAC key while a rotation is under way."""
    from playhouse.migrate import SchemaMigrator, migrate as apply

    migrator = SchemaMigrator.from_database(database)
    apply(migrator.add_column("node", "next_signing_key", pw.TextField(null=True)))


def v7_requested_capabilities(database: pw.Database) -> None:
    """The capabilities a node reported that wait for an operator's approval."""
    from playhouse.migrate import SchemaMigrator, migrate as apply

    migrator = SchemaMigrator.from_database(database)
    apply(migrator.add_column("node", "requested_capabilities", pw.TextField(null=True)))


def v8_agents(database: pw.Database) -> None:
    """Agent profiles and their versions; the agent and version each task runs as, what its
    runner could not apply; tokens scoped to one agent."""
    from playhouse.migrate import SchemaMigrator, migrate as apply

    Frozen = _frozen_base(database)

    class Agent(Frozen):
        name = pw.CharField(max_length=40, unique=True)
        current = pw.IntegerField(default=0)
        origin = pw.TextField(null=True)
        file_sha256 = pw.CharField(max_length=64, null=True)
        error = pw.TextField(null=True)
        created_at = pw.FloatField()
        updated_at = pw.FloatField()
        deleted_at = pw.FloatField(null=True)

    class AgentVersion(Frozen):
        agent = pw.ForeignKeyField(Agent, on_delete="CASCADE")
        version = pw.IntegerField()
        text = pw.TextField()
        title = pw.CharField(max_length=80, default="")
        description = pw.CharField(max_length=300, default="")
        system_prompt = pw.TextField(default="")
        model = pw.CharField(max_length=128, null=True)
        allowed_models = pw.TextField(default="[]")
        requires = pw.TextField(default="[]")
        prefers = pw.TextField(default="[]")
        allowed_tools = pw.TextField(default="[]")
        disallowed_tools = pw.TextField(default="[]")
        max_turns = pw.IntegerField(null=True)
        timeout = pw.IntegerField(null=True)
        memory = pw.CharField(max_length=8, default="own")
        cause = pw.CharField(max_length=200)
        created_at = pw.FloatField()

        class Meta:
            indexes = ((("agent", "version"), True),)

    database.create_tables([Agent, AgentVersion])
    migrator = SchemaMigrator.from_database(database)
    apply(migrator.add_column("task", "agent", pw.CharField(max_length=40, null=True)),
          migrator.add_column("task", "agent_version", pw.IntegerField(null=True)),
          migrator.add_column("task", "runner_notes", pw.TextField(default="[]")),
          migrator.add_column("token", "agent", pw.CharField(max_length=40, null=True)),
          migrator.add_index("task", ("agent", "finished_at"), False))


def v9_approver_not_submitter(database: pw.Database) -> None:
    """Whether a task awaiting approval must be approved by someone other than its submitter.
    Tasks from before keep today's rule: their submitter may approve them."""
    from playhouse.migrate import SchemaMigrator, migrate as apply

    migrator = SchemaMigrator.from_database(database)
    apply(migrator.add_column("task", "approver_must_differ", pw.BooleanField(default=False)))


def v10_attachments(database: pw.Database) -> None:
    """Images stored for tasks, and the list of them each task takes."""
    from playhouse.migrate import SchemaMigrator, migrate as apply

    Frozen = _frozen_base(database)

    class Attachment(Frozen):
        sha256 = pw.CharField(max_length=64, unique=True)
        media_type = pw.CharField(max_length=32)
        size = pw.IntegerField()
        created_at = pw.FloatField()
        created_by = pw.CharField(max_length=200, default="")

    database.create_tables([Attachment])
    apply(SchemaMigrator.from_database(database).add_column("task", "attachments", pw.TextField(default="[]")))


def v11_pending_node_key(database: pw.Database) -> None:
    """The key a pending machine will sign results with, so the operator can compare its
    fingerprint before approving it (a tokenless join trusts on first use)."""
    from playhouse.migrate import SchemaMigrator, migrate as apply

    migrator = SchemaMigrator.from_database(database)
    apply(migrator.add_column("pending_node", "public_key", pw.CharField(max_length=64, null=True)))


def v12_spend(database: pw.Database) -> None:
    """The spend ledger, its daily roll-up, caps set at run time, alerts, and holds on new work."""
    Frozen = _frozen_base(database)

    class Hold(Frozen):
        scope = pw.CharField(max_length=16)
        name = pw.CharField(max_length=200, default="")
        reason = pw.TextField()
        refuse = pw.BooleanField(default=False)
        until = pw.FloatField()

        class Meta:
            indexes = ((("scope", "name"), True),)

    class SpendEntry(Frozen):
        task = pw.IntegerField()
        attempt = pw.IntegerField()
        kind = pw.CharField(max_length=16)
        agent = pw.CharField(max_length=40, default="")
        agent_version = pw.IntegerField(null=True)
        node = pw.IntegerField(null=True)
        node_name = pw.CharField(max_length=128, default="")
        capabilities = pw.CharField(max_length=1000, default="")
        model = pw.CharField(max_length=128, default="")
        submitter = pw.CharField(max_length=200, default="")
        input_tokens = pw.IntegerField(default=0)
        output_tokens = pw.IntegerField(default=0)
        cache_read_tokens = pw.IntegerField(default=0)
        cache_write_tokens = pw.IntegerField(default=0)
        cost_usd = pw.FloatField()
        cost_source = pw.CharField(max_length=8)
        priced_as = pw.CharField(max_length=128, null=True)
        day = pw.CharField(max_length=10)
        ts = pw.FloatField()

        class Meta:
            indexes = ((("task", "attempt"), True),)

    class SpendTask(Frozen):
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

    class SpendTotals(Frozen):
        attempts = pw.IntegerField(default=0)
        input_tokens = pw.IntegerField(default=0)
        output_tokens = pw.IntegerField(default=0)
        cache_read_tokens = pw.IntegerField(default=0)
        cache_write_tokens = pw.IntegerField(default=0)
        cost_usd = pw.FloatField(default=0.0)

    class SpendDay(SpendTotals):
        day = pw.CharField(max_length=10)
        agent = pw.CharField(max_length=40)
        submitter = pw.CharField(max_length=200)
        node_name = pw.CharField(max_length=128)
        model = pw.CharField(max_length=128)
        capabilities = pw.CharField(max_length=1000)

        class Meta:
            indexes = ((("day", "agent", "submitter", "node_name", "model", "capabilities"), True),)

    class SpendAgentDay(SpendTotals):
        day = pw.CharField(max_length=10)
        agent = pw.CharField(max_length=40)

        class Meta:
            indexes = ((("day", "agent"), True),)

    class SpendCap(Frozen):
        scope = pw.CharField(max_length=16)
        name = pw.CharField(max_length=200, default="")
        usd = pw.FloatField()
        set_by = pw.CharField(max_length=200)
        set_at = pw.FloatField()

        class Meta:
            indexes = ((("scope", "name"), True),)

    class SpendAlert(Frozen):
        day = pw.CharField(max_length=10)
        scope = pw.CharField(max_length=16)
        name = pw.CharField(max_length=200, default="")
        threshold = pw.IntegerField()
        spent_usd = pw.FloatField()
        cap_usd = pw.FloatField()
        created_at = pw.FloatField()
        state = pw.CharField(max_length=8)
        attempts = pw.IntegerField(default=0)
        next_at = pw.FloatField()
        last_error = pw.TextField(null=True)
        sent_at = pw.FloatField(null=True)

        class Meta:
            indexes = ((("day", "scope", "name", "threshold"), True), (("state", "next_at"), False))

    database.create_tables([Hold, SpendEntry, SpendTask, SpendDay, SpendAgentDay, SpendCap, SpendAlert])


def v13_spend_fold(database: pw.Database) -> None:
    """The ledger's roll-ups are brought up to date in batches: the mark of the last row folded
    in. Every row so far was rolled up as it was written."""
    Frozen = _frozen_base(database)

    class SpendFold(Frozen):
        entry = pw.IntegerField(default=0)

    database.create_tables([SpendFold])
    database.execute_sql('INSERT INTO "spend_fold" ("id", "entry") SELECT 1, COALESCE(MAX("id"), 0) FROM "spend_entry"')


def v14_webhooks(database: pw.Database) -> None:
    """Webhooks and their deliveries."""
    Frozen = _frozen_base(database)

    class Webhook(Frozen):
        name = pw.CharField(max_length=64, unique=True)
        kind = pw.CharField(max_length=16)
        secret = pw.TextField()
        rules = pw.TextField()
        debounce = pw.FloatField(null=True)
        created_by = pw.CharField(max_length=200)
        created_at = pw.FloatField()
        rotated_at = pw.FloatField(null=True)

    class WebhookDelivery(Frozen):
        hook = pw.ForeignKeyField(Webhook, on_delete="CASCADE")
        key = pw.CharField(max_length=128)
        event = pw.CharField(max_length=64, default="")
        action = pw.CharField(max_length=64, null=True)
        status = pw.CharField(max_length=16)
        error = pw.TextField(null=True)
        task_ids = pw.TextField()
        pipeline = pw.IntegerField(null=True)
        monitor = pw.CharField(max_length=64, null=True)
        payload = pw.TextField(null=True)
        received_at = pw.FloatField()
        due_at = pw.FloatField(null=True)
        note = pw.TextField(null=True)

        class Meta:
            indexes = ((("hook", "key"), True), (("hook", "received_at"), False), (("status", "due_at"), False))

    database.create_tables([Webhook, WebhookDelivery])


def v15_runner_credentials(database: pw.Database) -> None:
    """Runner credentials held for the N0D3S, and the X25519 key each node (or machine waiting
    for approval) registers for them to be sealed to."""
    from playhouse.migrate import SchemaMigrator, migrate as apply

    Frozen = _frozen_base(database)

    class Node(Frozen):
        pass

    class RunnerCredential(Frozen):
        kind = pw.CharField(max_length=16)
        scope = pw.CharField(max_length=140)
        node = pw.ForeignKeyField(Node, null=True, on_delete="CASCADE")
        secret = pw.TextField()
        prefix = pw.CharField(max_length=16)
        fingerprint = pw.CharField(max_length=16)
        stored_at = pw.FloatField()
        stored_by = pw.CharField(max_length=200)

        class Meta:
            indexes = ((("kind", "scope"), True),)

    database.create_tables([RunnerCredential])
    migrator = SchemaMigrator.from_database(database)
    apply(migrator.add_column("node", "seal_key", pw.CharField(max_length=64, null=True)),
          migrator.add_column("pending_node", "seal_key", pw.CharField(max_length=64, null=True)))


def v16_memory(database: pw.Database) -> None:
    """Agent memory: the sealed memories, their blind word index (FTS5), what each lease was given,
    and the per-task opt-out."""
    from playhouse.migrate import SchemaMigrator, migrate as apply
    from playhouse.sqlite_ext import FTS5Model, RowIDField, SearchField

    Frozen = _frozen_base(database)

    class Task(Frozen):
        pass

    class Token(Frozen):
        kind = pw.CharField(max_length=8)
        permissions = pw.TextField()

    class Memory(Frozen):
        scope = pw.CharField(max_length=40)
        key_hash = pw.CharField(max_length=32, null=True)
        key = pw.TextField(null=True)
        value = pw.TextField()
        tags = pw.TextField()
        content_hash = pw.CharField(max_length=32)
        source_task = pw.ForeignKeyField(Task, null=True, on_delete="SET NULL")
        created_at = pw.FloatField()
        updated_at = pw.FloatField()
        last_used_at = pw.FloatField(null=True)
        use_count = pw.IntegerField(default=0)
        merged_into = pw.IntegerField(null=True, index=True)

        class Meta:
            indexes = ((("scope", "key_hash"), True), (("scope", "content_hash"), False),
                       (("scope", "updated_at"), False))

    class MemoryWords(FTS5Model):
        rowid = RowIDField()
        words = SearchField()

        class Meta:
            table_name = "memory_words"
            options = {"tokenize": "ascii"}

    class MemoryGiven(Frozen):
        task = pw.ForeignKeyField(Task, unique=True, on_delete="CASCADE")
        attempt = pw.IntegerField()
        memory_ids = pw.TextField()
        section = pw.TextField()
        given_at = pw.FloatField()

    MemoryWords._meta.set_database(database)
    database.create_tables([Memory, MemoryWords, MemoryGiven])
    apply(SchemaMigrator.from_database(database).add_column("task", "memory", pw.BooleanField(default=True)))
    # Node tokens were issued memory:read and memory:write before memory existed; a node gets its
    # task's memories in the lease and needs neither (commander/permissions.py NODE_PERMISSIONS).
    for token_id, permissions in Token.select(Token.id, Token.permissions).where(Token.kind == "node").tuples():
        kept = [name for name in json.loads(permissions) if not name.startswith("memory:")]
        Token.update(permissions=json.dumps(kept)).where(Token.id == token_id).execute()


def v17_plugins(database: pw.Database) -> None:
    """Plugin tool calls made by tasks, the tools section each lease carried, notify steps, and the
    plugin tools of agent versions (none for the versions written before)."""
    from playhouse.migrate import SchemaMigrator, migrate as apply

    Frozen = _frozen_base(database)

    class Task(Frozen):
        class Meta:
            table_name = "task"

    class ToolCall(Frozen):
        task = pw.ForeignKeyField(Task, backref="tool_calls", on_delete="CASCADE")
        attempt = pw.IntegerField()
        tool = pw.CharField(max_length=64)
        args = pw.TextField()
        ok = pw.BooleanField()
        error = pw.TextField(null=True)
        result_sha256 = pw.CharField(max_length=64, null=True)
        result_chars = pw.IntegerField(default=0)
        duration_ms = pw.IntegerField(default=0)
        created_at = pw.FloatField()

        class Meta:
            indexes = ((("task", "attempt"), False),)

    class TaskTools(Frozen):
        task = pw.ForeignKeyField(Task, unique=True, on_delete="CASCADE")
        section = pw.TextField()

    class StepAction(Frozen):
        task = pw.ForeignKeyField(Task, unique=True, on_delete="CASCADE")
        kind = pw.CharField(max_length=16)
        spec = pw.TextField()
        state = pw.CharField(max_length=16, default="waiting")
        message = pw.TextField(null=True)
        attempts = pw.IntegerField(default=0)
        next_at = pw.FloatField(default=0.0)
        last_error = pw.TextField(null=True)

    database.create_tables([ToolCall, TaskTools, StepAction])
    migrator = SchemaMigrator.from_database(database)
    apply(migrator.add_column("agent_version", "plugin_tools", pw.TextField(default="[]")))


# The columns v18 began to encrypt, which held plaintext before it.
SEALED_IN_V18 = ("task.prompt", "task.output", "task.error", "task.result_document", "pipeline.error")


def v18_sealed_text(database: pw.Database) -> None:
    """Prompts, outputs and errors are encrypted at rest (SealedTextField). A migration has no
    keys, so it leaves one `seal` row per column for commander/rekey.py, which the Commander
    finishes before it serves (build_commander); until then those columns hold plaintext."""
    Frozen = _frozen_base(database)

    class RekeyProgress(Frozen):
        column = pw.CharField(max_length=96, primary_key=True)
        purpose = pw.CharField(max_length=8)
        after_id = pw.IntegerField(default=0)

    database.create_tables([RekeyProgress])
    RekeyProgress.insert_many([{"column": name, "purpose": "seal", "after_id": 0} for name in SEALED_IN_V18]).execute()


def v19_memory_token_docs(database: pw.Database) -> None:
    """Each blind token's count of memories, for a lease's search; counted once from FTS5's own
    vocabulary (fts5vocab), kept by commander/memory/store.py from then on."""
    Frozen = _frozen_base(database)

    class MemoryTokenDocs(Frozen):
        token = pw.CharField(max_length=16, primary_key=True)
        docs = pw.IntegerField()

        class Meta:
            table_name = "memory_token_docs"
            without_rowid = True

    database.create_tables([MemoryTokenDocs])
    database.execute_sql("CREATE VIRTUAL TABLE temp.memory_vocabulary USING fts5vocab(main, memory_words, 'row')")
    database.execute_sql("INSERT INTO memory_token_docs (token, docs) SELECT term, doc FROM temp.memory_vocabulary")
    database.execute_sql("DROP TABLE temp.memory_vocabulary")


# (version, name, upgrade). Version 1 is the baseline: it has no upgrade step.
MIGRATIONS: list[Step] = [
    (1, "initial schema", None),
    (2, "accounts, sessions and audit log", v2_accounts),
    (3, "scheduling: reputation, breakers, approvals, fairness, retry policy", v3_scheduling),
    (4, "pending nodes", v4_pending_nodes),
    (5, "pipelines and provenance", v5_pipelines_provenance),
    (6, "node key rotation", v6_key_rotation),
    (7, "capabilities awaiting approval", v7_requested_capabilities),
    (8, "agents", v8_agents),
    (9, "approver other than the submitter", v9_approver_not_submitter),
    (10, "task attachments", v10_attachments),
    (11, "pending nodes show their key", v11_pending_node_key),
    (12, "spend ledger, caps, alerts and holds", v12_spend),
    (13, "spend roll-ups folded in batches", v13_spend_fold),
    (14, "webhooks and their deliveries", v14_webhooks),
    (15, "runner credentials", v15_runner_credentials),
    (16, "agent memory", v16_memory),
    (17, "plugins: tool calls, tools sections, notify steps", v17_plugins),
    (18, "prompts, outputs and errors encrypted at rest", v18_sealed_text),
    (19, "memory token counts for a lease's search", v19_memory_token_docs),
]


class SchemaError(Exception):
    pass


def migrate(database: pw.Database, steps: list[Step] = MIGRATIONS) -> list[int]:
    """Bring the schema to the latest version; returns the versions applied now."""
    latest = steps[-1][0]
    with database.atomic():
        tables = set(database.get_tables())
        if SchemaMigration._meta.table_name not in tables:
            if tables:
                raise SchemaError("the database has tables but no m3shd schema record; is it an m3shd database?")
            database.create_tables(MODELS)
            for version, name, _ in steps:
                SchemaMigration.create(version=version, name=name)
            return [version for version, _, _ in steps]
        applied = {row.version for row in SchemaMigration.select(SchemaMigration.version)}
    if applied and max(applied) > latest:
        raise SchemaError(
            f"the database is at schema version {max(applied)}, newer than this m3shd knows ({latest}); upgrade m3shd"
        )
    done = []
    for version, name, upgrade in steps:
        if version in applied:
            continue
        with database.atomic():  # a failed step leaves the database at the previous version
            if upgrade is not None:
                upgrade(database)
            SchemaMigration.create(version=version, name=name)
        done.append(version)
    return done


def current_version(database: pw.Database) -> int:
    return SchemaMigration.select(pw.fn.MAX(SchemaMigration.version)).scalar() or 0
