"""New chat.db rows → inbound messages, each either relayable or skipped with a reason.

The allow-list is checked before a message's text is even decoded; what is not allowed is
never parsed, logged or relayed. Only `bridge scan`, a diagnostic the operator runs on their
own Mac, reads everything (`diagnose=True`), to show each message with why it would be skipped.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bridge import attachments, chatdb, typedstream
from bridge.cursor import State
from bridge.settings import BridgeSettings

log = logging.getLogger("m3shd.bridge")

BATCH = 200                 # rows read per poll; a backlog drains over a few polls
ECHO_TTL = 600.0            # our own replies can come back as inbound rows for this long
FIRST_TAPBACK_TYPE = 1000   # associated_message_type ≥ 1000: stickers, tapbacks and their removals
PHONE_PUNCTUATION = re.compile(r"[\s().\-/]")


@dataclass
class Inbound:
    rowid: int
    guid: str
    date: float | None
    sender: str | None
    chat_guid: str | None
    is_group: bool
    service: str | None
    text: str = ""
    attachments: list[dict] = field(default_factory=list)
    skipped: str | None = None

    def as_json(self) -> dict:
        return asdict(self)


def normalize_address(address: str, country_code: str = "1") -> str:
    """An email lower-cased, or a phone number as +<digits> (E.164-like), for allow-list matching."""
    address = address.strip()
    for scheme in ("mailto:", "tel:"):
        if address.lower().startswith(scheme):
            address = address[len(scheme):]
    if "@" in address:
        return address.lower()
    compact = PHONE_PUNCTUATION.sub("", address)
    if compact.startswith("+"):
        return compact
    if compact.startswith("00"):
        return "+" + compact[2:]
    if compact.isdigit() and compact.startswith(country_code) and len(compact) > 10:
        return "+" + compact
    if compact.isdigit():
        return "+" + country_code + compact.lstrip("0")
    return compact.lower()


class Echoes:
    """The replies we sent lately, per chat: when one shows up as an inbound row, it is ours."""

    def __init__(self, ttl: float = ECHO_TTL):
        self.ttl = ttl
        self.lock = threading.Lock()
        self.sent: dict[tuple[str, str], float] = {}

    @staticmethod
    def _key(chat: str, text: str) -> tuple[str, str]:
        return chat, hashlib.sha256(" ".join(text.split()).encode()).hexdigest()

    def record(self, chat: str, text: str) -> None:
        with self.lock:
            now = time.monotonic()
            self.sent = {key: at for key, at in self.sent.items() if now - at < self.ttl}
            self.sent[self._key(chat, text)] = now

    def matches(self, chat: str, text: str) -> bool:
        with self.lock:
            at = self.sent.get(self._key(chat, text))
            return at is not None and time.monotonic() - at < self.ttl


class Reader:
    def __init__(self, settings: BridgeSettings, state: State, echoes: Echoes | None = None, diagnose: bool = False):
        self.settings = settings
        self.diagnose = diagnose
        self.path = Path(settings.chat_db)
        self.state = state
        self.echoes = echoes or Echoes()
        code = settings.default_country_code
        self.senders = {normalize_address(address, code) for address in settings.allowed_senders}
        self.groups = set(settings.allowed_groups)
        self.schema: chatdb.Schema | None = None

    def poll(self) -> list[Inbound]:
        """The messages after the cursor (at most BATCH), classified. Does not move the cursor."""
        with chatdb.connect(self.path) as db:
            self.schema = self.schema or chatdb.probe(db)
            try:
                found = self.read(db)
            except sqlite3.OperationalError:
                self.schema = None  # a macOS update may have changed the tables: probe again next time
                raise
        self.recheck_from_me([m for m in found if m.skipped is None])
        return found

    def read(self, db) -> list[Inbound]:
        top = chatdb.max_rowid(db)
        if self.state.rowid is None:
            self.state.rewind(top)  # first start: answer what arrives from now on, not the history
            return []
        if top < self.state.rowid:
            # chat.db was restored or rebuilt: ROWIDs restarted. Re-read it all; the GUID set and
            # the window keep old messages from being relayed again.
            log.warning("chat.db's newest message is %d, below the cursor %d: rewinding", top, self.state.rowid)
            self.state.rewind(0)
        rows = chatdb.messages_after(db, self.schema, self.state.rowid, BATCH)
        return [self.classify(db, row) for row in rows]

    def recheck_from_me(self, candidates: list[Inbound]) -> None:
        if not candidates or self.settings.recheck_delay <= 0:
            return
        time.sleep(self.settings.recheck_delay)
        with chatdb.connect(self.path) as db:
            flipped = chatdb.from_me(db, [m.rowid for m in candidates])
        for message in candidates:
            if message.rowid in flipped:
                message.skipped = "from me (is_from_me set after the row appeared)"

    def classify(self, db, row) -> Inbound:
        message = Inbound(rowid=row["rowid"], guid=row["guid"], date=chatdb.unix_time(row["date"]),
                          sender=row["sender"], chat_guid=row["chat_guid"], is_group=bool(row["is_group"]),
                          service=row["service"])
        message.skipped = self.structural_skip(row) or self.allow_skip(message) or self.delivery_skip(message)
        if message.skipped and not self.diagnose:
            return message
        raw = row["text"] or typedstream.message_text(row["attributedBody"])  # the blob when text is NULL or ""
        message.text = (raw or "").replace(typedstream.ATTACHMENT_PLACEHOLDER, "").strip()
        if row["cache_has_attachments"]:
            message.attachments = attachments.describe(chatdb.attachments(db, self.schema, message.rowid),
                                                       self.path.parent, self.settings.max_attachment_bytes)
        message.skipped = message.skipped or self.content_skip(message)
        return message

    def structural_skip(self, row) -> str | None:
        if self.state.was_seen(row["guid"]):
            return "already handled"
        if row["item_type"]:
            return f"not a message (item_type {row['item_type']})"
        if (row["associated_message_type"] or 0) >= FIRST_TAPBACK_TYPE:
            return "tapback or sticker"
        if row["date_retracted"]:
            return "unsent by its sender"
        if row["is_from_me"]:
            return "from me"
        if not row["chat_guid"]:
            return "in no chat"
        return None

    def allow_skip(self, message: Inbound) -> str | None:
        if message.is_group:
            return None if message.chat_guid in self.groups else "group chat not in [bridge] allowed_groups"
        address = normalize_address(message.sender or "", self.settings.default_country_code)
        return None if address in self.senders else "sender not in [bridge] allowed_senders"

    def delivery_skip(self, message: Inbound) -> str | None:
        if message.service != "iMessage" and not self.settings.sms_allowed:
            return f"{message.service or 'unknown service'} not allowed ([bridge] sms_allowed)"
        window = self.settings.window
        if window > 0 and (message.date is None or message.date < time.time() - window):
            return f"older than the {window:g} s window"
        return None

    def content_skip(self, message: Inbound) -> str | None:
        mention = self.settings.mention
        if mention and message.is_group:
            if not message.text.lower().startswith(mention.lower()):
                return f"group message without the mention {mention}"
            message.text = message.text[len(mention):].lstrip(" ,:")
        if self.echoes.matches(message.chat_guid, message.text):
            return "echo of our own reply"
        if not message.text and not message.attachments:
            return "no text"
        return None
