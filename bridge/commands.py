"""What a text asks for, and the reply: a task for plain text, or one of a few short commands.

A message is a command only when it fits one exactly (`status`, `task 12`, `yes`); a short
message that starts with a command word but does not fit gets that command's usage, and
`/word` is always read as a command. Everything else is a prompt for the mesh, run as the
agent it names with `@reviewer check this diff` (always an agent: an unknown one is answered
with the list), or with `ask reviewer check this diff` when `reviewer` is an agent (otherwise
the whole text is the prompt: "ask my landlord about…" stays a question).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.cursor import State
from bridge.reader import Inbound, normalize_address
from bridge.settings import BridgeSettings
from m3shd.client import ApiClient, CommanderError, CommanderUnreachable
from m3shd.wire import NodeState, TaskState

USAGE = {
    "status": "status: what the mesh is doing",
    "nodes": "nodes: the machines and their free slots",
    "task": "task N: where task N is, with its answer",
    "cancel": "cancel N: stop task N",
    "yes": "yes (or yes N): run the task waiting for your approval",
    "no": "no (or no N): drop it",
    "budget": "budget: today's spend and daily caps; budget set 5: cap the mesh at $5 a day",
    "spend": "spend today (or spend week): what the mesh spent, by agent (or by day)",
    "agents": "agents: the specialists; @NAME your request (or ask NAME your request) runs it as one",
    "remember": "remember SOMETHING: the mesh keeps it and gives it to related tasks",
    "recall": "recall WORDS: what the mesh remembers about them",
    "forget": "forget N: drop memory N",
    "help": "help: this list",
}
HELP = "Text me anything and the mesh works on it. Or:\n" + "\n".join(USAGE.values())
BARE, NUMBERED, ANSWERS = ("status", "nodes", "budget", "agents", "help"), ("task", "cancel", "forget"), ("yes", "no")
MEMORY_SCOPE = "general"  # plain texts run as the general agent: what is remembered by text is its
RECALLED = 5
AT_AGENT = re.compile(r"@([A-Za-z][A-Za-z0-9-]{1,39})(?:\s+(.*))?", re.DOTALL)
ASK_AGENT = re.compile(r"ask\s+([A-Za-z][A-Za-z0-9-]{1,39})[\s,:]+(\S.*)", re.DOTALL | re.IGNORECASE)
SHORT = 3            # words: a message this short that starts with a command word was meant as one
LIVE = (TaskState.AWAITING_APPROVAL, TaskState.QUEUED, TaskState.LEASED)
PAGE = 500
SPEND_DAYS = {"today": 1, "week": 7}
AMOUNT = re.compile(r"\$?(\d{1,6}(?:\.\d{1,2})?)")


@dataclass(frozen=True)
class Command:
    name: str              # a USAGE key, or "prompt", "ask", "budget_set", "usage", "unknown"
    number: int | None = None
    text: str = ""
    agent: str | None = None  # a prompt's agent; for "ask", the word that may name one
    whole: str = ""           # "ask": the whole text, the prompt if that word names no agent
    attachments: tuple[str, ...] = ()  # a prompt's images, by the SHA-256 the Commander stored them under


def _number(word: str) -> int | None:
    word = word.lstrip("#")
    return int(word) if word.isascii() and word.isdigit() and 0 < int(word) < 2**63 else None


def parse(text: str, mention: str = "") -> Command:
    """`mention` (the group chats' "@mesh") may start a one-to-one message too: it is no agent."""
    if mention and text.lower().startswith(mention.lower()):
        text = text[len(mention):].lstrip(" ,:")
    if at := AT_AGENT.fullmatch(text.strip()):
        if not at[2]:
            return Command("usage", text=f"@{at[1]} your request: run it as agent {at[1].lower()}")
        return Command("prompt", text=at[2].strip(), agent=at[1].lower())
    if ask := ASK_AGENT.fullmatch(text.strip()):
        return Command("ask", text=ask[2].strip(), agent=ask[1].lower(), whole=text)
    words = text.split()
    slash = text.startswith("/")
    first = words[0].lstrip("/").lower() if words else ""
    rest = words[1:]
    number = _number(rest[0]) if len(rest) == 1 else None
    if first in BARE and not rest or first in NUMBERED and number or first in ANSWERS and (not rest or number):
        return Command(first, number)
    if first == "budget" and len(rest) == 2 and rest[0].lower() == "set" and (amount := AMOUNT.fullmatch(rest[1])) \
            and float(amount[1]) > 0:
        return Command("budget_set", text=amount[1])
    if first == "spend" and len(rest) == 1 and rest[0].lower() in SPEND_DAYS:
        return Command("spend", text=rest[0].lower())
    if first in ("remember", "recall") and rest:
        return Command(first, text=text.strip().split(None, 1)[1])
    if first in USAGE and (slash or len(words) <= SHORT):
        return Command("usage", text=USAGE[first])
    if slash:
        return Command("unknown", text=first)
    return Command("prompt", text=text)


class Session:
    """Carries out one message's command against the Commander and returns the reply."""

    def __init__(self, client: ApiClient, state: State, settings: BridgeSettings, message: Inbound):
        self.client, self.state, self.settings, self.message = client, state, settings, message

    def reply(self, command: Command) -> str:
        if command.name == "usage":
            return f"Usage: {command.text}. Send help for all commands."
        if command.name == "unknown":
            return f"I don't know /{command.text}. {HELP}"
        if command.name == "help":
            return HELP
        try:
            return getattr(self, command.name)(command)
        except CommanderError as exc:
            if exc.status >= 500:
                raise  # the Commander's trouble, not the request's: the caller retries later
            if exc.status == 404 and command.number:
                return f"There is no {'memory' if command.name == 'forget' else 'task'} {command.number}."
            if exc.code == "unknown_agent":
                return f"{exc.message}. Send agents for what each one does."
            return f"The mesh said no: {exc.message}"

    def ask(self, command: Command) -> str:
        """`ask NAME …`: as that agent if there is one, else the whole text is the prompt."""
        if command.agent in {agent["name"] for agent in self.client.list_agents()}:
            return self.prompt(Command("prompt", text=command.text, agent=command.agent))
        return self.prompt(Command("prompt", text=command.whole))

    def agents(self, command: Command) -> str:
        listed = [agent for agent in self.client.list_agents() if agent["state"] != "deleted"]
        if not listed:
            return "No agents yet."
        lines = [f"@{agent['name']}: {agent['description'] or agent['title']}"
                 + (" (broken: its profile needs fixing)" if agent["state"] == "broken" else "") for agent in listed]
        return "Start a text with @NAME to use one:\n" + "\n".join(lines)

    def prompt(self, command: Command) -> str:
        extra = {"approval_required": True} if self.settings.approval_required else {}
        if command.attachments:
            extra["attachments"] = list(command.attachments)
        # Spend and per-submitter caps count each texter apart: "<the bridge's token> for <them>".
        task = self.client.submit_task(command.text, idempotency_key=f"imessage:{self.message.guid}",
                                       agent=command.agent, on_behalf_of=self.sender(), **extra)
        self.state.track(task["id"], self.message.chat_guid, self.reply_address())
        if task["state"] == TaskState.AWAITING_APPROVAL:
            return approval_question(task["id"], by_operator=task.get("approver_must_differ", False))
        return f"On it: task {task['id']}."

    def sender(self) -> str:
        return normalize_address(self.message.sender, self.settings.default_country_code)

    def reply_address(self) -> str | None:
        """Who a one-to-one reply can fall back to when Messages cannot find the chat by GUID."""
        return None if self.message.is_group else self.message.sender

    def status(self, command: Command) -> str:
        nodes = self.client.list_nodes()
        active = [node for node in nodes if node["state"] == NodeState.ACTIVE]
        counts = {state: len(self.client.list_tasks(state=state, limit=PAGE)) for state in LIVE}
        mine = self.state.tasks_in(self.message.chat_guid)
        lines = [f"{len(active)} of {len(nodes)} nodes active, {sum(n['open_slots'] for n in active)} free slots.",
                 f"Running {counts['leased']}, queued {counts['queued']}, "
                 f"waiting for approval {counts['awaiting_approval']}."]
        if mine:
            lines.append("Open from this chat: " + ", ".join(f"task {task}" for task in mine) + ".")
        return "\n".join(lines)

    def nodes(self, command: Command) -> str:
        nodes = self.client.list_nodes()
        if not nodes:
            return "No nodes have joined yet."
        return "\n".join(f"{node['name']}: {node['state']}, {node['slots'] - node['open_slots']}/{node['slots']} busy"
                         f"{', ' + node['runner'] if node['runner'] else ', no runner: ' + (node['problem'] or '?')}"
                         for node in nodes)

    def task(self, command: Command) -> str:
        return describe(self.client.get_task(command.number))

    def cancel(self, command: Command) -> str:
        try:
            self.client.cancel_task(command.number)
        except CommanderError as exc:
            if exc.status == 409:
                return f"Task {command.number} has already finished."
            raise
        self.state.forget(command.number)  # this reply says it; the relay need not say it again
        return f"Task {command.number} cancelled."

    def yes(self, command: Command) -> str:
        return self.answer(command, approve=True)

    def no(self, command: Command) -> str:
        return self.answer(command, approve=False)

    def answer(self, command: Command, approve: bool) -> str:
        if command.number:
            target = command.number
        else:
            waiting = [task for task in self.state.tasks_in(self.message.chat_guid)
                       if self.client.get_task(task)["state"] == TaskState.AWAITING_APPROVAL]
            if not waiting:
                return "Nothing from this chat is waiting for approval."
            if len(waiting) > 1:
                listed = ", ".join(str(task) for task in waiting)
                return f"Tasks {listed} are waiting. Reply yes N or no N for one of them."
            target = waiting[0]
        thread = self.state.thread(target)
        if not approve:
            # Forgotten before the rejection, which the relay may see at once: "dropped" is
            # this task's last word, not a "cancelled" answer after it.
            self.state.forget(target)
        try:
            if approve:
                self.client.approve_task(target)
            else:
                self.client.reject_task(target, reason="declined by text message")
        except (CommanderError, CommanderUnreachable) as exc:
            if thread and not approve:
                self.state.track(target, thread["chat"], thread["sender"])
            if isinstance(exc, CommanderError) and exc.status == 409:
                return f"Task {target} is not waiting for approval."
            if isinstance(exc, CommanderError) and exc.code == "approver_is_submitter":
                return f"Only an operator can approve task {target}: a yes from a text cannot."
            raise
        return f"Task {target} approved: on it." if approve else f"Task {target} dropped."

    def budget(self, command: Command) -> str:
        return caps_text(self.client.spend_caps())

    def budget_set(self, command: Command) -> str:
        """Needs `spend:manage` on the bridge's token (a mobile token has only `spend:read`)."""
        caps = self.client.set_spend_cap("all", "", float(command.text))
        return f"The mesh's daily cap is now ${float(command.text):.2f}. " + caps_text(caps)

    def spend(self, command: Command) -> str:
        days = SPEND_DAYS[command.text]
        report = self.client.spend("agent" if days == 1 else "day", days)
        total = report["total"]
        head = (f"Spend {'today' if days == 1 else 'over the last 7 days'}: ${total['cost_usd']:.2f} over "
                f"{total['attempts']} run{'s' if total['attempts'] != 1 else ''}")
        key = "agent" if days == 1 else "day"
        lines = [f"{row[key]}: ${row['cost_usd']:.2f}" for row in report["rows"][:10]]
        return head + (".\n" + "\n".join(lines) if lines else ".")


    def remember(self, command: Command) -> str:
        """Needs `memory:write` on the bridge's token (the mobile preset has it)."""
        memory = self.client.remember(MEMORY_SCOPE, command.text)
        return f"Remembered (memory {memory['id']}). Send forget {memory['id']} to drop it."

    def recall(self, command: Command) -> str:
        found = self.client.memories(MEMORY_SCOPE, command.text, RECALLED)
        if not found:
            return "I remember nothing about that."
        return "\n".join(f"{m['id']}: " + (f"{m['key']}: " if m["key"] else "") + m["value"] for m in found)

    def forget(self, command: Command) -> str:
        self.client.forget(MEMORY_SCOPE, command.number)
        return f"Memory {command.number} forgotten."


def approval_question(task_id: int, by_operator: bool = False) -> str:
    """The bridge's token submitted the task for the texter; when the Commander wants another
    principal to approve it ([commander] approver_not_submitter), the bridge's yes cannot."""
    if by_operator:
        return f"Task {task_id} waits for an operator's approval (dashboard or m3shd task approve); reply no to drop it."
    return f"Task {task_id} waits for your approval: reply yes to run it, or no to drop it."


def describe(task: dict) -> str:
    """A task as a text message: its state, then its answer or what went wrong."""
    head = f"Task {task['id']}: {task['state'].replace('_', ' ')}"
    if task["state"] == TaskState.SUCCEEDED:
        return f"{head}.\n\n{task['output'] or '(no output)'}"
    if task["state"] in (TaskState.FAILED, TaskState.CANCELLED) and task["error"]:
        return f"{head}: {task['error']}"
    if task.get("waiting_reason"):
        return f"{head} ({task['waiting_reason']})."
    return head + "."


def scope_text(scope: str, name: str) -> str:
    return "the mesh" if scope == "all" else f"{scope} {name}"


def alert_text(alert: dict) -> str:
    """A `spend.alert` event's data as a text message, as ntfy gets it from the Commander."""
    head = f"m3shd: {alert['threshold']}% of the daily cap for {scope_text(alert['scope'], alert['name'])}. "
    body = f"${alert['spent_usd']:.2f} of ${alert['cap_usd']:.2f} spent on {alert['day']}"
    return head + body + ("; new work is held until midnight." if alert["threshold"] >= 100 else ".")


def approval_request(task: dict) -> str:
    """A task someone else started (a webhook) that waits for the operator's yes."""
    prompt = task["prompt"] if len(task["prompt"]) <= 300 else task["prompt"][:300] + "…"
    return (f"Task {task['id']} from {task['submitter']} waits for your approval:\n{prompt}\n"
            f"Reply yes {task['id']} or no {task['id']}.")


def caps_text(found: dict) -> str:
    """Today's spend and each cap, with what is left, as a text message."""
    head = f"Today: ${found['spent_usd']:.2f} spent."
    if not found["caps"]:
        return head + " No daily caps are set (budget set 5 caps the mesh at $5 a day)."
    lines = []
    for cap in found["caps"]:
        who = scope_text(cap["scope"], cap["name"])
        state = "reached, new work waits" if cap["held"] else f"${cap['left_usd']:.2f} left"
        lines.append(f"{who}: ${cap['spent_usd']:.2f} of ${cap['cap_usd']:.2f} ({state})")
    return f"{head} Caps reset at midnight ({found['time_zone']}):\n" + "\n".join(lines)
