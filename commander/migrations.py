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

# (version, name, upgrade). Version 1 is the baseline: it has no upgrade step.
MIGRATIONS: list[Step] = [
    (1, "initial schema", None),
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
