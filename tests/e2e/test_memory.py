"""Agent memory against a live Commander under gunicorn and a real N0D3 running the fake `claude`:
a [REMEMBER] block in an answer is learned and cut from what the API shows, the next related task
is leased with it, its provenance (online and offline) still verifies, `m3shd memory` reads and
writes, and no memory value reaches the Commander's files in clear."""

from __future__ import annotations

import json

from harness import base_env, m3shd


def cli(cmd, *args, check: bool = True):
    done = m3shd(*args, "--url", cmd.url, "--token", cmd.admin_token, env=cmd.env, check=False)
    assert not check or done.returncode == 0, done.stdout + done.stderr
    return done


def test_learned_recalled_provenance_verified_and_sealed_at_rest(commander, spawn_n0d3, tmp_path):
    spawn_n0d3("rememberer")
    api = commander.api
    taught = api.submit_task("Noted. [REMEMBER tags=ops]release host: heron-lighthouse.local[/REMEMBER] Done.")
    finished = commander.wait_task(taught["id"], 30)
    assert finished["state"] == "succeeded", finished
    # The fake claude echoes its prompt: the stored answer has the block, the shown one does not.
    assert finished["output"] == "echo: Noted.  Done."
    [learned] = api.memories("general")
    assert (learned["key"], learned["value"], learned["tags"], learned["source_task"]) == (
        "release host", "heron-lighthouse.local", ["ops"], taught["id"])

    asked = api.submit_task("which release host do we use")
    answer = commander.wait_task(asked["id"], 30)
    assert answer["state"] == "succeeded", answer  # the N0D3 bound its result to the prompt with memories
    assert f"(memory {learned['id']}) release host: heron-lighthouse.local" in answer["output"]
    assert answer["output"].rstrip().endswith("which release host do we use")
    bundle = api.task_provenance(asked["id"])
    assert bundle["ok"] and bundle["links"][0]["memories"] == [learned["id"]]
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    offline = m3shd("provenance", "verify", str(path), env=base_env(tmp_path / "offline"), check=False)
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert api.memories("general")[0]["use_count"] == 1

    alone = api.submit_task("which release host do we use", memory=False)
    assert "[MEMORY]" not in commander.wait_task(alone["id"], 30)["output"]

    # The CLI; the sentinel never goes into a task, so no prompt or answer holds it.
    sentinel = "quetzal-sentinel-90817"
    added = json.loads(cli(commander, "memory", "add", "shared", f"the vault code is {sentinel}", "--key",
                           "vault", "--tag", "home", "--json").stdout)
    found = json.loads(cli(commander, "memory", "search", "shared", "vault", "code", "--json").stdout)
    assert [m["id"] for m in found] == [added["id"]] and found[0]["value"].endswith(sentinel)
    listed = cli(commander, "memory", "list", "general").stdout
    assert "release host" in listed and "heron-lighthouse.local" in listed
    data_dir = commander.home / "data"
    for file in (path for path in data_dir.rglob("*") if path.is_file()):
        assert b"quetzal" not in file.read_bytes(), file
    twice = json.loads(cli(commander, "memory", "add", "shared", "The vault code changed!", "--json").stdout)
    again = json.loads(cli(commander, "memory", "add", "shared", "the vault code changed", "--json").stdout)
    merged = cli(commander, "memory", "consolidate").stdout
    assert f"shared: {min(twice['id'], again['id'])} -> {max(twice['id'], again['id'])}" in merged, merged
    cli(commander, "memory", "forget", "shared", str(added["id"]))
    missing = cli(commander, "memory", "forget", "shared", str(added["id"]), check=False)
    assert missing.returncode != 0 and "no memory" in missing.stderr
