"""What the bridge must remember across restarts, in one JSON file replaced atomically.

- `rowid`: the last chat.db message handled (None until the first look: history is not replayed);
- `seen`: GUIDs of recent handled messages, so a rewound cursor never repeats one;
- `event_id`: the last Commander event followed (saved with the next write);
- `threads`: task id → the chat it came from, so its answer goes back there.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path

from m3shd.files import write_private

SEEN_LIMIT = 5000  # far more than arrive within any dedup window


class State:
    def __init__(self, path: Path | None):
        """`path` None keeps everything in memory (`bridge scan`)."""
        self.path = path
        self.lock = threading.RLock()
        self.rowid: int | None = None
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.event_id = 0  # from the first event on: the Commander keeps them, so none is missed
        self.threads: dict[int, dict] = {}
        if path and path.exists():
            document = json.loads(path.read_text())
            self.rowid = document["rowid"]
            self.seen = OrderedDict.fromkeys(document["seen"])
            self.event_id = document["event_id"]
            self.threads = {int(task): thread for task, thread in document["threads"].items()}

    def save(self) -> None:
        if self.path is None:
            return
        with self.lock:
            document = {"rowid": self.rowid, "seen": list(self.seen), "event_id": self.event_id,
                        "threads": {str(task): thread for task, thread in self.threads.items()}}
            write_private(self.path, json.dumps(document))

    def handled(self, rowid: int, guid: str) -> None:
        """Mark one message done (relayed or skipped) and move the cursor past it."""
        with self.lock:
            self.seen[guid] = None
            while len(self.seen) > SEEN_LIMIT:
                self.seen.popitem(last=False)
            self.rowid = max(self.rowid or 0, rowid)
            self.save()

    def was_seen(self, guid: str) -> bool:
        with self.lock:
            return guid in self.seen

    def rewind(self, to: int) -> None:
        with self.lock:
            self.rowid = to
            self.save()

    def track(self, task_id: int, chat: str, sender: str | None) -> None:
        with self.lock:
            self.threads[task_id] = {"chat": chat, "sender": sender}
            self.save()

    def thread(self, task_id: int) -> dict | None:
        with self.lock:
            return self.threads.get(task_id)

    def tasks_in(self, chat: str) -> list[int]:
        with self.lock:
            return sorted(task for task, thread in self.threads.items() if thread["chat"] == chat)

    def forget(self, task_id: int) -> None:
        with self.lock:
            self.threads.pop(task_id, None)
            self.save()

    def followed(self, event_id: int, persist: bool) -> None:
        """Events of other tasks only move the mark in memory; replaying them after a crash is harmless."""
        with self.lock:
            self.event_id = event_id
            if persist:
                self.save()
