"""The bridge daemon: three threads, each a guarded loop (m3shd.loops).

- poller: reads new chat.db rows, answers commands, submits prompts as tasks;
- relay: follows the Commander's events and queues each tracked task's answer for its chat, and
  for the operator (`alerts_to`) each spend alert and each webhook's task awaiting approval;
- sender: sends queued replies through Messages, one at a time.
A round that fails is logged and tried again after a back-off (full jitter); the other threads
carry on. A message is marked handled only after the Commander took it, so an outage delays
messages rather than losing them.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from bridge import attachments, chatdb, commands, osascript, staging
from bridge.cursor import State
from bridge.reader import Echoes, Inbound, Reader, normalize_address
from bridge.settings import BridgeSettings
from m3shd import loops
from m3shd.client import ApiClient, CommanderError, CommanderUnreachable
from m3shd.wire import FINAL_STATES

log = logging.getLogger("m3shd.bridge")

WATCH_TICK = 0.02        # how often the chat.db files' size and mtime are compared between polls
SETTLE = 0.05            # the extra look after a change
LONG_REPLY = 6 * osascript.SPLIT_AT  # longer replies go as a file, not as a screenful of texts
MAX_BACKOFF = 60.0       # the longest pause before a failed round is tried again
IMAGES_ONLY = "(Sent without text: the attached images are the message.)"  # a task needs a prompt
NOT_SIGNED_IN = ("Messages is not signed in to iMessage on this Mac: open Messages → Settings → iMessage, "
                 "sign in with your Apple ID, then restart the bridge")


@dataclass(frozen=True)
class Outgoing:
    chat: str
    text: str
    address: str | None            # the 1:1 fallback recipient; None for groups
    file: tuple[str, str] | None = None  # (name, text) sent as a file after the text


class FileWatch:
    """Wakes the poller as soon as chat.db or its WAL changes (size or mtime), or after `interval`
    anyway: file-change signals alone are never trusted to catch every write. A change can be
    seen before its commit is readable, so a change wake is followed by one more, SETTLE later."""

    def __init__(self, path: Path):
        self.paths = (path, path.with_name(path.name + "-wal"))
        self.last = self.signature()
        self.settling = False

    def signature(self) -> tuple:
        marks = []
        for path in self.paths:
            try:
                stat = path.stat()
                marks.append((stat.st_mtime_ns, stat.st_size))
            except OSError:
                marks.append(None)
        return tuple(marks)

    def wait(self, interval: float, stop: threading.Event) -> None:
        deadline = time.monotonic() + (SETTLE if self.settling else interval)
        self.settling = False
        while not stop.wait(min(WATCH_TICK, interval)):
            current = self.signature()
            if current != self.last:
                self.last = current
                self.settling = True
                return
            if time.monotonic() >= deadline:
                return


class Bridge:
    def __init__(self, settings: BridgeSettings, client: ApiClient, state: State | None = None):
        self.settings = settings
        self.client = client
        self.state = state or State(Path(settings.state_dir) / "state.json")
        self.echoes = Echoes()
        self.reader = Reader(settings, self.state, self.echoes)
        self.outbox: queue.Queue[Outgoing] = queue.Queue()
        self.stop = threading.Event()
        self.alerts_to = settings.alerts_to and normalize_address(settings.alerts_to, settings.default_country_code)

    def workers(self) -> dict[str, Callable[[], None]]:
        """Each thread's round: the poller's and the sender's short, the relay's as long as the event stream lasts."""
        watch = FileWatch(Path(self.settings.chat_db))
        return {"poller": lambda: self.poll_round(watch), "relay": self.relay_round, "sender": self.send_round}

    def say(self, chat: str, address: str | None, text: str, name: str = "reply.txt") -> None:
        """Queue a reply; one too long for a few texts goes as a file, announced by its first line."""
        if len(text) <= LONG_REPLY:
            self.outbox.put(Outgoing(chat, text, address))
            return
        summary = f"{text.splitlines()[0]} The whole reply ({len(text):,} characters) is in {name}."
        self.outbox.put(Outgoing(chat, summary, address, (name, text)))

    # --- poller ------------------------------------------------------------------------------

    def poll_round(self, watch: FileWatch) -> None:
        self.poll_once()
        watch.wait(self.settings.poll_interval, self.stop)

    def poll_once(self) -> None:
        for message in self.reader.poll():
            if message.skipped:
                log.debug("message %d skipped: %s", message.rowid, message.skipped)
            else:
                self.answer(message)  # raises while the Commander is away: the cursor stays put
            self.state.handled(message.rowid, message.guid)

    def answer(self, message: Inbound) -> None:
        log.info("message %d in chat %s: relaying", message.rowid, message.chat_guid)
        command = commands.parse(message.text, self.settings.mention)
        session = commands.Session(self.client, self.state, self.settings, message)
        address = session.reply_address()
        if command.name in ("prompt", "ask"):
            attachments.convert_heic(message.attachments, Path(self.settings.state_dir) / "images" / message.guid)
            images = attachments.upload(message.attachments, self.client)
            refusal = attachments.refusal(message.attachments)
            if refusal:
                self.say(message.chat_guid, address, refusal)
            if not command.text and not images:
                return
            command = replace(command, text=command.text or IMAGES_ONLY, attachments=tuple(images))
        self.say(message.chat_guid, address, session.reply(command))

    # --- relay -------------------------------------------------------------------------------

    def relay_round(self) -> None:
        for event in self.client.events(after=self.state.event_id):
            if self.stop.is_set():
                return
            tracked = event.get("task_id") is not None and self.state.thread(event["task_id"]) is not None
            if tracked:
                self.follow(event["task_id"])
            told = bool(self.alerts_to) and self.tell_operator(event)
            self.state.followed(event["id"], persist=tracked or told)
        raise CommanderUnreachable("the Commander closed the event stream")

    def tell_operator(self, event: dict) -> bool:
        """Texts for the operator (`alerts_to`), to the person rather than a chat (Messages finds
        or starts their one-to-one chat): each spend alert, and each task a webhook started that
        waits for approval, which is then followed like a texted task, so its answer comes too."""
        data = event.get("data") or {}
        if event["kind"] == "spend.alert":
            self.say("", self.alerts_to, commands.alert_text(data))
            return True
        if event["kind"] == "task.awaiting_approval" and str(data.get("submitter", "")).startswith("webhook:"):
            task = self.client.get_task(event["task_id"])
            self.state.track(task["id"], "", self.alerts_to)
            self.say("", self.alerts_to, commands.approval_request(task))
            return True
        return False

    def follow(self, task_id: int) -> None:
        """A tracked task changed: once it is final, its answer goes back to its chat. (The
        approval question was asked when it was submitted: the submit answer says so.)"""
        try:
            task = self.client.get_task(task_id)
        except CommanderError as exc:
            if exc.status >= 500:
                raise
            log.warning("task %d can no longer be read (%s): not following it", task_id, exc.message)
            self.state.forget(task_id)  # else its events would stop the relay again at every restart
            return
        if task["state"] in FINAL_STATES:
            thread = self.state.thread(task_id)
            self.say(thread["chat"], thread["sender"], commands.describe(task), name=f"task-{task_id}.txt")
            self.state.forget(task_id)

    # --- sender ------------------------------------------------------------------------------

    def send_round(self) -> None:
        messages_dir = Path(self.settings.chat_db).parent
        staging.sweep(messages_dir / staging.FOLDER)
        try:
            outgoing = self.outbox.get(timeout=0.5)
        except queue.Empty:
            return
        try:
            for piece in osascript.split(outgoing.text):
                self.echoes.record(outgoing.chat, piece)  # before sending: the echo can land first
                osascript.send(piece, outgoing.chat, outgoing.address, self.settings.osascript)
            if outgoing.file:
                name, content = outgoing.file
                path = staging.stage(messages_dir, name, content.encode())
                osascript.send("", outgoing.chat, outgoing.address, self.settings.osascript, file=path)
        except osascript.OsascriptError as exc:
            log.error("could not reply in chat %s: %s", outgoing.chat, exc)


# --- supervision -----------------------------------------------------------------------------

def supervise(workers: dict[str, Callable[[], None]], stop: threading.Event, first_backoff: float = 1.0,
              max_backoff: float = MAX_BACKOFF) -> None:
    """Run each worker's round over and over in a thread of its own until `stop`. A failed round
    is logged and tried again after a back-off that grows while it keeps failing (a round that
    ran longer than `max_backoff` starts it afresh); the other threads are never touched."""
    for name, work in workers.items():
        loops.start(f"bridge-{name}", work, stop=stop, logger=log, base=first_backoff, cap=max_backoff)
    while not stop.wait(0.5):  # timed, so the signal handler that sets `stop` gets to run
        pass


# --- entry points ----------------------------------------------------------------------------

def startup_problems(settings: BridgeSettings, client: ApiClient) -> list[str]:
    """Everything that would keep the bridge from working, each as one exact instruction."""
    problems = []
    path = Path(settings.chat_db)
    try:
        chatdb.check_readable(path)
        with chatdb.connect(path) as db:
            chatdb.probe(db)
    except chatdb.ChatDbProblem as exc:
        problems.append(str(exc))
    try:
        if osascript.signed_in_accounts(settings.osascript) == 0:
            problems.append(NOT_SIGNED_IN)
    except (osascript.OsascriptError, ValueError) as exc:
        problems.append(f"cannot ask Messages for its accounts: {exc}")
    allowed = {normalize_address(sender, settings.default_country_code) for sender in settings.allowed_senders}
    if settings.alerts_to and normalize_address(settings.alerts_to, settings.default_country_code) not in allowed:
        problems.append(f"[bridge] alerts_to {settings.alerts_to!r} is not one of allowed_senders: "
                        "alerts go only to someone who may use the mesh")
    if not settings.allowed_senders and not settings.allowed_groups:
        problems.append("nobody may use the bridge: set [bridge] allowed_senders (your phone number or Apple ID "
                        "email) or allowed_groups (chat GUIDs; `m3shd bridge scan` shows them)")
    try:
        client.list_tasks(limit=1)
    except CommanderUnreachable as exc:
        log.warning("%s; the bridge will keep trying", exc)
    except CommanderError as exc:
        problems.append(f"the Commander refused the bridge's token ({exc.message}): create one with "
                        f"`m3shd token create imessage-bridge --role mobile` and set [client] token")
    return problems


def run(settings: BridgeSettings, client: ApiClient) -> int:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    problems = startup_problems(settings, client)
    for problem in problems:
        log.error(problem)
    if problems:
        return 2
    bridge = Bridge(settings, client)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: bridge.stop.set())
    log.info("watching %s for %d senders and %d groups (pid %d)", settings.chat_db,
             len(settings.allowed_senders), len(settings.allowed_groups), os.getpid())
    supervise(bridge.workers(), bridge.stop)
    bridge.state.save()
    return 0


def scan(settings: BridgeSettings, since_rowid: int, out) -> int:
    """Print each message after `since_rowid` as JSON, classified exactly as the bridge would,
    and decoded even when the bridge would skip it (`skipped` says why): a diagnostic."""
    chatdb.check_readable(Path(settings.chat_db))
    state = State(None)
    state.rowid = since_rowid
    reader = Reader(settings, state, diagnose=True)
    while found := reader.poll():
        for message in found:
            print(json.dumps(message.as_json(), ensure_ascii=False), file=out)
            state.handled(message.rowid, message.guid)
    return 0
