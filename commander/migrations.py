"""Schema versions. A new database is created from the models at the latest version;
an existing one is upgraded in place by the steps it has not applied yet.

To change the schema: change the model, then append a step here that brings a database
of the previous version to the same shape (playhouse.migrate), and refresh
tests/fixtures/schema_v1.sql only for a new baseline. tests/test_migrations.py checks that
migrating the oldest fixture yields exactly the tables a fresh database has.
"""

from __future__ import annotations

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


# (version, name, upgrade). Version 1 is the baseline: it has no upgrade step.
MIGRATIONS: list[Step] = [
    (1, "initial schema", None),
    (2, "accounts, sessions and audit log", v2_accounts),
    # Version 4 while issue 4's version 3 is under way in parallel: renumber at merge.
    (4, "pending nodes", v4_pending_nodes),
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
