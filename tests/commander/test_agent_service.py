"""Agents in process: the profile format, the loader, the service (versions, rollback, delete,
reload, the file check), what a task takes from its agent, the binding of results, the live
figures and the /api/agents routes, on the Commander's app over a real SQLite file."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace

import pytest

from commander import leases, nodes, tasks
from commander.agents import loader, service, stats
from commander.agents.profile import ProfileError, parse
from commander.exceptions import Conflict, Forbidden, Invalid, NotFound
from commander.models import FAILED, SUCCEEDED, Agent, Node, Task
from harness import ROOT
from m3shd import wire

FIXTURES = ROOT / "tests" / "fixtures" / "agents"
REVIEWER = (FIXTURES / "test-reviewer.md").read_text()


@pytest.fixture
def profiles(tmp_path):
    """The operator's profile directory (<config dir>/agents), holding the test profiles."""
    folder = tmp_path / "conf" / "agents"
    shutil.copytree(FIXTURES, folder)
    return folder


@pytest.fixture
def app(profiles, app):
    """The conftest's app, made once the test profiles are in place."""
    return app


@pytest.fixture
def cmdr(app):
    commander = app.extensions["m3shd"]
    with commander.db.connection_context():
        yield commander


def write(folder, name: str, text: str) -> None:
    """Write a profile file and move its mtime on, as an edit a second later would."""
    path = folder / name
    path.write_text(text)
    later = time.time() + 1
    os.utime(path, (later, later))


def submit(cmdr, agent: str | None = None, **spec) -> Task:
    return tasks.submit(cmdr, tasks.TaskSpec(prompt=spec.pop("prompt", "hello"), agent=agent, **spec),
                        submitter="test")[0]


# --- the format --------------------------------------------------------------------------------

def test_a_markdown_profile_is_its_front_matter_and_its_body_as_the_system_prompt():
    profile = parse(REVIEWER, "test-reviewer")
    assert profile.model == "claude-opus-5-5" and profile.max_turns == 7 and profile.timeout == 600
    assert profile.allowed_tools == ["Read", "Grep", "Bash(git diff:*)"]
    assert profile.system_prompt.startswith("## Role\nYou review diffs") and profile.system_prompt.endswith("first.")
    toml = parse((FIXTURES / "test-researcher.toml").read_text(), "test-researcher")
    assert toml.system_prompt == "You research questions on the web and cite what you found."
    assert parse('+++\nname = "bare"\n+++\n').system_prompt == "" and not parse('name = "bare"').restricts


