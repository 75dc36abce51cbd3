"""The figures: spend over a range of local days, grouped by any of day, agent, model, node,
capability and submitter (read from the daily roll-ups, so a year of ledger reads a few thousand
rows at most), and the tasks that cost most (read from the per-task totals, by their cost index)."""

from __future__ import annotations

import functools
from datetime import date

import peewee as pw

from commander.db import Compiled, Param
from commander.exceptions import Invalid
from commander.models import SpendAgentDay, SpendDay, SpendTask
from commander.spend import days, policy

# What `group` may name, and the roll-up's column for each.
GROUPS = {"day": SpendDay.day, "agent": SpendDay.agent, "model": SpendDay.model, "node": SpendDay.node_name,
          "capability": SpendDay.capabilities, "submitter": SpendDay.submitter}
FIGURES = ("attempts", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd")
MAX_DAYS = 400


def day_range(cmdr, first: str | None, last: str | None, count: int | None, t: float) -> tuple[str, str]:
    """The range asked for: `count` days ending today, or from `first` to `last` (either end
    missing: today, in the mesh's time zone), checked."""
    zone = policy.of(cmdr.settings).zone
    if count is not None:
        if first or last:
            raise Invalid("invalid_range", "ask for `days` or for `from` and `to`, not both")
        return days.days_back(t, zone, count)
    today = days.day_of(t, zone)
    first, last = first or last or today, last or max(first or today, today)
    try:
        span = (date.fromisoformat(last) - date.fromisoformat(first)).days
    except ValueError:
        raise Invalid("invalid_day", f"days are YYYY-MM-DD, got {first!r} and {last!r}") from None
    if not 0 <= span < MAX_DAYS:
        raise Invalid("invalid_range", f"`from` must be on or before `to`, at most {MAX_DAYS} days apart")
    return first, last


def parse_group(text: str) -> list[str]:
    group = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in group if name not in GROUPS]
    if unknown or len(set(group)) != len(group):
        raise Invalid("invalid_group", f"group by some of {', '.join(GROUPS)}, each once; got {text!r}")
    return group


def grouped(first: str, last: str, group: list[str]) -> tuple[list[dict], dict]:
    """One row per group (by cost, dearest first; by day when grouped by day) and the totals, as
    plain dicts naming the keys grouped by and the figures: a 90-day report by day and agent is
    1,800 rows, and per-row model instances (peewee's, then pydantic's) cost three times the query
    (bench/spend.py)."""
    names = (*group, *FIGURES)
    rows = [dict(zip(names, row)) for row in _grouping(tuple(group)).tuples(first=first, last=last)]
    if not group:  # SUM over no rows is NULL
        return [], {name: rows[0][name] or 0 for name in FIGURES}
    total = {name: sum(row[name] for row in rows) for name in FIGURES}
    return rows, {**total, "cost_usd": round(total["cost_usd"], 6)}


@functools.cache
def _grouping(group: tuple[str, ...]) -> Compiled:
    """The query for one grouping, compiled once (db.Compiled): from the roll-up by agent when it
    groups by day and agent at most (a few rows a day), else from the one by every dimension.
    Grouped by exactly the roll-up's own key, its rows are the answer as they stand; cost is
    rounded to the micro-dollar (sums of floats would otherwise print 17 digits)."""
    table = SpendAgentDay if set(group) <= {"day", "agent"} else SpendDay
    as_stored = set(group) == {"day", "agent"}

    def build():
        def figure(name):
            column = getattr(table, name) if as_stored else pw.fn.SUM(getattr(table, name))
            return (pw.fn.ROUND(column, 6) if name == "cost_usd" else column).alias(name)

        columns = [getattr(table, GROUPS[name].name) for name in group]
        select = table.select(*(column.alias(name) for column, name in zip(columns, group)),
                              *map(figure, FIGURES)).where((table.day >= Param("first")) & (table.day <= Param("last")))
        if group:
            order = [table.day] if "day" in group else []
            select = (select if as_stored else select.group_by(*columns)).order_by(*order, pw.SQL("cost_usd").desc())
        return select

    return Compiled(SpendDay, build)


# The day read without its index (SQLite's unary +): the dearest tasks are found by walking the
# (cost, task) index from the top and keeping those in the range, which stops after `n` of them;
# ranging over days first would sort every task of the range (90 days of a million tasks: 600 ms
# against under 1 ms, bench/spend.py). The walk is long only for a range whose tasks are all
# cheaper than most others, and then no longer than the table.
UNINDEXED_DAY = pw.NodeList((pw.SQL("+"), SpendTask.day), glue="")


def top(first: str, last: str, n: int) -> list[dict]:
    """The `n` tasks that cost most, dearest first, among those whose first attempt that spent
    counted on a day in the range (all their attempts' cost)."""
    return list(SpendTask.select(SpendTask.task.alias("task_id"), SpendTask.agent, SpendTask.submitter, SpendTask.model,
                                 SpendTask.day, SpendTask.attempts, SpendTask.input_tokens, SpendTask.output_tokens,
                                 SpendTask.cost_usd)
                .where((UNINDEXED_DAY >= first) & (UNINDEXED_DAY <= last))
                .order_by(SpendTask.cost_usd.desc(), SpendTask.task.desc()).limit(n).dicts())
