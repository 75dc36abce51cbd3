"""Pipelines through the real API with live N0D3S: the fake `claude` answers "echo: <prompt>",
so a parent's output injected into a child's prompt is visible in the child's answer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from m3shd.client import ApiClient, CommanderError
from harness import ROOT, Commander, m3shd, sse_events, wait_until

INJECT_LIMIT = 200  # small, so the cut is cheap to provoke
README = ROOT / "README.md"


@pytest.fixture
def commander(tmp_path):
    started = Commander(tmp_path, {"M3SHD_COMMANDER_PIPELINE_INJECT_LIMIT": str(INJECT_LIMIT)})
    yield started
    started.stop()


def client_env(cmd) -> dict:
    return cmd.env | {"M3SHD_CLIENT_URL": cmd.url, "M3SHD_CLIENT_TOKEN": cmd.admin_token}


def wait_pipeline(cmd, pipeline_id: int, timeout: float = 40) -> dict:
    return wait_until(lambda: (p := cmd.api.get_pipeline(pipeline_id))["state"] != "running" and p, timeout,
                      what=f"pipeline {pipeline_id} to finish")


def run_pipeline(cmd, steps: list[dict], timeout: float = 40) -> dict:
    submitted = cmd.api.submit_pipeline({"steps": steps})
    assert submitted["state"] == "running"
    return wait_pipeline(cmd, submitted["id"], timeout)


def states(pipeline: dict) -> dict[str, str]:
    return {s["key"]: s["state"] for s in pipeline["steps"]}


def step(pipeline: dict, key: str) -> dict:
    return next(s for s in pipeline["steps"] if s["key"] == key)


def test_the_readmes_pipeline_example_exports_and_verifies_the_pipelines_own_chain(commander, spawn_n0d3, tmp_path):
    """The README's commands, run as a newcomer runs them: after the two tasks of its first section."""
    spawn_n0d3("alpha")
    for prompt in ("Write a haiku about meshes", "Summarise RFC 9110"):
        commander.wait_task(commander.api.submit_task(prompt)["id"])
    section = README.read_text().split("## Pipelines and provenance", 1)[1]
    commands = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    env = client_env(commander)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # as after `source .venv/bin/activate`
    done = subprocess.run(["bash", "-euc", commands], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    pipeline = commander.api.get_pipeline(1)
    chain = json.loads((tmp_path / "chain.json").read_text())
    assert [link["task_id"] for link in chain["links"]] == [s["task_id"] for s in pipeline["steps"]] == [3, 4]
    assert done.stdout.splitlines()[-1] == "chain verified"


def test_a_linear_pipeline_from_the_cli_passes_each_output_on(commander, spawn_n0d3):
    spawn_n0d3("alpha")
    definition = {"name": "digest", "steps": [
        {"key": "research", "prompt": "list meshes"},
        {"key": "summarize", "prompt": "summarize: {{ steps.research.output }}", "depends_on": ["research"]},
        {"key": "notify", "prompt": "send {{steps.summarize.output}}", "depends_on": [{"step": "summarize"}]},
    ]}
    done = subprocess.run([sys.executable, "-m", "m3shd", "pipeline", "submit", "-", "--json"], env=client_env(commander),
                          input=json.dumps(definition), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    submitted = json.loads(done.stdout)
    assert [s["key"] for s in submitted["steps"]] == ["research", "summarize", "notify"]
    assert states(submitted) == {"research": "queued", "summarize": "blocked", "notify": "blocked"}

    finished = wait_pipeline(commander, submitted["id"])
    assert finished["state"] == "succeeded" and finished["error"] is None
    assert step(finished, "notify")["output"] == "echo: send echo: summarize: echo: list meshes"
    shown = m3shd("pipeline", "show", str(submitted["id"]), env=client_env(commander)).stdout
    assert f"pipeline {submitted['id']} digest: succeeded" in shown
    assert "← summarize" in shown and shown.count("succeeded") == 4


def test_fan_out_and_fan_in_waits_for_every_parent(commander, spawn_n0d3):
    spawn_n0d3("alpha", slots=2)
    spawn_n0d3("beta", slots=2)
    researchers = ["r1", "r2", "r3"]
    finished = run_pipeline(commander, [
        {"key": "plan", "prompt": "plan"},
        *({"key": key, "prompt": f"{key} on {{{{ steps.plan.output }}}}", "depends_on": ["plan"]} for key in researchers),
        {"key": "writer", "prompt": " | ".join(f"{{{{ steps.{key}.output }}}}" for key in researchers),
         "depends_on": researchers},
    ])
    assert finished["state"] == "succeeded"
    assert step(finished, "writer")["output"] == "echo: " + " | ".join(f"echo: {key} on echo: plan" for key in researchers)
    tasks = {s["key"]: commander.api.get_task(s["task_id"]) for s in finished["steps"]}
    assert tasks["writer"]["started_at"] >= max(tasks[key]["finished_at"] for key in researchers)
    assert all(tasks[key]["started_at"] >= tasks["plan"]["finished_at"] for key in researchers)
    assert {tasks["writer"]["pipeline_id"]} == {finished["id"]} and tasks["writer"]["step_key"] == "writer"

    kinds = [(e["kind"], e["data"].get("step"), e["data"].get("state")) for e in sse_events(commander, until="pipeline.succeeded")]
    assert ("pipeline.submitted", None, None) in kinds
    assert ("pipeline.step", "writer", "queued") in kinds and ("pipeline.step", "writer", "succeeded") in kinds
    assert kinds.index(("pipeline.step", "writer", "queued")) > max(
        kinds.index(("pipeline.step", key, "succeeded")) for key in researchers)


def test_a_failed_step_skips_its_descendants_unless_the_edge_allows_failure(commander, spawn_n0d3, tmp_path):
    spawn_n0d3("alpha", slots=2)
    definition = tmp_path / "failing.json"
    definition.write_text(json.dumps({"steps": [
        {"key": "bad", "prompt": "[fail] try", "max_attempts": 1},
        {"key": "child", "prompt": "use {{ steps.bad.output }}", "depends_on": ["bad"]},
        {"key": "grandchild", "prompt": "more", "depends_on": ["child"]},
        {"key": "tolerant", "prompt": "bad was {{ steps.bad.state }}: {{ steps.bad.error }}",
         "depends_on": [{"step": "bad", "allow_failure": True}]},
        {"key": "after_skip", "prompt": "child was {{ steps.child.state }}",
         "depends_on": [{"step": "child", "allow_failure": True}]},
    ]}))
    done = m3shd("pipeline", "submit", str(definition), "--wait", "--timeout", "40", "--json",
                 env=client_env(commander), check=False)
    assert done.returncode == 1, done.stderr  # waited, and the pipeline did not succeed
    finished = json.loads(done.stdout)
    assert finished["error"] == "steps that did not succeed: bad, child, grandchild"
    assert states(finished) == {"bad": "failed", "child": "skipped", "grandchild": "skipped",
                                "tolerant": "succeeded", "after_skip": "succeeded"}
    assert finished["state"] == "failed"
    assert step(finished, "child")["error"] == "skipped: parent step bad did not succeed"
    assert step(finished, "grandchild")["error"] == "skipped: parent step child did not succeed"
    assert step(finished, "tolerant")["output"] == "echo: bad was failed: fake failure"
    assert step(finished, "after_skip")["output"] == "echo: child was skipped"
    assert commander.api.get_task(step(finished, "child")["task_id"])["attempt"] == 0  # never ran


def test_cancelling_a_pipeline_stops_the_running_step_and_the_blocked_ones(commander, spawn_n0d3):
    node = spawn_n0d3("alpha")
    submitted = commander.api.submit_pipeline({"steps": [
        {"key": "slow", "prompt": "[sleep=60] think"},
        {"key": "next", "prompt": "then", "depends_on": ["slow"]},
    ]})
    slow_id = step(submitted, "slow")["task_id"]
    commander.wait_task(slow_id, states=("leased",))
    wait_until(lambda: "task %d attempt 1: started" % slow_id in node.process.text(), 10, what="the step to start")

    cancelled = commander.api.cancel_pipeline(submitted["id"])
    assert cancelled["state"] == "cancelled" and cancelled["error"] == "pipeline cancelled"
    assert states(cancelled) == {"slow": "cancelled", "next": "cancelled"}
    wait_until(lambda: f"task {slow_id} attempt 1: cancelled" in node.process.text(), 10,
               what="the N0D3 to stop the running step")
    assert wait_until(lambda: (n := node.node()) and n["open_slots"] == 1 and n, 10, what="the slot to free up")
    with pytest.raises(CommanderError) as refused:
        commander.api.cancel_pipeline(submitted["id"])
    assert refused.value.status == 409 and refused.value.code == "already_final"


def test_a_step_whose_last_lease_expires_skips_its_children(commander, spawn_n0d3):
    node = spawn_n0d3("alpha")
    submitted = commander.api.submit_pipeline({"steps": [
        {"key": "doomed", "prompt": "[sleep=60] work", "max_attempts": 1},
        {"key": "after", "prompt": "then", "depends_on": ["doomed"]},
    ]})
    commander.wait_task(step(submitted, "doomed")["task_id"], states=("leased",))
    node.process.kill9()  # no result, no heartbeats: the lease runs out (2 s in tests)
    finished = wait_pipeline(commander, submitted["id"], timeout=20)
    assert states(finished) == {"doomed": "failed", "after": "skipped"} and finished["state"] == "failed"
    assert "lease expired" in step(finished, "doomed")["error"]


def test_cancelling_one_step_skips_what_depends_on_it(commander):
    submitted = commander.api.submit_pipeline({"steps": [
        {"key": "a", "prompt": "a"}, {"key": "b", "prompt": "b", "depends_on": ["a"]},
    ]})  # no N0D3: `a` stays queued until cancelled
    commander.api.cancel_task(step(submitted, "a")["task_id"])
    after = commander.api.get_pipeline(submitted["id"])
    assert states(after) == {"a": "cancelled", "b": "skipped"} and after["state"] == "failed"


def test_a_parent_output_over_the_limit_is_cut_with_a_marker(commander, spawn_n0d3):
    spawn_n0d3("alpha")
    long_prompt = "x" * 300
    finished = run_pipeline(commander, [
        {"key": "long", "prompt": long_prompt},
        {"key": "short", "prompt": "[{{ steps.long.output }}]", "depends_on": ["long"]},
    ])
    parent_output = "echo: " + long_prompt
    expected_prompt = f"[{parent_output[:INJECT_LIMIT]}\n[m3shd: cut to {INJECT_LIMIT} of {len(parent_output)} characters]]"
    child = commander.api.get_task(step(finished, "short")["task_id"])
    assert child["prompt"] == expected_prompt
    assert child["output"] == "echo: " + expected_prompt


BAD_GRAPHS = [
    ("a cycle", [{"key": "a", "prompt": "x", "depends_on": ["b"]}, {"key": "b", "prompt": "y", "depends_on": ["a"]}],
     "the steps form a cycle: a → b → a"),
    ("a self-dependency", [{"key": "a", "prompt": "x", "depends_on": ["a"]}], "the steps form a cycle: a → a"),
    ("an unknown parent", [{"key": "a", "prompt": "x", "depends_on": ["ghost"]}],
     "step 'a' depends on unknown step 'ghost'"),
    ("a duplicate key", [{"key": "a", "prompt": "x"}, {"key": "a", "prompt": "y"}], "duplicate step key 'a'"),
    ("an empty prompt", [{"key": "a", "prompt": "  \n "}], "steps.0.prompt: Value error, a prompt needs some text"),
    ("a parent named twice", [{"key": "a", "prompt": "x"}, {"key": "b", "prompt": "y", "depends_on": ["a", "a"]}],
     "step 'b' names the same parent twice"),
    ("a template naming a non-parent", [{"key": "a", "prompt": "x"}, {"key": "b", "prompt": "{{ steps.a.output }}"}],
     "step 'b' uses {{ steps.a.output }} but does not depend on 'a'"),
    ("too many steps", [{"key": f"s{i}", "prompt": "x"} for i in range(51)], "steps: List should have at most 50 items"),
    ("no steps", [], "steps: List should have at least 1 item"),
    ("a bad key", [{"key": "a b", "prompt": "x"}], "steps.0.key: String should match pattern"),
]


def test_bad_graphs_are_refused_with_the_problem_named_and_nothing_stored(commander):
    for what, steps, message in BAD_GRAPHS:
        with pytest.raises(CommanderError) as refused:
            commander.api.submit_pipeline({"steps": steps})
        assert refused.value.status == 400, what
        assert message in refused.value.message, f"{what}: {refused.value.message}"
    assert commander.api.list_tasks() == []
    with pytest.raises(CommanderError) as missing:
        commander.api.get_pipeline(1)
    assert missing.value.status == 404


def test_pipeline_routes_need_their_permissions(commander):
    read_only = ApiClient(commander.url, commander.token("reader", permissions="tasks:read"))
    with pytest.raises(CommanderError) as refused:
        read_only.submit_pipeline({"steps": [{"key": "a", "prompt": "x"}]})
    assert refused.value.status == 403
    submitted = commander.api.submit_pipeline({"steps": [{"key": "a", "prompt": "x"}]})
    assert read_only.get_pipeline(submitted["id"])["steps"][0]["key"] == "a"
    with pytest.raises(CommanderError) as refused:
        read_only.cancel_pipeline(submitted["id"])
    assert refused.value.status == 403
