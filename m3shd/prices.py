"""Claude's list prices, shared by the N0D3's SDK runner (which prices its own calls) and the
Commander's spend ledger (which prices an attempt whose runner reported no cost).

USD per million tokens: input, output, cache read (hits and refreshes) and cache write (5-minute
writes, 1.25x input on every model). Keys are model-id prefixes; the longest that matches wins
(`claude-opus-4-5-20251101` is priced as `claude-opus-4-5`). Haiku 5.5 is its <=100k-token prompt
band (longer prompts bill 5x). Source: platform.claude.com/docs/en/about-claude/pricing, with the
2026-10-07 Sonnet 5.5 cache-read cut; checked 2026-12-02.
"""

from __future__ import annotations

from typing import NamedTuple


class Price(NamedTuple):
    input: float
    output: float
    cache_read: float
    cache_write: float


def _listed(per_input: float, per_output: float, cache_read_multiple: float) -> Price:
    return Price(per_input, per_output, per_input * cache_read_multiple, per_input * 1.25)


PRICES: dict[str, Price] = {
    "claude-fable-5-1": _listed(10.0, 50.0, 0.025),
    "claude-mythos-5-1": _listed(10.0, 50.0, 0.025),
    "claude-fable-5": _listed(10.0, 50.0, 0.1),
    "claude-mythos-5": _listed(10.0, 50.0, 0.1),
    "claude-opus-5-5": _listed(4.0, 20.0, 0.05),
    "claude-opus-5": _listed(5.0, 25.0, 0.1),
    "claude-opus-4-8": _listed(5.0, 25.0, 0.1),
    "claude-opus-4-7": _listed(5.0, 25.0, 0.1),
    "claude-opus-4-6": _listed(5.0, 25.0, 0.1),
    "claude-opus-4-5": _listed(5.0, 25.0, 0.1),
    "claude-opus-4-1": _listed(15.0, 75.0, 0.1),
    "claude-opus-4": _listed(15.0, 75.0, 0.1),
    "claude-sonnet-5-5": _listed(2.0, 10.0, 0.05),
    "claude-sonnet-5": _listed(2.0, 10.0, 0.1),
    "claude-sonnet-4": _listed(3.0, 15.0, 0.1),
    "claude-haiku-5-5": _listed(0.10, 0.50, 0.1),
    "claude-haiku-4-5": _listed(1.0, 5.0, 0.1),
    "claude-3-5-haiku": _listed(0.80, 4.0, 0.1),
}

# A model of a family the table does not list is priced as this member of its family: the
# family's current model, so an unknown newer one is priced as its nearest known sibling.
FAMILIES = {"fable": "claude-fable-5-1", "mythos": "claude-mythos-5-1", "opus": "claude-opus-5",
            "sonnet": "claude-sonnet-5-5", "haiku": "claude-haiku-4-5"}
# A model of no known family (or none named at all) is priced as the dearest model of the table:
# a cap then holds too early rather than too late.
UNKNOWN = "claude-fable-5-1"


def listed(model: str | None, table: dict[str, Price] = PRICES) -> str | None:
    """The table's key that prices `model` (its longest matching prefix), or None."""
    prefixes = [prefix for prefix in table if model and model.startswith(prefix)]
    return max(prefixes, key=len) if prefixes else None


def closest(model: str | None, table: dict[str, Price] = PRICES) -> tuple[str, bool]:
    """The key that prices `model` and whether it is the model's own (False: its family's, or
    UNKNOWN's; the caller says so in a warning)."""
    if key := listed(model, table):
        return key, True
    family = next((name for name in FAMILIES if model and name in model), None)
    return FAMILIES[family] if family else UNKNOWN, False


def cost_usd(price: Price, input_tokens: int, output_tokens: int, cache_read_tokens: int,
             cache_write_tokens: int) -> float:
    return (input_tokens * price.input + output_tokens * price.output + cache_read_tokens * price.cache_read
            + cache_write_tokens * price.cache_write) / 1_000_000
