"""Leases: handing tasks to nodes, fencing their results, and taking back what expires.

A lease is (task, attempt, lease_token, lease_until). Each claim bumps `attempt`; a result is
applied only by a conditional UPDATE that still matches attempt and token, so a node that
comes back from the dead cannot overwrite a retry's result.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass

from commander import breakers, events, holds, outcomes, planning, provenance, tasks, tokens
from commander.agents import service as agents
from commander.plugins import lease as tool_lease
from commander.memory import inject as memory
from commander.context import Commander
from commander.db import Compiled, CompiledUpdate, Param
from commander.exceptions import Conflict
from commander.models import (
    ACTIVE, FAILED, FINAL_STATES, HALF_OPEN, LEASED, LIVE_STATES, QUEUED, SUCCEEDED, Node, NodeKey, Task, now,
)
from commander.settings import CommanderSettings
from commander.signals import LEASE_EXPIRED, RESULT, AttemptEnded, TaskFinished
from m3shd import wire

CLEARED_LEASE = dict(lease_token=None, lease_until=None)


@dataclass(frozen=True)
class Usage:
    """Tokens an attempt used, as its node reported them."""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class Result:
    """A node's result for one attempt: what the Commander applies and keeps of it."""
    task_id: int
    attempt: int
    lease_token: str
    status: str                 # succeeded | failed
    signature: str              # HMAC-SHA256 by the node's key over the result's canonical JSON
    output: str = ""
    error: str | None = None
    infra_failure: bool = False  # the runner broke, not the task: retry elsewhere while attempts remain
    usage: Usage = Usage()
    cost_usd: float | None = None
    runner: str | None = None
    model: str | None = None          # the model the runner ran, as it reported it
    duration_ms: int | None = None
    ed25519_signature: str | None = None
    agent: str | None = None          # the agent and version its lease named, and the hash of the
    agent_version: int | None = None  # system prompt and prompt it ran (wire.run_sha256): None from
    run_sha256: str | None = None     # a N0D3 that predates agents
    runner_notes: tuple[str, ...] = ()


# A claim's queries, compiled once (db.Compiled).
QUEUED_TASK = Compiled(Task, lambda: Task.select(
    Task.id, Task.attempt, Task.prompt, Task.model, Task.requires, Task.agent, Task.agent_version,
    Task.attachments, Task.memory).where(
    (Task.id == Param("task_id")) & (Task.state == QUEUED)))
LEASE_FIELDS = ("state", "attempt", "lease_token", "lease_until", "node", "started_at", "updated_at", "not_before")
TAKE_LEASE = CompiledUpdate(Task, LEASE_FIELDS, match=("id", "state"))
# A result is applied only while its lease holds: the fence.
FENCE = ("id", "node", "state", "attempt", "lease_token")
RESULT_FIELDS = ("output", "error", "runner", "cost_usd", "input_tokens", "output_tokens", "cache_read_tokens",
                 "cache_write_tokens", "duration_ms", "result_signature", "runner_notes", "updated_at")
RETRY_FIELDS = ("state", "updated_at", "not_before", "tried_nodes", *CLEARED_LEASE)
APPLY_RETRY = CompiledUpdate(Task, RESULT_FIELDS + RETRY_FIELDS, match=FENCE)
APPLY_FINAL = CompiledUpdate(Task, RESULT_FIELDS + ("state", "finished_at", *provenance.RECORD_FIELDS), match=FENCE)


