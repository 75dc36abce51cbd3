"""The figures: spend over a range of local days, grouped by any of day, agent, model, node,
capability and submitter (read from the daily roll-up, so a year of ledger reads a few thousand
rows at most), and the tasks that cost most (read from the ledger, by its (day, cost) index)."""

from __future__ import annotations

from datetime import date

import peewee as pw

from commander.exceptions import Invalid
from commander.models import SpendDay, SpendEntry
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
    """One row per group (by cost, dearest first; by day when grouped by day) and the totals."""
    sums = [pw.fn.SUM(getattr(SpendDay, name)).alias(name) for name in FIGURES]
    in_range = (SpendDay.day >= first) & (SpendDay.day <= last)
    columns = [GROUPS[name].alias(name) for name in group]
    select = SpendDay.select(*columns, *sums).where(in_range)
    if group:
        select = select.group_by(*(GROUPS[name] for name in group))
        order = [SpendDay.day] if "day" in group else []
        select = select.order_by(*order, pw.SQL("cost_usd").desc())
    rows = [{**row, **{name: row[name] or 0 for name in FIGURES}} for row in select.dicts()]
    if group:
        total = {name: sum(row[name] for row in rows) for name in FIGURES}
    else:
        total, rows = rows[0], []
    return rows, total


def top(first: str, last: str, n: int) -> list[dict]:
    """The `n` tasks whose attempts in the range cost most, dearest first."""
    cost = pw.fn.SUM(SpendEntry.cost_usd)
    select = (SpendEntry.select(SpendEntry.task.alias("task_id"), pw.fn.MIN(SpendEntry.agent).alias("agent"),
                                pw.fn.MIN(SpendEntry.submitter).alias("submitter"),
                                pw.fn.MAX(SpendEntry.model).alias("model"),
                                pw.fn.COUNT(SpendEntry.id).alias("attempts"),
                                pw.fn.SUM(SpendEntry.input_tokens).alias("input_tokens"),
                                pw.fn.SUM(SpendEntry.output_tokens).alias("output_tokens"),
                                cost.alias("cost_usd"), pw.fn.MIN(SpendEntry.day).alias("day"))
              .where((SpendEntry.day >= first) & (SpendEntry.day <= last))
              .group_by(SpendEntry.task).order_by(cost.desc(), SpendEntry.task).limit(n))
    return list(select.dicts())
