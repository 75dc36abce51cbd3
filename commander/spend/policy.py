"""The spend settings, parsed and checked once per settings object: a typo in a cap or a price
stops the Commander's start with the key named, instead of silently capping nothing."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from commander.holds import AGENT, ALL, NODE, SUBMITTER
from commander.settings import CommanderSettings
from m3shd import prices
from m3shd.config import ConfigError

AT_CAP = ("hold", "refuse")
CAP_SCOPES = (AGENT, SUBMITTER, NODE)  # what `spend_caps` may name; the mesh's own cap is `spend_cap`


@dataclass(frozen=True)
class Policy:
    zone: ZoneInfo
    caps: dict[tuple[str, str], float]   # (scope, name) -> USD a day, from the config
    refuse: bool                         # spend_at_cap = "refuse"
    prices: dict[str, prices.Price]      # the shipped table with the config's overrides
    alerts: tuple[int, ...]              # percentages of a cap that alert, ascending


_parsed: dict[int, tuple[CommanderSettings, Policy]] = {}


def of(settings: CommanderSettings) -> Policy:
    """The policy of these settings, parsed once per settings object (looked up by identity: every
    result asks, and hashing the whole settings object cost more than the rest of the lookup)."""
    known = _parsed.get(id(settings))
    if known is None or known[0] is not settings:
        known = _parsed[id(settings)] = (settings, parse(settings))
    return known[1]


def parse(settings: CommanderSettings) -> Policy:
    try:
        zone = ZoneInfo(settings.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"[commander] time_zone: {settings.time_zone!r} is not an IANA time zone "
                          f"(e.g. Europe/Berlin, America/New_York, UTC)") from None
    if settings.spend_at_cap not in AT_CAP:
        raise ConfigError(f"[commander] spend_at_cap: expected hold or refuse, got {settings.spend_at_cap!r}")
    caps = {(ALL, ""): _usd(settings.spend_cap, "spend_cap")} if settings.spend_cap else {}
    for item in settings.spend_caps:
        scope, _, rest = item.partition(":")
        name, _, usd = rest.rpartition("=")
        if scope not in CAP_SCOPES or not name:
            raise ConfigError(f"[commander] spend_caps: {item!r} is not SCOPE:NAME=USD with SCOPE one of "
                              f"{', '.join(CAP_SCOPES)}")
        caps[(scope, name)] = _usd(usd, f"spend_caps {item!r}")
    table = dict(prices.PRICES)
    for item in settings.spend_prices:
        model, _, rates = item.partition("=")
        parts = rates.split(",")
        if not model or len(parts) != 4:
            raise ConfigError(f"[commander] spend_prices: {item!r} is not MODEL=INPUT,OUTPUT,CACHE_READ,CACHE_WRITE")
        table[model.strip()] = prices.Price(*(_usd(part, f"spend_prices {item!r}", zero=True) for part in parts))
    try:
        alerts = tuple(sorted({int(pct) for pct in settings.spend_alerts}))
    except ValueError:
        alerts = (0,)
    if any(not 0 < pct <= 1000 for pct in alerts):
        raise ConfigError(f"[commander] spend_alerts: expected whole percentages of a cap (1-1000), got "
                          f"{list(settings.spend_alerts)}")
    return Policy(zone=zone, caps=caps, refuse=settings.spend_at_cap == "refuse", prices=table, alerts=alerts)


def _usd(value, where: str, zero: bool = False) -> float:
    try:
        usd = float(value)
    except ValueError:
        usd = float("nan")
    if not (usd >= 0 if zero else usd > 0) or usd == float("inf"):
        raise ConfigError(f"[commander] {where}: expected an amount in USD{'' if zero else ' above 0'}, got {value!r}")
    return usd
