"""Encryption at rest, in process on real SQLite files: what reaches the data directory, the
keyring's KEKs, the recovery kit, and the sealing of what an older version kept in clear."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from commander import keyring, rekey
from commander.app import build_commander
from commander.db import open_database
from commander.migrations import MIGRATIONS, migrate
from commander.models import Task
from commander.settings import CommanderSettings
from m3shd import config
from mesh import join_signing, lease_of, report, submit


def sentinel(what: str) -> str:
    return f"SENTINEL-{what}-{secrets.token_hex(8)}"


def raw_hits(directory: Path, *needles: str) -> list[str]:
    """`file: needle` for each needle found in the bytes of any file under `directory`."""
    return [f"{path.name}: {needle}" for path in directory.rglob("*") if path.is_file()
            for needle in needles if needle.encode() in path.read_bytes()]


def test_prompts_outputs_and_errors_never_reach_the_data_directory_in_clear(cmdr, client, bearer, tmp_path):
    admin = bearer()
    prompt, output, error, step, failing = (sentinel(w) for w in ("prompt", "output", "error", "step", "failing"))
    submitted = client.post("/api/tasks", json={"prompt": prompt}, headers=admin).get_json()
    pipeline = client.post("/api/pipelines", json={"steps": [
        {"key": "a", "prompt": step}, {"key": "b", "prompt": "then {{ steps.a.output }}", "depends_on": ["a"]}]},
        headers=admin).get_json()
    node, signer = join_signing(cmdr, "n1")
    report(cmdr, node, lease_of(cmdr, node, Task.get_by_id(submitted["id"])), output=output, signer=signer)
    report(cmdr, node, lease_of(cmdr, node, submit(cmdr, failing)), status="failed", error=error, signer=signer)
    # Read back through the API: the service layer decrypts.
    shown = client.get(f"/api/tasks/{submitted['id']}", headers=admin).get_json()
    assert (shown["prompt"], shown["output"]) == (prompt, output)
    steps = client.get(f"/api/pipelines/{pipeline['id']}", headers=admin).get_json()["steps"]
    assert client.get(f"/api/tasks/{steps[0]['task_id']}", headers=admin).get_json()["prompt"] == step
    failed = Task.get(Task.error.is_null(False))
    assert failed.error == error
    # Raw files: the database, its WAL (checkpointing is not waited for) and everything beside them.
    data = tmp_path / "data" / "commander"
    assert (data / "commander.db-wal").exists()
    assert raw_hits(data, prompt, output, error, step, failing) == []
    stored = sqlite3.connect(data / "commander.db").execute("SELECT prompt, output FROM task WHERE id = ?",
                                                           (submitted["id"],)).fetchone()
    assert all(value.startswith("gAAAAA") for value in stored)  # Fernet tokens


def settings_in(data_dir: Path) -> CommanderSettings:
    return config.load(CommanderSettings, data_dir=str(data_dir))


def prompts_of(cmdr) -> list[str]:
    with cmdr.db.connection_context():
        return [t.prompt for t in Task.select().order_by(Task.id)]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    for name in [name for name in os.environ if name.startswith("M3SHD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("M3SHD_CONFIG_DIR", str(tmp_path / "conf"))
    return tmp_path / "data"


def with_tasks(data_dir: Path, *prompts: str):
    cmdr = build_commander(settings_in(data_dir))
    with cmdr.db.connection_context():
        for prompt in prompts:
            submit(cmdr, prompt)
    return cmdr


def test_an_upgrade_seals_what_older_versions_kept_in_clear(isolated):
    old_prompt, old_output = sentinel("old-prompt"), sentinel("old-output")
    isolated.mkdir(parents=True)
    with sqlite3.connect(isolated / "commander.db") as conn:  # the first schema, then each step up to before v18
        conn.executescript((Path(__file__).parents[1] / "fixtures" / "schema_v1.sql").read_text())
    database = open_database(f"sqlite:///{isolated / 'commander.db'}")
    migrate(database, [step for step in MIGRATIONS if step[0] <= 15])  # the schema of the release before
    database.execute_sql("INSERT INTO task (state, prompt, output, requires, prefer, priority, submitter, max_attempts,"
                         " retry_on_lost, backoff, tried_nodes, approval_required, approver_must_differ, created_at,"
                         " updated_at, attempt, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,"
                         " runner_notes, depends_on, attachments) VALUES ('succeeded', ?, ?, '[]', '[]', 0, 'old', 3,"
                         " 1, 0, '[]', 0, 0, 0, 0, 1, 0, 0, 0, 0, '[]', '[]', '[]')", (old_prompt, old_output))
    database.close_all()
    (isolated / "secret.keys").write_text(Fernet.generate_key().decode() + "\n")  # keys of the older version

    cmdr = build_commander(settings_in(isolated))
    with cmdr.db.connection_context():
        task = Task.get()
        assert (task.prompt, task.output) == (old_prompt, old_output)
    assert not (isolated / "secret.keys").exists() and (isolated / "keyring").exists()  # adopted
    getattr(cmdr.db, "close_all", cmdr.db.close)()
    assert raw_hits(isolated, old_prompt, old_output) == []


def test_a_lost_kek_file_is_recovered_with_the_kit_and_every_value_still_decrypts(isolated, tmp_path):
    prompts = [sentinel(f"p{i}") for i in range(5)]
    with_tasks(isolated, *prompts)
    kek_file = tmp_path / "kek"
    kek_file.write_bytes(secrets.token_bytes(32))
    keys, _, _ = keyring.read(isolated)
    keyring.write(isolated, keys, keyring.Wrap.parse(f"file:{kek_file}"), None)
    kit, public = keyring.new_kit("a long recovery passphrase")
    keyring.write(isolated, keys, keyring.Wrap.parse(f"file:{kek_file}"), public)
    assert "sealed" in json.loads((isolated / "keyring").read_text())  # no key in clear any more
    assert prompts_of(build_commander(settings_in(isolated))) == prompts

    kek_file.unlink()
    with pytest.raises(keyring.KeyringError, match=r"cannot be read .*`m3shd keys recover`"):
        build_commander(settings_in(isolated))
    with pytest.raises(keyring.KeyringError, match="the recovery passphrase is wrong"):
        keyring.open_with_kit(isolated, kit, "not the passphrase at all")
    recovered = keyring.open_with_kit(isolated, kit, "a long recovery passphrase")
    new_wrap = keyring.Wrap.parse("passphrase")
    keyring.write(isolated, recovered, new_wrap, public, keyring.KekSource("a new KEK passphrase"))
    with pytest.raises(keyring.KeyringError, match="M3SHD_KEK_PASSPHRASE"):
        build_commander(settings_in(isolated))
    assert prompts_of(build_commander_with_passphrase(isolated, "a new KEK passphrase")) == prompts
    with pytest.raises(keyring.KeyringError, match="the passphrase is wrong"):
        build_commander_with_passphrase(isolated, "a wrong one")


def build_commander_with_passphrase(data_dir: Path, passphrase: str):
    os.environ[keyring.PASSPHRASE_ENV] = passphrase
    try:
        return build_commander(settings_in(data_dir))
    finally:
        del os.environ[keyring.PASSPHRASE_ENV]


def test_the_kit_keeps_opening_the_keyring_after_rotations(isolated):
    cmdr = with_tasks(isolated, "before")
    kit, public = keyring.new_kit("a long recovery passphrase")
    keys, wrap, _ = keyring.read(isolated)
    keyring.write(isolated, keys, wrap, public)
    rekey.rotate(cmdr, settle=0)
    rotated, _, _ = keyring.read(isolated)
    assert len(rotated.data) == 1 and rotated.data[0] not in keys.data
    assert keyring.open_with_kit(isolated, kit, "a long recovery passphrase") == rotated
    with pytest.raises(keyring.KeyringError, match="at least 12 characters"):
        keyring.new_kit("short")
    other, _ = keyring.new_kit("another long passphrase")
    with pytest.raises(keyring.KeyringError, match="not sealed to that kit"):
        keyring.open_with_kit(isolated, other, "another long passphrase")


def test_a_kek_file_too_short_or_an_unknown_source_is_refused_clearly(isolated, tmp_path):
    with_tasks(isolated)
    short = tmp_path / "short"
    short.write_bytes(b"tiny")
    keys, _, _ = keyring.read(isolated)
    with pytest.raises(keyring.KeyringError, match="needs at least 32 random bytes"):
        keyring.write(isolated, keys, keyring.Wrap.parse(f"file:{short}"), None)
    with pytest.raises(keyring.KeyringError, match="say none, file:PATH or passphrase"):
        keyring.Wrap.parse("usb")
    assert keyring.read(isolated)[1].kind == "none"  # the failed writes changed nothing
