"""Submit → claim latency with one idle, long-polling node.

One simulated N0D3 (NodeClient, registered with the join token) long-polls
`claim(open_slots=1, wait=30)` in a thread. The main thread submits one task at a time
(ApiClient) and measures from just before the submit POST to the node's claim call returning
the lease (time.perf_counter, same process). The node posts a result at once, so the queue is
empty before every sample, and the main thread waits a little so the node is parked again.

The Commander runs its default 2 gevent workers. Which worker holds each keep-alive
connection is read from /proc (socket inodes), so samples are split into:
  cross-worker  submit served by one worker, the long-poll parked in the other: the wake
                travels by Unix datagram (the figure the goal is about);
  same worker   both on one worker: the wake stays in-process (for comparison).
Peers in the same run: `GET /api/health` (one plain HTTP round trip) and the submit POST alone.

Then what an agent profile costs the same path: cross-worker samples alternating, one for one,
between a bare agent (no system prompt, no tools: a task as it ran before agents) and a
specialist whose profile is the size of the shipped bench's largest (a 5 KB system prompt,
tools, a turn bound and a timeout), which the submit resolves and the lease carries.

    .venv/bin/python bench/claim_latency.py [--quick] [--samples N]
"""

from __future__ import annotations

import queue
import random
import threading
import time

from _common import (Commander, Noise, parse_args, percentile, register_node, result_for, self_cpu, session_ports,
                     summary_ms, table, verdict, worker_serving)
from m3shd.client import ApiClient