def claim(cmdr: Commander, node_id: int, open_slots: int, planned: list[int] | None = None,
          token_id: int | None = None) -> list[dict]:
    """Lease this node the queued tasks the scheduler places on it (commander/planning.py), up to
    `open_slots`, or one probe task while its breaker is half-open. `planned`: task ids a
    dispatcher's plan gave this node a moment ago, so they need not be planned again.
    `token_id`: the node token the claim came with, which must still act for the node when the
    leases are made (a long-poll can outlive it); None only for callers inside the Commander
    that answer for the node themselves (tests, benchmarks).

    The plan is read before the write lock is taken: most claims find nothing and need not queue
    for the lock to learn it, and the lock is held only to read the node's standing and token
    again and for the conditional UPDATEs (a task another node took meanwhile is no longer
    `queued`, so it is skipped; one the node's approved capabilities do not cover, never taken)."""
    t = now()
    node, limit, breaker = admission(node_id, t)
    if limit == 0:
        return []
    if planned is None:
        planned = planning.tasks_for(node_id, frozenset(node.capabilities), t, cmdr.settings, cmdr.ranking)
    if not planned:
        return []
    # Memories are searched before the lock (commander/memory/inject.py): the tasks most likely taken.
    recalled = {task.id: memory.recall(cmdr, task) for task_id in planned[:open_slots]
                for task in QUEUED_TASK.rows(task_id=task_id)} if cmdr.settings.memory_inject_count else {}
    leases = []
    with cmdr.writing(wake=False):
        t = now()
        # Again under the write lock: a result committed meanwhile may have opened its breaker,
        # and the node's token may have died while its claim waited.
        node, limit, breaker = admission(node_id, t)
        if limit == 0 or (token_id is not None and not tokens.acts_for(token_id, node_id, t)):
            return []
        if limit > 0:
            open_slots = min(open_slots, limit)
        capabilities = frozenset(node.capabilities)
        lease_until = t + cmdr.settings.lease_ttl
        for task_id in planned:
            if len(leases) == open_slots:
                break
            found = QUEUED_TASK.rows(task_id=task_id)
            if not found or not capabilities.issuperset(found[0].requires):
                continue  # another node took it meanwhile, or a plan made with older capabilities
            task = found[0]
            token = secrets.token_hex(16)
            attempt = task.attempt + 1
            # not_before cleared: a retry's backoff is over once it is taken.
            if TAKE_LEASE.execute(dict(id=task.id, state=QUEUED), state=LEASED, attempt=attempt, lease_token=token,
                                  lease_until=lease_until, node=node_id, started_at=t, updated_at=t, not_before=None):
                events.publish("task.leased", task=task.id, node=node_id, attempt=attempt)
                lease = dict(task_id=task.id, attempt=attempt, lease_token=token, lease_until=lease_until,
                             prompt=memory.prompt_for_lease(cmdr, task, attempt, recalled.get(task.id)), model=task.model, requires=task.requires,
                             attachments=task.attachments, **agents.for_lease(cmdr, task.agent, task.agent_version))
                leases.append(tool_lease.extend(cmdr, task.id, lease, agents.plugin_tools(cmdr, task.agent,
                                                                                           task.agent_version)))
        if leases and breaker.state != node.breaker_state:  # open → half-open: this claim is the probe
            outcomes.publish_transition(node_id, node.breaker_state, breaker, reason="cooldown over")
        if leases and breaker.state == HALF_OPEN:
            Node.update(breaker_state=HALF_OPEN, breaker_probe=leases[0]["task_id"]).where(Node.id == node_id).execute()
    if leases:
        cmdr.notifier.notify(work=False)  # followers see the leases; no other node gains work
    return leases


def admission(node_id: int, t: float) -> tuple[Node | None, int, breakers.Breaker | None]:
    """The node, how many tasks it may take now (-1: as many as its slots) and its breaker as it
    stands at `t`; (None, 0, None) if it takes no work (gone, not active, its runner broken, or held)."""
    found = planning.NODE_WITH_BREAKER.rows(node_id=node_id)
    node = found[0] if found else None
    if node is None or node.state != ACTIVE or node.problem or holds.node_held(node.name, t):
        return None, 0, None
    limit, breaker = breakers.admits(planning.breaker_of(node), t)
    return node, limit, breaker


