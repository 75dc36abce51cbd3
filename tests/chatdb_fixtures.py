"""chat.db files with the table layouts macOS Messages writes, and real typedstream blobs.

Four eras, each the previous one's columns plus what that release added:
  catalina   10.15
  bigsur     11-12 (Big Sur, Monterey): replies (`thread_originator_*`), syndication
  ventura    13-14 (Ventura, Sonoma): edit/unsend (`date_edited`, `date_retracted`), `text` often NULL
  tahoe      15-26 (Sequoia, Tahoe): emoji tapbacks, satellite and scheduled sends; on Tahoe chat GUIDs
             start `any;` (`any;-;+1555…`, `any;+;chat…`), which the bridge treats as opaque
Dates are nanoseconds since 2001-01-01 (every era here; seconds were pre-High Sierra).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

APPLE_EPOCH = 978307200

# --- typedstream: an NSAttributedString as Messages archives it ----------------------------------
# A writer for the parts of Apple's typedstream format (see bridge/typedstream.py) that an
# attributedBody uses. It keeps the format's own tables, so every reference it writes points at
# what NSArchiver's would: type encodings and class names written once into the shared-string
# table, objects, classes and C strings numbered in the order they are first written.

PART = "__kIMMessagePartAttributeName"
FILE_TRANSFER = "__kIMFileTransferGUIDAttributeName"
LINK = "__kIMLinkAttributeName"
HEADER = b"\x04\x0bstreamtyped\x81\xe8\x03"  # streamer version 4, little-endian signature, system 1000


class Url(str):
    """An attribute value archived as an NSURL (a link), not an NSString."""


def typedstream_int(n: int) -> bytes:
    """typedstream's integers: one byte from -110 to 127, else tag 0x81 + i16, 0x82 + i32 or 0x87 + i64
    (the bytes 0x80-0x91 are tags, never values)."""
    if -110 <= n < 0x80:
        return bytes([n & 0xFF])
    for tag, width in ((0x81, 2), (0x82, 4), (0x87, 8)):
        if -(1 << (8 * width - 1)) <= n < 1 << (8 * width - 1):
            return bytes([tag]) + n.to_bytes(width, "little", signed=True)
    raise ValueError(n)


def reference(number: int) -> bytes:
    return typedstream_int(number - 110)  # reference numbers count from -110: 0x92 is the first


class Archiver:
    def __init__(self):
        self.out = bytearray(HEADER)
        self.strings: dict[bytes, int] = {}    # shared strings: type encodings, class names
        self.objects = 0                       # entries in the object table so far
        self.classes: dict[str, int] = {}      # class name → its object number
        self.c_strings: dict[bytes, int] = {}  # C string → its object number

    def shared(self, text: bytes) -> None:
        if text in self.strings:
            self.out += reference(self.strings[text])
        else:
            self.strings[text] = len(self.strings)
            self.out += b"\x84" + typedstream_int(len(text)) + text

    def begin(self, *chain: tuple[str, int]) -> None:
        """A new object (an `@` group) of the first class in `chain`, its superclasses after it."""
        self.shared(b"@")
        self.out += b"\x84"
        self.objects += 1
        for name, version in chain:
            if name in self.classes:
                self.out += reference(self.classes[name])
                return
            self.out += b"\x84"
            self.shared(name.encode())
            self.out += typedstream_int(version)
            self.classes[name] = self.objects
            self.objects += 1
        self.out += b"\x85"  # nil: the chain reached a root class

    def end(self) -> None:
        self.out += b"\x86"

    def string(self, text: str, mutable: bool = False) -> None:
        chain = [("NSMutableString", 1)] if mutable else []
        self.begin(*chain, ("NSString", 1), ("NSObject", 0))
        utf8 = text.encode()
        self.shared(b"+")
        self.out += typedstream_int(len(utf8)) + utf8
        self.end()

    def number(self, value: int, c_type: bytes = b"q") -> None:
        self.begin(("NSNumber", 0), ("NSValue", 0), ("NSObject", 0))
        self.shared(b"*")                      # NSValue's objCType, a C string …
        if c_type in self.c_strings:
            self.out += reference(self.c_strings[c_type])
        else:
            self.out += b"\x84"
            self.shared(c_type)
            self.c_strings[c_type] = self.objects
            self.objects += 1
        self.shared(c_type)                    # … then the value, typed by it
        self.out += typedstream_int(value)
        self.end()

    def url(self, address: str) -> None:
        self.begin(("NSURL", 0), ("NSObject", 0))
        self.shared(b"c")
        self.out += b"\x00"                   # not relative to a base URL
        self.string(address)
        self.end()

    def dictionary(self, entries: dict) -> None:
        self.begin(("NSDictionary", 0), ("NSObject", 0))
        self.shared(b"i")
        self.out += typedstream_int(len(entries))
        for key, value in entries.items():
            self.string(key)
            if isinstance(value, Url):
                self.url(value)
            elif isinstance(value, str):
                self.string(value)
            else:
                self.number(value)
        self.end()


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def attributed_body(text: str, mutable: bool = False, runs: list[tuple[int, dict]] | None = None) -> bytes:
    """The archive of `text` as Messages writes it: its string, then its attribute runs.

    `runs`: (length in UTF-16 code units, attributes) for each run; by default one run over all of
    it marked as message part 0. Equal dictionaries are written once and numbered, as NSArchiver
    does. `mutable`: an NSMutableAttributedString whose string is an NSMutableString."""
    runs = [(utf16_length(text), {PART: 0})] if runs is None else runs
    archive = Archiver()
    archive.begin(*([("NSMutableAttributedString", 0)] if mutable else []), ("NSAttributedString", 0),
                  ("NSObject", 0))
    archive.string(text, mutable)
    written: list[dict] = []
    for length, attributes in runs:
        archive.shared(b"iI")
        new = attributes not in written
        if new:
            written.append(attributes)
        archive.out += typedstream_int(written.index(attributes) + 1) + typedstream_int(length)
        if new:
            archive.dictionary(attributes)
    archive.end()
    return bytes(archive.out)


# --- table layouts per era -------------------------------------------------------------------------

MESSAGE_CATALINA = """
ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT UNIQUE NOT NULL, text TEXT, replace INTEGER DEFAULT 0,
service_center TEXT, handle_id INTEGER DEFAULT 0, subject TEXT, country TEXT, attributedBody BLOB,
version INTEGER DEFAULT 0, type INTEGER DEFAULT 0, service TEXT, account TEXT, account_guid TEXT,
error INTEGER DEFAULT 0, date INTEGER, date_read INTEGER, date_delivered INTEGER, is_delivered INTEGER DEFAULT 0,
is_finished INTEGER DEFAULT 0, is_emote INTEGER DEFAULT 0, is_from_me INTEGER DEFAULT 0, is_empty INTEGER DEFAULT 0,
is_delayed INTEGER DEFAULT 0, is_auto_reply INTEGER DEFAULT 0, is_prepared INTEGER DEFAULT 0, is_read INTEGER DEFAULT 0,
is_system_message INTEGER DEFAULT 0, is_sent INTEGER DEFAULT 0, has_dd_results INTEGER DEFAULT 0,
is_service_message INTEGER DEFAULT 0, is_forward INTEGER DEFAULT 0, was_downgraded INTEGER DEFAULT 0,
is_archive INTEGER DEFAULT 0, cache_has_attachments INTEGER DEFAULT 0, cache_roomnames TEXT,
was_data_detected INTEGER DEFAULT 0, was_deduplicated INTEGER DEFAULT 0, is_audio_message INTEGER DEFAULT 0,
is_played INTEGER DEFAULT 0, date_played INTEGER, item_type INTEGER DEFAULT 0, other_handle INTEGER DEFAULT 0,
group_title TEXT, group_action_type INTEGER DEFAULT 0, share_status INTEGER DEFAULT 0, share_direction INTEGER DEFAULT 0,
is_expirable INTEGER DEFAULT 0, expire_state INTEGER DEFAULT 0, message_action_type INTEGER DEFAULT 0,
message_source INTEGER DEFAULT 0, associated_message_guid TEXT DEFAULT NULL, associated_message_type INTEGER DEFAULT 0,
balloon_bundle_id TEXT DEFAULT NULL, payload_data BLOB, expressive_send_style_id TEXT DEFAULT NULL,
associated_message_range_location INTEGER DEFAULT 0, associated_message_range_length INTEGER DEFAULT 0,
time_expressive_send_played INTEGER DEFAULT 0, message_summary_info BLOB DEFAULT NULL, ck_sync_state INTEGER DEFAULT 0,
ck_record_id TEXT DEFAULT NULL, ck_record_change_tag TEXT DEFAULT NULL, destination_caller_id TEXT DEFAULT NULL,
sr_ck_sync_state INTEGER DEFAULT 0, sr_ck_record_id TEXT DEFAULT NULL, sr_ck_record_change_tag TEXT DEFAULT NULL,
is_corrupt INTEGER DEFAULT 0, reply_to_guid TEXT DEFAULT NULL, sort_id INTEGER DEFAULT 0, is_spam INTEGER DEFAULT 0"""
MESSAGE_BIGSUR = """, has_unseen_mention INTEGER DEFAULT 0, thread_originator_guid TEXT DEFAULT NULL,
thread_originator_part TEXT DEFAULT NULL, syndication_ranges TEXT DEFAULT NULL, was_delivered_quietly INTEGER DEFAULT 0,
did_notify_recipient INTEGER DEFAULT 0, synced_syndication_ranges TEXT DEFAULT NULL"""
MESSAGE_VENTURA = """, date_retracted INTEGER DEFAULT 0, date_edited INTEGER DEFAULT 0, was_detonated INTEGER DEFAULT 0,
part_count INTEGER, is_stewie INTEGER DEFAULT 0, is_kt_verified INTEGER DEFAULT 0, is_sos INTEGER DEFAULT 0,
is_critical INTEGER DEFAULT 0, bia_reference_id TEXT DEFAULT NULL, fallback_hash TEXT DEFAULT NULL"""
MESSAGE_TAHOE = """, associated_message_emoji TEXT DEFAULT NULL, is_pending_satellite_message INTEGER DEFAULT 0,
needs_relay INTEGER DEFAULT 0, schedule_type INTEGER DEFAULT 0, schedule_state INTEGER DEFAULT 0,
sent_or_received_off_grid INTEGER DEFAULT 0"""

CHAT_CATALINA = """
ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT UNIQUE NOT NULL, style INTEGER, state INTEGER, account_id TEXT,
properties BLOB, chat_identifier TEXT, service_name TEXT, room_name TEXT, account_login TEXT,
is_archived INTEGER DEFAULT 0, last_addressed_handle TEXT, display_name TEXT, group_id TEXT,
is_filtered INTEGER DEFAULT 0, successful_query INTEGER, engram_id TEXT, server_change_token TEXT,
ck_sync_state INTEGER DEFAULT 0, original_group_id TEXT, last_read_message_timestamp INTEGER DEFAULT 0,
sr_server_change_token TEXT, sr_ck_sync_state INTEGER DEFAULT 0, cloudkit_record_id TEXT, sr_cloudkit_record_id TEXT,
last_addressed_sim_id TEXT, is_blackholed INTEGER DEFAULT 0"""
CHAT_VENTURA = ", syndication_date INTEGER DEFAULT 0, syndication_type INTEGER DEFAULT 0"
CHAT_TAHOE = ", is_recovered INTEGER DEFAULT 0, is_deleting_incoming_messages INTEGER DEFAULT 0"

ATTACHMENT_CATALINA = """
ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT UNIQUE NOT NULL, created_date INTEGER DEFAULT 0,
start_date INTEGER DEFAULT 0, filename TEXT, uti TEXT, mime_type TEXT, transfer_state INTEGER DEFAULT 0,
is_outgoing INTEGER DEFAULT 0, user_info BLOB, transfer_name TEXT, total_bytes INTEGER DEFAULT 0,
is_sticker INTEGER DEFAULT 0, sticker_user_info BLOB, attribution_info BLOB, hide_attachment INTEGER DEFAULT 0,
ck_sync_state INTEGER DEFAULT 0, ck_server_change_token_blob BLOB, ck_record_id TEXT, original_guid TEXT UNIQUE NOT NULL,
sr_ck_sync_state INTEGER DEFAULT 0, sr_ck_server_change_token_blob BLOB, sr_ck_record_id TEXT"""
ATTACHMENT_VENTURA = ", is_commsafety_sensitive INTEGER DEFAULT 0"
ATTACHMENT_TAHOE = """, emoji_image_content_identifier TEXT DEFAULT NULL,
emoji_image_short_description TEXT DEFAULT NULL, preview_generation_state INTEGER DEFAULT 0"""

ERAS = {
    "catalina": (MESSAGE_CATALINA, CHAT_CATALINA, ATTACHMENT_CATALINA),
    "bigsur": (MESSAGE_CATALINA + MESSAGE_BIGSUR, CHAT_CATALINA, ATTACHMENT_CATALINA),
    "ventura": (MESSAGE_CATALINA + MESSAGE_BIGSUR + MESSAGE_VENTURA, CHAT_CATALINA + CHAT_VENTURA,
                ATTACHMENT_CATALINA + ATTACHMENT_VENTURA),
    "tahoe": (MESSAGE_CATALINA + MESSAGE_BIGSUR + MESSAGE_VENTURA + MESSAGE_TAHOE,
              CHAT_CATALINA + CHAT_VENTURA + CHAT_TAHOE, ATTACHMENT_CATALINA + ATTACHMENT_VENTURA + ATTACHMENT_TAHOE),
}

SHARED_TABLES = """
CREATE TABLE handle (ROWID INTEGER PRIMARY KEY AUTOINCREMENT UNIQUE, id TEXT NOT NULL, country TEXT,
    service TEXT NOT NULL, uncanonicalized_id TEXT, person_centric_id TEXT, UNIQUE (id, service));
