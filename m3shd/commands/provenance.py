"""`m3shd provenance`: export a task's signed, chained results, and verify a bundle offline."""

from __future__ import annotations

import json

from m3shd.cli import EXIT_FAILED, EXIT_INCOMPLETE, api, emit, read_json, say
from m3shd.components import CommandLine


def cmd_provenance_export(args) -> int:
    bundle = json.dumps(api(args).task_provenance(args.id), indent=2)
    if args.output == "-":
        print(bundle)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(bundle + "\n")
        say(f"provenance of task {args.id} written to {args.output}")
    return 0


def cmd_provenance_verify(args) -> int:
    """Offline: only the bundle and the public keys in it, never the Commander."""
    # Imported here: PyNaCl is not part of the base install the other commands need.
    from m3shd.provenance import BROKEN, INCOMPLETE, VERIFIED, verify_bundle

    bundle = read_json(args.file)
    verdict = verify_bundle(bundle)

    def report(result):
        steps = result["steps"]
        for problem in result["problems"]:
            print(f"bundle: {problem}")
        for task_id, problems in result["links"].items():
            label = f"task {task_id}" + (f" ({steps[task_id]})" if steps.get(task_id) else "")
            if problems:
                print(f"{label}: BROKEN: " + "; ".join(problems))
            elif task_id in result["unsigned"]:
                print(f"{label}: no signed result ({result['unsigned'][task_id]})")
            else:
                print(f"{label}: verified")
        if result["verdict"] == INCOMPLETE:
            print(f"chain incomplete: {len(result['unsigned'])} of {len(result['links'])} links have no signed "
                  "result (not run yet, or never run); nothing else is wrong")
        else:
            print("chain verified" if result["verdict"] == VERIFIED else "chain BROKEN")

    emit(args, verdict, report)
    return {VERIFIED: 0, INCOMPLETE: EXIT_INCOMPLETE, BROKEN: EXIT_FAILED}[verdict["verdict"]]


def register(line: CommandLine) -> None:
    provenance = line.group("provenance", help="signed, chained results")
    p = provenance.add_parser("export", parents=[line.client], help="write a task's provenance bundle (JSON)")
    p.add_argument("id", type=int)
    p.add_argument("-o", "--output", default="-", metavar="FILE", help="where to write it (default: standard output)")
    p.set_defaults(func=cmd_provenance_export)
    p = provenance.add_parser("verify", help="check a provenance bundle offline, with only its public keys",
                              description="Recompute every chain hash and check every Ed25519 signature in the "
                                          "bundle. Every link that carries an output must be signed and chained, "
                                          "whatever its state says; step names and node ids are the Commander's "
                                          "labels, which no signature covers. Exit status 0: verified; 1: broken "
                                          f"(anything wrong); {EXIT_INCOMPLETE}: incomplete (nothing wrong, but "
                                          "some links have no signed result: not run yet, or never run).")
    p.add_argument("file", metavar="FILE", help="the bundle, or - for standard input")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_provenance_verify)
