"""The /api/spend routes: reading needs `spend:read`, setting and clearing caps `spend:manage`."""

from __future__ import annotations

from flask import Blueprint, jsonify

from commander.auth import principal
from commander.exceptions import NotFound
from commander.models import SpendAlert, now
from commander.routes import api_route, commander
from commander.schemas import (
    AlertList, AlertOut, AlertQuery, CapIn, CapList, CapOut, CapQuery, SpendQuery, SpendReport, SpendTask,
    SpendTop, SpendTopQuery,
)
from commander.spend import caps, days, fold, policy, report

bp = Blueprint("spend", __name__)


@api_route(bp, "GET", "/spend", permission="spend:read", query=SpendQuery, response=SpendReport)
def spend_report(query: SpendQuery):
    """Spend over a range of local days, grouped by day, agent, model, node, capability or submitter, with totals."""
    cmdr = commander()
    group = report.parse_group(query.group)
    first, last = report.day_range(cmdr, query.first, query.last, query.days, now())
    fold.up_to_date(cmdr)
    rows, total = report.grouped(first, last, group)
    # Serialized as it stands, not through SpendReport's 1,800 row models (see report.grouped): a
    # row names the keys it is grouped by and the figures. tests/commander/test_spend_api.py checks
    # the body against SpendReport.
    return jsonify(first_day=first, last_day=last, time_zone=policy.of(cmdr.settings).zone.key, group=group,
                   rows=rows, total=total)


@api_route(bp, "GET", "/spend/top", permission="spend:read", query=SpendTopQuery, response=SpendTop)
def spend_top(query: SpendTopQuery):
    """The tasks that cost most over a range of local days (their attempts in it), dearest first."""
    cmdr = commander()
    first, last = report.day_range(cmdr, query.first, query.last, query.days, now())
    fold.up_to_date(cmdr)
    return SpendTop(first_day=first, last_day=last, tasks=[SpendTask(**row) for row in report.top(first, last, query.n)])


def cap_list() -> CapList:
    cmdr, t = commander(), now()
    rules = policy.of(cmdr.settings)
    day = days.day_of(t, rules.zone)
    return CapList(day=day, time_zone=rules.zone.key, resets_at=days.next_midnight(t, rules.zone),
                   at_cap="refuse" if rules.refuse else "hold", spent_usd=caps.spent(day, caps.ALL, ""),
                   caps=[CapOut(**cap) for cap in caps.listing(cmdr, t)])


@api_route(bp, "GET", "/spend/caps", permission="spend:read", response=CapList)
def list_caps():
    """Every daily cap in force, with today's spend, what is left, and whether it holds work now."""
    return cap_list()


@api_route(bp, "PUT", "/spend/caps", permission="spend:manage", body=CapIn, response=CapList)
def set_cap(body: CapIn):
    """Set a daily cap (overriding the configured one of its scope); work it held starts if it is now under it."""
    caps.set_cap(commander(), body.scope, body.name, body.usd, principal().actor)
    return cap_list()


@api_route(bp, "DELETE", "/spend/caps", permission="spend:manage", query=CapQuery, response=CapList)
def clear_cap(query: CapQuery):
    """Clear a cap set at run time; the configured one of its scope, if any, applies again."""
    if not caps.clear_cap(commander(), query.scope, query.name, principal().actor):
        raise NotFound("no_cap", f"no cap was set at run time on {caps.described(query.scope, query.name)}")
    return cap_list()


@api_route(bp, "GET", "/spend/alerts", permission="spend:read", query=AlertQuery, response=AlertList)
def list_alerts(query: AlertQuery):
    """The cap alerts of the last `days` local days, newest first, with how their delivery to ntfy went."""
    first, _ = report.day_range(commander(), None, None, query.days, now())
    found = SpendAlert.select().where(SpendAlert.day >= first).order_by(SpendAlert.id.desc())
    return AlertList(alerts=[AlertOut.from_row(alert) for alert in found])