GOAL_P50_MS, GOAL_P99_MS = 5.0, 25.0
GOAL_PROFILE_RATIO = 1.10  # a profile may cost at most 10 % of submit→claim (p50 and p99)
BARE = 'name = "bench-bare"\ntitle = "Bare"\n'
SPECIALIST = ('+++\nname = "bench-specialist"\ntitle = "Specialist"\nmodel = "claude-sonnet-5-5"\n'
              'allowed_models = ["claude-sonnet-5-5", "claude-opus-5-5"]\n'
              'allowed_tools = ["Read", "Grep", "Glob", "Bash(git diff:*)", "Bash(git log:*)", "WebSearch"]\n'
              'disallowed_tools = ["Bash(rm:*)", "Write"]\nmax_turns = 30\ntimeout = 1200\n+++\n'
              + "## Role\n" + "You review what you are given, carefully and in order of severity. " * 75)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda p: p.add_argument("--samples", type=int))
    cross_n = args.samples or (100 if args.quick else 500)
    same_n = max(20, cross_n // 5)
    warmup = 10 if args.quick else 30

    with Commander(workers=args.workers, keep=args.keep) as cmdr:
        # Peer: the submit POST with no node connected (nothing to wake); those tasks are then cancelled.
        lone_api = ApiClient(cmdr.url, cmdr.admin_token)
        lone_submit = []
        for i in range(warmup + same_n):
            t0 = time.perf_counter()
            task = lone_api.submit_task("bench: nobody waits")
            if i >= warmup:
                lone_submit.append(time.perf_counter() - t0)
            lone_api.cancel_task(task["id"])
        node = register_node(cmdr.url, cmdr.join_token, "latency-node")
        claimed: queue.Queue = queue.Queue()
        parked = threading.Event()      # the node has posted its result and is about to long-poll again
        stop = threading.Event()
        node_errors: list[str] = []
        node_port = [None]

        def node_loop():
            while not stop.is_set():
                parked.set()
                try:
                    leases = node.claim(open_slots=1, wait=30)
                except Exception as exc:  # noqa: BLE001 - counted and shown
                    if not stop.is_set():
                        node_errors.append(repr(exc))
                    time.sleep(0.1)
                    continue
                t_claimed = time.perf_counter()
                if not leases:
                    continue
                ports = session_ports(node.session, cmdr.url)
                node_port[0] = ports[0] if ports else None
                claimed.put((leases[0]["task_id"], t_claimed, node_port[0]))
                try:
                    node.post_result(result_for(leases[0]))
                except Exception as exc:  # noqa: BLE001
                    node_errors.append(repr(exc))

        thread = threading.Thread(target=node_loop, name="node", daemon=True)
        thread.start()

        worker_of: dict[int, int | None] = {}

        def worker(port):
            if port is None:
                return None
            if port not in worker_of:
                worker_of[port] = worker_serving(cmdr, port)
            return worker_of[port]

        api = ApiClient(cmdr.url, cmdr.admin_token)

        def place_api(want_cross: bool, node_worker) -> ApiClient:
            """Reconnect the submitter until its connection sits on the wanted worker."""
            nonlocal api
            for _ in range(40):
                api.health()
                ports = session_ports(api.session, cmdr.url)
                w = worker(ports[0]) if ports else None
                if node_worker is None or w is None or (w != node_worker) == want_cross:
                    return api
                api.session.close()
                api = ApiClient(cmdr.url, cmdr.admin_token)
            return api

        results = {"cross": [], "same": [], "unknown": [], "bench-bare": [], "bench-specialist": []}
        submit_post = []

        def sample(record: bool, want_cross: bool | None, agent: str | None = None) -> None:
            parked.wait(35)
            parked.clear()
            time.sleep(random.uniform(0.015, 0.03))  # let the claim reach its long-poll
            node_worker = worker(node_port[0])
            if want_cross is not None:
                place_api(want_cross, node_worker)
            t0 = time.perf_counter()
            task = api.submit_task("bench: claim latency", agent=agent)
            t1 = time.perf_counter()
            task_id, t_claimed, port = claimed.get(timeout=35)
            if task_id != task["id"]:
                raise RuntimeError(f"claimed task {task_id}, expected {task['id']}")
            if not record:
                return
            api_ports = session_ports(api.session, cmdr.url)
            w_api, w_node = worker(api_ports[0]) if api_ports else None, worker(port)
            kind = "unknown" if None in (w_api, w_node) else ("cross" if w_api != w_node else "same")
            if agent:
                if kind == "cross":  # the comparison keeps to one kind of wake
                    results[agent].append(t_claimed - t0)
                return
            results[kind].append(t_claimed - t0)
            submit_post.append(t1 - t0)

        for _ in range(warmup):
            sample(False, None)
        noise = Noise(lambda: self_cpu() + sum(cmdr.workers_cpu().values()))
        started = time.perf_counter()
        for _ in range(cross_n):
            sample(True, True)
        for _ in range(same_n):
            sample(True, False)
        elapsed = time.perf_counter() - started
        noise_line = noise.stop()

        for profile in (BARE, SPECIALIST):
            api.put_agent(profile.split('"')[1], profile)
        for i in range(2 * cross_n):  # interleaved, so drift and noise fall on both alike
            sample(True, True, ("bench-bare", "bench-specialist")[i % 2])

        health = []
        for _ in range(200):
            t0 = time.perf_counter()
            api.health()
            health.append(time.perf_counter() - t0)

        stop.set()
        cpu = cmdr.workers_cpu()

    rows = []
    for label, values in (("submit→claim, cross-worker wake", results["cross"]),
                          ("submit→claim, same-worker wake", results["same"]),
                          ("submit→claim, worker unknown", results["unknown"]),
                          ("submit POST (inside the samples above)", submit_post),
                          ("submit POST, no node connected (peer)", lone_submit),
                          ("GET /api/health (peer: 1 round trip)", health)):
        if values:
            s = summary_ms(values)
            rows.append([label, s["n"], s["p50"], s["p90"], s["p99"], s["max"]])
    print(f"\nclaim_latency: one idle long-polling node, Commander with 2 gevent workers "
          f"({cross_n + same_n} samples in {elapsed:.1f} s, warm-up {warmup})")
    table(["path", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows)

    cross = results["cross"] or results["same"] + results["unknown"]
    p50, p99 = percentile(cross, 50) * 1000, percentile(cross, 99) * 1000
    h50 = percentile(health, 50) * 1000
    print(f"\nratio submit→claim p50 / health round-trip p50: {p50 / h50:.1f}x")
    print(f"goal cross-worker p50 <= {GOAL_P50_MS:.0f} ms: {p50:.2f} ms ({verdict(p50 <= GOAL_P50_MS)}); "
          f"p99 <= {GOAL_P99_MS:.0f} ms: {p99:.2f} ms ({verdict(p99 <= GOAL_P99_MS)})")
    bare, specialist = results["bench-bare"], results["bench-specialist"]
    table(["cross-worker submit→claim, interleaved", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
          [[label, *(summary_ms(values)[k] for k in ("n", "p50", "p90", "p99", "max"))]
           for label, values in (("a bare agent (no prompt, no tools)", bare),
                                 (f"a specialist ({len(SPECIALIST) // 1000} KB profile, tools)", specialist))],
          title="what an agent profile costs")
    for p in (50, 99):
        ratio = percentile(specialist, p) / percentile(bare, p)
        print(f"specialist / bare p{p}: {ratio:.3f}x (goal <= {GOAL_PROFILE_RATIO:.2f}x: "
              f"{verdict(ratio <= GOAL_PROFILE_RATIO)})")
    print(noise_line)
    print("Commander worker CPU: " + ", ".join(f"pid {pid} {s:.1f} s" for pid, s in cpu.items()))
    if node_errors:
        print(f"node errors: {len(node_errors)}; first: {node_errors[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
