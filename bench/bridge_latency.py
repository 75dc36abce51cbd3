"""iMessage bridge latency: a row inserted into chat.db → the task exists on the Commander.

A real `m3shd bridge run` process (product defaults: poll every 0.25 s, woken sooner by chat.db's
WAL changing; is_from_me re-read after 0.15 s) watches a chat.db built with the Tahoe table layout,
with the fake `osascript` on PATH. The bench inserts one message at a time, at a random moment so
the poll phase is random, and measures from just before the INSERT's commit to the Commander's
`task.queued` event for it arriving on an SSE stream (time.perf_counter, same process).
Peer in the same run: the submit POST alone (what the bridge adds is reading, the recheck delay,
and its own submit).

    .venv/bin/python bench/bridge_latency.py [--quick] [--samples N]
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time

from _common import Commander, Noise, parse_args, self_cpu, summary_ms, table, verdict
from bridge.settings import BridgeSettings
from chatdb_fixtures import ChatDb  # the tests' chat.db builder (_common puts tests/ on the path)
from m3shd.client import ApiClient, CommanderUnreachable

GOAL_P50_MS = 300.0
ME = "+15551234567"


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda p: p.add_argument("--samples", type=int))
    samples = args.samples or (15 if args.quick else 100)
    with Commander(workers=args.workers, keep=args.keep) as cmdr:
        db = ChatDb(cmdr.home / "Messages" / "chat.db", "tahoe")
        chat, _ = db.chat([ME])
        state = cmdr.home / "bridge-state"
        env = cmdr.env | {
            "M3SHD_CLIENT_URL": cmdr.url, "M3SHD_CLIENT_TOKEN": cmdr.token("bench-bridge", role="mobile"),
            "M3SHD_BRIDGE_CHAT_DB": str(db.path), "M3SHD_BRIDGE_STATE_DIR": str(state),
            "M3SHD_BRIDGE_ALLOWED_SENDERS": ME, "FAKE_OSASCRIPT_LOG": str(cmdr.home / "osascript.jsonl"),
        }
        with open(cmdr.home / "bridge.log", "ab") as log:
            bridge = subprocess.Popen([sys.executable, "-m", "m3shd", "bridge", "run"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while not (state / "state.json").exists():
                if bridge.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the bridge did not start:\n{(cmdr.home / 'bridge.log').read_text()}")
                time.sleep(0.05)
            queued: dict[int, float] = {}
            arrived = threading.Condition()

            def follow():
                try:
                    for event in ApiClient(cmdr.url, cmdr.admin_token).events():
                        if event["kind"] == "task.queued":
                            with arrived:
                                queued[event["task_id"]] = time.perf_counter()
                                arrived.notify_all()
                except CommanderUnreachable:
                    pass  # the Commander stopped at the end of the run

            threading.Thread(target=follow, daemon=True).start()
            time.sleep(0.5)  # the stream is open before the first insert

            noise = Noise(lambda: self_cpu() + sum(cmdr.workers_cpu().values()))
            latencies, lost = [], 0
            for n in range(1, samples + 1):
                time.sleep(random.uniform(0.1, 0.4))
                t0 = time.perf_counter()
                db.message(chat, ME, f"bench message {n}")
                with arrived:
                    if arrived.wait_for(lambda: n in queued, timeout=10):
                        latencies.append(queued[n] - t0)
                    else:
                        lost += 1
            noise_line = noise.stop()

            api = ApiClient(cmdr.url, cmdr.admin_token)
            submits = []
            for n in range(samples):
                t0 = time.perf_counter()
                api.submit_task(f"peer {n}")
                submits.append(time.perf_counter() - t0)
        finally:
            bridge.terminate()
            bridge.wait(20)

    settings = BridgeSettings()
    rows = []
    for name, values in (("chat.db row → task.queued", latencies), ("peer: submit POST alone", submits)):
        s = summary_ms(values)
        rows.append([name, s["n"], s["p50"], s["p90"], s["p99"], s["max"]])
    print(f"\nbridge_latency: `m3shd bridge run` → Commander with {args.workers} gevent workers "
          f"(poll {settings.poll_interval:g} s + WAL watch, recheck {settings.recheck_delay:g} s)")
    table(["path", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows)
    p50 = summary_ms(latencies)["p50"]
    print(f"goal p50 <= {GOAL_P50_MS:.0f} ms: {p50:.1f} ms ({verdict(p50 <= GOAL_P50_MS)})")
    if lost:
        print(f"messages with no task within 10 s: {lost}")
    print(noise_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
