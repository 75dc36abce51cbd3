"""End-to-end task rate: submit → claim → signed result, against huey as the peer.

Ours: a real Commander (2 gevent workers), 20 simulated N0D3S (threads; each long-polls
`claim(open_slots=1, wait=30)` and posts a signed result at once, no real work) and one
submitter thread pushing M tasks through the API. Rate = M / (first submit → last accepted result).

Peer, in the same process: huey's SqliteHuey on a temp SQLite file with its thread consumer
(Consumer(workers=20, worker_type='thread')), M no-op tasks enqueued, rate = M / (first
enqueue → last task complete, its result stored). Ratio ours/huey; goal >= 0.5.

    .venv/bin/python bench/roundtrip.py [--quick] [--tasks M] [--nodes N]
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from pathlib import Path

from _common import Commander, Noise, parse_args, register_node, result_for, self_cpu, table, verdict
from m3shd.client import ApiClient

GOAL_RATIO = 0.5
DEADLINE_S = 300  # a run that has not finished by then is reported as incomplete


def extra(parser):
    parser.add_argument("--tasks", type=int, help="tasks per run (default 2000; quick 300)")
    parser.add_argument("--nodes", type=int, default=20, help="simulated nodes / huey workers (default 20)")
    parser.add_argument("--submitters", type=int, default=1,
                        help="submitting threads for ours (default 1; more shows the server's capacity)")


def run_ours(cmdr: Commander, nodes: list, m: int, warm: int, submitters: int = 1) -> dict:
    api = ApiClient(cmdr.url, cmdr.admin_token)
    accepted = Completions(warm)
    stop = threading.Event()
    errors: list[str] = []

    def node_loop(node):
        while not stop.is_set():
            try:
                leases = node.claim(open_slots=1, wait=30)
                for lease in leases:
                    node.post_result(result_for(lease))
                    accepted.add()
            except Exception as exc:  # noqa: BLE001 - counted and shown
                if not stop.is_set():
                    errors.append(repr(exc))
                    time.sleep(0.1)

    threads = [threading.Thread(target=node_loop, args=(n,), daemon=True) for n in nodes]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # every node is in its long-poll

    # Warm-up: connections open, code paths hot.
    for i in range(warm):
        api.submit_task(f"bench warm-up {i}")
    accepted.done.wait(60)

    accepted.restart(m)
    cpu0, workers0 = self_cpu(), cmdr.workers_cpu()
    noise = Noise(lambda: self_cpu() + sum(cmdr.workers_cpu().values()))
    first = time.perf_counter()
    if submitters == 1:
        for i in range(m):
            api.submit_task(f"bench roundtrip {i}")
    else:
        def push(k):
            client = ApiClient(cmdr.url, cmdr.admin_token)
            for i in range(k, m, submitters):
                client.submit_task(f"bench roundtrip {i}")
        pushers = [threading.Thread(target=push, args=(k,)) for k in range(submitters)]
        for thread in pushers:
            thread.start()
        for thread in pushers:
            thread.join()
    submitted = time.perf_counter()
    finished = accepted.done.wait(DEADLINE_S)
    end = accepted.last if finished else time.perf_counter()
    cpu1, workers1 = self_cpu(), cmdr.workers_cpu()
    noise_line = noise.stop()
    stop.set()
    wall = end - first
    return dict(noise=noise_line, done=accepted.count, wall=wall, rate=accepted.count / wall, submit_s=submitted - first,
                client_cpu=cpu1 - cpu0, server_cpu=sum(workers1.get(p, 0) - s for p, s in workers0.items()),
                errors=errors, finished=finished)


class Completions:
    """Completions counted from many threads; `done` is set when `target` is reached."""

    def __init__(self, target: int):
        self.lock = threading.Lock()
        self.count, self.last, self.target = 0, 0.0, target
        self.done = threading.Event()

    def add(self) -> None:
        t = time.perf_counter()
        with self.lock:
            self.count += 1
            self.last = t
            if self.count >= self.target:
                self.done.set()

    def restart(self, target: int) -> None:
        with self.lock:
            self.count, self.target = 0, target
            self.done.clear()


def run_http_floor(cmdr: Commander, clients: int, requests_total: int) -> dict:
    """Reference: the same client threads doing nothing but GET /api/health (no auth, no writes)."""
    counter = iter(range(requests_total))
    lock = threading.Lock()

    def hammer():
        client = ApiClient(cmdr.url, "none")
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            client.health()

    threads = [threading.Thread(target=hammer) for _ in range(clients)]
    cpu0, workers0 = self_cpu(), cmdr.workers_cpu()
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    cpu1, workers1 = self_cpu(), cmdr.workers_cpu()
    return dict(requests=requests_total, wall=wall, rate=requests_total / wall, client_cpu=cpu1 - cpu0,
                server_cpu=sum(workers1.get(p, 0) - s for p, s in workers0.items()))


def run_huey(workers: int, m: int, warm: int) -> dict:
    from huey import SqliteHuey
    from huey import signals as S
    from huey.consumer import Consumer

    home = Path(tempfile.mkdtemp(prefix="m3shd-bench-huey-"))
    huey = SqliteHuey("bench", filename=str(home / "huey.db"))
    completed = Completions(warm)

    @huey.task()
    def noop(i):
        return i

    @huey.signal(S.SIGNAL_COMPLETE)
    def on_complete(_signal, _task):  # runs in the worker after the result is stored
        completed.add()

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    consumer = Consumer(huey, workers=workers, worker_type="thread")
    consumer.start()  # threads started; it also installs signal handlers (restored below)
    try:
        warm_results = [noop(i) for i in range(warm)]
        completed.done.wait(60)
        for r in warm_results:
            r.get(blocking=True, timeout=10)
        completed.restart(m)
        cpu0 = self_cpu()
        noise = Noise(self_cpu)
        first = time.perf_counter()
        results = [noop(i) for i in range(m)]
        submitted = time.perf_counter()
        finished = completed.done.wait(DEADLINE_S)
        end = completed.last if finished else time.perf_counter()
        cpu1 = self_cpu()
        noise_line = noise.stop()
        # Every result is really there (read after timing: reading consumes them).
        stored = sum(1 for i, r in enumerate(results) if r.get(blocking=True, timeout=10) == i)
    finally:
        consumer.stop(graceful=True)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for path in home.iterdir():
            path.unlink()
        home.rmdir()
    wall = end - first
    return dict(noise=noise_line, done=completed.count, stored=stored, wall=wall, rate=completed.count / wall, submit_s=submitted - first,
                client_cpu=cpu1 - cpu0, finished=finished)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], extra)
    m = args.tasks or (300 if args.quick else 2000)
    warm = 40

    with Commander(workers=args.workers, keep=args.keep) as cmdr:
        joiner = ApiClient(cmdr.url, cmdr.join_token)
        nodes = [register_node(cmdr.url, cmdr.join_token, f"rt-{i:02d}", join_client=joiner) for i in range(args.nodes)]
        ours = run_ours(cmdr, nodes, m, warm, args.submitters)
        floor = run_http_floor(cmdr, args.nodes + 1, 3 * m)
    huey = run_huey(args.nodes, m, warm)

    print(f"\nroundtrip: {m} tasks, {args.nodes} simulated nodes, {args.submitters} submitter(s) vs "
          f"{args.nodes} huey worker threads ({os.cpu_count()} CPUs; warm-up {warm} tasks each)")
    table(
        ["system", "done", "wall s", "tasks/s", "push s", "bench CPU s", "server CPU s"],
        [
            [f"m3shd Commander (HTTP, {args.workers} gevent workers)", ours["done"], ours["wall"], ours["rate"], ours["submit_s"],
             ours["client_cpu"], ours["server_cpu"]],
            ["huey SqliteHuey + thread Consumer (in-process)", huey["done"], huey["wall"], huey["rate"],
             huey["submit_s"], huey["client_cpu"], "-"],
        ],
    )
    print(f"\nreference (not a goal): {args.nodes + 1} threads × GET /api/health, {floor['requests']} requests: "
          f"{floor['rate']:.0f} req/s = {floor['rate'] / 3:.0f} tasks/s if a task cost 3 bare round trips "
          f"(bench CPU {floor['client_cpu']:.2f} s, server CPU {floor['server_cpu']:.2f} s)")
    ratio = ours["rate"] / huey["rate"]
    print(f"\nratio ours/huey: {ratio:.2f} (goal >= {GOAL_RATIO}: {verdict(ratio >= GOAL_RATIO)})")
    print("push s = time to submit/enqueue all M; bench CPU = this process (submitter + nodes, or huey entire); "
          "server CPU = both Commander workers")
    print(f"during ours: {ours['noise']}\nduring huey: {huey['noise']}")
    if not (ours["finished"] and huey["finished"]):
        print(f"INCOMPLETE: a run did not finish within {DEADLINE_S} s")
    if huey["stored"] != m:
        print(f"huey: only {huey['stored']} of {m} results were stored")
    if ours["errors"]:
        print(f"m3shd node errors: {len(ours['errors'])}; first: {ours['errors'][0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
