"""The spend ledger: reading a long history, and what writing it adds to each result.

1. Reads, over HTTP on a live Commander: `--rows` ledger rows (default 1,000,000; quick 100,000)
   spread over 90 days, 20 agents, 7 nodes, 5 submitters and 3 models, written straight into the
   database with the roll-ups the ledger keeps beside them (spend_day, one row per day and agent,
   submitter, node, model and capabilities; spend_agent_day, per day and agent; spend_task, per
   task), the fold's mark past them all. Timed: `GET /api/spend?group=day,agent` over
   the 90 days (what the goal names, read from the roll-up by agent), today's `group=node` (from
   the one by every dimension), and
   `GET /api/spend/top` over the 90 days (read from the per-task totals), beside
   `GET /api/health` (one round trip) as the peer.
2. Writes, in process: applying a result (the fenced UPDATE, provenance, the signals and their
   receivers, one write transaction) with the ledger's receiver connected and without it, in
   alternating blocks in the same run on the same database, so the difference is the ledger
   write (the row, the task's cost, the cap check, and a fold of the roll-ups every 64th result)
   and nothing else.

    .venv/bin/python bench/spend.py [--quick] [--rows N]
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

# First, while bench/ alone is on the path: _common puts tests/ there too, whose m3shd/ and commander/
# (test folders, no packages) would shadow the real ones for the in-process part.
import commander  # noqa: F401
import m3shd  # noqa: F401
from _common import Commander, parse_args, summary_ms, table, timed, verdict
from m3shd.client import ApiClient

DAYS = 90
GOAL_READ_P99_MS = 50.0
GOAL_WRITE_MS = 0.2


def fill(database: Path, rows: int) -> float:
    """`rows` ledger rows over the last DAYS days, and their roll-up; returns the seconds it took."""
    started = time.perf_counter()
    first = (date.today() - timedelta(days=DAYS - 1)).isoformat()
    with sqlite3.connect(database, timeout=30) as conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO spend_entry (task, attempt, kind, agent, agent_version, node, node_name, capabilities, model, "
            "submitter, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, cost_source, "
            "priced_as, day, ts) "
            "SELECT 1000000 + i, 1, 'succeeded', 'agent-' || (i % 20), 1, i % 7, 'node-' || (i % 7), "
            "CASE i % 4 WHEN 0 THEN 'gpu' ELSE '' END, "
            "CASE i % 3 WHEN 0 THEN 'claude-opus-5' WHEN 1 THEN 'claude-sonnet-5-5' ELSE 'claude-haiku-4-5' END, "
            "'submitter-' || (i % 5), i % 5000, i % 900, 0, 0, (i % 997) / 10000.0, 'runner', NULL, "
            "date(?, '+' || ((i / 20) % ?) || ' days'), 0 FROM n", (rows, first, DAYS))
        conn.execute(
            "INSERT INTO spend_day (day, agent, submitter, node_name, model, capabilities, attempts, input_tokens, "
            "output_tokens, cache_read_tokens, cache_write_tokens, cost_usd) "
            "SELECT day, agent, submitter, node_name, model, capabilities, COUNT(*), SUM(input_tokens), "
            "SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(cost_usd) FROM spend_entry "
            "GROUP BY day, agent, submitter, node_name, model, capabilities")
        conn.execute(
            "INSERT INTO spend_agent_day (day, agent, attempts, input_tokens, output_tokens, cache_read_tokens, "
            "cache_write_tokens, cost_usd) SELECT day, agent, SUM(attempts), SUM(input_tokens), SUM(output_tokens), "
            "SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(cost_usd) FROM spend_day GROUP BY day, agent")
        conn.execute(
            "INSERT INTO spend_task (task, day, agent, submitter, model, attempts, input_tokens, output_tokens, cost_usd) "
            "SELECT task, MIN(day), MIN(agent), MIN(submitter), MIN(model), COUNT(*), SUM(input_tokens), "
            "SUM(output_tokens), SUM(cost_usd) FROM spend_entry GROUP BY task")
        # Every row is in the roll-ups: the fold's mark goes past them (commander/spend/fold.py).
        conn.execute("INSERT INTO spend_fold (id, entry) SELECT 1, MAX(id) FROM spend_entry WHERE true "
                     "ON CONFLICT (id) DO UPDATE SET entry = excluded.entry")
        conn.execute("ANALYZE")
    return time.perf_counter() - started


def reads(args, rows: int, samples: int) -> tuple[list[list], float, int]:
    with Commander(workers=args.workers, keep=args.keep) as cmdr:
        api = ApiClient(cmdr.url, cmdr.admin_token)
        database = Path(cmdr.env["M3SHD_DATA_DIR"]) / "commander" / "commander.db"
        filled = fill(database, rows)
        with sqlite3.connect(database) as conn:
            rolled = conn.execute("SELECT COUNT(*) FROM spend_day").fetchone()[0]
        first, last = (date.today() - timedelta(days=DAYS - 1)).isoformat(), date.today().isoformat()
        window = {"group": "day,agent", "from": first, "to": last}
        report = api._send("GET", "/api/spend", params=window)
        assert report["total"]["attempts"] == rows and len(report["rows"]) == DAYS * 20, "every row counted"
        calls = (
            (f"GET /api/spend?group=day,agent ({DAYS} days)", lambda: api._send("GET", "/api/spend", params=window)),
            ("GET /api/spend?group=node (today)", lambda: api.spend("node")),
            (f"GET /api/spend/top?n=10 ({DAYS} days)", lambda: api.spend_top(10, DAYS)),
            ("GET /api/health (peer: 1 round trip)", api.health),
        )
        for _, call in calls:  # warm-up: connections, caches, compiled queries
            for _ in range(3):
                call()
        measured = []
        for label, call in calls:
            s = summary_ms(timed(call, samples))
            measured.append([label, s["n"], s["p50"], s["p90"], s["p99"], s["max"]])
    return measured, filled, rolled


def writes(results: int, block: int) -> tuple[dict, dict]:
    """Per-result apply time (seconds) with and without the ledger's receiver, in alternating blocks."""
    import os

    from commander import leases, nodes, tasks
    from commander.models import Node
    from commander.app import create_app
    from commander.settings import CommanderSettings
    from commander.spend import ledger
    from m3shd import config, wire

    home = Path(tempfile.mkdtemp(prefix="m3shd-bench-spend-"))
    os.environ["M3SHD_CONFIG_DIR"] = str(home / "conf")
    app = create_app(config.load(CommanderSettings, data_dir=str(home / "commander"), log_level="warning"),
                     background=False)
    cmdr = app.extensions["m3shd"]
    receivers = cmdr.signals.attempt_ended.receivers
    took = {"with": [], "without": []}
    with cmdr.db.connection_context():
        node_id = nodes.register(cmdr, nodes.Machine(machine_id="bench-spend", name="bench", slots=1), "bench")["node_id"]
        node = Node.get_by_id(node_id)
        for n in range(2 * results // block):
            mode = ("with", "without")[n % 2]
            if mode == "without":
                receivers.remove(ledger.on_attempt_ended)
            # As its heartbeats would: a node silent for lost_after takes no work.
            Node.update(last_seen=time.time()).where(Node.id == node_id).execute()
            try:
                for _ in range(block):
                    tasks.submit(cmdr, tasks.TaskSpec(prompt="bench"), submitter="bench")
                    lease = leases.claim(cmdr, node_id, 1)[0]
                    sent = leases.Result(task_id=lease["task_id"], attempt=lease["attempt"],
                                         lease_token=lease["lease_token"], status="succeeded", signature="ab" * 32,
                                         output="ok", cost_usd=0.0123, model="claude-sonnet-5-5",
                                         usage=leases.Usage(input_tokens=1200, output_tokens=300),
                                         **wire.binding(lease))
                    t0 = time.perf_counter()
                    leases.apply_result(cmdr, node, sent, b"{}", None)
                    took[mode].append(time.perf_counter() - t0)
            finally:
                if mode == "without":
                    receivers.append(ledger.on_attempt_ended)
    cmdr.db.close_all()
    shutil.rmtree(home, ignore_errors=True)
    return summary_ms(took["with"]), summary_ms(took["without"])


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda p: p.add_argument("--rows", type=int))
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    samples = 30 if args.quick else 300
    measured, filled, rolled = reads(args, rows, samples)
    print(f"\nspend: {rows:,} ledger rows over {DAYS} days (filled in {filled:.1f} s; roll-up {rolled:,} rows), "
          f"{args.workers} gevent workers")
    table(["request", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"], measured)
    p99 = measured[0][4]
    print(f"goal GET /api/spend grouped by day and agent over {DAYS} days p99 <= {GOAL_READ_P99_MS:g} ms: "
          f"{p99:.1f} ms, {verdict(p99 <= GOAL_READ_P99_MS)}; ratio p50 to health p50: "
          f"{measured[0][2] / measured[3][2]:.1f}x")
    with_ledger, without = writes(*((400, 100) if args.quick else (3000, 250)))
    table(["apply_result (in process)", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
          [[name, s["n"], s["p50"], s["p90"], s["p99"], s["max"]]
           for name, s in (("with the ledger", with_ledger), ("without it (peer)", without))])
    added = with_ledger["p50"] - without["p50"]
    print(f"goal the ledger adds <= {GOAL_WRITE_MS:g} ms to a result (p50 with - without): {added:.3f} ms, "
          f"{verdict(added <= GOAL_WRITE_MS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
