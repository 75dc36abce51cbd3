"""What every request and background thread of one Commander process shares."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import peewee as pw

from commander.db import write_transaction
from commander.secrets import SecretBox
from commander.wake import Dispatcher, Notifier


@dataclass
class Commander:
    settings: dict
    db: pw.Database
    box: SecretBox
    notifier: Notifier
    dispatcher: Dispatcher | None = None
    _started: bool = False
    _start_lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def writing(self):
        """A write transaction; waiters everywhere are woken once it has committed."""
        with write_transaction(self.db):
            yield
        self.notifier.notify()

    def ensure_started(self, start) -> None:
        """Start this process's background threads once, on first use (after gunicorn forks)."""
        if self._started:
            return
        with self._start_lock:
            if not self._started:
                start(self)
                self._started = True
