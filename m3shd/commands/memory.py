"""`m3shd memory`: what agents remember (docs/memory.md), over the Commander API.

`AGENT` is an agent's name, or `shared` for the memories every agent reads. Searching works on
the Commander's blind index: it matches whole words (lightly stemmed), never parts of them.
"""

from __future__ import annotations

import time

from m3shd.cli import api, emit, say
from m3shd.components import CommandLine


def print_memories(found: list[dict]) -> None:
    if not found:
        say("no memories")
        return
    print(f"{'ID':>6} {'USED':>5} {'UPDATED':<16} {'KEY':<24} VALUE")
    for memory in found:
        updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(memory["updated_at"]))
        value = " ".join(memory["value"].split())
        tags = f"  [{', '.join(memory['tags'])}]" if memory["tags"] else ""
        print(f"{memory['id']:>6} {memory['use_count']:>5} {updated:<16} {(memory['key'] or '-')[:24]:<24} "
              f"{value[:80]}{tags}")


def cmd_list(args) -> int:
    emit(args, api(args).memories(args.agent, limit=args.limit), print_memories)
    return 0


def cmd_search(args) -> int:
    emit(args, api(args).memories(args.agent, " ".join(args.words), args.limit), print_memories)
    return 0


def cmd_add(args) -> int:
    memory = api(args).remember(args.agent, args.value, args.key, args.tag)
    emit(args, memory, lambda m: say(f"memory {m['id']} of {m['scope']} stored"))
    return 0


def cmd_forget(args) -> int:
    api(args).forget(args.agent, args.id)
    say(f"memory {args.id} of {args.agent} forgotten")
    return 0


def cmd_consolidate(args) -> int:
    def table(merges):
        say(f"{len(merges)} merge{'s' if len(merges) != 1 else ''}")
        for merge in merges:
            print(f"{merge['scope']}: {', '.join(map(str, merge['merged']))} -> {merge['kept']}")

    emit(args, api(args).consolidate_memories(), table)
    return 0


def register(line: CommandLine) -> None:
    client = line.client
    memory = line.group("memory", help="what agents remember: list, search, add, forget and consolidate memories")
    p = memory.add_parser("list", parents=[client], help="an agent's memories, newest first")
    p.add_argument("agent", help="the agent, or `shared`")
    p.add_argument("--limit", type=int, default=50, help="how many (1-500; default 50)")
    p.set_defaults(func=cmd_list)
    p = memory.add_parser("search", parents=[client], help="an agent's memories sharing words with a text, best first")
    p.add_argument("agent", help="the agent, or `shared`")
    p.add_argument("words", nargs="+", help="what to look for")
    p.add_argument("--limit", type=int, default=10, help="how many (1-500; default 10)")
    p.set_defaults(func=cmd_search)
    p = memory.add_parser("add", parents=[client], help="store a memory (a key stored again gets the new value)")
    p.add_argument("agent", help="the agent, or `shared`")
    p.add_argument("value", help="what to remember")
    p.add_argument("--key", help="a name for it (up to 80 characters)")
    p.add_argument("--tag", action="append", help="a tag (repeat for more)")
    p.set_defaults(func=cmd_add)
    p = memory.add_parser("forget", parents=[client], help="delete a memory")
    p.add_argument("agent", help="the agent, or `shared`")
    p.add_argument("id", type=int, help="the memory's id")
    p.set_defaults(func=cmd_forget)
    p = memory.add_parser("consolidate", parents=[client], help="merge near-duplicate memories in every scope now "
                                                                  "(the Commander also does it daily)")
    p.set_defaults(func=cmd_consolidate)
