"""What the benchmarks share beyond the test harness (tests/harness.py: the Commander and N0D3
processes, simulated nodes): a Commander in a temp dir with the product's defaults, /proc
readings, percentiles and tables.

Benchmarks print figures; they never assert speed. A helper module, not a benchmark.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The benchmarks run as scripts (`python bench/x.py`), so only bench/ is on their path; the harness
# and the test fixtures they share with the tests live in tests/.
sys.path.insert(0, str(ROOT / "tests"))

import harness  # noqa: E402
from harness import base_env, register_node, result_for  # noqa: E402,F401  (the benchmarks' imports)
from commander.settings import CommanderSettings  # noqa: E402  (stdlib and m3shd only: no Flask, no peewee)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def parse_args(description: str, extra=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~10-20 s), as CI runs it")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (Commander log, database)")
    parser.add_argument("--workers", type=int, default=CommanderSettings().workers,
                        help="Commander gunicorn workers (default: the product's default)")
    parser.add_argument("--tls", action="store_true", help="the Commander serves HTTPS from a mesh CA, which this "
                                                         "process's clients trust (as under `pytest --tls`)")
    if extra:
        extra(parser)
    args = parser.parse_args()
    if args.tls:
        os.environ["M3SHD_TEST_TLS"] = "1"  # harness.tls_by_default: every Commander started here
    # A TERM (a CI timeout, kill) unwinds like Ctrl-C, so the Commander we started is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return args


class Commander(harness.Commander):
    """The harness's Commander with the product's timings (heartbeat 5 s, leases 20 s) and
    `workers` gunicorn workers, in a temp dir that goes when it stops (unless `keep`)."""

    def __init__(self, workers: int = CommanderSettings().workers, extra_env: dict | None = None,
                 keep: bool = False, tls: bool | None = None):
        self.keep = keep
        home = Path(tempfile.mkdtemp(prefix="m3shd-bench-"))
        # Short enough to be the wake sockets' own directory (commander.wake.run_dir_for), named
        # here rather than asked of the commander package: importing it would put ~35,000 more
        # objects into this process, under every garbage collection among the simulated nodes.
        self.wake_dir = home / "data" / "commander" / "run"
        # The harness stops a Commander that fails to start, which removes `home` too.
        super().__init__(home, {"M3SHD_COMMANDER_WORKERS": str(workers), "M3SHD_COMMANDER_LOG_LEVEL": "warning"}
                         | (extra_env or {}), timings={}, tls=tls)

    def worker_pids(self) -> list[int]:
        return children_of(self.process.proc.pid)

    def workers_cpu(self) -> dict[int, float]:
        """CPU seconds (user+system) each gunicorn worker has used so far."""
        return {pid: cpu_seconds(pid) for pid in self.worker_pids()}

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.process.text().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.alive()

    def stop(self) -> None:
        super().stop()
        if self.keep:
            print(f"(kept {self.home})")
        else:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# --- /proc ----------------------------------------------------------------------------------

def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (from /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid: int) -> dict[str, str]:
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    return status


def status_mb(status: dict, key: str) -> float:
    return int(status[key].split()[0]) / 1024  # kB → MB (MiB)


def self_cpu() -> float:
    return cpu_seconds(os.getpid())


# --- figures --------------------------------------------------------------------------------

def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def timed(call, n: int) -> list[float]:
    """Seconds each of `n` calls of `call()` took."""
    took = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        took.append(time.perf_counter() - t0)
    return took


def summary_ms(values_s: list[float]) -> dict:
    ms = [v * 1000 for v in values_s]
    return dict(n=len(ms), p50=percentile(ms, 50), p90=percentile(ms, 90), p99=percentile(ms, 99),
                max=max(ms) if ms else float("nan"))


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def table(headers: list[str], rows: list[list], title: str | None = None) -> None:
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def _cell(value) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)



# --- which gunicorn worker serves a connection ---------------------------------------------

def _tcp_inodes() -> dict[tuple[int, int], int]:
    """(local port, remote port) → socket inode for loopback TCP sockets in this net namespace."""
    found = {}
    for table_path in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table_path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], int(parts[9])
            found[(int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))] = inode
    return found


def session_ports(session, url: str) -> list[int]:
    """Local ports of the idle keep-alive connections a requests.Session holds to `url`."""
    manager = session.get_adapter(url).poolmanager
    conns = []
    for key in list(manager.pools.keys()):
        pool = manager.pools.get(key)
        if pool is not None and pool.pool is not None:
            conns.extend(pool.pool.queue)
    ports = []
    for conn in conns:
        sock = getattr(conn, "sock", None) if conn is not None else None
        if sock is not None:
            try:
                ports.append(sock.getsockname()[1])
            except OSError:
                pass
    return ports


def worker_serving(commander: Commander, client_port: int) -> int | None:
    """The pid of the gunicorn worker holding the server end of a connection from `client_port`."""
    inode = _tcp_inodes().get((commander.port, client_port))
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in commander.worker_pids():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


# --- how busy the rest of the machine was -------------------------------------------------

def machine_cpu() -> float:
    """CPU seconds the whole machine has been busy (all CPUs; user+nice+system+irq+softirq+steal)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class Noise:
    """Machine CPU used by processes other than ours over a window: other load skews every figure.

    `ours()` returns the CPU seconds our own processes used so far (this process + the Commander).
    """

    def __init__(self, ours):
        self._ours = ours
        self.start()

    def start(self) -> None:
        self.t0, self.m0, self.o0 = time.monotonic(), machine_cpu(), self._ours()

    def stop(self) -> str:
        wall = time.monotonic() - self.t0
        other = (machine_cpu() - self.m0) - (self._ours() - self.o0)
        share = max(0.0, other) / wall * 100
        warn = "  <- busy machine: figures are pessimistic" if share > 15 else ""
        return f"other processes used {share:.0f}% of a core during the run ({os.cpu_count()} CPUs){warn}"