def claim_or_wait(cmdr: Commander, node_id: int, token_id: int, open_slots: int, wait: float) -> list[dict]:
    """Claim now; if nothing is there, long-poll until work for this node appears or the poll's
    time is up (`long_poll_for`). Every claim, the dispatcher's for a waiting node included,
    checks the node and its token again when it takes a lease (see `claim`)."""
    deadline = now() + long_poll_for(min(wait, cmdr.settings.max_wait))
    leases = claim(cmdr, node_id, open_slots, token_id=token_id)
    while not leases and cmdr.dispatcher and (remaining := deadline - now()) > 0:
        cmdr.db.close()  # a waiting node holds no database connection
        leases = cmdr.dispatcher.wait_for_work(node_id, token_id, open_slots, remaining)
        if leases is None:  # a newer claim of this node waits instead (a N0D3 restarted, say)
            return []
        # Let go before its time: paused, drained, lost or removed meanwhile, or its token died?
        # (A poll whose time ran out need not ask: it ends in any case.)
        if not leases and now() < deadline and waiting_in_vain({node_id: token_id}, now()):
            break
    return leases


def long_poll_for(wait: float) -> float:
    """How long a claim that finds nothing waits: between half and all of `wait`, at random
    (wire.LONG_POLL_SPREAD says why)."""
    return wait * (1.0 - wire.LONG_POLL_SPREAD * random.random())


ACTIVE_AMONG = Compiled(Node, lambda ids: Node.select(Node.id).where(Node.id.in_(ids) & (Node.state == ACTIVE)))


def waiting_in_vain(waiting: dict[int, int], t: float) -> list[int]:
    """The nodes among `waiting` (node id → the token its claim came with) that can take no
    work now: not active, or their token no longer acts for them."""
    active = {node_id for (node_id,) in ACTIVE_AMONG.tuples_among("ids", list(waiting))}
    acting = tokens.acting(list(waiting.values()), t)
    return [node_id for node_id, token_id in waiting.items()
            if node_id not in active or (token_id, node_id) not in acting]


def retry_fields(task: Task, node_id: int | None, t: float, settings: CommanderSettings) -> dict:
    """Back to the queue after a broken attempt: after its backoff, and avoiding that node. The
    backoff is the task's own (submit stored the Commander's retry_backoff when it named none),
    so a task that asked for none is retried at once."""
    base = task.backoff
    wait = min(settings.retry_backoff_max, base * 2 ** max(0, task.attempt - 1)) if base else 0.0
    tried = sorted(set(task.tried_nodes) | ({node_id} if node_id else set()))
    return dict(state=QUEUED, updated_at=t, not_before=t + wait if wait else None, tried_nodes=tried, **CLEARED_LEASE)


