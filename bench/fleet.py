"""A fleet of 1,000 simulated, connected N0D3S against one Commander on this machine.

Every node is a pair of greenlets in this process (gevent, monkey-patched before requests is
imported) sharing one NodeClient, as the real agent's threads share one: one heartbeats every
`--interval` seconds (5 s, the product default; first beat at a random offset), the other keeps
a `claim(open_slots=1, wait=30)` long-poll open and posts a signed result the moment it gets a
lease. After registration (join token) and a settling pause, a submitter sends tasks at a steady
rate (20/s for 30 s; quick: 10 s). Recorded: every error (exception or non-2xx; empty claims
after `wait` are expected and not errors), heartbeat latency, submit→claim latency (submit
time taken by the submitter just before its POST, claim time by the node when the claim
returns, matched by task id), the CPU the Commander's workers and this process used, and how
late this process's event loop ran (the client's share of each latency).

With `--compare-tls` the same fleet runs twice in this process, over plain HTTP and then over
the mesh CA's HTTPS (every node keeps its connections alive, as the real agent does), and the
figures are set side by side.

    .venv/bin/python bench/fleet.py [--quick] [--nodes 1000] [--interval 5] [--rate 20] [--duration 30]
                                    [--tls | --compare-tls]
"""

from gevent import monkey

monkey.patch_all()

import collections  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import gevent.queue  # noqa: E402

from _common import (Commander, Noise, parse_args, proc_status, register_node, result_for, self_cpu,  # noqa: E402
                     status_mb, summary_ms, table, verdict)
from m3shd import wire  # noqa: E402
from m3shd.client import ApiClient, CommanderError  # noqa: E402

GOAL_HEARTBEAT_P99_MS = 50.0
GOAL_CLAIM_P99_MS = 50.0


def extra(parser):
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0, help="heartbeat interval, s (product default 5)")
    parser.add_argument("--rate", type=float, default=20.0, help="tasks submitted per second")
    parser.add_argument("--duration", type=float, help="seconds of submitting (default 30; quick 10)")
    parser.add_argument("--wait", type=float, default=30.0, help="claim long-poll wait, s")
    parser.add_argument("--compare-tls", action="store_true", help="run over HTTP, then over HTTPS, and compare")


