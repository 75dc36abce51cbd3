"""Agent memory (commander/memory) in process, on the real SQLite file of the `cmdr` fixture:
the [REMEMBER] grammar, the blind index and its search quality, learning on task_finished,
injection on the lease path, provenance with injected memories, and the API's answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from commander import provenance as commander_provenance
from commander.agents import service as agents
from commander.memory import blocks, store, words
from commander.models import Event, Memory, MemoryGiven, MemoryTokenDocs, MemoryWords, Task
from m3shd import provenance
from mesh import configure, expire_now, join_signing, lease_of, report, submit

# --- the [REMEMBER] grammar ----------------------------------------------------------------------


def parsed(text: str, value_max: int = 1000, most: int = 20) -> blocks.Found:
    return blocks.parse(text, value_max, most)


def test_blocks_take_an_optional_key_tags_a_scope_and_values_over_several_lines():
    found = parsed("Done.\n[REMEMBER]deploy host: pi-3.local[/REMEMBER]\n"
                   "[REMEMBER tags=pi,ops scope=shared]backups\nrun nightly at 02:00\nto the NAS[/REMEMBER]\n"
                   "[REMEMBER]: a ratio of 3:2 keeps its colon[/REMEMBER] Bye.")
    assert found.blocks == [
        blocks.Block("deploy host", "pi-3.local"),
        blocks.Block(None, "backups\nrun nightly at 02:00\nto the NAS", ("pi", "ops"), "shared"),
        blocks.Block(None, "a ratio of 3:2 keeps its colon"),
    ]
    assert found.problems == []
    assert found.shown == "Done.\n Bye."


def test_a_first_line_with_a_colon_far_in_is_a_value_without_key():
    long_line = "x" * 90 + ": y"
    assert parsed(f"[REMEMBER]{long_line}[/REMEMBER]").blocks == [blocks.Block(None, long_line)]


@pytest.mark.parametrize("text, problem", [
    ("[REMEMBER colour=red]a: b[/REMEMBER]", "unknown attribute 'colour=red'"),
    ("[REMEMBER scope=private]a: b[/REMEMBER]", "unknown attribute 'scope=private'"),
    ("[REMEMBER tags=a;b]a: b[/REMEMBER]", "tags must be"),
    ("[REMEMBER]key:   [/REMEMBER]", "its value is empty"),
    ("[REMEMBER][/REMEMBER]", "its value is empty"),
    ("[REMEMBER tags=a\n]x[/REMEMBER]", "no `]` on its line"),
])
def test_malformed_blocks_are_reported_and_still_cut_when_they_close(text, problem):
    found = parsed(f"before {text} after")
    assert found.blocks == []
    assert len(found.problems) == 1 and problem in found.problems[0], found.problems
    if "no `]`" not in problem:
        assert found.shown == "before  after"


def test_an_unclosed_block_stays_in_the_answer_and_a_nested_one_is_taken_alone():
    found = parsed("a [REMEMBER]outer [REMEMBER]inner: yes[/REMEMBER] b [REMEMBER]never closed")
    assert found.blocks == [blocks.Block("inner", "yes")]
    assert [p.split(":")[0] for p in found.problems] == ["block 1", "block 3"]
    assert "another [REMEMBER opens" in found.problems[0] and "no [/REMEMBER]" in found.problems[1]
    assert found.shown == "a [REMEMBER]outer  b [REMEMBER]never closed"


def test_words_that_merely_start_like_the_tag_are_not_blocks():
    found = parsed("I [REMEMBERED] it; [REMEMBER]ok[/REMEMBER]")
    assert found.blocks == [blocks.Block(None, "ok")] and found.shown == "I [REMEMBERED] it; "


def test_caps_per_memory_and_per_task_hold_on_a_huge_answer():
    text = "x" * 2_000_000 + "".join(f"[REMEMBER]k{i}: v{i}[/REMEMBER]" for i in range(5000)) \
        + f"[REMEMBER]big: {'y' * 5000}[/REMEMBER]"
    found = parsed(text, value_max=4000, most=20)
    assert [b.key for b in found.blocks] == [f"k{i}" for i in range(20)]
    assert len(found.problems) == 5000 - 20 + 1
    assert "5000 characters; at most 4000" in found.problems[-1]
    assert found.shown == "x" * 2_000_000  # every well-formed block is cut, stored or not
    assert blocks.shown(text) == found.shown and blocks.shown("plain") == "plain" and blocks.shown(None) is None


# --- the blind index -------------------------------------------------------------------------------


def test_words_are_normalised_folded_and_lightly_stemmed():
    assert words.words("The Deploys, DEPLOYED and deploying of ＳＥＲＶＥＲＳ to Café") == [
        "deploy", "deploy", "deploy", "server", "café"]
    key = b"k" * 32
    assert words.token(key, "alice", "deploy") != words.token(key, "bob", "deploy")  # scopes do not link
    assert words.token(key, "alice", "deploy") != words.token(b"j" * 32, "alice", "deploy")
    assert len(words.token(key, "alice", "deploy")) == words.TOKEN_HEX
    assert words.query(key, ["alice"], "the of and") is None


CORPUS = {
    "wifi": ("home wifi password", "the router in the hallway uses WPA3 with passphrase pelican-orbit-42"),
    "deploy": ("deploy host", "production deploys go to pi-3.local through the staging branch"),
    "birthday": ("dana birthday", "Dana's birthday is on 3 May; she likes dark chocolate"),
    "dentist": ("dentist", "Dr. Okafor's practice is open Tuesdays; appointments by phone"),
    "backup": ("backups", "the NAS backs up every night at 02:00 with restic to the garage disk"),
    "coffee": ("coffee order", "oat milk flat white, no sugar, from the café on Mill Street"),
    "car": ("car service", "the Volvo needs its brake pads replaced before winter"),
    "python": ("python version", "the mesh runs Python 3.11 on the Raspberry Pi boards"),
    "plants": ("watering", "water the fern on Sundays and the cactus once a month"),
    "flight": ("flight", "the Lisbon flight leaves Friday at 07:40 from terminal 2"),
    "keys": ("spare keys", "a spare house key is with the neighbour at number 14"),
    "budget": ("monthly budget", "groceries are capped at 400 euros a month"),
    "allergy": ("allergy", "Sam is allergic to peanuts and shellfish"),
    "gym": ("gym schedule", "swimming on Mondays, climbing on Thursdays"),
    "printer": ("printer", "the office printer jams unless paper is fanned first"),
    "vpn": ("vpn", "WireGuard tunnel to the cloud server uses port 51820"),
    "recipe": ("pancakes", "two eggs, 250 g flour, 500 ml milk, a pinch of salt"),
    "tax": ("tax deadline", "the tax return is due by 31 July each year"),
    "cat": ("cat food", "Miso eats the salmon kibble, half a cup twice a day"),
    "bike": ("bike lock", "the combination of the bike lock is the year grandma was born"),
}
QUERIES = {
    "what is the wifi passphrase": "wifi", "where do we deploy to production": "deploy",
    "when is Dana's birthday": "birthday", "which day is the dentist open": "dentist",
    "when does the backup run": "backup", "order me a coffee": "coffee", "book the car for a service": "car",
    "which python does the mesh run": "python", "how often should I water the plants": "plants",
    "what time is my flight to Lisbon": "flight", "who has the spare key": "keys",
    "how much can we spend on groceries": "budget", "is Sam allergic to anything": "allergy",
    "when do I go swimming": "gym", "the printer jammed again": "printer",
    "which port does the WireGuard vpn use": "vpn", "how do I make pancakes": "recipe",
    "when is the tax return due": "tax", "how much does the cat eat": "cat",
    "I forgot the bike lock combination": "bike",
}


def test_the_blind_index_finds_the_right_memory_in_the_top_three(cmdr):
    ids = {}
    with cmdr.writing():
        for name, (key, value) in CORPUS.items():
            ids[name] = store.put(cmdr, "general", value, key)[0].id
        store.put(cmdr, "other", "wifi passphrase of another agent", "wifi")  # another scope: never found
    misses = {}
    for question, expected in QUERIES.items():
        found = [row.id for row in store.search(cmdr, ["general"], question, 3)]
        if ids[expected] not in found:
            misses[question] = found
        relevant = store.relevant(cmdr, ["general"], question, 3)  # a lease's search: the rarest words
        if ids[expected] not in relevant:
            misses["lease: " + question] = relevant
    assert not misses
    assert all(row.scope == "general" for row in store.search(cmdr, ["general"], "wifi passphrase", 50))
    # Nothing in the index is a word: only tokens of 16 hex digits.
    indexed = " ".join(row.words for row in MemoryWords.select())
    assert all(len(t) == words.TOKEN_HEX and int(t, 16) >= 0 for t in indexed.split())
    assert "wifi" not in indexed and "pelican" not in indexed


SENTINEL_VALUE, SENTINEL_KEY, SENTINEL_TAG = "zebrafinch-7731-value", "quokkaword-key", "narwhaltag"


def test_no_key_value_or_tag_reaches_the_database_files_in_clear(cmdr, app):
    configure(cmdr)
    with cmdr.writing():
        store.put(cmdr, "general", f"the {SENTINEL_VALUE} is secret", SENTINEL_KEY, [SENTINEL_TAG])
        store.put(cmdr, store.SHARED, SENTINEL_VALUE, None)
    data_dir = Path(cmdr.settings.data_dir)
    files = [path for path in data_dir.rglob("*") if path.is_file()]
    assert any(path.name.endswith(".db-wal") for path in files) or any(path.suffix == ".db" for path in files)
    for path in files:
        content = path.read_bytes()
        for sentinel in (SENTINEL_VALUE, SENTINEL_KEY, SENTINEL_TAG, "zebrafinch", "quokkaword"):
            assert sentinel.encode() not in content, f"{sentinel} in {path}"
    assert store.get(cmdr, "general", Memory.get(Memory.scope == "general").id).key == SENTINEL_KEY


def test_a_key_stored_again_replaces_its_value_and_equal_content_stays_one_memory(cmdr):
    with cmdr.writing():
        first, created = store.put(cmdr, "general", "pelican", "Deploy host")
        again, created_again = store.put(cmdr, "general", "albatross", "deploy HOST")
        same, created_same = store.put(cmdr, "general", "no key here")
        twice, created_twice = store.put(cmdr, "general", "no key here")
    assert (created, created_again, created_same, created_twice) == (True, False, True, False)
    assert again.id == first.id and twice.id == same.id
    assert store.get(cmdr, "general", first.id).value == "albatross"
    assert [row.id for row in store.search(cmdr, ["general"], "pelican", 5)] == []  # the old words left the index
    assert [row.id for row in store.search(cmdr, ["general"], "albatross", 5)] == [first.id]



@pytest.mark.parametrize("lookup, values, index", [
    (store.BY_KEY, {"key_hash": "k"}, "memory_scope_key_hash"),
    (store.BY_CONTENT, {"content_hash": "c"}, "memory_scope_content_hash"),
])
def test_a_store_finds_the_memory_it_replaces_through_an_index_not_a_scan_of_the_scope(cmdr, lookup, values, index):
    """Every store looks up the memory it may replace: by key, or for a keyless memory by its
    content. Reading every keyless memory of the scope instead made each store slower than the last."""
    sql, params = lookup._bind({"scope": "general", **values})
    [(*_, plan)] = cmdr.db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    assert plan.startswith(f"SEARCH t1 USING INDEX {index} (scope=? AND ")

# --- learning and recall through the lease path -------------------------------------------------------


def run(cmdr, node, signer, prompt: str, output: str = "ok", **options) -> tuple[dict, Task]:
    task = submit(cmdr, prompt, **options)
    lease = lease_of(cmdr, node, task)
    finished, _ = report(cmdr, node, lease, signer=signer, output=output)
    return lease, finished


def test_remember_blocks_are_stored_for_the_agent_reported_and_cut_from_what_people_see(cmdr, client, bearer):
    node, signer = join_signing(cmdr)
    output = ("The answer is 4.\n[REMEMBER tags=infra]deploy host: pi-3.local[/REMEMBER]\n"
              "[REMEMBER scope=shared]the office closes at 18:00[/REMEMBER]\n[REMEMBER bad=1]x[/REMEMBER]")
    _, task = run(cmdr, node, signer, "what is 2+2", output)
    assert task.output == output  # the stored output keeps them
    rows = list(Memory.select().order_by(Memory.id))
    assert [(row.scope, row.source_task_id) for row in rows] == [("general", task.id), ("shared", task.id)]
    assert store.opened(cmdr, rows[0]).tags == ["infra"]
    event = Event.select().where(Event.kind == "task.memory").get()
    data = event.data
    assert event.task == task.id and data["stored"] == [row.id for row in rows]
    assert len(data["problems"]) == 1 and "unknown attribute" in data["problems"][0]
    shown = client.get(f"/api/tasks/{task.id}", headers=bearer()).get_json()
    assert shown["output"] == "The answer is 4.\n"


def test_a_lease_carries_the_relevant_memories_and_provenance_still_verifies(cmdr):
    node, signer = join_signing(cmdr)
    with cmdr.writing():
        host = store.put(cmdr, "general", "production deploys go to pi-3.local", "deploy host")[0]
        store.put(cmdr, "general", "Dana likes dark chocolate", "dana")
        shared = store.put(cmdr, store.SHARED, "deploy only on weekdays", None)[0]
        store.put(cmdr, "other-agent", "deploy to mars", None)
    lease, task = run(cmdr, node, signer, "deploy the new build")
    assert lease["prompt"].startswith("[MEMORY]\n") and lease["prompt"].endswith("[/MEMORY]\n\ndeploy the new build")
    assert f"(memory {host.id}) deploy host: production deploys go to pi-3.local" in lease["prompt"]
    assert f"(memory {shared.id}) deploy only on weekdays" in lease["prompt"]
    assert "mars" not in lease["prompt"] and "chocolate" not in lease["prompt"]
    given = MemoryGiven.get(MemoryGiven.task == task.id)
    assert sorted(given.memory_ids) == sorted([host.id, shared.id])
    assert "pi-3.local" not in given.section  # sealed
    assert Memory.get_by_id(host.id).use_count == 1 and Memory.get_by_id(host.id).last_used_at
    assert task.state == "succeeded"  # the binding to the prompt as leased held
    with cmdr.writing():  # editing the memory later does not change what the task was given
        store.put(cmdr, "general", "deploys now go to pi-9.local", "deploy host")
    bundle = commander_provenance.bundle(cmdr, Task.get_by_id(task.id))
    assert bundle["ok"], bundle["links"][0]["problems"]
    assert bundle["links"][0]["memories"] == given.memory_ids and "pi-3.local" in bundle["links"][0]["prompt"]
    offline = provenance.check_links(bundle["links"], bundle["public_keys"])
    assert offline == {task.id: []}


def counts_match_the_index(cmdr) -> None:
    """The token counts kept beside the index equal what FTS5's own vocabulary counts."""
    cmdr.db.execute_sql("CREATE VIRTUAL TABLE IF NOT EXISTS temp.vocabulary USING fts5vocab(main, memory_words, 'row')")
    counted = dict(cmdr.db.execute_sql("SELECT term, doc FROM temp.vocabulary").fetchall())
    assert dict(MemoryTokenDocs.select(MemoryTokenDocs.token, MemoryTokenDocs.docs).tuples()) == counted


