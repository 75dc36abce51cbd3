"""What the tools return: one pydantic model per result shape, read from the Commander's JSON;
and the steps create_pipeline takes.

The models name only what a model needs to act on and ignore any other field, so a newer
Commander that adds fields does not break an older MCP server.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from m3shd.wire import FINAL_STATES


class View(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TaskUsage(View):
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int


class TaskSummary(View):
    id: int
    state: str = Field(description="blocked (a pipeline step waiting for its parents), awaiting_approval, queued, "
                                   "leased (running), succeeded, failed, cancelled or skipped (a parent it needed "
                                   "did not succeed)")
    prompt: str
    priority: int
    requires: list[str] = Field(description="capabilities a node must have to run it")
    node_id: int | None = Field(description="the node running it or that ran it last")
    cost_usd: float | None
    created_at: float = Field(description="Unix time")
    waiting_reason: str | None = Field(None, description="why a queued task is not running yet")
    final: bool = Field(description="true once the task is succeeded, failed, cancelled or skipped: nothing more "
                                    "will change")

    # A plain field filled from `state`, not a computed one: the SDK publishes the input side
    # of the model as the output schema, where a computed field would not appear.
    @model_validator(mode="before")
    @classmethod
    def mark_final(cls, data):
        if isinstance(data, dict) and "state" in data:
            return {**data, "final": data["state"] in FINAL_STATES}
        return data


class Task(TaskSummary):
    prefer: list[str] = Field(description="capabilities that make a node a better choice")
    model: str | None = Field(description="Claude model it runs on (null: the node's default)")
    agent: str | None = Field(None, description="the agent it runs as (list_agents)")
    agent_version: int | None = Field(None, description="which version of that agent's profile")
    approval_required: bool
    decided_by: str | None = Field(description="who approved or rejected it")
    attempt: int
    max_attempts: int
    runner: str | None = Field(description="claude-cli or anthropic-sdk, once a node ran it")
    output: str | None = Field(description="the answer, once succeeded")
    error: str | None = Field(description="why it failed or was rejected")
    usage: TaskUsage
    started_at: float | None
    finished_at: float | None
    duration_ms: int | None


class TaskList(View):
    tasks: list[TaskSummary] = Field(description="newest first")


class Breaker(View):
    state: str = Field(description="closed (healthy), open (failing: gets no work until `until`) or half_open (one probe)")
    failures: int = Field(description="infrastructure failures in a row")
    until: float | None = Field(description="Unix time an open breaker lets a probe through")


class Reputation(View):
    mean: float = Field(description="decayed mean reward of recent attempts in [0, 1]; higher is better")
    count: float = Field(description="decayed number of rewarded attempts (0: untried)")
    score: float | None = Field(description="the scheduler's score for this node now; null when it can take no task")


class Node(View):
    id: int
    name: str
    state: str = Field(description="active, paused, draining, disabled, lost or offline")
    capabilities: list[str]
    slots: int = Field(description="tasks it runs at once")
    running: int = Field(description="tasks leased to it now")
    open_slots: int = Field(description="free slots, as of its last heartbeat")
    runner: str | None = Field(description="claude-cli or anthropic-sdk; null when it has none")
    problem: str | None = Field(description="what is wrong when it has no runner")
    heartbeat_age: float = Field(description="seconds since it was last heard from")
    breaker: Breaker
    reputation: Reputation


class NodeList(View):
    nodes: list[Node]


class AgentStats(View):
    queued: int
    running: int
    window: int = Field(description="its latest finished tasks counted below (at most 100)")
    succeeded: int
    failed: int
    success_rate: float | None = Field(description="succeeded / window; null before any finished")
    median_duration_ms: int | None
    cost_usd: float = Field(description="what those finished tasks cost")


class AgentSummary(View):
    name: str = Field(description="pass it as dispatch_task's `agent`")
    title: str
    description: str = Field(description="what it is for")
    state: str = Field(description="ready; broken (its profile file does not parse: see error); deleted")
    error: str | None
    version: int = Field(description="its current profile version")
    model: str | None = Field(description="its default model (null: the node's)")
    allowed_models: list[str] = Field(description="models a task may ask for (empty: any)")
    requires: list[str] = Field(description="capabilities a node must have to run it")
    allowed_tools: list[str] = Field(description="Claude Code tools it may use without asking")
    disallowed_tools: list[str] = Field(description="tools it may not use at all")
    max_turns: int | None
    stats: AgentStats


class Agent(AgentSummary):
    system_prompt: str | None = Field(description="what it is told before every task")


class AgentList(View):
    agents: list[AgentSummary]


# --- pipelines (issue 5) -----------------------------------------------------------------------

StepKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="letters, digits, _ and -")]


class Parent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: StepKey
    allow_failure: bool = Field(False, description="run even if that parent fails, is skipped or cancelled")


class StepIn(BaseModel):
    """One step of a pipeline to create: an ordinary task that starts once its parents are final."""
    model_config = ConfigDict(extra="forbid")
    key: StepKey
    prompt: str = Field(min_length=1, max_length=200_000, description=(
        "may quote a parent's result: {{ steps.KEY.output }}, {{ steps.KEY.error }}, {{ steps.KEY.state }}"))
    requires: list[str] = Field([], description="capabilities a node must have")
    prefer: list[str] = Field([], description="capabilities that make a node a better choice")
    priority: int = Field(0, ge=-100, le=100)
    model: str | None = Field(None, description="Claude model id; omit for the agent's (or the node's) default")
    agent: str | None = Field(None, description="the agent it runs as (list_agents); omit for general")
    depends_on: list[StepKey | Parent] = Field([], description="parent keys, or {step, allow_failure}")


class ParentOut(View):
    step: str
    task_id: int
    allow_failure: bool


class Step(View):
    key: str
    task_id: int = Field(description="get_task and cancel_task work on it")
    state: str = Field(description="blocked (parents not final), queued, leased, succeeded, failed, cancelled "
                                   "or skipped (a parent it needed did not succeed)")
    depends_on: list[ParentOut]
    node_id: int | None
    attempt: int
    output: str | None
    error: str | None


class Pipeline(View):
    id: int
    name: str
    state: str = Field(description="running, succeeded (every step did), failed or cancelled")
    error: str | None = Field(description="which steps did not succeed")
    created_at: float
    finished_at: float | None
    steps: list[Step] = Field(description="in dependency order: every step after its parents")


# --- spend (issue 20) --------------------------------------------------------------------------

class SpendFigures(View):
    attempts: int = Field(description="attempts that spent tokens (retries and failures count too)")
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float


class SpendRow(SpendFigures):
    day: str | None = None
    agent: str | None = None
    model: str | None = None
    node: str | None = None
    capability: str | None = Field(None, description="the tasks' required capabilities, comma-separated")
    submitter: str | None = None


class SpendCap(View):
    scope: str = Field(description="all (the whole mesh), agent, submitter or node")
    name: str
    cap_usd: float = Field(description="USD a local day")
    spent_usd: float = Field(description="spent today")
    left_usd: float
    held: bool = Field(description="reached: its new work waits until midnight (or is refused)")


class SpendReport(View):
    first_day: str
    last_day: str
    time_zone: str = Field(description="the mesh's days are local days of this zone")
    group: list[str]
    rows: list[SpendRow]
    total: SpendFigures
    spent_today_usd: float
    caps: list[SpendCap] = Field(description="every daily cap in force, with today's spend and what is left")


class Memory(View):
    id: int
    scope: str = Field(description="the agent whose memory it is, or `shared` (every agent's)")
    key: str | None
    value: str
    tags: list[str]
    source_task: int | None = Field(description="the task whose [REMEMBER] block stored it")
    updated_at: float = Field(description="Unix time")
    use_count: int = Field(description="how many task prompts were given it")


class MemoryList(View):
    memories: list[Memory]
