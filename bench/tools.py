"""What one [TOOL_CALL] round trip costs the Commander and the N0D3, beyond the tool's own work.

A Commander (its default gunicorn workers) with a plugin whose `noop` tool answers at once, an
agent allowed it, and one simulated node holding a lease on a task of that agent. Each sample is
what a N0D3 does for one call (n0d3/runners.py tool_reply): find the marker in the model's
answer, send the signed call under the lease, and write the [TOOL_RESULT] turn; on the Commander
the call is fenced to the lease, checked (agent, plugin, permission, rounds, schema), run in a
thread bounded by its timeout, and recorded. The peer, alternating one for one in the same
process: a plain signed node request (a heartbeat renewing that lease).

    .venv/bin/python bench/tools.py [--quick] [--samples N]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import Commander, parse_args, register_node, summary_ms, table, verdict
from m3shd.client import ApiClient
from n0d3.runners import TaskSpec, tool_reply

GOAL_P50_MS = 10.0
PLUGIN = '''from pydantic import BaseModel


class Nothing(BaseModel):
    pass


def setup(manager):
    manager.tool("noop", "Answer at once.", Nothing, lambda call, args: {})
'''
PROFILE = '+++\nname = "bench-tools"\nplugin_tools = ["noop"]\n+++\nCall noop when asked.\n'
ANSWER = 'Let me check. [TOOL_CALL]{"tool": "noop", "args": {}}[/TOOL_CALL]'


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda p: p.add_argument("--samples", type=int))
    return run(args, args.samples or (200 if args.quick else 1000), warmup=20)


def run(args, samples: int, warmup: int) -> int:
    plugins = Path(tempfile.mkdtemp(prefix="m3shd-bench-plugins-"))
    (plugins / "bench_noop.py").write_text(PLUGIN)
    with Commander(workers=args.workers, keep=args.keep, extra_env={
            "M3SHD_COMMANDER_PLUGINS": "bench_noop", "M3SHD_COMMANDER_PLUGINS_DIR": str(plugins),
            "M3SHD_COMMANDER_TOOL_ROUNDS": str(10 * (samples + warmup))}) as cmdr:
        api = ApiClient(cmdr.url, cmdr.admin_token, ca_file=cmdr.ca_file)
        api.put_agent("bench-tools", PROFILE)
        node = register_node(cmdr.url, cmdr.join_string, "bench-tools", heartbeat_every=None, ca_file=cmdr.ca_file)
        api.submit_task("call the tool", agent="bench-tools")
        [lease] = node.claim(1, 10)
        spec = TaskSpec.from_lease(lease)
        spec.call_tool = lambda tool, tool_args: node.call_tool(lease["task_id"], lease["attempt"],
                                                                lease["lease_token"], tool, tool_args)
        running = [dict(task_id=lease["task_id"], attempt=lease["attempt"], lease_token=lease["lease_token"])]
        calls, beats = [], []
        for i in range(warmup + samples):
            t0 = time.perf_counter()
            reply = tool_reply(spec, ANSWER)
            t1 = time.perf_counter()
            node.heartbeat(open_slots=0, running=running, runner="simulated", problem=None)
            t2 = time.perf_counter()
            if i >= warmup:
                calls.append(t1 - t0)
                beats.append(t2 - t1)
        assert reply.startswith('[TOOL_RESULT]{"tool":"noop","ok":true'), reply
        call, beat = summary_ms(calls), summary_ms(beats)
        table(["path", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
              [["tool call round trip (N0D3 + Commander, noop tool)", call["n"], call["p50"], call["p90"], call["p99"],
                call["max"]],
               ["peer: signed heartbeat", beat["n"], beat["p50"], beat["p90"], beat["p99"], beat["max"]]],
              title=f"one [TOOL_CALL] round trip, {args.workers} workers, loopback")
        print(f"\nratio to the peer: p50 {call['p50'] / beat['p50']:.2f}x, p99 {call['p99'] / beat['p99']:.2f}x")
        print(f"goal: p50 <= {GOAL_P50_MS:g} ms: {verdict(call['p50'] <= GOAL_P50_MS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
