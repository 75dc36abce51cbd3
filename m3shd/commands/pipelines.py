"""`m3shd pipeline`: submit a graph of steps (and wait for it), show it, cancel it."""

from __future__ import annotations

import time

from m3shd.cli import EXIT_FAILED, EXIT_TIMEOUT, CliError, api, emit, read_json, say
from m3shd.components import CommandLine
from m3shd.wire import PipelineState, TaskState


def print_pipeline(pipeline: dict) -> None:
    name = f" {pipeline['name']}" if pipeline["name"] else ""
    print(f"pipeline {pipeline['id']}{name}: {pipeline['state']}")
    for step in pipeline["steps"]:
        parents = ", ".join(dep["step"] + ("?" if dep["allow_failure"] else "") for dep in step["depends_on"])
        where = f" on node {step['node_id']}" if step["node_id"] else ""
        print(f"  {step['key']:<20} task {step['task_id']:<6} {step['state']:<10}{where}"
              + (f"  ← {parents}" if parents else ""))
        if step["error"] and step["state"] != TaskState.SUCCEEDED:
            print(f"  {'':<20} {step['error']}")
    if pipeline["error"]:
        print(f"  {pipeline['error']}")


def cmd_pipeline_submit(args) -> int:
    client = api(args)
    pipeline = client.submit_pipeline(read_json(args.file))
    if not args.wait:
        emit(args, pipeline, print_pipeline)
        return 0
    say(f"pipeline {pipeline['id']} submitted; waiting for it (Ctrl-C stops waiting, not the pipeline)")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while pipeline["state"] == PipelineState.RUNNING:
        if deadline is not None and time.monotonic() >= deadline:
            raise CliError(f"pipeline {pipeline['id']} is still running after {args.timeout:g} s; "
                           f"`m3shd pipeline show {pipeline['id']}` to look again", EXIT_TIMEOUT)
        time.sleep(1.0)  # no long-poll for pipelines: a look a second is plenty for a person
        pipeline = client.get_pipeline(pipeline["id"])
    emit(args, pipeline, print_pipeline)
    return 0 if pipeline["state"] == PipelineState.SUCCEEDED else EXIT_FAILED


def cmd_pipeline_show(args) -> int:
    emit(args, api(args).get_pipeline(args.id), print_pipeline)
    return 0


def cmd_pipeline_cancel(args) -> int:
    emit(args, api(args).cancel_pipeline(args.id), print_pipeline)
    return 0


def register(line: CommandLine) -> None:
    client = line.client
    pipeline = line.group("pipeline", help="graphs of steps submitted at once")
    p = pipeline.add_parser("submit", parents=[client], help="submit a pipeline from a JSON file (docs/pipelines.md)")
    p.add_argument("file", metavar="FILE", help="the pipeline as JSON, or - for standard input")
    p.add_argument("--wait", action="store_true", help="wait until it finishes; exit 1 unless it succeeded")
    p.add_argument("--timeout", type=float, help="with --wait: stop waiting after this many seconds")
    p.set_defaults(func=cmd_pipeline_submit)
    for name, func, text in (("show", cmd_pipeline_show, "print a pipeline's graph and step states"),
                             ("cancel", cmd_pipeline_cancel, "cancel a pipeline's unfinished steps")):
        p = pipeline.add_parser(name, parents=[client], help=text)
        p.add_argument("id", type=int)
        p.set_defaults(func=func)
