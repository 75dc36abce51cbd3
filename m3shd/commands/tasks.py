"""`m3shd task`: submit a prompt and wait for its answer, follow, approve, reject and cancel tasks."""

from __future__ import annotations

from m3shd import images
from m3shd.cli import EXIT_FAILED, EXIT_TIMEOUT, CliError, api, emit, say
from m3shd.components import CommandLine
from m3shd.wire import FINAL_STATES, TaskState


def describe_usage(task: dict) -> str:
    usage = task["usage"]
    cost = "unknown" if task["cost_usd"] is None else f"${task['cost_usd']:.4f}"
    return (f"tokens: {usage['input_tokens']:,} in · {usage['output_tokens']:,} out · "
            f"{usage['cache_read_tokens']:,} cache read · {usage['cache_write_tokens']:,} cache write · cost {cost}")


def print_task(task: dict) -> None:
    where = f" on node {task['node_id']}" if task["node_id"] else ""
    took = f", {task['duration_ms'] / 1000:.1f} s" if task["duration_ms"] is not None else ""
    say(f"task {task['id']} {task['state']}{where} (attempt {task['attempt']}/{task['max_attempts']}{took})")
    if task["state"] == TaskState.SUCCEEDED:
        print(task["output"])
    elif task["error"]:
        say(f"error: {task['error']}")
    if task["waiting_reason"]:
        say(f"waiting: {task['waiting_reason']}")
    if task["state"] in FINAL_STATES:
        say(describe_usage(task))


# Long-poll rounds while waiting: a task ends a round as soon as it is final, so their length
# only bounds how long a new waiting reason (a node gone, a runner broken) goes unsaid.
REASON_EVERY = 5.0


def wait_for(client, task: dict, timeout: float | None) -> dict:
    """Wait for `task` (as last read) to finish, saying why it waits whenever the reason changes,
    from the first look on."""
    task_id, said = task["id"], None

    def report(task):
        nonlocal said
        if task["waiting_reason"] and task["waiting_reason"] != said:
            said = task["waiting_reason"]
            say(f"task {task_id} is {task['state']}: {said}")

    report(task)
    if task["state"] not in FINAL_STATES:
        task = client.wait_task(task_id, timeout, on_poll=report, every=REASON_EVERY)
    if task["state"] not in FINAL_STATES:
        raise CliError(f"task {task_id} is still {task['state']} after {timeout:g} s; "
                       f"`m3shd task wait {task_id}` to keep waiting", EXIT_TIMEOUT)
    return task


def finish(args, task: dict) -> int:
    emit(args, task, print_task)
    return 0 if task["state"] == TaskState.SUCCEEDED else EXIT_FAILED


def cmd_task_submit(args) -> int:
    client = api(args)
    attachments = [upload(client, path)["sha256"] for path in args.attach or ()]
    task = client.submit_task(args.prompt, agent=args.agent, attachments=attachments or None,
                              requires=listed(args.requires), prefer=listed(args.prefer),
                              priority=args.priority, model=args.model, idempotency_key=args.idempotency_key,
                              max_attempts=args.max_attempts, backoff=args.backoff,
                              approval_required=args.approval or None,
                              retry_on_lost=False if args.no_retry_on_lost else None)
    if task["state"] == TaskState.AWAITING_APPROVAL:
        emit(args, task, lambda t: say(f"task {t['id']} awaits approval: `m3shd task approve {t['id']}` or `reject`"))
        return 0
    if args.no_wait:
        emit(args, task, lambda t: print(t["id"]))
        return 0
    say(f"task {task['id']} {task['state']}; waiting for the answer (Ctrl-C stops waiting, not the task)")
    return finish(args, wait_for(client, task, args.timeout))


def upload(client, path: str) -> dict:
    """Store an image file with the Commander for a task to take."""
    try:
        data, media_type = images.read(path)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return client.upload_attachment(data, media_type)