def test_a_lease_searches_the_prompts_rarest_words_and_skips_words_no_memory_holds(cmdr):
    with cmdr.writing():
        for n in range(store.RELEVANT_DOCS + 50):  # "server" alone matches more than a lease ranks
            store.put(cmdr, "general", f"server note {n}: the server restarted cleanly", f"server {n}")
        heron = store.put(cmdr, "general", "heron.local is the server in the attic", "attic server")[0]
    counts_match_the_index(cmdr)
    assert store.relevant(cmdr, ["general"], "restart the server on heron", 5)[0] == heron.id
    assert store.relevant(cmdr, ["general"], "restart the server", 5)  # the rarest word, however common
    assert store.relevant(cmdr, ["general"], "xylophone quartet", 5) == []
    assert store.relevant(cmdr, ["other"], "restart the server on heron", 5) == []


def test_a_retry_is_searched_again_and_its_result_is_bound_to_what_it_was_given(cmdr):
    node, signer = join_signing(cmdr)
    with cmdr.writing():
        first = store.put(cmdr, "general", "the kiln fires on Thursdays", "kiln")[0]
    task = submit(cmdr, "when is the kiln fired")
    lease_of(cmdr, node, task)
    assert MemoryGiven.get(MemoryGiven.task == task.id).memory_ids == [first.id]
    with cmdr.writing():
        store.forget("general", first.id)
    expire_now(cmdr, task)
    retry = lease_of(cmdr, node, Task.get_by_id(task.id))
    assert retry["attempt"] == 2 and retry["prompt"] == "when is the kiln fired"
    assert MemoryGiven.get_or_none(MemoryGiven.task == task.id) is None  # attempt 1's memories are not attempt 2's
    with cmdr.writing():
        second = store.put(cmdr, "general", "the kiln now fires on Fridays", "kiln")[0]
    expire_now(cmdr, task)
    third = lease_of(cmdr, node, Task.get_by_id(task.id))
    given = MemoryGiven.get(MemoryGiven.task == task.id)
    assert (given.attempt, given.memory_ids) == (3, [second.id]) and "Fridays" in third["prompt"]
    finished, _ = report(cmdr, node, third, signer=signer, output="Fridays")
    assert finished.state == "succeeded"
    assert commander_provenance.bundle(cmdr, finished)["ok"]