class Fleet:
    def __init__(self, cmdr: Commander, args):
        self.cmdr, self.args = cmdr, args
        self.errors: collections.Counter = collections.Counter()
        self.first_error: dict[str, str] = {}
        self.measuring = False
        self.stopping = False
        self.heartbeats: list[float] = []
        self.late: list[float] = []  # how late this process's event loop woke a 10 ms sleeper
        self.claimed: dict[int, float] = {}
        self.submitted: dict[int, float] = {}
        self.accepted = 0
        self.counts = collections.Counter()

    def error(self, op: str, exc: BaseException) -> None:
        if self.stopping:
            return
        kind = f"{op}: {exc.status} {exc.code}" if isinstance(exc, CommanderError) else f"{op}: {type(exc).__name__}"
        self.errors[kind] += 1
        self.first_error.setdefault(kind, str(exc)[:200])

    # --- one node --------------------------------------------------------------------------

    def heartbeat_loop(self, node) -> None:
        interval = self.args.interval
        gevent.sleep(random.uniform(0, interval))
        next_beat = time.perf_counter()
        while not self.stopping:
            t0 = time.perf_counter()
            try:
                node.heartbeat(open_slots=1, running=[], runner="bench", problem=None, draining=False)
                if self.measuring:
                    self.heartbeats.append(time.perf_counter() - t0)
                self.counts["heartbeats"] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                self.error("heartbeat", exc)
            next_beat += interval
            gevent.sleep(max(0.0, next_beat - time.perf_counter()))

    def claim_loop(self, node) -> None:
        while not self.stopping:
            t0 = time.perf_counter()
            try:
                leases = node.claim(open_slots=1, wait=self.args.wait)
            except Exception as exc:  # noqa: BLE001
                self.error("claim", exc)
                gevent.sleep(1.0)
                continue
            t = time.perf_counter()
            self.counts["claims"] += 1
            if not leases:
                # An empty answer well before the shortest usual long-poll means the Commander let the
                # node go early (e.g. it is not `active`), and the node asks again at once.
                held = wire.shortest_long_poll(self.args.wait) - 1
                key = "empty claims (wait ran out)" if t - t0 >= held else "empty claims, early"
                self.counts[key] += 1
            for lease in leases:
                self.claimed[lease["task_id"]] = t
                try:
                    node.post_result(result_for(lease))
                    self.accepted += 1
                except Exception as exc:  # noqa: BLE001
                    self.error("result", exc)

    # --- the submitter ---------------------------------------------------------------------

    def submit_all(self, rate: float, duration: float) -> None:
        # Open loop: a submit never waits for another to finish (a new connection if all are busy).
        clients = gevent.queue.Queue()
        group = gevent.pool.Group()

        def one(i):
            client = clients.get() if not clients.empty() else ApiClient(self.cmdr.url, self.cmdr.admin_token)
            try:
                t0 = time.perf_counter()
                task = client.submit_task(f"bench fleet {i}")
                self.submitted[task["id"]] = t0
            except Exception as exc:  # noqa: BLE001
                self.error("submit", exc)
            finally:
                clients.put(client)

        start = time.perf_counter()
        for i in range(int(rate * duration)):
            gevent.sleep(max(0.0, start + i / rate - time.perf_counter()))
            if time.perf_counter() > start + duration:
                self.counts["submits skipped (fell behind)"] += int(rate * duration) - i
                break
            group.spawn(one, i)
        if not group.join(timeout=35):
            unfinished = len(group)
            group.kill(block=False)
            self.errors["submit: unfinished after 35 s"] += unfinished
            self.first_error.setdefault("submit: unfinished after 35 s", "killed at the end of the run")

    def watch_loop(self, tick: float = 0.01) -> None:
        """This process is the client: while its event loop is busy (TLS, JSON, its own garbage
        collection), answers already here wait, and that wait is in every latency measured."""
        while not self.stopping:
            t0 = time.perf_counter()
            gevent.sleep(tick)
            if self.measuring:
                self.late.append(time.perf_counter() - t0 - tick)

    def progress(self, every: float = 5.0) -> None:
        """One line to stderr every few seconds, so a run that goes wrong is visible as it does."""
        last, t_last = collections.Counter(self.counts), time.perf_counter()
        while not self.stopping:
            gevent.sleep(every)
            now, counts = time.perf_counter(), collections.Counter(self.counts)
            dt = now - t_last
            rate = {k: (counts[k] - last[k]) / dt for k in ("heartbeats", "claims", "empty claims, early")}
            print(f"  [{time.strftime('%H:%M:%S')}] heartbeats {rate['heartbeats']:.0f}/s, claims answered "
                  f"{rate['claims']:.0f}/s (early empty {rate['empty claims, early']:.0f}/s), submitted "
                  f"{len(self.submitted)}, accepted {self.accepted}, errors {sum(self.errors.values())}",
                  file=sys.stderr, flush=True)
            last, t_last = counts, now


def register_all(cmdr: Commander, fleet: Fleet, n: int, start_node) -> tuple[list, list[float], float]:
    """Register n nodes, 50 at a time; like the real agent, each starts heartbeating and claiming
    as soon as it has registered."""
    pool = gevent.pool.Pool(50)
    joiners = gevent.queue.Queue()
    for _ in range(50):
        joiners.put(ApiClient(cmdr.url, cmdr.join_token))
    nodes, latencies = [], []

    def one(i):
        joiner = joiners.get()
        try:
            t0 = time.perf_counter()
            node = register_node(cmdr.url, cmdr.join_token, f"fleet-{i:04d}", join_client=joiner, heartbeat_every=None)
            latencies.append(time.perf_counter() - t0)
            nodes.append(node)
            start_node(node)
        except Exception as exc:  # noqa: BLE001
            fleet.error("register", exc)
        finally:
            joiners.put(joiner)

    t0 = time.perf_counter()
    for i in range(n):
        pool.spawn(one, i)
    pool.join()
    return nodes, latencies, time.perf_counter() - t0


