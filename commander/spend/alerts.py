"""Spend alerts: when a scope's spend today crosses a threshold of its cap (`spend_alerts`,
default 50, 80 and 100 %), one alert per threshold, scope and day is made, in the transaction
that wrote the spend (the unique index keeps it to one), with an event. Delivery to ntfy happens
later, outside any transaction, from one background loop per Commander (the worker holding a
lock, as the reaper does): a receiver under the write lock must never wait on the network.

ntfy's publish API: POST the message to the topic URL with `Title`, `Priority` (3 default, 4
high, 5 urgent) and `Tags` (emoji short codes) headers, and `Authorization: Bearer` when the
topic needs a token. A failed delivery is retried after loops.retry_delay (full jitter, 5 s
doubling to 10 min) up to MAX_ATTEMPTS times, each failure kept on the alert (GET
/api/spend/alerts shows them), then it is given up as `failed` with an event.
"""

from __future__ import annotations

import logging
import threading

from commander import events, ntfy
from commander.models import SpendAlert, now
from commander.spend import caps, policy
from m3shd import loops

log = logging.getLogger("m3shd.commander.spend")

PENDING, SENT, FAILED, OFF = "pending", "sent", "failed", "off"
MAX_ATTEMPTS = 12
RETRY_BASE, RETRY_CAP = 5.0, 600.0
BATCH = 20


def crossed(cmdr, day: str, looked: list[tuple[str, str, float, float]]) -> None:
    """Inside the write transaction that wrote the spend: an alert for each threshold newly crossed."""
    settings = cmdr.settings
    for scope, name, spent, cap in looked:
        for threshold in policy.of(settings).alerts:
            if spent < cap * threshold / 100:
                break
            key = (SpendAlert.day == day) & (SpendAlert.scope == scope) & (SpendAlert.name == name) \
                & (SpendAlert.threshold == threshold)
            if SpendAlert.select(SpendAlert.id).where(key).exists():
                continue
            SpendAlert.create(day=day, scope=scope, name=name, threshold=threshold, spent_usd=spent, cap_usd=cap,
                              state=PENDING if settings.ntfy_url else OFF)
            events.publish("spend.alert", scope=scope, name=name, threshold=threshold, spent_usd=round(spent, 6),
                           cap_usd=cap, day=day)


def message(alert: SpendAlert) -> tuple[str, dict]:
    """The alert's text and its ntfy title, priority and tags."""
    who = caps.described(alert.scope, alert.name)
    title = f"m3shd: {alert.threshold}% of the daily cap for {who}"
    text = (f"${alert.spent_usd:.2f} of ${alert.cap_usd:.2f} spent on {alert.day}"
            + ("; new work is held until midnight" if alert.threshold >= 100 else ""))
    priority, tags = (5, "rotating_light") if alert.threshold >= 100 else (4, "warning") if alert.threshold >= 80 \
        else (3, "money_with_wings")
    return text, dict(title=title, priority=priority, tags=tags)


def send(settings, alert: SpendAlert) -> str | None:
    """Post one alert; None when ntfy took it, else what went wrong."""
    text, headers = message(alert)
    return ntfy.publish(settings.ntfy_url, settings.ntfy_token, text, **headers)


def deliver_due(cmdr) -> int:
    """Send the alerts that are due, each outside any transaction, then record how it went."""
    due = list(SpendAlert.select().where((SpendAlert.state == PENDING) & (SpendAlert.next_at <= now()))
               .order_by(SpendAlert.id).limit(BATCH))
    for alert in due:
        error = send(cmdr.settings, alert) if cmdr.settings.ntfy_url else "ntfy_url is no longer set"
        attempts = alert.attempts + 1
        with cmdr.writing(wake=False):
            if error is None:
                SpendAlert.update(state=SENT, attempts=attempts, sent_at=now(), last_error=None).where(
                    SpendAlert.id == alert.id).execute()
                continue
            gave_up = attempts >= MAX_ATTEMPTS
            SpendAlert.update(state=FAILED if gave_up else PENDING, attempts=attempts, last_error=error,
                              next_at=now() + loops.retry_delay(attempts - 1, RETRY_BASE, RETRY_CAP)).where(
                SpendAlert.id == alert.id).execute()
            if gave_up:
                events.publish("spend.alert_failed", scope=alert.scope, name=alert.name, threshold=alert.threshold,
                               error=error)
        log.warning("spend alert %d (%d%% of %s): attempt %d failed: %s", alert.id, alert.threshold,
                    caps.described(alert.scope, alert.name), attempts, error)
    return len(due)


def start(cmdr, every: float = 1.0) -> None:
    """The delivery loop, in one worker at a time (Commander.run_alone)."""
    threading.Thread(target=cmdr.run_alone, args=("spend-alerts", lambda: deliver_due(cmdr), every, 60 * every),
                     name="spend-alerts", daemon=True).start()
