"""Spend: what the mesh's Claude runs cost, the daily caps that hold work, and the figures.

- policy.py: the spend settings (time zone, caps, at-cap behaviour, price overrides), checked;
- days.py: local days and midnights in the mesh's time zone;
- ledger.py: one row per attempt that spent tokens, priced, rolled up per day (attempt_ended);
- caps.py: caps from the config and set at run time, and the holds (commander/holds.py) they set;
- alerts.py: an alert per cap threshold crossed a day, an event, and delivery to ntfy with retries;
- report.py: spend grouped by day, agent, model, node, capabilities or submitter; the dearest tasks;
- api.py: the /api/spend routes (`spend:read`, `spend:manage`).
"""

from __future__ import annotations

from commander.spend import alerts, caps, ledger, policy


def init(cmdr) -> None:
    """Check the settings (a bad one stops the start), hang the ledger on attempt_ended, and hold
    or release every capped scope as of now (the caps in the config may have changed)."""
    policy.of(cmdr.settings)
    cmdr.signals.attempt_ended.connect(ledger.on_attempt_ended)
    with cmdr.db.connection_context():
        caps.refresh(cmdr)


def start(cmdr) -> None:
    """Per worker process, with the other background threads: the alert delivery loop."""
    alerts.start(cmdr)
