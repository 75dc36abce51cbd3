"""The bench: the profiles m3shd ships (commander/agents/bench/) are the twenty promised, each a
real specialist prompt: it loads and validates, has the four sections with something in each,
is long enough to be more than a one-liner, differs from every other, names only tools Claude
Code has and models the runners can price, and the whole bench loads into a Commander with no
agent broken."""

from __future__ import annotations

import itertools
import re

import pytest

from commander.agents import loader
from commander.agents.profile import BENCH_SECTIONS
from n0d3.runners import price_usd

BENCH = {
    "general", "security-auditor", "code-reviewer", "researcher", "infrastructure-ops", "ui-ux-reviewer",
    "test-engineer", "technical-writer", "data-analyst", "release-manager", "incident-responder",
    "performance-engineer", "dependency-auditor", "accessibility-reviewer", "api-designer", "refactoring-specialist",
    "database-engineer", "prompt-engineer", "product-writer", "summarizer",
}
# Claude Code's tools (a rule narrows one: `Bash(git diff:*)`); MCP tools are mcp__server__tool.
CLAUDE_CODE_TOOLS = {"Agent", "Bash", "Edit", "Glob", "Grep", "LS", "MultiEdit", "NotebookEdit", "NotebookRead",
                     "Read", "Task", "TodoWrite", "WebFetch", "WebSearch", "Write"}
MIN_PROMPT_WORDS = 150
MIN_SECTION_CHARS = 60
MAX_SHARED_LINES = 0.2  # of two prompts' distinct lines, at most this share in common

SHIPPED = loader.scan([loader.BENCH])


def test_the_bench_is_the_twenty_promised():
    assert set(SHIPPED) == BENCH, f"missing: {sorted(BENCH - set(SHIPPED))}; unexpected: {sorted(set(SHIPPED) - BENCH)}"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_profile_loads_and_is_a_real_specialist_prompt(name):
    file = SHIPPED[name]
    assert file.error is None, file.error
    profile = file.profile
    assert profile.title and len(profile.description) >= 30, "a title and a one-sentence description"
    prompt = profile.system_prompt
    assert len(prompt.split()) >= MIN_PROMPT_WORDS, f"{len(prompt.split())} words: more than a one-liner, please"
    headings = [line.strip() for line in prompt.splitlines() if line.startswith("## ")]
    assert [h for h in headings if h in BENCH_SECTIONS] == list(BENCH_SECTIONS), headings
    for section, body in sections(prompt).items():
        assert len(body.strip()) >= MIN_SECTION_CHARS, f"{section} says almost nothing"
    for tool in (*profile.allowed_tools, *profile.disallowed_tools):
        base = tool.split("(")[0]
        assert base in CLAUDE_CODE_TOOLS or base.startswith("mcp__"), f"{tool}: not a Claude Code tool"
    for model in filter(None, (profile.model, *profile.allowed_models)):
        assert price_usd(model, dict.fromkeys(("input_tokens", "output_tokens", "cache_read_tokens",
                                               "cache_write_tokens"), 1)) is not None, f"{model}: no price known"


def sections(prompt: str) -> dict[str, str]:
    parts = re.split(r"^(## .+)$", prompt, flags=re.MULTILINE)
    return {heading.strip(): body for heading, body in zip(parts[1::2], parts[2::2]) if heading.strip() in BENCH_SECTIONS}


def test_no_two_prompts_are_alike():
    def lines(name: str) -> set[str]:
        return {line.strip() for line in SHIPPED[name].profile.system_prompt.splitlines()
                if line.strip() and line.strip() not in BENCH_SECTIONS}

    loaded = [name for name in SHIPPED if SHIPPED[name].profile]
    for first, second in itertools.combinations(sorted(loaded), 2):
        a, b = lines(first), lines(second)
        assert len(a & b) <= MAX_SHARED_LINES * min(len(a), len(b)), f"{first} and {second} share {sorted(a & b)}"


def test_the_summarizer_runs_on_a_haiku_model():
    assert "haiku" in (SHIPPED["summarizer"].profile.model or "")


def test_the_whole_bench_loads_into_a_commander_with_none_broken(client, bearer):
    listed = client.get("/api/agents", headers=bearer("mobile")).get_json()["agents"]
    assert {agent["name"] for agent in listed} == BENCH
    assert [agent["name"] for agent in listed if agent["state"] != "ready"] == []
