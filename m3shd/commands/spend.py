"""`m3shd spend`: what the mesh's Claude runs cost, and its daily caps, over the Commander API.

Days are the mesh's own (the Commander's `time_zone`): `today`, `week` (the last 7 days) and
`month` (the last 30), grouped `--by` agent, model, node, capability or submitter (default: by
agent today, by day over a week or a month); `--csv` prints the rows for a spreadsheet.
"""

from __future__ import annotations

import csv
import sys
import time

from m3shd.cli import CliError, api, emit, say
from m3shd.components import CommandLine

PERIODS = {"today": 1, "week": 7, "month": 30}
BY = ("agent", "model", "node", "capability", "submitter")
SCOPES = ("agent", "submitter", "node")
COLUMNS = ("attempts", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd")


def cmd_period(args) -> int:
    days = PERIODS[args.period]
    group = [args.by] if args.by else ["agent"] if days == 1 else ["day"]
    report = api(args).spend(",".join(group), days)
    if args.csv:
        out = csv.writer(sys.stdout)
        out.writerow([*group, *COLUMNS])
        for row in report["rows"]:
            out.writerow([row[name] for name in group] + [row[name] for name in COLUMNS])
        return 0

    def table(r):
        span = r["first_day"] if r["first_day"] == r["last_day"] else f"{r['first_day']} .. {r['last_day']}"
        say(f"spend {span} ({r['time_zone']})")
        print(f"{group[0].upper():<32} {'RUNS':>6} {'INPUT':>10} {'OUTPUT':>10} {'COST':>10}")
        for row in r["rows"]:
            print(f"{(row[group[0]] or '-')[:32]:<32} {row['attempts']:>6} {row['input_tokens']:>10} "
                  f"{row['output_tokens']:>10} {'$' + format(row['cost_usd'], '.4f'):>10}")
        total = r["total"]
        print(f"{'total':<32} {total['attempts']:>6} {total['input_tokens']:>10} {total['output_tokens']:>10} "
              f"{'$' + format(total['cost_usd'], '.4f'):>10}")

    emit(args, report, table)
    return 0


def cmd_top(args) -> int:
    found = api(args).spend_top(args.n, PERIODS[args.period])
    if args.csv:
        out = csv.writer(sys.stdout)
        out.writerow(["task_id", "agent", "submitter", "model", "day", "attempts", "cost_usd"])
        for task in found["tasks"]:
            out.writerow([task[name] for name in ("task_id", "agent", "submitter", "model", "day", "attempts",
                                                  "cost_usd")])
        return 0

    def table(r):
        print(f"{'TASK':>8} {'AGENT':<16} {'SUBMITTER':<20} {'RUNS':>4} {'COST':>10}  MODEL")
        for task in r["tasks"]:
            print(f"{task['task_id']:>8} {task['agent'][:16]:<16} {task['submitter'][:20]:<20} {task['attempts']:>4} "
                  f"{'$' + format(task['cost_usd'], '.4f'):>10}  {task['model'] or '-'}")

    emit(args, found, table)
    return 0


def print_caps(found: dict) -> None:
    reset = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(found["resets_at"]))
    say(f"{found['day']} ({found['time_zone']}): ${found['spent_usd']:.4f} spent; caps reset at {reset}; "
        f"at a cap new work is {'refused' if found['at_cap'] == 'refuse' else 'held'}")
    print(f"{'SCOPE':<10} {'NAME':<24} {'CAP':>9} {'SPENT':>10} {'LEFT':>10} {'FROM':<8} STATE")
    for cap in found["caps"]:
        print(f"{cap['scope']:<10} {(cap['name'] or '-')[:24]:<24} {'$' + format(cap['cap_usd'], '.2f'):>9} "
              f"{'$' + format(cap['spent_usd'], '.4f'):>10} {'$' + format(cap['left_usd'], '.4f'):>10} "
              f"{cap['source']:<8} {'HELD' if cap['held'] else 'ok'}")


def scope_of(args) -> tuple[str, str]:
    named = [(scope, getattr(args, scope)) for scope in SCOPES if getattr(args, scope)]
    if len(named) + bool(args.all) != 1:
        raise CliError("name one scope: --all, --agent NAME, --submitter NAME or --node NAME")
    return named[0] if named else ("all", "")


def cmd_alerts(args) -> int:
    def table(found):
        print(f"{'DAY':<10} {'SCOPE':<10} {'NAME':<20} {'AT':>5} {'SPENT':>10} {'STATE':<8} {'TRIES':>5}  ERROR")
        for a in found:
            print(f"{a['day']:<10} {a['scope']:<10} {(a['name'] or '-')[:20]:<20} {str(a['threshold']) + '%':>5} "
                  f"{'$' + format(a['spent_usd'], '.2f'):>10} {a['state']:<8} {a['attempts']:>5}  {a['last_error'] or ''}")

    emit(args, api(args).spend_alerts(PERIODS[args.period]), table)
    return 0


def cmd_cap_list(args) -> int:
    emit(args, api(args).spend_caps(), print_caps)
    return 0


def cmd_cap_set(args) -> int:
    scope, name = scope_of(args)
    if not args.usd > 0:
        raise CliError("a cap is an amount in USD above 0; to remove one, use `m3shd spend cap clear`")
    emit(args, api(args).set_spend_cap(scope, name, args.usd), print_caps)
    return 0


def cmd_cap_clear(args) -> int:
    scope, name = scope_of(args)
    emit(args, api(args).clear_spend_cap(scope, name), print_caps)
    return 0


def register(line: CommandLine) -> None:
    client = line.client
    spend = line.group("spend", help="what the mesh's runs cost, and its daily caps")
    for period, days in PERIODS.items():
        p = spend.add_parser(period, parents=[client], help=f"spend {'today' if days == 1 else f'over the last {days} days'}"
                             " (the mesh's days), with totals")
        p.add_argument("--by", choices=BY, help="group by this (default: agent today, day otherwise)")
        p.add_argument("--csv", action="store_true", help="print the rows as CSV")
        p.set_defaults(func=cmd_period, period=period)
    p = spend.add_parser("top", parents=[client], help="the tasks that cost most")
    p.add_argument("-n", type=int, default=10, help="how many (1-100; default 10)")
    p.add_argument("--period", choices=PERIODS, default="week", help="over today, the last week or month (default week)")
    p.add_argument("--csv", action="store_true", help="print the rows as CSV")
    p.set_defaults(func=cmd_top)
    p = spend.add_parser("alerts", parents=[client], help="cap alerts (50/80/100 %%) and how their delivery to ntfy went")
    p.add_argument("--period", choices=PERIODS, default="today", help="over today (default), the last week or month")
    p.set_defaults(func=cmd_alerts)
    caps = spend.add_parser("cap", help="daily caps: at a cap, new work of its scope is held until midnight "
                                        "(or refused, per the Commander's spend_at_cap)").add_subparsers(
        dest="cap_command", required=True, metavar="COMMAND")
    p = caps.add_parser("list", parents=[client], help="every cap with today's spend and what is left")
    p.set_defaults(func=cmd_cap_list)
    for verb, func, about in (("set", cmd_cap_set, "set a daily cap (overrides the configured one)"),
                              ("clear", cmd_cap_clear, "clear a cap set here (the configured one applies again)")):
        p = caps.add_parser(verb, parents=[client], help=about)
        p.add_argument("--all", action="store_true", help="the whole mesh")
        for scope in SCOPES:
            p.add_argument(f"--{scope}", metavar="NAME", help=f"one {scope}")
        if verb == "set":
            p.add_argument("usd", type=float, help="USD a day")
        p.set_defaults(func=func)
