"""Webhooks: GitHub, Uptime Kuma and signed JSON deliveries that start tasks and pipelines.

- hooks.py: the hooks an operator configures (their secret sealed at rest, their rules), created,
  listed, rotated, deleted;
- verify.py: who may deliver: GitHub's X-Hub-Signature-256 over the raw body, or the hook's
  secret as a bearer token or in the URL (Uptime Kuma), compared in constant time;
- deliveries.py: one row per request and what came of it; the sender's delivery id makes a
  redelivery answer with what the first one started;
- respond.py: the rule an event matches, its `{{ event.… }}` templates rendered
  (commander/templates.py), and the task or pipeline it starts;
- receive.py: a delivery's way through those, for each kind of sender;
- monitors.py: Uptime Kuma's DOWN and UP for one monitor, debounced, and the loop that starts
  a DOWN's response once its window has passed;
- api.py: the /api/webhooks routes (`webhooks:manage`; the receiving ones `webhooks:ingest`,
  authenticated by each hook's secret).
"""

from __future__ import annotations

from commander.webhooks import monitors


def init(cmdr) -> None:
    """Nothing hangs on the signals: a delivery starts its work itself."""


def start(cmdr) -> None:
    """Per worker process, with the other background threads: debounced responses fall due."""
    monitors.start(cmdr)
