"""GET /api/agents on a busy history: what computing each agent's live state on request costs.

The Commander gets 20 agents and a task history of `--tasks` finished tasks spread over them
(copied in SQL from one real task per agent, 10 % failed), plus a few queued ones. Then
`GET /api/agents` (every agent: live counts and the window of its latest 100 finished tasks)
and `GET /api/agents/NAME` are timed over HTTP, beside two peers in the same run: `GET
/api/health` (one round trip) and `GET /api/tasks` (the queue page, 50 tasks). This is the
figure that decides between queries on request (commander/agents/stats.py) and a rollup kept by
a task_finished receiver (a write under the write lock on every finished task).

    .venv/bin/python bench/agents_status.py [--quick] [--tasks N]
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from _common import Commander, parse_args, summary_ms, table, timed
from m3shd.client import ApiClient

AGENTS = 20


def fill(database: Path, seeds: dict[str, int], per_agent: int) -> None:
    """`per_agent` finished copies of each agent's seed task, straight into the database."""
    with sqlite3.connect(database, timeout=30) as conn:
        columns = [row[1] for row in conn.execute('PRAGMA table_info("task")') if row[1] != "id"]
        changed = {
            "state": "CASE WHEN n.i % 10 = 0 THEN 'failed' ELSE 'succeeded' END",
            "finished_at": "task.created_at + n.i", "duration_ms": "n.i % 5000", "input_tokens": "n.i % 700",
            "output_tokens": "n.i % 300", "cost_usd": "(n.i % 300) / 100000.0",
        }
        chosen = ", ".join(changed.get(name, f'task."{name}"') for name in columns)
        statement = (f'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) '
                     f'INSERT INTO task ({", ".join(f"{chr(34)}{name}{chr(34)}" for name in columns)}) '
                     f'SELECT {chosen} FROM task, n WHERE task.id = ?')
        for task_id in seeds.values():
            conn.execute(statement, (per_agent, task_id))


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda p: p.add_argument("--tasks", type=int))
    total = args.tasks or (20_000 if args.quick else 200_000)
    samples = 50 if args.quick else 300
    with Commander(workers=args.workers, keep=args.keep) as cmdr:
        api = ApiClient(cmdr.url, cmdr.admin_token)
        names = ["general"] + [f"bench-agent-{i:02d}" for i in range(1, AGENTS)]
        for name in names[1:]:
            api.put_agent(name, f'name = "{name}"\nsystem_prompt = "You are {name}."')
        seeds = {name: api.submit_task(f"seed for {name}", agent=name, requires=["nowhere"])["id"] for name in names}
        started = time.perf_counter()
        fill(Path(cmdr.env["M3SHD_DATA_DIR"]) / "commander" / "commander.db", seeds, total // AGENTS)
        filled = time.perf_counter() - started
        listing = api.list_agents()
        assert sum(agent["stats"]["window"] for agent in listing) == AGENTS * 100, "every window should be full"
        for _ in range(10):  # warm-up: connections, caches, compiled queries
            api.list_agents()
            api.health()
        rows = []
        for label, call in (("GET /api/agents (20 agents)", api.list_agents),
                            ("GET /api/agents/NAME", lambda: api.get_agent("bench-agent-07")),
                            ("GET /api/tasks (peer: 50 tasks)", lambda: api.list_tasks(limit=50)),
                            ("GET /api/health (peer: 1 round trip)", api.health)):
            s = summary_ms(timed(call, samples))
            rows.append([label, s["n"], s["p50"], s["p90"], s["p99"], s["max"]])
    print(f"\nagents_status: {AGENTS} agents over {total:,} finished tasks (filled in {filled:.1f} s), "
          f"2 gevent workers")
    table(["request", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows)
    print(f"\nratio GET /api/agents p50 / health p50: {rows[0][2] / rows[3][2]:.1f}x; "
          f"/ GET /api/tasks p50: {rows[0][2] / rows[2][2]:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
