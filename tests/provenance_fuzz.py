"""Forged copies of a provenance bundle, for tests of the offline verifier.

`forgeries(bundle)` yields every one-step forgery of a bundle: for each field of each link and of
the bundle itself, the field dropped, replaced by a value of each JSON type, emptied, bit-flipped
and cut short; each link dropped, duplicated and moved to every other place. A forgery may verify
only if it says what the original says (`substance`): the Commander's labels, which no signature
covers (step names, node ids, its own verdict), may change, nothing else.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator

from m3shd.provenance import LINK_LABELS

BUNDLE_LABELS = ("ok",)  # the Commander's verdict on the whole bundle


def substance(bundle) -> str:
    """What a verified bundle vouches for: the bundle without the labels, as canonical text."""
    if not isinstance(bundle, dict):
        return json.dumps(bundle)
    bare = {k: v for k, v in bundle.items() if k not in BUNDLE_LABELS}
    if isinstance(bare.get("links"), list):
        bare["links"] = [{k: v for k, v in link.items() if k not in LINK_LABELS} if isinstance(link, dict) else link
                         for link in bare["links"]]
    return json.dumps(bare, sort_keys=True)


def other_values(value, task_ids: list[int]) -> Iterator[tuple[str, object]]:
    """Values to put in place of `value`: every JSON type, empty ones, near misses of it, and the
    bundle's task ids (a link made its own parent, or another's)."""
    yield from (("null", None), ("true", True), ("false", False), ("zero", 0), ("minus one", -1), ("one", 1),
                ("a float", 1.5), ("a huge number", 2**70), ("an empty string", ""), ("a string", "x"),
                ("an empty list", []), ("a list", [1]), ("an empty object", {}), ("an object", {"a": 1}))
    if isinstance(value, str) and value:
        for where in sorted({0, len(value) // 2, len(value) - 1}):
            flipped = value[:where] + chr(ord(value[where]) ^ 1) + value[where + 1:]
            yield f"bit flip at {where}", flipped
        yield "cut short", value[:-1]
        yield "one more character", value + value[-1]
        yield "upper case", value.upper()
        yield "with a NUL", value + "\x00"
    if isinstance(value, bool):
        yield "negated", not value
    elif isinstance(value, int):
        yield from (("plus one", value + 1), ("minus one from it", value - 1), ("as a string", str(value)),
                    ("as a float", float(value)))
        yield from ((f"task id {task_id}", task_id) for task_id in task_ids)
    if isinstance(value, list):
        yield "reversed", value[::-1]
        yield "without its first item", value[1:]
        yield "its first item twice", value[:1] + value
        yield "with one more item", value + [value[0] if value else 1]
        for task_id in task_ids:
            yield f"only task id {task_id}", [task_id]
            yield f"with task id {task_id}", value + [task_id]
    if isinstance(value, dict):
        for key in value:
            yield f"without {key!r}", {k: v for k, v in value.items() if k != key}
            for name, other in (("null", None), ("flipped", flip_text(value[key]))):
                yield f"{key!r} {name}", {**value, key: other}
        yield "with one more entry", {**value, "999": next(iter(value.values()), "00" * 32)}


def flip_text(value):
    return value[:-1] + chr(ord(value[-1]) ^ 1) if isinstance(value, str) and value else value


def forgeries(bundle: dict) -> Iterator[tuple[str, dict]]:
    task_ids = [link["task_id"] for link in bundle["links"]]
    for key in bundle:
        if key == "links":
            continue
        dropped = copy.deepcopy(bundle)
        del dropped[key]
        yield f"bundle without {key!r}", dropped
        for name, other in other_values(bundle[key], task_ids):
            changed = copy.deepcopy(bundle)
            changed[key] = other
            yield f"bundle {key!r}: {name}", changed
    links = bundle["links"]
    for index, link in enumerate(links):
        for key in link:
            dropped = copy.deepcopy(bundle)
            del dropped["links"][index][key]
            yield f"link {index} without {key!r}", dropped
            for name, other in other_values(link[key], task_ids):
                changed = copy.deepcopy(bundle)
                changed["links"][index][key] = other
                yield f"link {index} {key!r}: {name}", changed
        without = copy.deepcopy(bundle)
        del without["links"][index]
        yield f"without link {index}", without
        for place in range(len(links) + 1):
            doubled = copy.deepcopy(bundle)
            doubled["links"].insert(place, copy.deepcopy(link))
            yield f"link {index} again at {place}", doubled
            if place < len(links) and place != index:
                moved = copy.deepcopy(bundle)
                moved["links"].insert(place, moved["links"].pop(index))
                yield f"link {index} moved to {place}", moved
    for name, other in (("no links", []), ("links reversed", links[::-1]), ("a link that is not an object", [1]),
                        ("links as an object", {"0": links[0]})):
        changed = copy.deepcopy(bundle)
        changed["links"] = copy.deepcopy(other)
        yield name, changed
