"""Daily caps: on the whole mesh, an agent, a submitter or a node, from the config and set at run
time (a cap set at run time overrides the configured one of its scope; clearing it brings that
one back).

A scope whose spend today has reached its cap is held (commander/holds.py) until local midnight:
its queued tasks wait with the reason, new ones are held too or refused at submit
(`spend_at_cap`), and running work goes on. A cap raised or cleared lifts the hold at once.

Overshoot: the cost of an attempt is known only when its result comes, so a cap is checked after
each attempt and can be passed by what was already running when it was reached: at most one
attempt per slot busy with that scope's work at that moment, each bounded by its agent's turns
and timeout. No estimate is reserved for running work (estimates of agent runs vary by orders
of magnitude, and a wrong one would hold work the cap allows); the ledger shows the overshoot
as it is.
"""

from __future__ import annotations

import peewee as pw

from commander import audit, events, holds
from commander.exceptions import Invalid
from commander.holds import AGENT, ALL, NODE, SUBMITTER
from commander.db import Compiled, Param
from commander.models import SpendAgentDay, SpendCap, SpendDay, SpendEntry, now
from commander.spend import days, fold, policy

SCOPES = (ALL, AGENT, SUBMITTER, NODE)
COLUMN = {ALL: None, AGENT: "agent", SUBMITTER: "submitter", NODE: "node_name"}

# Every result that spent runs these (db.Compiled).
CAPS_SET = Compiled(SpendCap, lambda: SpendCap.select(SpendCap.scope, SpendCap.name, SpendCap.usd))


def _spent(scope: str) -> Compiled:
    """A scope's spend on a day: what its roll-up says (the mesh's and an agent's from the one by
    agent, a few rows a day; a submitter's or a node's from the one by every dimension) plus the
    ledger rows not folded into it yet (commander/spend/fold.py), at most a batch of them."""
    table = SpendAgentDay if scope in (ALL, AGENT) else SpendDay

    def matching(model):
        where = model.day == Param("day")
        return where if COLUMN[scope] is None else where & (getattr(model, COLUMN[scope]) == Param("name"))

    def build():
        unfolded = SpendEntry.select(pw.fn.SUM(SpendEntry.cost_usd)).where((SpendEntry.id > fold.MARK)
                                                                           & matching(SpendEntry))
        rolled = table.select(pw.fn.SUM(table.cost_usd)).where(matching(table))
        return pw.Select(columns=[pw.fn.COALESCE(rolled, 0.0) + pw.fn.COALESCE(unfolded, 0.0)]).bind(
            table._meta.database)

    return Compiled(table, build)


SPENT = {scope: _spent(scope) for scope in SCOPES}


def effective(cmdr) -> dict[tuple[str, str], float]:
    """Every cap in force: the configured ones, overridden by those set at run time."""
    caps = dict(policy.of(cmdr.settings).caps)
    caps.update({(scope, name): usd for scope, name, usd in CAPS_SET.tuples()})
    return caps


def spent(day: str, scope: str, name: str) -> float:
    """What a scope spent on a local day."""
    return (SPENT[ALL].tuples(day=day) if scope == ALL else SPENT[scope].tuples(day=day, name=name))[0][0]


def described(scope: str, name: str) -> str:
    return "the mesh" if scope == ALL else f"{scope} {name}"


def enforce(cmdr, t: float, scopes, lift: bool = True) -> list[tuple[str, str, float, float]]:
    """Inside a write transaction: hold each of `scopes` ((scope, name) pairs) whose spend today
    has reached its cap, and (with `lift`) lift the hold of one that is under its cap or has none
    now; returns (scope, name, spent, cap) for each scope that has a cap (what the alerts read).
    A new ledger row passes lift=False: spend only grows, so it never lifts a hold."""
    caps = effective(cmdr)
    if not lift and not any(scope in caps for scope in scopes):
        return []
    rules = policy.of(cmdr.settings)
    day = days.day_of(t, rules.zone)
    reset = days.next_midnight(t, rules.zone)
    looked = []
    for scope, name in scopes:
        cap = caps.get((scope, name))
        if cap is None:
            if lift and holds.lift(scope, name):
                events.publish("spend.released", scope=scope, name=name, reason="no cap")
            continue
        total = spent(day, scope, name)
        looked.append((scope, name, total, cap))
        if total >= cap:
            reason = (f"daily cap of ${cap:.2f} for {described(scope, name)} reached; resets at 00:00 "
                      f"{rules.zone.key}")
            if holds.put(scope, name, reason, reset, rules.refuse):
                events.publish("spend.cap_reached", scope=scope, name=name, spent_usd=round(total, 6), cap_usd=cap,
                               resets_at=reset, reason=reason)
        elif lift and holds.lift(scope, name):
            events.publish("spend.released", scope=scope, name=name, spent_usd=round(total, 6), cap_usd=cap)
    return looked


def refresh(cmdr) -> None:
    """Hold or release every scope that has a cap or a hold, as of now (at start: the config may
    have changed, and a cap taken out of it lifts its hold)."""
    with cmdr.writing():
        held = [(hold.scope, hold.name) for hold in holds.active()]
        enforce(cmdr, now(), list(dict.fromkeys([*effective(cmdr), *held])))


def check_scope(scope: str, name: str) -> str:
    if scope not in SCOPES:
        raise Invalid("invalid_scope", f"a cap's scope is one of {', '.join(SCOPES)}, not {scope!r}")
    if (scope == ALL) != (name == ""):
        raise Invalid("invalid_scope", "the mesh's cap names nothing" if scope == ALL
                      else f"a cap on a {scope} names it")
    return name


def set_cap(cmdr, scope: str, name: str, usd: float, actor: str) -> None:
    """Set a scope's daily cap at run time; held work starts at once if the cap is now above its spend."""
    check_scope(scope, name)
    with cmdr.writing():
        SpendCap.insert(scope=scope, name=name, usd=usd, set_by=actor, set_at=now()).on_conflict(
            conflict_target=[SpendCap.scope, SpendCap.name],
            update={SpendCap.usd: usd, SpendCap.set_by: actor, SpendCap.set_at: now()}).execute()
        enforce(cmdr, now(), [(scope, name)])
        audit.record(actor, "spend.cap_set", described(scope, name), usd=usd)


def clear_cap(cmdr, scope: str, name: str, actor: str) -> bool:
    """Remove a cap set at run time (the configured one, if any, applies again); False if none was set."""
    check_scope(scope, name)
    with cmdr.writing():
        removed = SpendCap.delete().where((SpendCap.scope == scope) & (SpendCap.name == name)).execute() > 0
        enforce(cmdr, now(), [(scope, name)])
        if removed:
            audit.record(actor, "spend.cap_cleared", described(scope, name))
    return removed


def listing(cmdr, t: float | None = None) -> list[dict]:
    """Every cap in force with today's spend, what is left, where it comes from and whether it holds work."""
    t = now() if t is None else t
    rules = policy.of(cmdr.settings)
    day = days.day_of(t, rules.zone)
    runtime = {(row.scope, row.name) for row in SpendCap.select(SpendCap.scope, SpendCap.name)}
    held = {(hold.scope, hold.name) for hold in holds.active(t)}
    caps = []
    for (scope, name), usd in sorted(effective(cmdr).items()):
        total = spent(day, scope, name)
        caps.append(dict(scope=scope, name=name, cap_usd=usd, spent_usd=total, left_usd=max(0.0, usd - total),
                         source="runtime" if (scope, name) in runtime else "config", held=(scope, name) in held))
    return caps
