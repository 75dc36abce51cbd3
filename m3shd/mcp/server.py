"""The MCP server: the Commander API as tools and resources, with its errors as tool errors.

Tools are plain functions (the SDK runs them on a worker thread, so the blocking requests
client is fine); each forwards one call to the Commander and reads the answer into a model
from `m3shd.mcp.models`, which the SDK publishes as the tool's output schema.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Literal

import anyio.from_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from m3shd import __version__
from m3shd.client import ApiClient
from m3shd.errors import CommanderError, CommanderUnreachable, CommanderUntrusted
from m3shd.images import read as read_image
from m3shd.mcp.models import (
    Agent, AgentList, Memory, MemoryList, Node, NodeList, Pipeline, SpendReport, StepIn, Task, TaskList,
)
from m3shd.wire import TaskState

INSTRUCTIONS = """\
M3SHD runs Claude tasks on the user's own machines (Macs, Raspberry Pi boards). dispatch_task
queues a prompt and returns at once; wait_for_task blocks (bounded) until it is final; a task
that needs approval waits in awaiting_approval until approve_task or reject_task. A task runs as
an agent: a specialist profile (system prompt, model, tools) such as code-reviewer or
researcher; list_agents shows them and get_agent one in full; omit `agent` for general.
create_pipeline submits several steps that feed one another, each an ordinary task; get_pipeline
follows it. list_nodes shows which machines can take work (free slots, health). Every task costs
real tokens: spend_report says what was spent and how much of each daily cap is left. Agents
remember: query_memory searches what an agent (or `shared`, every agent) remembers, store_memory
adds to it; relevant memories are added to an agent's task prompts by themselves."""

# The longest one wait_for_task call blocks: MCP clients time out requests that run for many
# minutes, and a model that wants longer calls again (the result says `final: false`).
MAX_WAIT = 300
# While waiting, a progress notification this often: Claude Code shows its message and counts a
# tool that sends none for a while as hung.
PROGRESS_EVERY = 10.0

TaskId = Annotated[int, Field(ge=1, description="the task's id, as returned by dispatch_task or list_tasks")]
Capabilities = Annotated[list[str], Field(
    max_length=64, description="labels such as `gpu` or key=value pairs such as `arch=arm64`, matched exactly")]
# Plain strings: pydantic names a Literal's choices by repr, and a refusal should say 'queued'.
StateFilter = Literal[tuple(state.value for state in TaskState)]  # type: ignore[valid-type]

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
SPEND_DAYS = {"today": 1, "week": 7, "month": 30}
MemoryScope = Annotated[str, Field(min_length=1, max_length=40,
                                   description="an agent's name (list_agents), or `shared` for every agent's memories")]
CHANGES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
STOPS = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)


def explain(exc: CommanderError | CommanderUnreachable) -> str:
    """What went wrong, said so that the person reading it knows what to do next."""
    if isinstance(exc, CommanderUntrusted):
        return f"{exc}."
    if isinstance(exc, CommanderUnreachable):
        return (f"{exc}. Is the Commander running (`m3shd up` starts one), and is M3SHD_CLIENT_URL "
                f"in this MCP server's environment its address?")
    if exc.status == 401:
        return (f"the Commander refused this MCP server's token: {exc.message}. Set M3SHD_CLIENT_TOKEN in the "
                f"server's environment to a valid API token (`m3shd token create claude --role mobile`).")
    if exc.code == "approver_is_submitter":
        return (f"the Commander refused: {exc.message}. A person approves it on the dashboard, or with "
                f"`m3shd task approve` and a token of their own.")
    if exc.status == 403:
        return (f"the Commander refused: {exc.message}. Ask an admin for a token that has it "
                f"(`m3shd token create claude --role mobile` covers tasks and nodes).")
    if exc.status == 404:
        if exc.code == "unknown_agent":
            return exc.message
        return f"{exc.message} (list_tasks and list_nodes show the ids there are)"
    if exc.status >= 500:
        return f"the Commander failed ({exc.status} {exc.code}): {exc.message}; its log says more"
    return exc.message


@contextmanager
def commander_errors(error: type[Exception] = ToolError) -> Iterator[None]:
    """Turn the Commander's errors into `error` (a tool error by default) with `explain`'s message:
    the SDK shows its text to the model, and nothing reaches it as a traceback."""
    try:
        yield
    except (CommanderError, CommanderUnreachable) as exc:
        raise error(explain(exc)) from None


def task_tool(call: Callable[[int], dict]) -> Callable[[int], Task]:
    """A tool that calls the Commander about one task and returns the task as it is after."""

    def tool(task_id: TaskId) -> Task:
        with commander_errors():
            return Task.model_validate(call(task_id))

    return tool


