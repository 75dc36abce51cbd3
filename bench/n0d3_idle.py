"""What an idle N0D3 costs its machine: resident memory and CPU of `m3shd n0d3 run`.

A real Commander and a real `python -m m3shd n0d3 run` process (the environment of
tests/harness.py's N0D3 class: fake `claude` from tests/fakes on PATH, so the CLI runner is
detected). Once the node is registered and active it runs one task, so the figures include what
running and signing a result leave loaded; then it idles (no tasks) for 20 s (quick: 8 s);
then VmRSS and VmHWM come from /proc/<pid>/status and CPU time (utime+stime) over the window
from /proc/<pid>/stat. Claim wait is the product default (30 s; --claim-wait to change), the
heartbeat interval the Commander's default (5 s).

Peer, over the same window: a bare `python -c "import requests, time; time.sleep(...)"`,
the least a requests-based agent could cost. Goal: RSS <= 35 MB, CPU near zero.

    .venv/bin/python bench/n0d3_idle.py [--quick] [--idle SECONDS] [--claim-wait SECONDS]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from _common import CLK_TCK, Commander, Noise, cpu_seconds, parse_args, proc_status, status_mb, table, verdict
from commander.settings import CommanderSettings
from harness import N0D3

GOAL_RSS_MB = 35.0
GOAL_CPU_PCT = 1.0  # "near zero": under 1 % of one core


def extra(parser):
    parser.add_argument("--idle", type=float, help="idle window, s (default 20; quick 8)")
    parser.add_argument("--claim-wait", type=float, default=30.0, help="N0D3 claim long-poll, s (product default 30)")


def reading(pid: int) -> dict:
    status = proc_status(pid)
    return dict(cpu=cpu_seconds(pid), rss=status_mb(status, "VmRSS"), hwm=status_mb(status, "VmHWM"),
                threads=int(status["Threads"]))


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], extra)
    idle = args.idle or (8.0 if args.quick else 20.0)

    with Commander(workers=args.workers, keep=args.keep) as cmdr:
        agent = N0D3(cmdr, "idle", env={"M3SHD_N0D3_CLAIM_WAIT": f"{args.claim_wait:g}"})
        n0d3 = agent.process.proc
        peer = None
        try:
            t_start = time.monotonic()
            while True:
                if n0d3.poll() is not None:
                    raise RuntimeError(f"the N0D3 exited {n0d3.returncode}: {agent.process.text()[-2000:]}")
                node = agent.node()
                if node and node["state"] == "active" and node["runner"]:
                    break
                if time.monotonic() - t_start > 30:
                    raise RuntimeError("the N0D3 did not register within 30 s")
                time.sleep(0.1)
            registered_after = time.monotonic() - t_start
            task = cmdr.api.submit_task("one task before idling")
            finished = cmdr.api.wait_task(task["id"], timeout=30)
            if finished["state"] != "succeeded":
                raise RuntimeError(f"the warm-up task ended {finished['state']}: {finished.get('error')}")

            # The peer starts now and gets a second to import requests; then both windows open together.
            peer = subprocess.Popen([sys.executable, "-c",
                                     f"import requests, time; time.sleep({idle + 5:g})"])
            time.sleep(1.0)
            noise = Noise(lambda: cpu_seconds(os.getpid()) + sum(cmdr.workers_cpu().values())
                          + cpu_seconds(n0d3.pid) + cpu_seconds(peer.pid))
            n0, p0, w0 = reading(n0d3.pid), reading(peer.pid), time.monotonic()
            time.sleep(idle)
            n1, p1, w1 = reading(n0d3.pid), reading(peer.pid), time.monotonic()
            noise_line = noise.stop()
            window = w1 - w0
            node_after = agent.node() or {}
        finally:
            if peer and peer.poll() is None:
                peer.kill()
                peer.wait()
            agent.process.stop()  # SIGTERM: it drains (nothing running) and deregisters

    rows = []
    for label, a, b in (("m3shd n0d3 run (CLI runner, idle)", n0, n1),
                        ("peer: python -c 'import requests; sleep'", p0, p1)):
        cpu = b["cpu"] - a["cpu"]
        rows.append([label, b["rss"], b["hwm"], b["threads"], cpu, 100 * cpu / window])
    print(f"\nn0d3_idle: idle window {window:.1f} s after registration ({registered_after:.1f} s to register) "
          f"and one task; "
          f"claim wait {args.claim_wait:g} s, heartbeat {CommanderSettings().heartbeat_interval:g} s "
          f"(Commander default); node {node_after.get('state', '?')}, last heartbeat "
          f"{node_after.get('heartbeat_age', float('nan')):.1f} s before the end")
    table(["process", "VmRSS MB", "VmHWM MB", "threads", "CPU s", "CPU %"], rows)
    rss, cpu_pct = n1["rss"], 100 * (n1["cpu"] - n0["cpu"]) / window
    print(f"\nratio RSS ours/peer: {n1['rss'] / p1['rss']:.2f}x; CPU ours {cpu_pct:.2f}% vs peer "
          f"{100 * (p1['cpu'] - p0['cpu']) / window:.2f}% of a core (CPU resolution {1 / CLK_TCK:.2f} s)")
    print(noise_line)
    print(f"goal RSS <= {GOAL_RSS_MB:.0f} MB: {rss:.1f} MB ({verdict(rss <= GOAL_RSS_MB)}); CPU near zero "
          f"(< {GOAL_CPU_PCT:.0f}%): {cpu_pct:.2f}% ({verdict(cpu_pct < GOAL_CPU_PCT)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
