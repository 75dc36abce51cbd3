"""Spend alerts (commander/spend/alerts.py): one per cap threshold, scope and day, delivered to a
loopback stand-in that speaks ntfy's publish API and records each request, or fails."""

from __future__ import annotations

import pytest

from commander import leases
from commander.models import Event, SpendAlert
from commander.spend import alerts
from mesh import apply, configure, join, lease_of, result, submit
from ntfy_standin import Ntfy


@pytest.fixture
def ntfy():
    server = Ntfy()
    yield server
    server.close()


def spend(cmdr, node, cost):
    apply(cmdr, node, result(lease_of(cmdr, node, submit(cmdr)), cost_usd=cost, usage=leases.Usage(input_tokens=1)))


def test_each_threshold_alerts_once_a_day_and_is_posted_to_ntfy_outside_the_transaction(cmdr, ntfy):
    configure(cmdr, spend_cap=1.0, ntfy_url=ntfy.url, ntfy_token="tk_secret")
    node = join(cmdr, slots=1)
    spend(cmdr, node, 0.55)
    assert ntfy.requests == []  # the result was applied without waiting on ntfy
    assert alerts.deliver_due(cmdr) == 1
    for cost in (0.30, 0.10, 0.10):  # 85 %, 95 % (nothing new), 105 %
        spend(cmdr, node, cost)
    assert alerts.deliver_due(cmdr) == 2 and alerts.deliver_due(cmdr) == 0
    [(path, headers, body), second, third] = ntfy.requests
    assert path == "/mesh-spend" and headers["Authorization"] == "Bearer tk_secret"
    assert (headers["Title"], headers["Priority"], headers["Tags"]) == (
        "m3shd: 50% of the daily cap for the mesh", "3", "money_with_wings")
    assert body.startswith("$0.55 of $1.00 spent on ")
    assert [(h["Priority"], h["Tags"]) for _, h, _ in (second, third)] == [("4", "warning"), ("5", "rotating_light")]
    assert third[2].endswith("; new work is held until midnight")
    assert [a.state for a in SpendAlert.select().order_by(SpendAlert.threshold)] == ["sent"] * 3
    assert Event.select().where(Event.kind == "spend.alert").count() == 3


def test_a_failed_delivery_is_kept_retried_after_a_backoff_and_given_up_visibly(cmdr, ntfy, monkeypatch):
    waits = []
    monkeypatch.setattr(alerts.loops, "retry_delay", lambda n, base, cap: waits.append((n, base, cap)) or base * 2 ** n)
    configure(cmdr, spend_cap=1.0, ntfy_url=ntfy.url, spend_alerts=("50",))
    ntfy.status = 500
    spend(cmdr, join(cmdr, slots=1), 0.60)
    alerts.deliver_due(cmdr)
    alert = SpendAlert.get()
    assert (alert.state, alert.attempts) == ("pending", 1)
    assert alert.last_error == 'ntfy answered 500: {"error":"boom"}'
    assert waits == [(0, alerts.RETRY_BASE, alerts.RETRY_CAP)]
    assert alerts.deliver_due(cmdr) == 0 and len(ntfy.requests) == 1  # not due again before its back-off
    SpendAlert.update(next_at=0).execute()
    ntfy.status = 200
    alerts.deliver_due(cmdr)
    alert = SpendAlert.get()
    assert (alert.state, alert.attempts, alert.last_error) == ("sent", 2, None)
    # One that never gets through is given up after MAX_ATTEMPTS, with an event.
    configure(cmdr, ntfy_url="http://127.0.0.1:9/unreachable")
    SpendAlert.update(state="pending", attempts=alerts.MAX_ATTEMPTS - 1, next_at=0).execute()
    alerts.deliver_due(cmdr)
    alert = SpendAlert.get()
    assert alert.state == "failed" and alert.last_error.startswith("cannot reach ntfy")
    assert Event.select().where(Event.kind == "spend.alert_failed").count() == 1


def test_without_ntfy_an_alert_is_still_an_event_and_listed(cmdr, client, bearer):
    configure(cmdr, spend_cap=1.0)
    spend(cmdr, join(cmdr, slots=1), 2.0)
    assert [a.state for a in SpendAlert.select()] == ["off"] * 3
    assert Event.select().where(Event.kind == "spend.alert").count() == 3
    listed = client.get("/api/spend/alerts", headers=bearer(permissions=["spend:read"])).get_json()["alerts"]
    assert [(a["threshold"], a["state"]) for a in listed] == [(100, "off"), (80, "off"), (50, "off")]
