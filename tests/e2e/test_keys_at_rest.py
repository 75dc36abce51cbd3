"""`m3shd keys rotate` against a running Commander under gunicorn: every value moves to the new
data key while tasks are submitted and answered, and a rotation killed mid-way resumes."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading

from cryptography.fernet import Fernet, InvalidToken

from commander.rekey import encrypted_columns
from harness import m3shd


def data_dir(commander):
    return commander.home / "data" / "commander"


def keyring_of(commander) -> dict:
    return json.loads((data_dir(commander) / "keyring").read_text())["keys"]


def undecryptable(commander, key: str) -> list[str]:
    """Every stored encrypted value that the data key `key` alone does not open."""
    fernet = Fernet(key.encode())
    found = []
    with sqlite3.connect(data_dir(commander) / "commander.db", timeout=10) as database:
        for name in encrypted_columns():
            table, column = name.split(".")
            for row_id, value in database.execute(f'SELECT id, "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL'):
                try:
                    fernet.decrypt(value.encode())
                except InvalidToken:
                    found.append(f"{name} #{row_id}")
    return found


def test_a_rotation_under_concurrent_writes_moves_every_value_and_loses_nothing(commander, spawn_n0d3):
    spawn_n0d3("alpha", slots=2)
    before = keyring_of(commander)["data"]
    submitted = {commander.api.submit_task(f"before {i}")["id"]: f"before {i}" for i in range(40)}
    for task_id in submitted:
        commander.wait_task(task_id)
    stop = threading.Event()

    def keep_writing():
        i = 0
        while not stop.is_set():
            submitted[commander.api.submit_task(f"during {i}")["id"]] = f"during {i}"
            i += 1
            stop.wait(0.05)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        rotated = json.loads(m3shd("keys", "rotate", "--batch", "10", "--json", env=commander.env, timeout=120).stdout)
    finally:
        stop.set()
        writer.join()
    after = keyring_of(commander)
    assert len(after["data"]) == 1 and after["data"][0] not in before and after["retiring"] == []
    assert rotated["reencrypted"] >= 3 * 40  # prompts, outputs and result documents of the tasks before
    assert len(submitted) > 40  # tasks were written while it ran
    for task_id, prompt in submitted.items():
        task = commander.wait_task(task_id)
        assert (task["state"], task["prompt"], task["output"]) == ("succeeded", prompt, f"echo: {prompt}")
    # Values written during the rotation, by workers that loaded the new keyring, and after it.
    assert undecryptable(commander, after["data"][0]) == []
    commander.stop()
    commander.start()  # fresh workers, which know only the new key
    assert {t["id"]: t["prompt"] for t in commander.api.list_tasks(limit=500)} == submitted


def test_a_rotation_killed_mid_way_resumes_where_it_stopped_and_finishes(commander):
    prompts = {commander.api.submit_task(f"task {i}")["id"]: f"task {i}" for i in range(120)}
    old = keyring_of(commander)["data"]
    rotating = subprocess.Popen([sys.executable, "-m", "m3shd", "keys", "rotate", "--batch", "5"],
                                env=commander.env, stderr=subprocess.PIPE, text=True)
    try:
        for line in rotating.stderr:
            if (seen := re.match(r"task\.prompt: (\d+)/120", line)) and int(seen[1]) >= 20:
                rotating.kill()  # SIGKILL: no cleanup of any kind
                break
    finally:
        rotating.kill()
        rotating.wait()
    assert rotating.returncode == -9
    mid = keyring_of(commander)
    assert len(mid["data"]) == 2 and mid["retiring"] == old  # the new key encrypts; the old still decrypts
    with sqlite3.connect(data_dir(commander) / "commander.db") as database:
        [(mark,)] = database.execute("SELECT after_id FROM rekey_progress WHERE \"column\" = 'task.prompt'").fetchall()
    assert mark >= 20
    # Meanwhile everything still reads, and new work is written under the new key.
    assert {t["id"]: t["prompt"] for t in commander.api.list_tasks(limit=500)} == prompts
    prompts[commander.api.submit_task("meanwhile")["id"]] = "meanwhile"

    m3shd("keys", "rotate", "--batch", "5", env=commander.env, timeout=120)
    done = keyring_of(commander)
    assert done["data"] == mid["data"][:1] and done["retiring"] == []  # the same new key: resumed, not restarted
    assert undecryptable(commander, done["data"][0]) == []
    assert {t["id"]: t["prompt"] for t in commander.api.list_tasks(limit=500)} == prompts
