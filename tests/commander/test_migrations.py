"""Schema migrations: a user's database upgrades in place, and never silently drifts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import peewee as pw
import pytest

from commander.db import SQLITE_PRAGMAS, open_database
from commander.migrations import MIGRATIONS, SchemaError, current_version, migrate
from commander.models import SchemaMigration, database_proxy
from harness import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "schema_v1.sql"


def shape(path: Path) -> dict:
    """Every table's columns (name, type, not-null, pk) and index definitions."""
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        return {
            table: (
                sorted(row[1:4] + row[5:6] for row in conn.execute(f'PRAGMA table_info("{table}")')),  # added columns go last
                sorted(row[1:3] for row in conn.execute(f'PRAGMA index_list("{table}")')),
            )
            for table in sorted(tables)
        }


def fresh(path: Path) -> pw.Database:
    db = pw.SqliteDatabase(str(path))
    database_proxy.initialize(db)
    return db


def test_a_new_database_starts_at_the_latest_version(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'c.db'}")
    assert migrate(db) == [v for v, _, _ in MIGRATIONS]
    assert current_version(db) == MIGRATIONS[-1][0]
    assert migrate(db) == []  # idempotent
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == SQLITE_PRAGMAS["busy_timeout"]


def test_the_oldest_schema_migrates_to_exactly_what_the_models_create(tmp_path):
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(FIXTURE.read_text())
    migrate(fresh(old))
    new = tmp_path / "new.db"
    migrate(fresh(new))
    assert shape(old) == shape(new), "a model changed without a migration step (see commander/migrations.py)"


def migrated_with_an_old_node(tmp_path: Path) -> Path:
    """The oldest schema holding node 7 (HMAC key "sealed-key"), migrated to the latest."""
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(FIXTURE.read_text())
        conn.execute('INSERT INTO "node" VALUES (7, "m-7", "pi", "active", "[]", 1, 1, NULL, NULL, "0.1", '
                     '"sealed-key", 100.0, 100.0)')
    migrate(fresh(old))
    return old


def test_nodes_from_before_provenance_keep_their_hmac_key_on_record(tmp_path):
    old = migrated_with_an_old_node(tmp_path)
    with sqlite3.connect(old) as conn:
        assert conn.execute('SELECT "node_id", "hmac_key", "public_key" FROM "node_key"').fetchall() == [
            (7, "sealed-key", None)]


def test_nodes_from_before_key_rotation_have_no_rotation_pending(tmp_path):
    old = migrated_with_an_old_node(tmp_path)
    with sqlite3.connect(old) as conn:
        assert conn.execute('SELECT "signing_key", "next_signing_key" FROM "node"').fetchall() == [
            ("sealed-key", None)]


def test_tasks_from_before_attachments_take_none(tmp_path):
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(FIXTURE.read_text())
        conn.execute('INSERT INTO "task" ("id", "state", "prompt", "requires", "priority", "max_attempts", '
                     '"created_at", "updated_at", "attempt", "input_tokens", "output_tokens", "cache_read_tokens", '
                     '"cache_write_tokens") VALUES (3, "queued", "hi", "[]", 0, 3, 1.0, 1.0, 0, 0, 0, 0, 0)')
    migrate(fresh(old))
    with sqlite3.connect(old) as conn:
        assert conn.execute('SELECT "attachments" FROM "task"').fetchall() == [("[]",)]
        assert conn.execute('SELECT COUNT(*) FROM "attachment"').fetchone() == (0,)


def test_pending_steps_run_in_order_and_a_failed_step_changes_nothing(tmp_path):
    db = fresh(tmp_path / "c.db")
    migrate(db)
    latest = MIGRATIONS[-1][0]
    ran = []

    def add_column(database):
        ran.append(latest + 1)
        database.execute_sql('ALTER TABLE "node" ADD COLUMN "rack" TEXT')

    def broken(database):
        database.execute_sql('ALTER TABLE "node" ADD COLUMN "half_done" TEXT')
        raise RuntimeError("the last step fails midway")

    steps = MIGRATIONS + [(latest + 1, "rack", add_column), (latest + 2, "broken", broken)]
    with pytest.raises(RuntimeError):
        migrate(db, steps)
    assert ran == [latest + 1] and current_version(db) == latest + 1
    columns = [row[1] for row in db.execute_sql('PRAGMA table_info("node")')]
    assert "rack" in columns and "half_done" not in columns  # the failed step rolled back whole
    assert migrate(db, steps[:-1]) == []  # without the broken step, nothing is pending