CREATE TABLE chat_handle_join (chat_id INTEGER REFERENCES chat (ROWID) ON DELETE CASCADE,
    handle_id INTEGER REFERENCES handle (ROWID) ON DELETE CASCADE, UNIQUE(chat_id, handle_id));
CREATE TABLE chat_message_join (chat_id INTEGER REFERENCES chat (ROWID) ON DELETE CASCADE,
    message_id INTEGER REFERENCES message (ROWID) ON DELETE CASCADE, message_date INTEGER DEFAULT 0,
    PRIMARY KEY (chat_id, message_id));
CREATE TABLE message_attachment_join (message_id INTEGER REFERENCES message (ROWID) ON DELETE CASCADE,
    attachment_id INTEGER REFERENCES attachment (ROWID) ON DELETE CASCADE, UNIQUE(message_id, attachment_id));
CREATE TABLE _SqliteDatabaseProperties (key TEXT, value TEXT, UNIQUE(key));
"""

STYLE_GROUP, STYLE_DIRECT = 43, 45

# The first bytes of files as they arrive (only the magic matters to the bridge).
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200)
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)
PDF = b"%PDF-1.7\n" + bytes(200)


def apple_ns(unix: float | None = None) -> int:
    return int(((time.time() if unix is None else unix) - APPLE_EPOCH) * 1e9)


class ChatDb:
    """One chat.db, written the way Messages writes it (WAL mode, its tables, its GUIDs)."""

    def __init__(self, path: Path, era: str = "tahoe"):
        self.path = Path(path)
        self.era = era
        self.path.parent.mkdir(parents=True, exist_ok=True)
        message, chat, attachment = ERAS[era]
        with self.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"CREATE TABLE message ({message})")
            db.execute(f"CREATE TABLE chat ({chat})")
            db.execute(f"CREATE TABLE attachment ({attachment})")
            db.executescript(SHARED_TABLES)

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None)

    def chat_guid(self, service: str, identifier: str, group: bool) -> str:
        prefix = "any" if self.era == "tahoe" else service
        return f"{prefix};{'+' if group else '-'};{identifier}"

    def handle(self, address: str, service: str = "iMessage") -> int:
        with self.connect() as db:
            row = db.execute("SELECT ROWID FROM handle WHERE id = ? AND service = ?", (address, service)).fetchone()
            if row:
                return row[0]
            return db.execute("INSERT INTO handle (id, country, service, uncanonicalized_id) VALUES (?, 'us', ?, ?)",
                              (address, service, address)).lastrowid

    def chat(self, members: list[str], service: str = "iMessage", group_id: str | None = None,
             name: str | None = None) -> tuple[int, str]:
        """A 1:1 chat with one member, or a group chat with several (`group_id`: its chatNNN id)."""
        group = group_id is not None
        identifier = group_id if group else members[0]
        guid = self.chat_guid(service, identifier, group)
        handles = [self.handle(member, service) for member in members]
        with self.connect() as db:
            row = db.execute("SELECT ROWID FROM chat WHERE guid = ?", (guid,)).fetchone()
            if row:
                return row[0], guid
            chat_id = db.execute(
                "INSERT INTO chat (guid, style, state, account_id, chat_identifier, service_name, display_name) "
                "VALUES (?, ?, 3, ?, ?, ?, ?)",
                (guid, STYLE_GROUP if group else STYLE_DIRECT, str(uuid.uuid4()).upper(), identifier, service,
                 name or "")).lastrowid
            db.executemany("INSERT INTO chat_handle_join (chat_id, handle_id) VALUES (?, ?)",
                           [(chat_id, h) for h in handles])
        return chat_id, guid

    def message(self, chat_id: int, sender: str | None, text: str | None = None, *, body: str | bytes | None = None,
                service: str = "iMessage", is_from_me: bool = False, item_type: int = 0,
                associated_type: int = 0, date: int | None = None, guid: str | None = None,
                attachments: list[dict] = (), retracted: bool = False) -> int:
        """Insert a message the way Messages does: `text` and/or `attributedBody` (`body` → blob).

        Since Ventura the text is usually only in the blob: pass `body=` and `text=None` (bytes: the
        blob itself).
        """
        blob = attributed_body(body) if isinstance(body, str) else body
        handle_id = self.handle(sender, service) if sender else 0
        guid = guid or str(uuid.uuid4()).upper()
        date = apple_ns() if date is None else date
        columns = dict(guid=guid, text=text, attributedBody=blob, handle_id=handle_id, service=service,
                       account=f"E:{sender or ''}", date=date, date_read=0, date_delivered=0,
                       is_from_me=int(is_from_me), is_finished=1, is_sent=int(is_from_me), item_type=item_type,
                       associated_message_type=associated_type, cache_has_attachments=int(bool(attachments)))
        if retracted:
            columns["date_retracted"] = date
        names = ", ".join(columns)
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            rowid = db.execute(f"INSERT INTO message ({names}) VALUES ({', '.join('?' * len(columns))})",
                               tuple(columns.values())).lastrowid
            db.execute("INSERT INTO chat_message_join (chat_id, message_id, message_date) VALUES (?, ?, ?)",
                       (chat_id, rowid, date))
            for attachment in attachments:
                attachment_id = db.execute(
                    "INSERT INTO attachment (guid, original_guid, created_date, filename, uti, mime_type, "
                    "transfer_state, transfer_name, total_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (guid + attachment["filename"], guid + attachment["filename"], date, attachment["filename"],
                     attachment.get("uti"), attachment.get("mime_type"), attachment.get("transfer_state", 5),
                     Path(attachment["filename"]).name, attachment.get("total_bytes", 0))).lastrowid
                db.execute("INSERT INTO message_attachment_join (message_id, attachment_id) VALUES (?, ?)",
                           (rowid, attachment_id))
            db.execute("COMMIT")
        return rowid

    def received_file(self, name: str, data: bytes, folder: str = "a1/01/XYZ", **extra) -> dict:
        """Write a file where Messages keeps attachments; its row as `message(attachments=[…])` takes it."""
        path = self.path.parent / "Attachments" / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return dict(filename=f"~/Library/Messages/Attachments/{folder}/{name}", mime_type="image/jpeg",
                    total_bytes=len(data)) | extra

    def set_from_me(self, rowid: int) -> None:
        with self.connect() as db:
            db.execute("UPDATE message SET is_from_me = 1 WHERE ROWID = ?", (rowid,))

    def delete_all_messages(self) -> None:
        """What a restore or a rebuilt index looks like to a reader: ROWIDs start again lower."""
        with self.connect() as db:
            db.execute("DELETE FROM chat_message_join")
            db.execute("DELETE FROM message")
            db.execute("DELETE FROM sqlite_sequence WHERE name = 'message'")
