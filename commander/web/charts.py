"""The Spend page's charts, laid out on the server as SVG geometry (the template draws it; no
chart library runs in the browser). Colours are CSS classes (`series-N`), so dark mode and print
restyle them; every bar has a <title> with its figure, and each chart a table beside it.

- `stacked_days`: spend per day, one bar a day stacked by agent (the dearest SERIES - 1 agents
  each in a colour, the rest as "other"), with the mesh's daily cap as a line;
- `ranked`: horizontal bars, one per row (spend per capability).
"""

from __future__ import annotations

import math

W, H = 640, 240                 # the drawing, in SVG units (it scales to the page's width)
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 10, 24
SERIES = 8                      # colours; more agents than this share the last ("other")
BAR_H, BAR_GAP, LABEL_W = 18, 6, 180


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least `value` (axis top)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value)


def stacked_days(rows: list[dict], days: list[str], cap: float | None) -> dict:
    """`rows`: {day, agent, cost_usd} (a report grouped by day and agent); `days`: every day to show."""
    by_agent: dict[str, float] = {}
    for row in rows:
        by_agent[row["agent"]] = by_agent.get(row["agent"], 0.0) + row["cost_usd"]
    ranked = sorted(by_agent, key=lambda agent: (-by_agent[agent], agent))
    named = ranked if len(ranked) <= SERIES else ranked[:SERIES - 1]
    series = {agent: index for index, agent in enumerate(named)}
    other = SERIES - 1 if len(ranked) > SERIES else None
    cells: dict[str, dict[int, float]] = {day: {} for day in days}
    for row in rows:
        if row["day"] in cells:
            index = series.get(row["agent"], other)
            cells[row["day"]][index] = cells[row["day"]].get(index, 0.0) + row["cost_usd"]
    totals = {day: sum(parts.values()) for day, parts in cells.items()}
    top = nice_ceiling(max([*totals.values(), cap or 0.0]) * 1.05)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    step = plot_w / max(len(days), 1)
    width = max(step * 0.7, 1.0)

    def y_of(usd: float) -> float:
        return TOP + plot_h - usd / top * plot_h

    bars = []
    for i, day in enumerate(days):
        base = 0.0
        for index in sorted(cells[day]):
            usd = cells[day][index]
            y_top = y_of(base + usd)
            bars.append(dict(x=round(LEFT + i * step + (step - width) / 2, 2), y=round(y_top, 2), w=round(width, 2),
                             h=round(y_of(base) - y_top, 2), series=index, day=day,
                             agent="other agents" if index == other else named[index], usd=usd))
            base += usd
    # Cents, or as many places as tell the steps apart (a cheap day's steps are fractions of one).
    places = max(2, 1 - math.floor(math.log10(top / 4)))
    ticks = [dict(y=round(y_of(top * k / 4), 2), label=f"${top * k / 4:.{places}f}") for k in range(5)]
    every = max(1, math.ceil(len(days) / 8))  # at most 8 day labels, readable on a phone
    labels = [dict(x=round(LEFT + i * step + step / 2, 2), text=day[5:]) for i, day in enumerate(days)
              if i % every == 0 or i == len(days) - 1]
    legend = [dict(name=agent, series=index) for agent, index in series.items()]
    if other is not None:
        legend.append(dict(name="other agents", series=other))
    return dict(width=W, height=H, left=LEFT, right=W - RIGHT, bottom=TOP + plot_h, bars=bars, ticks=ticks,
                labels=labels, legend=legend, cap_y=round(y_of(cap), 2) if cap else None, cap=cap,
                total=sum(totals.values()))


def ranked(rows: list[dict], key: str) -> dict:
    """Horizontal bars, dearest first: `rows` are {key, cost_usd}."""
    ordered = sorted(rows, key=lambda row: -row["cost_usd"])
    top = nice_ceiling(max([row["cost_usd"] for row in ordered], default=0.0))
    span = W - LABEL_W - RIGHT - 70
    bars = [dict(y=i * (BAR_H + BAR_GAP), w=round(max(row["cost_usd"] / top * span, 1.0), 2),
                 label=row[key] or "(none)", usd=row["cost_usd"], series=min(i, SERIES - 1))
            for i, row in enumerate(ordered)]
    return dict(width=W, height=max(len(bars) * (BAR_H + BAR_GAP), BAR_H), label_w=LABEL_W, bar_h=BAR_H, bars=bars)