def test_a_database_from_a_newer_m3shd_is_refused(tmp_path):
    db = fresh(tmp_path / "c.db")
    migrate(db)
    SchemaMigration.create(version=99, name="from the future")
    with pytest.raises(SchemaError, match="newer than this m3shd"):
        migrate(db)


def test_a_foreign_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER)")
    with pytest.raises(SchemaError, match="not an m3shd database|no m3shd schema"):
        migrate(fresh(path))


def test_nodes_from_before_capability_approval_keep_their_labels_approved(tmp_path):
    old = migrated_with_an_old_node(tmp_path)
    with sqlite3.connect(old) as conn:
        assert conn.execute('SELECT "capabilities", "requested_capabilities" FROM "node"').fetchall() == [("[]", None)]


def test_ledger_rows_from_before_folding_count_as_folded(tmp_path):
    """Version 12 rolled each row up as it was written: the mark starts past them all, so
    none is added twice."""
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(FIXTURE.read_text())
    migrate(fresh(old), MIGRATIONS[:12])
    with sqlite3.connect(old) as conn:
        for task in (1, 2):
            conn.execute('INSERT INTO "spend_entry" ("task", "attempt", "kind", "agent", "node_name", "capabilities", '
                         '"model", "submitter", "input_tokens", "output_tokens", "cache_read_tokens", '
                         '"cache_write_tokens", "cost_usd", "cost_source", "day", "ts") '
                         'VALUES (?, 1, "succeeded", "", "", "", "", "", 1, 1, 0, 0, 0.5, "runner", "2026-12-01", 1.0)',
                         (task,))
    assert migrate(fresh(old))[0] == 13
    with sqlite3.connect(old) as conn:
        assert conn.execute('SELECT "id", "entry" FROM "spend_fold"').fetchall() == [(1, 2)]


def test_agent_versions_from_before_plugins_may_call_no_tool(tmp_path):
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(FIXTURE.read_text())
    db = fresh(old)
    plugins = next(version for version, name, _ in MIGRATIONS if name.startswith("plugins"))
    migrate(db, [step for step in MIGRATIONS if step[0] < plugins])
    with sqlite3.connect(old) as conn:
        conn.execute('INSERT INTO "agent" ("id", "name", "current", "created_at", "updated_at") '
                     'VALUES (1, "general", 1, 1.0, 1.0)')
        conn.execute('INSERT INTO "agent_version" ("agent_id", "version", "text", "title", "description", '
                     '"system_prompt", "allowed_models", "requires", "prefers", "allowed_tools", "disallowed_tools", '
                     '"memory", "cause", "created_at") VALUES (1, 1, "x", "", "", "", "[]", "[]", "[]", "[]", "[]", '
                     '"own", "test", 1.0)')
    assert migrate(db, [step for step in MIGRATIONS if step[0] <= plugins]) == [plugins]
    with sqlite3.connect(old) as conn:
        assert conn.execute('SELECT "plugin_tools" FROM "agent_version"').fetchall() == [("[]",)]
        assert conn.execute('SELECT COUNT(*) FROM "tool_call"').fetchone() == (0,)


def test_node_tokens_from_before_memory_lose_the_memory_permissions_they_never_needed(tmp_path):
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(FIXTURE.read_text())
        conn.execute('INSERT INTO "token" VALUES (1, "node", "n1", "h1", "m3n_", '
                     '\'["memory:read", "memory:write", "work:execute"]\', NULL, 0, NULL, NULL, NULL)')
        conn.execute('INSERT INTO "token" VALUES (2, "api", "ops", "h2", "m3a_", '
                     '\'["memory:read", "tasks:read"]\', NULL, 0, NULL, NULL, NULL)')
    migrate(fresh(old))
    with sqlite3.connect(old) as conn:
        assert conn.execute('SELECT "permissions" FROM "token" ORDER BY "id"').fetchall() == [
            ('["work:execute"]',), ('["memory:read", "tasks:read"]',)]


def test_memories_from_before_token_counts_are_counted_from_the_index(tmp_path):
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(FIXTURE.read_text())
    db = fresh(old)
    migrate(db, [step for step in MIGRATIONS if step[0] < 19])
    with sqlite3.connect(old) as conn:
        conn.executemany('INSERT INTO "memory_words" ("rowid", "words") VALUES (?, ?)',
                         [(1, "aa11 bb22 aa11"), (2, "aa11 cc33")])
    assert migrate(db) == [19]
    with sqlite3.connect(old) as conn:
        assert conn.execute('SELECT "token", "docs" FROM "memory_token_docs" ORDER BY "token"').fetchall() == [
            ("aa11", 2), ("bb22", 1), ("cc33", 1)]