def listed(text: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when not given)."""
    return [item.strip() for item in text.split(",") if item.strip()] or None if text else None


def cmd_task_decide(args) -> int:
    client = api(args)
    if args.sub == "approve":
        task = client.approve_task(args.id)
    else:
        task = client.reject_task(args.id, args.reason)
    emit(args, task, lambda t: say(f"task {t['id']} {args.sub}d: now {t['state']}"))
    return 0


def cmd_task_get(args) -> int:
    emit(args, api(args).get_task(args.id), print_task)
    return 0


def cmd_task_wait(args) -> int:
    client = api(args)
    return finish(args, wait_for(client, client.get_task(args.id), args.timeout))


def cmd_task_cancel(args) -> int:
    task = api(args).cancel_task(args.id)
    emit(args, task, lambda t: say(f"task {t['id']} cancelled"))
    return 0


def cmd_task_list(args) -> int:
    found = api(args).list_tasks(state=args.state, node_id=args.node, limit=args.limit)

    def table(items):
        print(f"{'ID':>6}  {'STATE':<10} {'NODE':>5}  {'COST':>9}  PROMPT")
        for t in items:
            cost = "" if t["cost_usd"] is None else f"${t['cost_usd']:.4f}"
            prompt = " ".join(t["prompt"].split())
            print(f"{t['id']:>6}  {t['state']:<10} {t['node_id'] or '':>5}  {cost:>9}  {prompt[:60]}")

    emit(args, found, table)
    return 0


def register(line: CommandLine) -> None:
    client = line.client
    task = line.group("task", help="submit and follow tasks")
    p = task.add_parser("submit", parents=[client], help="send a prompt to the mesh and print the answer")
    p.add_argument("prompt")
    p.add_argument("--agent", metavar="NAME", help="the agent it runs as (default general; `m3shd agents list`)")
    p.add_argument("--requires", help="comma-separated capabilities a node must have, e.g. arch=arm64,gpu")
    p.add_argument("--priority", type=int, help="-100..100, higher runs first (default 0)")
    p.add_argument("--model", help="Claude model id or alias, e.g. claude-sonnet-5-5 or sonnet")
    p.add_argument("--idempotency-key", help="resubmitting with the same key returns the first task")
    p.add_argument("--prefer", help="comma-separated capabilities that make a node a better choice")
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--backoff", type=float, metavar="SECONDS", help="wait before a retry, doubling each attempt")
    p.add_argument("--no-retry-on-lost", action="store_true", help="fail instead of retrying when the node is lost")
    p.add_argument("--approval", action="store_true", help="hold the task until someone approves it")
    p.add_argument("--attach", action="append", metavar="FILE",
                   help=f"an image for Claude to see ({images.NAMES}; at most the Commander's max_attachment_bytes); "
                        "repeat for more")
    p.add_argument("--no-wait", action="store_true", help="print the task id and return")
    p.add_argument("--timeout", type=float, help="stop waiting after this many seconds")
    p.set_defaults(func=cmd_task_submit)
    for name, func, text in (("get", cmd_task_get, "show a task"), ("cancel", cmd_task_cancel, "cancel a task")):
        p = task.add_parser(name, parents=[client], help=text)
        p.add_argument("id", type=int)
        p.set_defaults(func=func)
    p = task.add_parser("approve", parents=[client], help="approve a task awaiting approval")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_task_decide)
    p = task.add_parser("reject", parents=[client], help="reject a task awaiting approval")
    p.add_argument("id", type=int)
    p.add_argument("--reason")
    p.set_defaults(func=cmd_task_decide)
    p = task.add_parser("wait", parents=[client], help="wait for a task and print its answer")
    p.add_argument("id", type=int)
    p.add_argument("--timeout", type=float)
    p.set_defaults(func=cmd_task_wait)
    p = task.add_parser("list", parents=[client], help="list tasks, newest first")
    p.add_argument("--state", choices=tuple(TaskState))
    p.add_argument("--node", type=int)
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_task_list)