def apply_result(cmdr: Commander, node: Node, result: Result, document: bytes,
                 key: NodeKey | None) -> tuple[Task, bool]:
    """Apply a result whose signatures over `document` (its canonical JSON) were checked with
    `key` if its lease still holds; returns (task, duplicate). The attempt ends (attempt_ended)
    and, unless an infrastructure failure sends it back to the queue, the task is final
    (task_finished).

    Raises Conflict for a stale attempt. The same accepted result sent again is a duplicate.
    """
    t = now()
    infra = result.status == "failed" and result.infra_failure
    usage = result.usage
    fields = dict(
        output=result.output, error=result.error, runner=result.runner,
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens, cache_write_tokens=usage.cache_write_tokens,
        duration_ms=result.duration_ms, result_signature=result.signature, runner_notes=list(result.runner_notes),
        updated_at=t,
    )
    fence = dict(id=result.task_id, node=node.id, state=LEASED, attempt=result.attempt, lease_token=result.lease_token)
    finished = None
    with cmdr.writing(wake=False):
        task = tasks.get(result.task_id)
        # What all its attempts cost: the runner's figure added here; an attempt that sent none
        # is priced and added by the spend ledger (commander/spend/ledger.py).
        fields["cost_usd"] = task.cost_usd if result.cost_usd is None else (task.cost_usd or 0.0) + result.cost_usd
        retry = infra and result.attempt < task.max_attempts
        if retry:
            # The runner broke, not the task: give it back to the queue for another try elsewhere.
            applied = APPLY_RETRY.execute(fence, **{**fields, **retry_fields(task, node.id, t, cmdr.settings)})
        else:
            state = SUCCEEDED if result.status == "succeeded" else FAILED
            chained = provenance.record(task, key, document, result.ed25519_signature)
            applied = APPLY_FINAL.execute(fence, state=state, finished_at=t, **fields, **chained)
        if applied:
            # Checked once the fence held (a stale result is refused as stale, 409); a refusal here
            # rolls the UPDATE back with the transaction.
            provenance.check_binding(cmdr, task, result)
            finished = tasks.get(result.task_id)
            # No error text: events are kept in clear (the task holds it, sealed).
            details = dict(node=node.id, attempt=result.attempt, cost_usd=result.cost_usd)
            if retry:
                events.publish("task.retrying", task=task.id, **details)
            kind = "infra" if infra else result.status
            work = cmdr.signals.attempt_ended.send(cmdr, AttemptEnded(finished, node.id, result.attempt, kind, t, result))
            if not retry:
                work = cmdr.signals.task_finished.send(
                    cmdr, TaskFinished(finished, LEASED, RESULT, details)) or work
    if finished:
        # A plain finish frees only this node's slot, which it claims itself: no dispatcher need plan.
        cmdr.notifier.notify(work=retry or work)
        return finished, False
    if (task.state in FINAL_STATES and task.node_id == node.id and task.attempt == result.attempt
            and task.lease_token == result.lease_token and task.result_signature == result.signature):
        return task, True
    raise Conflict(
        "stale_lease",
        f"attempt {result.attempt} of task {result.task_id} no longer holds its lease "
        f"(the task is {task.state}, attempt {task.attempt})",
    )


def expire(cmdr: Commander) -> int:
    """Leases past their time go back to the queue, or fail the task after its last attempt
    (or at once when its policy says not to retry a lost attempt)."""
    t = now()
    overdue = Task.select().where((Task.state == LEASED) & (Task.lease_until < t))
    if not overdue.exists():
        return 0
    count = 0
    with cmdr.writing():
        for task in overdue:
            fence = (Task.id == task.id) & (Task.state == LEASED) & (Task.attempt == task.attempt) & (Task.lease_until < t)
            final = task.attempt >= task.max_attempts or not task.retry_on_lost
            if final:
                why = f"on attempt {task.attempt} of {task.max_attempts}" if task.retry_on_lost \
                    else "and retry_on_lost is off"
                error = f"lease expired {why}; giving up"
                changed = Task.update(state=FAILED, error=error, finished_at=t, updated_at=t, **CLEARED_LEASE).where(fence).execute()
            else:
                changed = Task.update(**retry_fields(task, task.node_id, t, cmdr.settings)).where(fence).execute()
            if not changed:
                continue
            count += 1
            ended = tasks.get(task.id)
            details = dict(node=task.node_id, attempt=task.attempt, reason="lease expired")
            if not final:
                events.publish("task.requeued", task=task.id, **details)
            cmdr.signals.attempt_ended.send(cmdr, AttemptEnded(ended, task.node_id, task.attempt, "lost", t))
            if final:
                cmdr.signals.task_finished.send(cmdr, TaskFinished(ended, LEASED, LEASE_EXPIRED, details))
    return count


def grace_after_restart(cmdr: Commander) -> None:
    """While the Commander was down nobody could heartbeat: give live leases and nodes a fresh term."""
    t = now()
    with cmdr.writing():
        Task.update(lease_until=t + cmdr.settings.lease_ttl).where(Task.state == LEASED).execute()
        Node.update(last_seen=t).where(Node.state.in_(LIVE_STATES)).execute()
