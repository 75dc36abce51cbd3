"""The roll-ups, folded from the ledger in batches: per day by every dimension (SpendDay) and by
agent alone (SpendAgentDay), which the analytics and the caps read, and per task (SpendTask),
which "the dearest tasks" read.

The ledger writes one row per result that spent; adding each row to three roll-ups as it came
cost more than the row itself (bench/spend.py). Instead the rows after a mark (SpendFold's one
row; none yet: 0) are added in one set-based upsert per roll-up: by a result that finds EVERY
rows not yet folded (ledger.py), and by every reader first (up_to_date), so what it reads is
whole. A cap check adds the rows not yet folded, at most a batch, to what the roll-up says
(caps.py, with MARK).
"""

from __future__ import annotations

import peewee as pw

from commander.db import Compiled, Param
from commander.models import SpendAgentDay, SpendDay, SpendEntry, SpendFold, SpendTask

EVERY = 64
MARK = pw.fn.COALESCE(SpendFold.select(SpendFold.entry), 0)  # the last ledger row folded
TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def _scalar(expression) -> Compiled:
    return Compiled(SpendFold, lambda: pw.Select(columns=[expression]).bind(SpendFold._meta.database))


FOLDED = _scalar(MARK)
LAST_ENTRY = _scalar(pw.fn.COALESCE(SpendEntry.select(pw.fn.MAX(SpendEntry.id)), 0))
MOVE_MARK = Compiled(SpendFold, lambda: SpendFold.insert(id=1, entry=Param("upto")).on_conflict(
    conflict_target=[SpendFold.id], update={SpendFold.entry: pw.EXCLUDED.entry}))


def folding(model, keys: tuple[str, ...], firsts: tuple[str, ...] = ()) -> Compiled:
    """Add the ledger rows after `after` up to `upto` to the roll-up `model`, grouped by `keys`:
    insert each group's sums, or add them to the row already there. `firsts` are taken from the
    group as they were first (a task's day, agent, ...) and not changed by later rows."""
    added = [name for name in ("attempts", *TOKENS, "cost_usd") if name in model._meta.fields]

    def build():
        sums = [(pw.fn.COUNT(SpendEntry.id) if name == "attempts" else pw.fn.SUM(getattr(SpendEntry, name))).alias(name)
                for name in added]
        rows = (SpendEntry.select(*(getattr(SpendEntry, name) for name in keys),
                                  *(pw.fn.MIN(getattr(SpendEntry, name)).alias(name) for name in firsts), *sums)
                .where((SpendEntry.id > Param("after")) & (SpendEntry.id <= Param("upto")))
                .group_by(*(getattr(SpendEntry, name) for name in keys)))
        return model.insert_from(rows, [getattr(model, name) for name in (*keys, *firsts, *added)]).on_conflict(
            conflict_target=[getattr(model, name) for name in keys],
            update={getattr(model, name): getattr(model, name) + pw.EXCLUDED[name] for name in added})
    return Compiled(model, build)


# A node's rows are kept by its name (a removed node's spend still shows under it).
ROLL_UPS = (folding(SpendDay, ("day", "agent", "submitter", "node_name", "model", "capabilities")),
            folding(SpendAgentDay, ("day", "agent")),
            folding(SpendTask, ("task",), firsts=("day", "agent", "submitter", "model")))


def fold(cmdr) -> None:
    """Inside a write transaction: add the ledger rows not yet folded to the roll-ups, and move
    the mark past them."""
    [(after,)], [(upto,)] = FOLDED.tuples(), LAST_ENTRY.tuples()
    if upto > after:
        for roll_up in ROLL_UPS:
            roll_up.execute(after=after, upto=upto)
        MOVE_MARK.execute(upto=upto)
    cmdr.spend_folded = upto


def up_to_date(cmdr) -> None:
    """Before reading the roll-ups: fold what the ledger holds beyond them (a reader takes a
    writer's turn only when there is something to fold)."""
    [(after,)], [(upto,)] = FOLDED.tuples(), LAST_ENTRY.tuples()
    if upto > after:
        with cmdr.writing(wake=False):
            fold(cmdr)