def test_the_budget_the_count_and_both_opt_outs_bound_what_a_lease_gets(cmdr):
    node, signer = join_signing(cmdr)
    with cmdr.writing():
        for i in range(6):
            store.put(cmdr, "general", f"deploy note {i}: " + "words " * (10 * (i + 1)), f"deploy {i}")
    configure(cmdr, memory_inject_count=3)
    lease, task = run(cmdr, node, signer, "deploy note")
    assert len(MemoryGiven.get(MemoryGiven.task == task.id).memory_ids) == 3
    configure(cmdr, memory_inject_count=8, memory_inject_tokens=40)
    lease, task = run(cmdr, node, signer, "deploy note")
    section = lease["prompt"].split("[/MEMORY]")[0]
    lines = [line for line in section.splitlines() if line.startswith("- (memory")]
    assert lines and sum(-(-len(line) // 4) for line in lines) <= 40
    assert len(lines) == len(MemoryGiven.get(MemoryGiven.task == task.id).memory_ids) < 6
    lease, task = run(cmdr, node, signer, "deploy note", memory=False)
    assert lease["prompt"] == "deploy note" and MemoryGiven.get_or_none(MemoryGiven.task == task.id) is None
    profile = "+++\nname = \"quiet\"\nmemory = \"off\"\n+++\nYou answer briefly."
    agents.put(cmdr, "quiet", profile, "test")
    with cmdr.writing():
        store.put(cmdr, "quiet", "deploy note for quiet", None)
    lease, task = run(cmdr, node, signer, "deploy note", "[REMEMBER]kept: no[/REMEMBER]", agent="quiet")
    assert lease["prompt"] == "deploy note" and task.state == "succeeded"
    assert Memory.select().where(Memory.scope == "quiet").count() == 1  # nothing learned either


# --- the API ---------------------------------------------------------------------------------------------


def test_the_api_stores_lists_searches_gets_and_forgets(client, bearer):
    writer = bearer(permissions=["memory:read", "memory:write"])
    put = client.put("/api/agents/general/memory", headers=writer,
                     json={"key": "deploy host", "value": "pi-3.local", "tags": ["infra"]})
    assert put.status_code == 201, put.get_json()
    memory = put.get_json()
    assert (memory["scope"], memory["key"], memory["value"], memory["tags"]) == ("general", "deploy host",
                                                                                  "pi-3.local", ["infra"])
    again = client.put("/api/agents/general/memory", headers=writer, json={"key": "deploy host", "value": "pi-4"})
    assert again.status_code == 200 and again.get_json()["id"] == memory["id"]
    client.put("/api/agents/shared/memory", headers=writer, json={"value": "office closes at 18:00"})
    listed = client.get("/api/agents/general/memory", headers=writer).get_json()
    assert [m["value"] for m in listed["memories"]] == ["pi-4"]
    found = client.get("/api/agents/shared/memory?q=when+does+the+office+close", headers=writer).get_json()
    assert [m["value"] for m in found["memories"]] == ["office closes at 18:00"]
    assert client.get(f"/api/agents/general/memory/{memory['id']}", headers=writer).get_json()["value"] == "pi-4"
    assert client.delete(f"/api/agents/general/memory/{memory['id']}", headers=writer).status_code == 204
    gone = client.get(f"/api/agents/general/memory/{memory['id']}", headers=writer)
    assert gone.status_code == 404 and gone.get_json()["error"]["code"] == "no_memory"
    assert client.get("/api/agents/general/memory?q=deploy", headers=writer).get_json()["memories"] == []


@pytest.mark.parametrize("method, path, body, status, code", [
    ("GET", "/api/agents/nobody/memory", None, 404, "unknown_agent"),
    ("GET", "/api/agents/general/memory/999", None, 404, "no_memory"),
    ("DELETE", "/api/agents/general/memory/999", None, 404, "no_memory"),
    ("PUT", "/api/agents/general/memory", {"value": ""}, 400, None),
    ("PUT", "/api/agents/general/memory", {"value": "x", "colour": "red"}, 400, None),
    ("PUT", "/api/agents/general/memory", {"value": "x", "tags": ["no spaces"]}, 400, None),
    ("PUT", "/api/agents/general/memory", {"value": 5}, 400, None),
    ("GET", "/api/agents/general/memory?limit=0", None, 400, None),
    ("GET", "/api/agents/general/memory?q=", None, 400, None),
])
def test_bad_requests_get_a_json_error_never_a_500(client, bearer, method, path, body, status, code):
    answer = client.open(path, method=method, headers=bearer(), json=body)
    assert answer.status_code == status, answer.get_data(as_text=True)
    if code:
        assert answer.get_json()["error"]["code"] == code
    else:
        assert answer.get_json()["error"]["message"]


def test_reading_needs_memory_read_and_writing_memory_write(client, bearer):
    reader, tasks_only = bearer(permissions=["memory:read"]), bearer(permissions=["tasks:read"])
    assert client.get("/api/agents/general/memory", headers=tasks_only).status_code == 403
    assert client.get("/api/agents/general/memory", headers=reader).status_code == 200
    refused = client.put("/api/agents/general/memory", headers=reader, json={"value": "x"})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    assert client.delete("/api/agents/general/memory/1", headers=reader).status_code == 403


def test_a_token_scoped_to_an_agent_reaches_its_own_and_the_shared_memories_only(cmdr, client):
    from commander import tokens

    agents.put(cmdr, "helper", "+++\nname = \"helper\"\n+++\nYou help.", "test")
    with cmdr.writing(wake=False):
        _, secret = tokens.create("scoped", actor="test", permissions=["memory:read", "memory:write"], agent="helper")
    scoped = {"Authorization": f"Bearer {secret}"}
    assert client.put("/api/agents/helper/memory", headers=scoped, json={"value": "mine"}).status_code == 201
    assert client.put("/api/agents/shared/memory", headers=scoped, json={"value": "ours"}).status_code == 201
    assert [m["value"] for m in client.get("/api/agents/helper/memory", headers=scoped).get_json()["memories"]] == [
        "mine"]
    other = client.get("/api/agents/general/memory", headers=scoped)
    assert other.status_code == 403 and other.get_json()["error"]["code"] == "agent_scope"
    assert client.put("/api/agents/general/memory", headers=scoped, json={"value": "x"}).status_code == 403
    assert Memory.select().where(Memory.scope == "general").count() == 0


# --- consolidation ---------------------------------------------------------------------------------------


def test_near_duplicates_of_a_scope_merge_into_the_most_used_keeping_what_merged_into_what(cmdr, client, bearer):
    from commander.memory import consolidate

    base = "the backup of the garage nas runs nightly at two with restic to the external disk"
    with cmdr.writing():
        a = store.put(cmdr, "general", base, tags=["ops"])[0]
        b = store.put(cmdr, "general", base + " drive", tags=["nas"])[0]
        c = store.put(cmdr, "general", "The backup of the garage NAS runs nightly at two, with restic, to the "
                                       "external disk.")[0]
        keyed = store.put(cmdr, "general", base, "backups")[0]          # keyed: never merged
        other = store.put(cmdr, "helper", base + " drive")[0]           # another scope: never merged
        apart = store.put(cmdr, "general", "Dana likes dark chocolate")[0]
    Memory.update(use_count=5).where(Memory.id == b.id).execute()
    Memory.update(use_count=2).where(Memory.id == a.id).execute()
    answer = client.post("/api/memory/consolidate", headers=bearer(permissions=["memory:write"]))
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["merges"] == [{"scope": "general", "kept": b.id, "merged": [a.id, c.id]}]
    kept = store.get(cmdr, "general", b.id)
    assert (kept.use_count, kept.tags, kept.value) == (7, ["nas", "ops"], base + " drive")
    assert store.get(cmdr, "general", a.id).merged_into == b.id and store.get(cmdr, "general", a.id).value == base
    assert {m.id for m in store.listing(cmdr, "general", 50)} == {b.id, keyed.id, apart.id}
    assert a.id not in [row.id for row in store.search(cmdr, ["general"], "garage backup", 10)]
    assert Memory.get_by_id(other.id).merged_into is None and Memory.get_by_id(keyed.id).merged_into is None
    assert Event.select().where(Event.kind == "memory.merged").count() == 1
    assert consolidate.consolidate(cmdr) == []  # nothing left to merge
    counts_match_the_index(cmdr)
    with cmdr.writing():
        store.forget("general", b.id)  # forgetting the one kept forgets what merged into it
        store.put(cmdr, "general", "the backup of the garage nas now runs at three", "backups")  # replaced
    assert Memory.select().where(Memory.id.in_([a.id, b.id, c.id])).count() == 0
    counts_match_the_index(cmdr)


def test_consolidation_runs_once_a_local_day_at_its_time_and_refuses_a_bad_setting(cmdr):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from commander.memory import consolidate
    from m3shd.config import ConfigError

    configure(cmdr, memory_consolidate_at="03:30", time_zone="Europe/Berlin")
    at = lambda hour, minute: datetime(2026, 12, 2, hour, minute, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    assert consolidate.due(cmdr.settings, None, at(3, 29)) is None
    assert consolidate.due(cmdr.settings, None, at(3, 30)) == "2026-12-02"
    assert consolidate.due(cmdr.settings, "2026-12-02", at(23, 0)) is None
    configure(cmdr, memory_consolidate_at="")
    assert consolidate.due(cmdr.settings, None, at(4, 0)) is None
    for bad in (dict(memory_consolidate_at="3:30"), dict(memory_consolidate_at="25:00"),
                dict(memory_merge_similarity=0.0)):
        configure(cmdr, **bad)
        with pytest.raises(ConfigError):
            consolidate.check(cmdr.settings)


# --- the dashboard ------------------------------------------------------------------------------------------


def test_the_memory_page_lists_searches_escapes_and_forgets(cmdr, client, bearer):
    with cmdr.writing():
        kiln = store.put(cmdr, "general", "the kiln fires on <b>Thursdays</b>", "kiln", ["studio"])[0]
        store.put(cmdr, "general", "Dana likes dark chocolate")
        store.put(cmdr, store.SHARED, "the office closes at 18:00")
    reader = bearer(permissions=["memory:read", "tasks:read"])
    html = client.get("/agents/general/memory", headers=reader).get_data(as_text=True)
    assert "the kiln fires on &lt;b&gt;Thursdays&lt;/b&gt;" in html and "Dana likes dark chocolate" in html
    assert "office closes" not in html and 'id="forget-' not in html  # memory:read alone sees no button
    found = client.get("/agents/general/memory?q=when+is+the+kiln+fired", headers=reader).get_data(as_text=True)
    assert f'id="memory-{kiln.id}"' in found and "chocolate" not in found
    assert "office closes" in client.get("/agents/shared/memory", headers=reader).get_data(as_text=True)
    assert 'id="agent-memory"' in client.get("/agents/general", headers=reader).get_data(as_text=True)
    assert client.get("/agents/nobody/memory", headers=reader).status_code == 404
    assert client.post(f"/agents/general/memory/{kiln.id}/forget", headers=reader).status_code == 403
    writer = bearer(permissions=["memory:read", "memory:write"])
    assert f'id="forget-{kiln.id}"' in client.get("/agents/general/memory", headers=writer).get_data(as_text=True)
    assert client.post(f"/agents/general/memory/{kiln.id}/forget", headers=writer).status_code == 303
    assert Memory.get_or_none(Memory.id == kiln.id) is None