@pytest.mark.parametrize("text, says", [
    ('+++\nname = "x-y"\n', "never closed"),
    ('+++\nname = x-y\n+++\nbody', "front matter is not valid TOML"),
    ('name = "x-y"\nsystem_promt = "typo"', "system_promt: Extra inputs are not permitted"),
    ('name = "X Y"', "name: String should match pattern"),
    ('name = "x-y"\nmax_turns = "5"', "max_turns: Input should be a valid integer"),
    ('name = "x-y"\nmodel = "a"\nallowed_models = ["b"]', "model 'a' is not among allowed_models"),
    ('+++\nname = "x-y"\nsystem_prompt = "two"\n+++\nbody', "system_prompt is the Markdown body"),
    ('name = "x-y"\nallowed_tools = ["Bash(rm -rf /"]', "allowed_tools.0: String should match pattern"),
    ('name = "x-y"\nmemory = "everything"', "memory: Input should be 'own', 'shared' or 'off'"),
    ('name = "other"', "the profile says name = 'other' but it is 'x-y' here"),
    ("x" * 100_001, "at most 100,000"),
])
def test_a_profile_that_does_not_parse_says_what_to_fix(text, says):
    with pytest.raises(ProfileError, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse(text, "x-y")


# --- the files ---------------------------------------------------------------------------------

def test_the_operators_file_overrides_the_shipped_one_and_a_broken_file_leaves_the_rest(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "general.md").write_text('+++\nname = "general"\ntitle = "Mine"\n+++\nMy own general.')
    (mine / "broken.md").write_text("+++\nname = 'broken'\n")
    (mine / "Not A Name.md").write_text('name = "x"')
    (mine / "twice.md").write_text('name = "twice"')
    (mine / "twice.toml").write_text('name = "twice"')
    (mine / "README.md").write_text("# My agents")
    found = loader.scan([loader.BENCH, mine])
    assert found["general"].profile.title == "Mine" and found["general"].path == str(mine / "general.md")
    assert "never closed" in found["broken"].error and found["broken"].profile is None
    assert "two profiles for 'twice'" in found["twice"].error
    assert "Not A Name" not in " ".join(found) and "README" not in found
    # Shipped profiles other than general load as they are, beside the broken ones.
    assert all(file.profile for name, file in found.items() if file.path.startswith(str(loader.BENCH)))


def test_reload_makes_a_version_for_a_changed_file_and_nothing_for_an_unchanged_one(cmdr, profiles):
    reviewer = service.get("test-reviewer")
    assert (reviewer.current, reviewer.origin) == (1, str(profiles / "test-reviewer.md"))
    again = service.reload(cmdr, "test")
    assert again.created == again.updated == [] and again.unchanged >= 4
    write(profiles, "test-reviewer.md", REVIEWER.replace("max_turns = 7", "max_turns = 9"))
    changed = service.reload(cmdr, "test")
    assert changed.updated == ["test-reviewer"]
    assert service.version_of(cmdr, "test-reviewer", 2).profile.max_turns == 9
    assert [v.cause for v in service.versions(service.get("test-reviewer"))] == [
        f"file {profiles / 'test-reviewer.md'}"] * 2


def test_a_broken_file_marks_its_agent_broken_while_its_current_version_still_serves(cmdr, profiles):
    write(profiles, "test-reviewer.md", REVIEWER.replace("max_turns = 7", "max_turns = seven"))
    write(profiles, "test-new.md", "+++\nname = 'test-new'\n")
    done = service.reload(cmdr, "test")
    broken = dict(done.broken)
    assert set(broken) == {"test-reviewer", "test-new"}
    assert broken["test-reviewer"].endswith("test-reviewer.md: the front matter is not valid TOML: Invalid value "
                                            "(at line 8, column 13)")
    reviewer = service.get("test-reviewer")
    assert reviewer.error == broken["test-reviewer"] and reviewer.current == 1
    assert submit(cmdr, "test-reviewer").agent_version == 1  # the last good version serves meanwhile
    with pytest.raises(Conflict, match="test-new has no working profile yet"):
        submit(cmdr, "test-new")
    assert service.reload(cmdr, "test").broken == []  # unchanged: reported once, not at every look
    write(profiles, "test-reviewer.md", REVIEWER)
    service.reload(cmdr, "test")
    assert service.get("test-reviewer").error is None and service.get("test-reviewer").current == 1  # same text


def test_a_file_edit_is_picked_up_by_the_periodic_look_without_a_reload(cmdr, profiles):
    cmdr.settings = replace(cmdr.settings, agents_check_every=0.2)
    service.check_files(cmdr)  # a look now: nothing changed
    write(profiles, "test-reviewer.md", REVIEWER.replace("max_turns = 7", "max_turns = 8"))
    service.check_files(cmdr)  # looked too recently: nothing yet
    assert service.get("test-reviewer").current == 1
    time.sleep(0.25)
    service.check_files(cmdr)
    assert service.get("test-reviewer").current == 2
    cmdr.settings = replace(cmdr.settings, agents_check_every=0)  # off: only start and reload read the files
    write(profiles, "test-reviewer.md", REVIEWER)
    time.sleep(0.25)
    service.check_files(cmdr)
    assert service.get("test-reviewer").current == 2


def test_a_gone_file_leaves_its_agent_as_it_was(cmdr, profiles):
    (profiles / "test-gpu.md").unlink()
    assert service.reload(cmdr, "test").missing == ["test-gpu"]
    assert service.get("test-gpu").current == 1


# --- versions ----------------------------------------------------------------------------------

def test_edits_make_versions_and_a_rollback_is_a_new_version_with_the_old_profile(cmdr):
    agent, created = service.put(cmdr, "scribe", 'name = "scribe"\nsystem_prompt = "one"', "user:ada")
    assert created and agent.current == 1 and agent.origin is None
    same, created = service.put(cmdr, "scribe", 'name = "scribe"\nsystem_prompt = "one"', "user:ada")
    assert not created and same.current == 1  # the same text changes nothing
    service.put(cmdr, "scribe", 'name = "scribe"\nsystem_prompt = "two"', "user:ada")
    back = service.rollback(cmdr, "scribe", 1, "user:bob")
    assert back.current == 3
    versions = service.versions(back)
    assert [(v.version, v.system_prompt) for v in versions] == [(3, "one"), (2, "two"), (1, "one")]
    assert [v.cause for v in versions] == ["rollback to version 1 by user:bob", "edited by user:ada",
                                           "created by user:ada"]
    with pytest.raises(Conflict, match="already_current|current version"):
        service.rollback(cmdr, "scribe", 3, "user:bob")
    with pytest.raises(NotFound, match="no version 9"):
        service.rollback(cmdr, "scribe", 9, "user:bob")


def test_a_bad_edit_is_refused_and_changes_nothing(cmdr):
    with pytest.raises(Invalid, match="max_turns"):
        service.put(cmdr, "test-reviewer", REVIEWER.replace("max_turns = 7", "max_turns = 0"), "user:ada")
    with pytest.raises(Invalid, match="but it is 'test-gpu' here"):
        service.put(cmdr, "test-gpu", REVIEWER, "user:ada")
    assert service.get("test-reviewer").current == 1 and service.get("test-gpu").current == 1


def test_delete_is_refused_while_tasks_wait_unless_they_fall_back_to_general(cmdr):
    waiting = submit(cmdr, "test-gpu")
    with pytest.raises(Conflict, match="1 waiting and 0 running"):
        service.delete(cmdr, "test-gpu", "user:ada")
    assert service.delete(cmdr, "test-gpu", "user:ada", fallback=True) == 1
    moved = tasks.get(waiting.id)
    assert (moved.agent, moved.agent_version) == ("general", service.get("general").current)
    assert moved.requires == ["gpu"]  # what it was submitted with stays
    with pytest.raises(NotFound, match="there is no agent named 'test-gpu'; the agents are: .*general, ") as gone:
        submit(cmdr, "test-gpu")
    assert "test-gpu" not in gone.value.message.partition("the agents are: ")[2].split(", ")
    assert service.get("test-gpu", deleted=True).deleted_at is not None  # its versions stay readable
    with pytest.raises(Conflict, match="general is the default agent"):
        service.delete(cmdr, "general", "user:ada")


def test_a_deleted_agent_comes_back_only_if_its_file_changes(cmdr, profiles):
    service.delete(cmdr, "test-gpu", "user:ada")
    service.reload(cmdr, "test")
    assert "test-gpu" not in service.live_names()
    write(profiles, "test-gpu.md", (profiles / "test-gpu.md").read_text() + "\nMore.")
    service.reload(cmdr, "test")
    assert "test-gpu" in service.live_names() and service.get("test-gpu").current == 2


# --- tasks -------------------------------------------------------------------------------------

def test_a_task_takes_its_agents_version_capabilities_and_model(cmdr):
    task = submit(cmdr, "test-gpu", requires=["arch=arm64"], prefer=["quiet"])
    assert (task.agent, task.agent_version) == ("test-gpu", 1)
    assert task.requires == ["arch=arm64", "gpu"] and task.prefer == ["fast", "quiet"]
    reviewed = submit(cmdr, "test-reviewer")
    assert reviewed.model == "claude-opus-5-5"  # its default
    assert submit(cmdr, "test-reviewer", model="claude-sonnet-5-5").model == "claude-sonnet-5-5"
    with pytest.raises(Invalid, match="runs only on claude-opus-5-5, claude-sonnet-5-5; not on claude-haiku-5-5"):
        submit(cmdr, "test-reviewer", model="claude-haiku-5-5")
    assert submit(cmdr).agent == "general"


def test_a_pipeline_step_runs_as_the_agent_it_names(client, bearer):
    steps = [{"key": "render", "prompt": "draw it", "agent": "test-gpu"},
             {"key": "review", "prompt": "check {{ steps.render.output }}", "depends_on": ["render"]}]
    pipeline = client.post("/api/pipelines", json={"steps": steps}, headers=bearer("mobile")).get_json()
    render, review = (client.get(f"/api/tasks/{step['task_id']}", headers=bearer("mobile")).get_json()
                      for step in pipeline["steps"])
    assert (render["agent"], render["requires"], review["agent"]) == ("test-gpu", ["gpu"], "general")
    unknown = client.post("/api/pipelines", json={"steps": [{"key": "a", "prompt": "x", "agent": "ghost"}]},
                          headers=bearer("mobile"))
    assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "unknown_agent"


def test_a_token_scoped_to_an_agent_submits_only_as_that_agent():
    assert service.chosen(None, "test-reviewer") == "test-reviewer"
    assert service.chosen(None, None) == "general"
    with pytest.raises(Forbidden, match="only submit tasks as agent `test-reviewer`, not `general`"):
        service.chosen("general", "test-reviewer")


def test_a_task_whose_agent_needs_what_no_node_has_says_so(cmdr):
    nodes.register(cmdr, nodes.Machine(machine_id="machine-plain", name="plain", slots=1), "test")
    waiting = submit(cmdr, "test-gpu")
    reason = tasks.WaitingReasons(cmdr)(waiting)
    assert reason == "no connected N0D3 has all of: gpu (agent test-gpu requires gpu)"


def test_the_lease_carries_the_version_it_was_submitted_with(cmdr, profiles):
    task = submit(cmdr, "test-reviewer")
    write(profiles, "test-reviewer.md", REVIEWER.replace("max_turns = 7", "max_turns = 9"))
    service.reload(cmdr, "test")
    node = nodes.register(cmdr, nodes.Machine(machine_id="machine-one", name="one", slots=1), "test")
    [lease] = leases.claim(cmdr, node["node_id"], 1)
    assert lease["task_id"] == task.id
    assert {key: lease[key] for key in service.NO_PROFILE} == dict(
        agent="test-reviewer", agent_version=1, system_prompt=parse(REVIEWER).system_prompt,
        allowed_tools=["Read", "Grep", "Bash(git diff:*)"], disallowed_tools=["Bash(rm:*)", "WebFetch"],
        max_turns=7, timeout_s=600)


# --- results bound to their profile ---------------------------------------------------------

def leased(cmdr, agent: str):
    task = submit(cmdr, agent, prompt="bind me")
    registered = nodes.register(cmdr, nodes.Machine(machine_id=f"machine-{agent}", name=agent, slots=1), "test")
    [lease] = leases.claim(cmdr, registered["node_id"], 1)
    return task, lease, registered["node_id"]


def result(lease: dict, **binding) -> leases.Result:
    return leases.Result(task_id=lease["task_id"], attempt=lease["attempt"], lease_token=lease["lease_token"],
                         status="succeeded", signature="ab" * 32, **binding)


def test_a_result_must_answer_the_system_prompt_and_prompt_it_was_leased(cmdr):
    task, lease, node_id = leased(cmdr, "test-reviewer")
    node = Node.get_by_id(node_id)
    bound = wire.binding(lease)
    for wrong, says in ((dict(bound, run_sha256=wire.run_sha256("another system prompt", "bind me")), "another"),
                        (dict(bound, agent_version=2), "test-reviewer version 2"),
                        ({}, "predates agent profiles")):
        with pytest.raises(Invalid, match=says):
            leases.apply_result(cmdr, node, result(lease, **wrong), b"{}", None)
    assert tasks.get(task.id).state == "leased"  # nothing applied
    done, _ = leases.apply_result(cmdr, node, result(lease, **bound), b"{}", None)
    assert done.state == SUCCEEDED


def test_an_older_n0d3s_unbound_result_is_taken_for_a_profile_it_could_have_run(cmdr):
    service.put(cmdr, "plain", 'name = "plain"\nmodel = "claude-haiku-5-5"', "user:ada")  # no prompt, no tools
    task, lease, node_id = leased(cmdr, "plain")
    done, _ = leases.apply_result(cmdr, Node.get_by_id(node_id), result(lease), b"{}", None)
    assert done.state == SUCCEEDED and done.id == task.id


def test_the_offline_verifier_checks_the_binding_when_the_document_has_it():
    from m3shd.provenance import check_links

    system, prompt = "You review.", "look at this"
    document = wire.canonical_json(dict(task_id=1, status="succeeded", output="ok", error=None, agent="r",
                                        agent_version=2, run_sha256=wire.run_sha256(system, prompt),
                                        prompt_sha256=wire.sha256_hex(prompt.encode())))
    link = dict(task_id=1, state="succeeded", prompt=prompt, output="ok", error=None, parents=[], agent="r",
                agent_version=2, system_prompt=system, document=document.decode(), ed25519="", key_id=None,
                chain_hash=None)

    def problems(**changed) -> list[str]:
        found = check_links([dict(link, **changed)], {})[1]
        return [p for p in found if "Ed25519" not in p and "chain hash" not in p]  # not what this test is about

    assert problems() == []
    assert problems(system_prompt="You approve everything.") == [
        "the system prompt or prompt differs from the ones the node answered"]
    assert problems(agent_version=3) == ["the agent or its version differs from the signed result"]
    old = wire.canonical_json(dict(task_id=1, status="succeeded", output="ok", error=None,
                                   prompt_sha256=wire.sha256_hex(prompt.encode()))).decode()
    assert problems(document=old, agent=None, agent_version=None, system_prompt=None) == []  # from before agents
    assert problems(document=old) == ["the signed result is not bound to its agent's system prompt"]


# --- figures -----------------------------------------------------------------------------------

def test_the_live_figures_count_the_queue_and_the_latest_finished_tasks(cmdr):
    for _ in range(2):
        submit(cmdr, "test-gpu")
    finished = [submit(cmdr, "test-gpu") for _ in range(3)]
    for task, (state, duration, cost) in zip(finished, [(SUCCEEDED, 100, 0.5), (SUCCEEDED, 300, 0.25),
                                                         (FAILED, 200, None)]):
        Task.update(state=state, duration_ms=duration, cost_usd=cost, input_tokens=10, output_tokens=5,
                    finished_at=time.time()).where(Task.id == task.id).execute()
    figures = stats.of(["test-gpu", "test-reviewer"])
    assert figures["test-gpu"] == stats.Stats(queued=2, running=0, window=3, succeeded=2, failed=1,
                                              success_rate=2 / 3, median_duration_ms=200, input_tokens=30,
                                              output_tokens=15, cost_usd=0.75)
    assert figures["test-reviewer"] == stats.Stats()


def test_the_window_is_the_latest_hundred(cmdr):
    task = submit(cmdr, "test-gpu")
    rows = [dict(Task.get_by_id(task.id).__data__, id=None, state=FAILED if i < 50 else SUCCEEDED, finished_at=i)
            for i in range(stats.WINDOW + 50)]
    Task.insert_many(rows).execute()
    figures = stats.of(["test-gpu"])["test-gpu"]
    assert (figures.window, figures.succeeded, figures.failed) == (100, 100, 0)  # the 50 oldest failed


# --- the routes --------------------------------------------------------------------------------

def test_reading_needs_tasks_read_and_changing_needs_agents_manage(client, bearer):
    mobile, admin = bearer("mobile"), bearer("admin")
    listed = client.get("/api/agents", headers=mobile)
    assert listed.status_code == 200
    names = [a["name"] for a in listed.get_json()["agents"]]
    assert names == sorted(names) and {"general", "test-reviewer", "test-gpu", "test-researcher"} <= set(names)
    one = client.get("/api/agents/test-reviewer", headers=mobile).get_json()
    assert one["state"] == "ready" and one["text"] == REVIEWER and one["system_prompt"].startswith("## Role")
    refused = client.put("/api/agents/test-reviewer", json={"profile": REVIEWER}, headers=mobile)
    assert refused.status_code == 403 and "`agents:manage`" in refused.get_json()["error"]["message"]
    for method, path in (("POST", "/api/agents/reload"), ("POST", "/api/agents/test-reviewer/rollback"),
                         ("DELETE", "/api/agents/test-gpu")):
        assert client.open(path, method=method, json={"version": 1}, headers=mobile).status_code == 403

    edited = REVIEWER.replace("max_turns = 7", "max_turns = 3")
    put = client.put("/api/agents/test-reviewer", json={"profile": edited}, headers=admin)
    assert put.status_code == 200 and put.get_json()["version"] == 2 and put.get_json()["max_turns"] == 3
    new = client.put("/api/agents/scribe", json={"profile": 'name = "scribe"'}, headers=admin)
    assert new.status_code == 201
    bad = client.put("/api/agents/scribe", json={"profile": 'name = "scribe"\nmax_turns = -1'}, headers=admin)
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_profile"
    versions = client.get("/api/agents/test-reviewer/versions", headers=mobile).get_json()
    assert versions["current"] == 2 and [v["version"] for v in versions["versions"]] == [2, 1]
    back = client.post("/api/agents/test-reviewer/rollback", json={"version": 1}, headers=admin)
    assert back.status_code == 200 and back.get_json()["version"] == 3 and back.get_json()["max_turns"] == 7
    unknown = client.get("/api/agents/nobody", headers=mobile)
    listed = unknown.get_json()["error"]["message"].partition("; the agents are: ")[2].split(", ")
    assert unknown.status_code == 404 and {"general", "scribe"} <= set(listed)
    assert client.delete("/api/agents/scribe", headers=admin).status_code == 204
    assert client.get("/api/agents/scribe", headers=mobile).get_json()["state"] == "deleted"
    reload = client.post("/api/agents/reload", headers=admin).get_json()
    assert reload["broken"] == [] and reload["created"] == []


def test_a_task_naming_an_unknown_agent_is_refused_with_the_names(client, bearer):
    reply = client.post("/api/tasks", json={"prompt": "hi", "agent": "ghost"}, headers=bearer("mobile"))
    assert reply.status_code == 404
    assert reply.get_json()["error"] == {
        "code": "unknown_agent",
        "message": "there is no agent named 'ghost'; the agents are: " + ", ".join(sorted(
            {"test-gpu", "test-researcher", "test-reviewer", *loader.scan([loader.BENCH])}))}


def test_a_token_scoped_to_an_agent_sees_only_its_agent_and_its_own_tasks(app, client, bearer):
    from commander import tokens

    cmdr = app.extensions["m3shd"]
    with cmdr.db.connection_context(), cmdr.writing(wake=False):
        token, secret = tokens.create("bot", "test", agent="test-reviewer")
    assert token.permissions == ["tasks:read", "tasks:submit"]
    scoped = {"Authorization": f"Bearer {secret}"}
    others = client.post("/api/tasks", json={"prompt": "not mine"}, headers=bearer("admin")).get_json()

    mine = client.post("/api/tasks", json={"prompt": "review"}, headers=scoped)
    assert mine.status_code == 201 and mine.get_json()["agent"] == "test-reviewer"
    refused = client.post("/api/tasks", json={"prompt": "x", "agent": "general"}, headers=scoped)
    assert refused.status_code == 403
    assert refused.get_json()["error"]["message"] == (
        "this token may only submit tasks as agent `test-reviewer`, not `general`")
    assert [t["id"] for t in client.get("/api/tasks", headers=scoped).get_json()["tasks"]] == [mine.get_json()["id"]]
    assert client.get(f"/api/tasks/{others['id']}", headers=scoped).status_code == 404
    assert client.get(f"/api/tasks/{mine.get_json()['id']}", headers=scoped).status_code == 200
    assert [a["name"] for a in client.get("/api/agents", headers=scoped).get_json()["agents"]] == ["test-reviewer"]
    assert client.get("/api/agents/general", headers=scoped).status_code == 404
    with cmdr.db.connection_context(), cmdr.writing(wake=False):
        _, broad = tokens.create("broad-bot", "test", role="commander", agent="test-reviewer")
    for headers in (scoped, {"Authorization": f"Bearer {broad}"}):
        for method, path in (("GET", "/api/events"), ("GET", "/api/pipelines/1"), ("POST", "/api/pipelines"),
                             ("GET", "/api/nodes"), ("PUT", "/api/agents/test-reviewer")):
            if headers is scoped and path in ("/api/nodes", "/api/agents/test-reviewer"):
                continue  # it lacks those permissions anyway
            reply = client.open(path, method=method, json={}, headers=headers)
            assert reply.status_code == 403, (path, reply.get_json())
            assert "scoped to agent `test-reviewer`" in reply.get_json()["error"]["message"]


def test_a_token_for_an_unknown_agent_is_refused(app):
    from commander import tokens

    cmdr = app.extensions["m3shd"]
    with cmdr.db.connection_context(), cmdr.writing(wake=False):
        with pytest.raises(NotFound, match="no agent named 'ghost'"):
            tokens.create("bot", "test", agent="ghost")
        with pytest.raises(Invalid, match="only an API token"):
            tokens.create("bot", "test", kind="join", agent="general")


def test_an_agent_row_per_profile_file(cmdr, profiles):
    on_disk = {p.stem for p in (*loader.candidates(loader.BENCH), *profiles.iterdir())}
    assert {a.name for a in Agent.select()} == on_disk
