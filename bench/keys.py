"""Encryption at rest: what sealing prompts, outputs and errors costs a result, and how fast a
key rotation re-encrypts a large database.

1. In process, on one database: submit, claim and apply a result (the fenced UPDATE with the
   output and the result document, provenance, the signals and their receivers) with the keyring's
   SecretBox and with a peer that stores text as given, in alternating blocks in the same run,
   so the difference is the Fernet work and nothing else. Goal: at most 15 % slower.
2. `m3shd keys rotate`'s pass (commander/rekey.py) over `--tasks` finished tasks (default
   100,000; quick 20,000), each with a sealed prompt, output and result document, and as many
   agent memories, each with a sealed value and tags, written straight into the database first:
   rows and values re-encrypted per second.

    .venv/bin/python bench/keys.py [--quick] [--tasks N]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import commander  # noqa: F401  (before _common puts tests/ on the path; see bench/spend.py)
import m3shd  # noqa: F401
from _common import parse_args, summary_ms, table, verdict

GOAL_SLOWER = 0.15


class ClearBox:
    """The peer: the SecretBox's encrypt and decrypt, storing text as given."""

    def encrypt(self, plain: bytes) -> str:
        return plain.decode()

    def decrypt(self, stored: str) -> bytes:
        return stored.encode()


def commander_in(home: Path):
    from commander.app import create_app
    from commander.settings import CommanderSettings
    from m3shd import config

    os.environ["M3SHD_CONFIG_DIR"] = str(home / "conf")
    app = create_app(config.load(CommanderSettings, data_dir=str(home / "commander"), log_level="warning"),
                     background=False)
    return app.extensions["m3shd"]


def results(blocks: int, block: int) -> dict[str, dict[str, dict]]:
    """Per-step times (seconds) sealed and in clear, in alternating blocks."""
    from commander import leases, nodes, tasks
    from commander.models import Node
    from m3shd import wire

    home = Path(tempfile.mkdtemp(prefix="m3shd-bench-keys-"))
    cmdr = commander_in(home)
    sealed, clear = cmdr.db.box, ClearBox()
    took = {mode: {"submit": [], "claim": [], "apply_result": []} for mode in ("sealed", "clear")}
    prompt, output = "Summarise this week's deploys " * 20, "Three deploys, one rolled back. " * 60
    with cmdr.db.connection_context():
        node_id = nodes.register(cmdr, nodes.Machine(machine_id="bench-keys", name="bench", slots=1), "bench")["node_id"]
        node = Node.get_by_id(node_id)
        for n in range(2 * blocks):
            mode = ("sealed", "clear")[n % 2]
            cmdr.db.box = sealed if mode == "sealed" else clear
            Node.update(last_seen=time.time()).where(Node.id == node_id).execute()
            for _ in range(block):
                t0 = time.perf_counter()
                tasks.submit(cmdr, tasks.TaskSpec(prompt=prompt), submitter="bench")
                t1 = time.perf_counter()
                lease = leases.claim(cmdr, node_id, 1)[0]
                t2 = time.perf_counter()
                sent = leases.Result(task_id=lease["task_id"], attempt=lease["attempt"], lease_token=lease["lease_token"],
                                     status="succeeded", signature="ab" * 32, output=output, cost_usd=0.01,
                                     model="claude-sonnet-5-5", usage=leases.Usage(input_tokens=1200, output_tokens=300),
                                     **wire.binding(lease))
                t3 = time.perf_counter()
                leases.apply_result(cmdr, node, sent, output.encode(), None)
                t4 = time.perf_counter()
                for step, seconds in (("submit", t1 - t0), ("claim", t2 - t1), ("apply_result", t4 - t3)):
                    took[mode][step].append(seconds)
    cmdr.db.box = sealed
    cmdr.db.close_all()
    shutil.rmtree(home, ignore_errors=True)
    return {mode: {step: summary_ms(values) for step, values in steps.items()} for mode, steps in took.items()}


def rotation(count: int) -> tuple[int, float, float]:
    """(values re-encrypted, seconds, seconds to fill) for `count` sealed tasks and `count` memories."""
    from commander import rekey

    home = Path(tempfile.mkdtemp(prefix="m3shd-bench-rotate-"))
    cmdr = commander_in(home)
    box = cmdr.db.box
    started = time.perf_counter()
    values = [(box.encrypt(f"prompt {i} ".encode() * 8), box.encrypt(f"output {i} ".encode() * 40),
               box.encrypt(f'{{"task_id": {i}}}'.encode())) for i in range(count)]
    with cmdr.db.connection_context(), cmdr.writing(wake=False):
        cmdr.db.cursor().executemany(
            "INSERT INTO task (state, prompt, output, result_document, requires, prefer, priority, submitter, "
            "max_attempts, retry_on_lost, backoff, tried_nodes, approval_required, approver_must_differ, created_at, "
            "updated_at, attempt, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, runner_notes, "
            "depends_on, attachments, memory) VALUES ('succeeded', ?, ?, ?, '[]', '[]', 0, 'bench', 3, 1, 0, '[]', 0, "
            "0, 0, 0, 1, 0, 0, 0, 0, '[]', '[]', '[]', 1)", values)
        cmdr.db.cursor().executemany(
            "INSERT INTO memory (scope, value, tags, content_hash, created_at, updated_at, use_count) "
            "VALUES (?, ?, ?, ?, 0, 0, 0)",
            [(f"agent-{i % 20}", box.encrypt(f"memory {i}: the deploy host is pi-{i}.local".encode()),
              box.encrypt(b'["ops"]'), f"{i:032x}") for i in range(count)])
    filled = time.perf_counter() - started
    started = time.perf_counter()
    moved = rekey.rotate(cmdr, settle=0)["reencrypted"]
    took = time.perf_counter() - started
    cmdr.db.close_all()
    shutil.rmtree(home, ignore_errors=True)
    return moved, took, filled


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda p: p.add_argument("--tasks", type=int))
    measured = results(*((4, 100) if args.quick else (10, 250)))
    rows = []
    for step in ("submit", "claim", "apply_result"):
        for mode, name in (("sealed", "sealed (keyring)"), ("clear", "in clear (peer)")):
            s = measured[mode][step]
            rows.append([f"{step}: {name}", s["n"], s["p50"], s["p90"], s["p99"], s["max"]])
    table(["in process, 1.2 KB prompt, 2 KB output", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows)
    ratio = measured["sealed"]["apply_result"]["p50"] / measured["clear"]["apply_result"]["p50"]
    print(f"goal result handling with encryption at most {GOAL_SLOWER:.0%} slower (apply_result p50 sealed / clear): "
          f"{ratio:.3f}x, {verdict(ratio <= 1 + GOAL_SLOWER)}")
    whole = sum(measured["sealed"][s]["p50"] for s in measured["sealed"]) / \
        sum(measured["clear"][s]["p50"] for s in measured["clear"])
    print(f"submit + claim + result, p50 sealed / clear: {whole:.3f}x")
    count = args.tasks or (20_000 if args.quick else 100_000)
    moved, took, filled = rotation(count)
    print(f"rotation: {moved:,} values of {count:,} tasks (prompt, output, result document) and {count:,} memories "
          f"(value, tags) re-encrypted in {took:.1f} s: {2 * count / took:,.0f} rows/s, {moved / took:,.0f} values/s "
          f"(filled in {filled:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
