"""The dashboard's Spend page (commander/web/charts.py lays its SVG out), in process."""

from __future__ import annotations

import re

import pytest

from commander import leases
from commander.web import charts
from mesh import apply, configure, join, lease_of, result, submit


def test_the_daily_chart_stacks_agents_under_a_nice_ceiling_with_the_cap_line():
    rows = [dict(day="2026-12-01", agent="a", cost_usd=1.0), dict(day="2026-12-01", agent="b", cost_usd=0.5),
            dict(day="2026-12-02", agent="a", cost_usd=2.0)]
    chart = charts.stacked_days(rows, ["2026-11-30", "2026-12-01", "2026-12-02"], cap=3.0)
    assert [tick["label"] for tick in chart["ticks"]] == ["$0.00", "$1.25", "$2.50", "$3.75", "$5.00"]
    first, second, third = chart["bars"]
    assert (first["agent"], second["agent"], third["agent"]) == ("a", "b", "a")
    assert second["y"] + second["h"] == pytest.approx(first["y"])  # b sits on a
    assert first["h"] == pytest.approx(third["h"] / 2) and chart["bottom"] == pytest.approx(first["y"] + first["h"])
    assert chart["cap_y"] == round(chart["bottom"] - 3.0 / 5.0 * (chart["bottom"] - 10), 2)
    assert [item["name"] for item in chart["legend"]] == ["a", "b"] and chart["total"] == 3.5


def test_a_cheap_days_axis_shows_as_many_places_as_tell_its_ticks_apart():
    """Rounded to cents, a day of $0.0036 had the axis $0.00, $0.00, $0.00, $0.00, $0.01."""
    chart = charts.stacked_days([dict(day="2026-12-02", agent="general", cost_usd=0.0036)], ["2026-12-02"], cap=None)
    labels = [tick["label"] for tick in chart["ticks"]]
    assert len(set(labels)) == 5 and (labels[0], labels[2], labels[-1]) == ("$0.0000", "$0.0025", "$0.0050")


def test_more_agents_than_colours_share_the_last_as_other():
    rows = [dict(day="2026-12-01", agent=f"agent-{n}", cost_usd=float(n + 1)) for n in range(10)]
    chart = charts.stacked_days(rows, ["2026-12-01"], cap=None)
    assert len(chart["legend"]) == charts.SERIES and chart["legend"][-1]["name"] == "other agents"
    other = [bar for bar in chart["bars"] if bar["agent"] == "other agents"]
    assert len(other) == 1 and other[0]["usd"] == 1.0 + 2.0 + 3.0 and chart["cap_y"] is None


def test_the_spend_page_draws_the_charts_lists_the_dearest_tasks_and_sets_a_cap(app, client, bearer):
    cmdr = app.extensions["m3shd"]
    with cmdr.db.connection_context():
        configure(cmdr, spend_cap=5.0, spend_caps=("agent:general=1",))
        node = join(cmdr, slots=1)
        task = submit(cmdr, requires=[])
        apply(cmdr, node, result(lease_of(cmdr, node, task), cost_usd=1.25, usage=leases.Usage(input_tokens=10)))
    reader = bearer(permissions=["spend:read"])
    page = client.get("/spend", headers=reader)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert re.search(r'<rect class="series-0"[^>]*><title>\d{4}-\d\d-\d\d · general: \$1.25</title>', html)
    assert 'class="cap-line"' in html and "daily cap $5.00" in html
    assert f'href="/tasks/{task.id}">#{task.id}</a>' in html
    assert "agent general" in html and "reached" in html  # the agent's $1 cap holds its work
    assert 'action="/spend/caps"' not in html  # spend:read alone sees no form
    refused = client.post("/spend/caps", data=dict(scope="all", usd="9"), headers=reader)
    assert refused.status_code == 403
    manager = bearer(permissions=["spend:read", "spend:manage"])
    assert 'action="/spend/caps"' in client.get("/spend", headers=manager).get_data(as_text=True)
    done = client.post("/spend/caps", data=dict(scope="agent", name="general", usd="$2.50"), headers=manager)
    assert done.status_code == 303
    assert client.get("/api/spend/caps", headers=manager).get_json()["caps"][0]["cap_usd"] == 2.5
    bad = client.post("/spend/caps", data=dict(scope="agent", name="general", usd="lots"), headers=manager)
    assert bad.status_code == 400