def run(args, tls: bool) -> dict:
    """One fleet against one Commander; prints its figures and returns the summaries."""
    duration = args.duration or (10.0 if args.quick else 30.0)
    # At least one heartbeat interval: every node has then sent a heartbeat, which opened its second
    # connection (the long-poll holds the first), so the window measures connections in use, not
    # their opening (over HTTPS a handshake each: shorter, the quick pass timed 1,000 of them).
    settle = args.interval + 2.0 if args.quick else max(args.interval + 2.0, 8.0)

    with Commander(workers=args.workers, keep=args.keep, tls=tls) as cmdr:
        fleet = Fleet(cmdr, args)
        greenlets = [gevent.spawn(fleet.progress), gevent.spawn(fleet.watch_loop)]

        def start_node(node):
            greenlets.append(gevent.spawn(fleet.claim_loop, node))
            greenlets.append(gevent.spawn(fleet.heartbeat_loop, node))

        nodes, reg_latencies, reg_wall = register_all(cmdr, fleet, args.nodes, start_node)
        print(f"  registered {len(nodes)} nodes in {reg_wall:.1f} s", file=sys.stderr, flush=True)
        gevent.sleep(settle)  # every node has its long-poll open and has heartbeaten; heartbeats are spread out

        cpu0, bench0, t0 = cmdr.workers_cpu(), self_cpu(), time.perf_counter()
        noise = Noise(lambda: self_cpu() + sum(cmdr.workers_cpu().values()))
        fleet.measuring = True
        fleet.submit_all(args.rate, duration)
        submit_end = time.perf_counter()
        # Let the last tasks come back (bounded), still measuring heartbeats.
        drain_until = time.perf_counter() + (5 if args.quick else 15)
        while fleet.accepted < len(fleet.submitted) and time.perf_counter() < drain_until:
            gevent.sleep(0.1)
        fleet.measuring = False
        window = time.perf_counter() - t0
        cpu1, bench1 = cmdr.workers_cpu(), self_cpu()
        noise_line = noise.stop()
        worker_rss = {pid: status_mb(proc_status(pid), "VmRSS") for pid in cpu1}
        worker_fds = {}
        for pid in cpu1:
            try:
                worker_fds[pid] = len(os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                worker_fds[pid] = -1
        alive = cmdr.alive()
        states = collections.Counter()
        if alive:
            try:
                states.update(n["state"] for n in ApiClient(cmdr.url, cmdr.admin_token, timeout=60).list_nodes())
            except Exception as exc:  # noqa: BLE001
                fleet.error("list nodes", exc)
        fleet.stopping = True
        gevent.killall(greenlets, block=True, timeout=5)
        for node in nodes:
            node.session.close()

    hb = summary_ms(fleet.heartbeats)
    matched = [fleet.claimed[tid] - t for tid, t in fleet.submitted.items() if tid in fleet.claimed]
    cl = summary_ms(matched)
    rg = summary_ms(reg_latencies)
    late = summary_ms(fleet.late)
    errors = sum(fleet.errors.values())

    print(f"\nfleet over {'HTTPS (mesh CA)' if tls else 'HTTP'}: {len(nodes)} simulated N0D3S (gevent), heartbeat "
          f"every {args.interval:g} s, claim wait {args.wait:g} s; {args.rate:g} tasks/s for {duration:g} s; "
          f"measured window {window:.1f} s")
    table(["latency", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"], [
        ["register (50 at a time, before the window)", rg["n"], rg["p50"], rg["p90"], rg["p99"], rg["max"]],
        ["heartbeat", hb["n"], hb["p50"], hb["p90"], hb["p99"], hb["max"]],
        ["submit→claim", cl["n"], cl["p50"], cl["p90"], cl["p99"], cl["max"]],
    ])
    rows = [["nodes registered", f"{len(nodes)} in {reg_wall:.1f} s ({len(nodes) / reg_wall:.0f}/s)"],
            ["tasks submitted / claimed / results accepted (a submit that timed out may still run)",
             f"{len(fleet.submitted)} / {sum(1 for t in fleet.submitted if t in fleet.claimed)} / {fleet.accepted}"],
            ["submitting took", f"{submit_end - t0:.1f} s (target {duration:g} s; skipped "
                                f"{fleet.counts['submits skipped (fell behind)']})"],
            ["heartbeats sent (all, incl. settle)", fleet.counts["heartbeats"]],
            ["claims answered (empty after wait / empty early)",
             f"{fleet.counts['claims']} ({fleet.counts['empty claims (wait ran out)']} / "
             f"{fleet.counts['empty claims, early']})"],
            ["node states at the end", ", ".join(f"{k} {v}" for k, v in states.most_common()) or "-"],
            ["errors", errors]]
    rows += [[f"  {kind}", f"{n}  e.g. {fleet.first_error[kind]}"] for kind, n in fleet.errors.most_common()]
    for pid in sorted(cpu1):
        used = cpu1[pid] - cpu0.get(pid, 0.0)
        rows.append([f"Commander worker {pid}", f"CPU {used:.1f} s = {100 * used / window:.0f}% of a core; "
                                                 f"RSS {worker_rss[pid]:.0f} MB; {worker_fds[pid]} fds"])
    total = sum(cpu1[p] - cpu0.get(p, 0.0) for p in cpu1)
    rows.append(["Commander workers, total", f"CPU {total:.1f} s = {100 * total / window:.0f}% of a core "
                                             f"({100 * total / window / os.cpu_count():.0f}% of the machine)"])
    rows.append(["this bench process (all nodes)", f"CPU {bench1 - bench0:.1f} s = {100 * (bench1 - bench0) / window:.0f}% "
                                                   f"of a core (if near 100%, latencies include client queueing)"])
    rows.append(["this bench process's event loop, late by (in every latency above)",
                 f"p50 {late['p50']:.1f} ms, p99 {late['p99']:.1f} ms, max {late['max']:.1f} ms"])
    if not alive:
        rows.append(["Commander", "EXITED during the run"])
    table(["figure", "value"], rows)
    print(f"\n{noise_line}")
    print(f"goal no errors: {errors} ({verdict(errors == 0)}); heartbeat p99 <= {GOAL_HEARTBEAT_P99_MS:.0f} ms: "
          f"{hb['p99']:.1f} ms ({verdict(hb['p99'] <= GOAL_HEARTBEAT_P99_MS)}); submit→claim p99 <= "
          f"{GOAL_CLAIM_P99_MS:.0f} ms: {cl['p99']:.1f} ms ({verdict(cl['p99'] <= GOAL_CLAIM_P99_MS)})")
    return {"heartbeat": hb, "submit→claim": cl, "errors": errors, "cpu": total / window}


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], extra)
    if not args.compare_tls:
        run(args, args.tls)
        return 0
    plain, tls = run(args, False), run(args, True)
    print("\nHTTPS against HTTP, same fleet, same process:")
    rows = [[f"{name} {q}", plain[name][q], tls[name][q], f"{tls[name][q] / plain[name][q]:.2f}x"]
            for name in ("heartbeat", "submit→claim") for q in ("p50", "p99") if plain[name]["n"] and tls[name]["n"]]
    rows += [["errors", plain["errors"], tls["errors"], ""],
             ["Commander workers, cores", f"{plain['cpu']:.2f}", f"{tls['cpu']:.2f}", f"{tls['cpu'] / plain['cpu']:.2f}x"]]
    table(["figure (ms)", "HTTP", "HTTPS", "ratio"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