def build_server(client: ApiClient) -> MCPServer:
    server = MCPServer("m3shd", title="M3SHD mesh", version=__version__, instructions=INSTRUCTIONS)
    for name, call, hints, description in (
        ("get_task", client.get_task, READ_ONLY,
         "One task as it stands now: state, node, output or error, tokens and cost."),
        ("cancel_task", client.cancel_task, STOPS,
         "Cancel a task that is not final yet; a running one is stopped on its node within seconds."),
        ("approve_task", client.approve_task, CHANGES,
         "Approve a task in awaiting_approval: it joins the queue and runs."),
    ):
        server.add_tool(task_tool(call), name=name, description=description, annotations=hints)

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True))
    def dispatch_task(
        prompt: Annotated[str, Field(min_length=1, max_length=200_000, description="what Claude should do")],
        requires: Capabilities = [],
        prefer: Capabilities = [],
        priority: Annotated[int, Field(ge=-100, le=100, description="higher runs first; 0 is normal")] = 0,
        approval_required: Annotated[bool, Field(
            description="hold it in awaiting_approval until someone approves it")] = False,
        model: Annotated[str | None, Field(
            min_length=1, max_length=128,
            description="Claude model id; omit for the agent's default (else the node's)")] = None,
        agent: Annotated[str | None, Field(
            min_length=1, max_length=40, description="the agent it runs as (list_agents); omit for general")] = None,
        images: Annotated[list[str], Field(max_length=20, description=(
            "paths of image files on the machine this MCP server runs on (JPEG, PNG, GIF or WebP) for Claude "
            "to see with the prompt"))] = [],
    ) -> Task:
        """Queue a prompt for one of the mesh's machines to run with Claude. Returns at once with the
        task (state queued, or awaiting_approval); follow it with wait_for_task or get_task.
        `agent`: the specialist it runs as (its system prompt, model and tools; list_agents);
        `requires`: capabilities a node must have (the task waits until one can run it);
        `prefer`: capabilities that make a node a better choice but are not required;
        `images`: image files, uploaded to the Commander, that the node fetches for Claude."""
        try:
            files = [read_image(path) for path in images]
        except (OSError, ValueError) as exc:
            raise ToolError(f"cannot send that image: {exc}") from None
        with commander_errors():
            hashes = [client.upload_attachment(data, media_type)["sha256"] for data, media_type in files]
            return Task.model_validate(client.submit_task(
                prompt, requires=requires or None, prefer=prefer or None, priority=priority or None,
                approval_required=approval_required or None, model=model, agent=agent,
                attachments=hashes or None))

    @server.tool(annotations=READ_ONLY)
    def wait_for_task(
        task_id: TaskId,
        ctx: Context,
        timeout_seconds: Annotated[float, Field(
            ge=0, le=MAX_WAIT, description="longest to wait; Claude Desktop gives up on a tool after 60 s")] = 45,
    ) -> Task:
        """Wait until a task is final (succeeded, failed, cancelled or skipped), at most `timeout_seconds`, and
        return it. If `final` is false it is still running or queued (see waiting_reason): call again to
        keep waiting. A task in awaiting_approval waits for approve_task, not for time."""
        started = time.monotonic()

        def report(task: dict) -> None:
            why = f": {task['waiting_reason']}" if task["waiting_reason"] else ""
            said = f"task {task_id} is {task['state']}{why}"
            anyio.from_thread.run(ctx.report_progress, time.monotonic() - started, timeout_seconds, said)

        with commander_errors():
            return Task.model_validate(client.wait_task(task_id, timeout_seconds, on_poll=report, every=PROGRESS_EVERY))

    @server.tool(annotations=READ_ONLY)
    def list_tasks(
        state: StateFilter | None = None,
        node_id: Annotated[int | None, Field(ge=1, description="only tasks this node ran or runs")] = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 20,
        before_id: Annotated[int | None, Field(ge=1, description="page: only tasks older than this id")] = None,
    ) -> TaskList:
        """Tasks, newest first, without their output (get_task has it); filter by state or node."""
        with commander_errors():
            return TaskList.model_validate({"tasks": client.list_tasks(
                state=state, node_id=node_id, limit=limit, before_id=before_id)})

    @server.tool(annotations=STOPS)
    def reject_task(
        task_id: TaskId,
        reason: Annotated[str | None, Field(max_length=1000, description="shown to whoever submitted it")] = None,
    ) -> Task:
        """Reject a task in awaiting_approval: it is cancelled and never runs."""
        with commander_errors():
            return Task.model_validate(client.reject_task(task_id, reason))

    @server.tool(annotations=READ_ONLY)
    def list_nodes() -> NodeList:
        """The mesh's machines with capacity and health: state, slots, running and open slots, runner,
        capabilities, seconds since last heartbeat, circuit breaker (open means failing: it gets no work)
        and reputation (mean reward in [0, 1] of recent attempts, and the scheduler's score)."""
        with commander_errors():
            return NodeList.model_validate({"nodes": client.list_nodes()})

    @server.tool(annotations=READ_ONLY)
    def list_agents() -> AgentList:
        """The agents a task can run as: each specialist's name, what it is for, its model, tools and required
        capabilities, and how its recent tasks went (queued, running, success rate, median duration, cost)."""
        with commander_errors():
            return AgentList.model_validate({"agents": client.list_agents()})

    @server.tool(annotations=READ_ONLY)
    def get_agent(name: Annotated[str, Field(min_length=1, max_length=40, description="as list_agents names it")]
                  ) -> Agent:
        """One agent in full: its system prompt, model, tools, required capabilities and recent results."""
        with commander_errors():
            return Agent.model_validate(client.get_agent(name))

    @server.tool(annotations=READ_ONLY)
    def spend_report(
        period: Annotated[Literal["today", "week", "month"], Field(
            description="today, the last 7 or the last 30 local days")] = "today",
        by: Annotated[Literal["day", "agent", "model", "node", "capability", "submitter"] | None, Field(
            description="group the spend by this (default: agent today, day otherwise)")] = None,
    ) -> SpendReport:
        """What the mesh's Claude runs cost (every attempt that used tokens, retries included), grouped
        and totalled, with every daily cap in force: today's spend against it, what is left, and
        whether it holds new work. Needs a token with spend:read."""
        days = SPEND_DAYS[period]
        with commander_errors():
            report = client.spend(by or ("agent" if days == 1 else "day"), days)
            caps = client.spend_caps()
        return SpendReport.model_validate({**report, "spent_today_usd": caps["spent_usd"], "caps": caps["caps"]})

    @server.tool(annotations=READ_ONLY)
    def query_memory(
        agent: MemoryScope,
        query: Annotated[str | None, Field(min_length=1, max_length=2000, description=(
            "words to look for (whole words, lightly stemmed); omit for the newest memories"))] = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 10,
    ) -> MemoryList:
        """What an agent remembers (learned from [REMEMBER] blocks in its answers, or stored): with `query`,
        the memories sharing words with it, best first; without, the newest. Needs memory:read."""
        with commander_errors():
            return MemoryList.model_validate({"memories": client.memories(agent, query, limit)})

    @server.tool(annotations=CHANGES)
    def store_memory(
        agent: MemoryScope,
        value: Annotated[str, Field(min_length=1, max_length=100_000, description="what to remember")],
        key: Annotated[str | None, Field(min_length=1, max_length=80, description=(
            "a name for it; storing a key the agent has already replaces its value"))] = None,
        tags: Annotated[list[str], Field(max_length=10, description="words to group memories by")] = [],
    ) -> Memory:
        """Store a memory for an agent (or `shared`): later tasks of that agent whose prompts are about
        the same things get it in their prompt. Needs memory:write."""
        with commander_errors():
            return Memory.model_validate(client.remember(agent, value, key, tags or None))

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True))
    def create_pipeline(
        steps: Annotated[list[StepIn], Field(min_length=1, max_length=50)],
        name: Annotated[str, Field(max_length=128)] = "",
    ) -> Pipeline:
        """Submit a graph of steps in one call. Each step is a task that starts once its parents
        (`depends_on`) are final: queued if they succeeded (or their edge allows failure), otherwise
        skipped. A step's prompt can quote a parent's answer with {{ steps.KEY.output }}. Returns at
        once; follow it with get_pipeline, or wait_for_task on a step's task_id."""
        definition = {"name": name, "steps": [step.model_dump(exclude_defaults=True) for step in steps]}
        with commander_errors():
            return Pipeline.model_validate(client.submit_pipeline(definition))

    @server.tool(annotations=READ_ONLY)
    def get_pipeline(pipeline_id: Annotated[int, Field(ge=1)]) -> Pipeline:
        """A pipeline's state and each step's state, node, output or error, in dependency order."""
        with commander_errors():
            return Pipeline.model_validate(client.get_pipeline(pipeline_id))

    @server.resource("m3shd://tasks/{task_id}", mime_type="application/json",
                     description="One task: state, node, output or error, tokens and cost.")
    def task_resource(task_id: int) -> str:
        with commander_errors(ResourceError):
            return Task.model_validate(client.get_task(task_id)).model_dump_json(indent=2)

    @server.resource("m3shd://nodes/{node_id}", mime_type="application/json",
                     description="One node: capacity, health, breaker and reputation.")
    def node_resource(node_id: int) -> str:
        with commander_errors(ResourceError):
            return Node.model_validate(client.get_node(node_id)).model_dump_json(indent=2)

    return server
