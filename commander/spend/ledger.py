"""The ledger: one row per attempt that spent tokens, written in the transaction that ended the
attempt (it receives attempt_ended, commander/signals.py, sent once per attempt: a re-sent
result sends nothing, and the unique (task, attempt) index would refuse a second row anyway).
Retries and failures cost money too, so every attempt a result came for counts, not only the
task's last. An attempt with no result (its lease expired, or it was taken back) reported no
usage: nothing is known to count.

The cost is the runner's own (`total_cost_usd` of the Claude CLI, the SDK runner's list-price
sum) when it sent one, else the price table's (commander/spend/policy.py: m3shd/prices.py with
the config's overrides) for the model the runner named, else the task's. A model the table does
not list is priced as its family's nearest (or the dearest model, for no known family) with a
warning, never as zero.

The rows are added to the roll-ups in batches (commander/spend/fold.py): a result that finds
fold.EVERY rows not yet folded folds them. A task's own `cost_usd` is what all its attempts cost:
the result's UPDATE adds a runner's figure, and this adds the table's price of an attempt that
sent none.
"""

from __future__ import annotations

import logging

from commander.db import Compiled, CompiledUpdate, Param
from commander.models import Node, SpendEntry, Task
from commander.signals import AttemptEnded
from commander.spend import alerts, caps, days, fold, policy
from commander.spend.fold import TOKENS
from commander.holds import AGENT, ALL, NODE, SUBMITTER
from m3shd import prices

log = logging.getLogger("m3shd.commander.spend")

# Every result that spent runs these (db.Compiled): building them with peewee each time cost more
# than running them. The row goes in as plain values, not as a model instance: converting every
# field through peewee doubled what the ledger added to a result (bench/spend.py).
ENTRY = ("task", "attempt", "kind", "agent", "agent_version", "node", "node_name", "capabilities", "model",
         "submitter", *TOKENS, "cost_usd", "cost_source", "priced_as", "day", "ts")
ENTRY_INSERT = Compiled(SpendEntry, lambda: SpendEntry.insert({getattr(SpendEntry, name): Param(name)
                                                                for name in ENTRY}))
NODE_NAME = Compiled(Node, lambda: Node.select(Node.name).where(Node.id == Param("node_id")))
TASK_COST = CompiledUpdate(Task, ("cost_usd",), ("id",))
_warned: set[str] = set()  # models priced by their family, said once per process


def on_attempt_ended(cmdr, ended: AttemptEnded) -> bool:
    """Write the attempt's row, if it spent anything, hold the scopes it took to their cap, and
    make the alerts for the thresholds it crossed."""
    entry = record(cmdr, ended)
    if entry is None:
        return False
    looked = caps.enforce(cmdr, ended.at, [(ALL, ""), (AGENT, entry["agent"]), (SUBMITTER, entry["submitter"]),
                                           (NODE, entry["node_name"])], lift=False)
    alerts.crossed(cmdr, entry["day"], looked)
    return False  # a hold gives no node work; a lift happens only when a cap changes


def record(cmdr, ended: AttemptEnded) -> dict | None:
    """The attempt's ledger row (as written, a dict), or None if it spent nothing."""
    sent, task = ended.result, ended.task
    if sent is None:
        return None
    usage = {name: getattr(sent.usage, name) for name in TOKENS}
    if not any(usage.values()) and not sent.cost_usd:
        return None
    rules = policy.of(cmdr.settings)
    model = sent.model or task.model or ""
    if sent.cost_usd is not None:
        cost, source, priced_as = sent.cost_usd, "runner", None
    else:
        priced_as, own = prices.closest(model or None, rules.prices)
        if not own and model not in _warned:
            _warned.add(model)
            log.warning("no price for model %r: priced as %s; add it to [commander] spend_prices", model or "(none named)",
                        priced_as)
        cost, source = prices.cost_usd(rules.prices[priced_as], **usage), "prices"
    named = NODE_NAME.tuples(node_id=ended.node_id) if ended.node_id is not None else []
    node_name = named[0][0] if named else ""
    entry = dict(
        task=task.id, attempt=ended.attempt, kind=ended.kind, agent=task.agent or "", agent_version=task.agent_version,
        node=ended.node_id, node_name=node_name, capabilities=",".join(task.requires), model=model,
        submitter=task.submitter, cost_usd=cost, cost_source=source, priced_as=priced_as,
        day=days.day_of(ended.at, rules.zone), ts=ended.at, **usage)
    entry_id = ENTRY_INSERT.inserted(**entry)
    if source == "prices":  # the result's own UPDATE added a runner's cost; this one the table's
        task.cost_usd = (task.cost_usd or 0.0) + cost  # the row the receivers after this one see, as stored
        TASK_COST.execute({"id": task.id}, cost_usd=task.cost_usd)
    # cmdr.spend_folded is behind the real mark at worst (another worker folded): the fold comes sooner.
    if entry_id - cmdr.spend_folded >= fold.EVERY:
        fold.fold(cmdr)
    return entry
