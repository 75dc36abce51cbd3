"""Reading chat.db: typedstream text, the schema probe across four macOS eras, skips, the cursor."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge import attachments, chatdb, typedstream
from bridge.cursor import State
from bridge.reader import Echoes, Reader, normalize_address
from chatdb_fixtures import ERAS, HEIC, JPEG, PDF, ChatDb, apple_ns, attributed_body
from harness import base_env
from m3shd.config import DEFAULTS

ME = "+15551234567"
STRANGER = "+15559876543"

# --- typedstream -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, length_bytes", [
    ("hello mesh", b"\x0a"),                                   # < 128 bytes: one byte
    ("a" * 200, b"\x81" + (200).to_bytes(2, "little")),        # 0x81 + u16
    ("b" * 30_000, b"\x81" + (30_000).to_bytes(2, "little")),
    ("c" * 40_000, b"\x82" + (40_000).to_bytes(4, "little")),  # beyond i16: Apple writes 0x82 + u32
    ("d" * 70_000, b"\x82" + (70_000).to_bytes(4, "little")),  # > 65,535 bytes
])
def test_the_length_prefix_in_each_width(text, length_bytes):
    blob = attributed_body(text)
    assert b"NSString\x01\x94\x84\x01+" + length_bytes + text.encode()[:8] in blob
    assert typedstream.message_text(blob) == text


@pytest.mark.parametrize("text", [
    "👍🏽 ship it 👨‍👩‍👧‍👦",                  # emoji: skin tone, ZWJ family (4-byte UTF-8, surrogate pairs in UTF-16)
    "こんにちは、メッシュ。状態は？",            # Japanese: 3 bytes a character, so 15 characters need 45 bytes
    "Привет, как дела у узлов?",
    "مرحبا بالشبكة",
    "ü" * 100,                                   # 100 characters but 200 bytes: the length counts bytes
])
def test_emoji_and_non_latin_text(text):
    assert typedstream.message_text(attributed_body(text)) == text


def test_mutable_strings_too():
    blob = attributed_body("edited: ship it ✅", mutable=True)
    assert b"NSMutableAttributedString" in blob and b"NSMutableString\x01\x84\x84\x08NSString" in blob
    assert typedstream.message_text(blob) == "edited: ship it ✅"


def test_attachment_placeholders_are_removed():
    assert typedstream.message_text(attributed_body("\ufffcLook at this\ufffc")) == "Look at this"


def test_an_unsigned_16_bit_length_is_read_as_written():
    assert typedstream.read_length(b"\x81\x50\xc3", 0) == (50_000, 3)
    assert typedstream.read_length(b"\x82\x70\x11\x01\x00", 0) == (70_000, 5)


@pytest.mark.parametrize("blob", [
    None, b"", b"not a typedstream at all",
    attributed_body("truncated message")[:80],        # the length runs past the end
    attributed_body("x" * 300)[:120],
    attributed_body("ok").replace(b"\x01+", b"\x01i"),  # no string type signature
    attributed_body("ok").replace(b"+\x02ok", b"+\x02\xff\xfe"),  # not UTF-8
])
def test_broken_blobs_give_none(blob):
    assert typedstream.message_text(blob) is None


# --- helpers -------------------------------------------------------------------------------------


def settings_for(path: Path, **overrides) -> dict:
    return dict(DEFAULTS["bridge"], chat_db=str(path), allowed_senders=["(555) 123-4567"], recheck_delay=0.0) | overrides


def read_all(settings: dict, state: State | None = None) -> list:
    state = state or State(None)
    if state.rowid is None:
        state.rowid = 0
    return Reader(settings, state).poll()


@pytest.fixture(params=sorted(ERAS))
def era_db(request, tmp_path):
    return ChatDb(tmp_path / "Messages" / "chat.db", request.param)


# --- the schema across eras ------------------------------------------------------------------------


def test_text_from_the_column_or_the_blob_in_every_era(era_db):
    chat, guid = era_db.chat([ME])
    era_db.message(chat, ME, "status")                      # Catalina-style: text column
    era_db.message(chat, ME, None, body="🚀 deploy the docs")  # Ventura-style: NULL text, blob only
    found = read_all(settings_for(era_db.path))
    assert [(m.text, m.skipped, m.sender, m.chat_guid, m.is_group) for m in found] == [
        ("status", None, ME, guid, False), ("🚀 deploy the docs", None, ME, guid, False)]
    assert abs(found[0].date - time.time()) < 60
    assert guid.startswith("any;-;" if era_db.era == "tahoe" else "iMessage;-;")


def test_the_probe_sees_what_each_era_has(era_db):
    with chatdb.connect(era_db.path) as db:
        schema = chatdb.probe(db)
    assert schema.has("message", "attributedBody")
    assert schema.has("message", "date_retracted") == (era_db.era in ("ventura", "tahoe"))
    assert schema.has("message", "thread_originator_guid") == (era_db.era != "catalina")


def test_a_layout_without_the_optional_columns_still_reads(tmp_path):
    """The oldest layouts lack attributedBody, item_type, tapbacks and chat.style: selected as constants."""
    path = tmp_path / "chat.db"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE message (ROWID INTEGER PRIMARY KEY, guid TEXT, text TEXT, handle_id INTEGER, date INTEGER,
                                  is_from_me INTEGER, service TEXT);
            CREATE TABLE handle (ROWID INTEGER PRIMARY KEY, id TEXT);
            CREATE TABLE chat (ROWID INTEGER PRIMARY KEY, guid TEXT);
            CREATE TABLE chat_message_join (chat_id INTEGER, message_id INTEGER);
            CREATE TABLE chat_handle_join (chat_id INTEGER, handle_id INTEGER);
            INSERT INTO handle VALUES (1, '+15551234567'), (2, '+15550000000');
            INSERT INTO chat VALUES (1, 'iMessage;-;+15551234567'), (2, 'iMessage;+;chat42');
            INSERT INTO chat_handle_join VALUES (1, 1), (2, 1), (2, 2);
        """)
        db.execute("INSERT INTO message VALUES (1, 'G1', 'nodes', 1, ?, 0, 'iMessage')", (apple_ns(),))
        db.execute("INSERT INTO message VALUES (2, 'G2', 'hi all', 1, ?, 0, 'iMessage')", (apple_ns(),))
        db.executemany("INSERT INTO chat_message_join VALUES (?, ?)", [(1, 1), (2, 2)])
    found = read_all(settings_for(path, allowed_groups=["iMessage;+;chat42"]))
    assert [(m.text, m.is_group, m.skipped) for m in found] == [("nodes", False, None), ("hi all", True, None)]


def test_a_schema_that_changes_under_a_running_reader_is_probed_again(tmp_path):
    db = ChatDb(tmp_path / "chat.db", "ventura")
    chat, _ = db.chat([ME])
    state = State(None)
    state.rowid = 0
    reader = Reader(settings_for(db.path), state)
    assert reader.poll() == [] and reader.schema.has("message", "date_retracted")
    db.message(chat, ME, "status")
    with db.connect() as raw:
        raw.execute("ALTER TABLE message DROP COLUMN date_retracted")
    with pytest.raises(sqlite3.OperationalError, match="date_retracted"):
        reader.poll()
    assert [m.text for m in reader.poll()] == ["status"]


def test_dates_in_seconds_and_nanoseconds():
    assert chatdb.unix_time(700_000_000) == 700_000_000 + chatdb.APPLE_EPOCH
    assert chatdb.unix_time(700_000_000 * 10**9) == 700_000_000 + chatdb.APPLE_EPOCH
    assert chatdb.unix_time(0) is None and chatdb.unix_time(None) is None and chatdb.unix_time(-5) is None


# --- skips ---------------------------------------------------------------------------------------


def test_every_skip_has_its_reason(era_db):
    chat, _ = era_db.chat([ME])
    stranger_chat, _ = era_db.chat([STRANGER])
    sms_chat, _ = era_db.chat([ME], service="SMS")
    group, group_guid = era_db.chat([ME, STRANGER], group_id="chat900")
    other_group, _ = era_db.chat([ME, STRANGER], group_id="chat901")
    rows = {
        "tapback": era_db.message(chat, ME, "Loved “hello”", associated_type=2000),
        "sticker": era_db.message(chat, ME, None, associated_type=1000),
        "rename": era_db.message(group, ME, None, item_type=2),
        "mine": era_db.message(chat, ME, "my own words", is_from_me=True),
        "stranger": era_db.message(stranger_chat, STRANGER, "cancel 1"),
        "sms": era_db.message(sms_chat, ME, "status", service="SMS"),
        "old": era_db.message(chat, ME, "status", date=apple_ns(time.time() - 3600)),
        "empty": era_db.message(chat, ME, None, body="\ufffc"),
        "no mention": era_db.message(group, STRANGER, "hello everyone"),
        "mention": era_db.message(group, STRANGER, None, body="@mesh status"),
        "other group": era_db.message(other_group, ME, "@mesh status"),
        "fine": era_db.message(chat, ME, "help"),
    }
    settings = settings_for(era_db.path, allowed_groups=[group_guid], mention="@mesh")
    skipped = {m.rowid: m.skipped for m in read_all(settings)}
    by_name = {name: skipped[rowid] for name, rowid in rows.items()}
    assert by_name == {
        "tapback": "tapback or sticker", "sticker": "tapback or sticker",
        "rename": "not a message (item_type 2)", "mine": "from me",
        "stranger": "sender not in [bridge] allowed_senders", "sms": "SMS not allowed ([bridge] sms_allowed)",
        "old": "older than the 600 s window", "empty": "no text",
        "no mention": "group message without the mention @mesh", "mention": None,
        "other group": "group chat not in [bridge] allowed_groups", "fine": None,
    }
    mention = next(m for m in read_all(settings) if m.rowid == rows["mention"])
    assert mention.text == "status" and mention.is_group
    assert read_all(dict(settings, sms_allowed=True))[5].skipped is None


def test_unsent_messages_are_skipped_where_macos_records_them(tmp_path):
    db = ChatDb(tmp_path / "chat.db", "ventura")
    chat, _ = db.chat([ME])
    db.message(chat, ME, "status", retracted=True)
    assert [m.skipped for m in read_all(settings_for(db.path))] == ["unsent by its sender"]


def test_echoes_of_our_own_replies_are_skipped(tmp_path):
    db = ChatDb(tmp_path / "chat.db")
    chat, guid = db.chat([ME])
    db.message(chat, ME, "Task 4: succeeded.\n\necho: hi")
    echoes = Echoes()
    echoes.record(guid, "Task 4:  succeeded.\necho: hi")
    state = State(None)
    state.rowid = 0
    assert [m.skipped for m in Reader(settings_for(db.path), state, echoes).poll()] == ["echo of our own reply"]


def test_is_from_me_is_read_again_after_a_pause(tmp_path, monkeypatch):
    db = ChatDb(tmp_path / "chat.db")
    chat, _ = db.chat([ME])
    flipping, steady = db.message(chat, ME, "status"), db.message(chat, ME, "nodes")
    pauses = []

    def pause(seconds):  # Messages flips the flag while the reader waits
        pauses.append(seconds)
        db.set_from_me(flipping)

    monkeypatch.setattr("bridge.reader.time.sleep", pause)
    found = read_all(settings_for(db.path, recheck_delay=0.2))
    assert pauses == [0.2]
    assert [(m.rowid, m.skipped) for m in found] == [
        (flipping, "from me (is_from_me set after the row appeared)"), (steady, None)]


@pytest.mark.parametrize("written, normalized", [
    ("(555) 123-4567", "+15551234567"), ("555.123.4567", "+15551234567"), ("1 555 123 4567", "+15551234567"),
    ("+44 20 7946 0958", "+442079460958"), ("0044 20 7946 0958", "+442079460958"),
    ("tel:+15551234567", "+15551234567"), ("Me@Example.COM", "me@example.com"), ("mailto:a@b.org", "a@b.org"),
])
def test_addresses_normalize_for_the_allow_list(written, normalized):
    assert normalize_address(written) == normalized


# --- cursor, dedup, rewind -----------------------------------------------------------------------


def test_history_is_not_replayed_and_the_cursor_survives_a_restart(tmp_path):
    db = ChatDb(tmp_path / "chat.db")
    chat, _ = db.chat([ME])
    db.message(chat, ME, "old news")
    path = tmp_path / "state" / "state.json"
    settings = settings_for(db.path)
    state = State(path)
    assert Reader(settings, state).poll() == [] and state.rowid == 1
    new = db.message(chat, ME, "status")
    (message,) = Reader(settings, state).poll()
    state.handled(message.rowid, message.guid)
    again = State(path)
    assert (again.rowid, list(again.seen)) == (new, [message.guid])
    assert Reader(settings, again).poll() == []
    assert oct(path.stat().st_mode & 0o777) == "0o600" and not path.with_suffix(".tmp").exists()


def test_a_restored_database_rewinds_without_repeating(tmp_path):
    db = ChatDb(tmp_path / "chat.db")
    chat, _ = db.chat([ME])
    for text in ("one", "two", "three"):
        db.message(chat, ME, text, guid=f"GUID-{text}")
    state = State(tmp_path / "state.json")
    state.rowid = 0
    reader = Reader(settings_for(db.path), state)
    for message in reader.poll():
        state.handled(message.rowid, message.guid)
    assert state.rowid == 3
    db.delete_all_messages()                             # restored from a backup: ROWIDs start again
    db.message(chat, ME, "one", guid="GUID-one")         # an old message comes back …
    db.message(chat, ME, "four", guid="GUID-four")       # … and a new one arrives
    found = reader.poll()
    assert [(m.rowid, m.text or None, m.skipped) for m in found] == [(1, None, "already handled"), (2, "four", None)]


def test_a_backlog_drains_in_batches_in_order(tmp_path):
    db = ChatDb(tmp_path / "chat.db")
    chat, _ = db.chat([ME])
    for n in range(450):
        db.message(chat, ME, f"m{n}")
    state = State(None)
    state.rowid = 0
    reader = Reader(settings_for(db.path), state)
    batches = []
    while found := reader.poll():
        batches.append(len(found))
        for message in found:
            state.handled(message.rowid, message.guid)
    assert batches == [200, 200, 50] and state.rowid == 450


def test_the_dedup_set_is_bounded(tmp_path):
    state = State(tmp_path / "state.json")
    for n in range(5010):
        state.seen[f"G{n}"] = None
    state.handled(1, "last")
    assert len(state.seen) == 5000 and "G0" not in state.seen and state.was_seen("last")


# --- attachments ---------------------------------------------------------------------------------

def test_attachments_need_magic_bytes_a_finished_download_and_the_size_cap(tmp_path):
    db = ChatDb(tmp_path / "Messages" / "chat.db")
    chat, _ = db.chat([ME])
    gone = db.received_file("gone.png", JPEG)
    (tmp_path / "Messages" / "Attachments" / "a1" / "01" / "XYZ" / "gone.png").unlink()
    db.message(chat, ME, None, body="\ufffc\ufffc\ufffc\ufffc\ufffc\ufffcwhat is this?", attachments=[
        db.received_file("cat.jpeg", JPEG), db.received_file("IMG_0001.HEIC", HEIC),
        db.received_file("invoice.jpg", PDF), db.received_file("big.jpeg", JPEG + bytes(2000)),
        db.received_file("partial.jpeg", JPEG, transfer_state=3), gone])
    (message,) = read_all(settings_for(db.path, max_attachment_bytes=1000))
    assert message.text == "what is this?"
    assert [(a["name"], a["kind"], a["refused"]) for a in message.attachments] == [
        ("cat.jpeg", "jpeg", None), ("IMG_0001.HEIC", "heic", None),
        ("invoice.jpg", None, "not a JPEG, PNG, GIF, WebP, HEIC or TIFF image"),
        ("big.jpeg", None, "larger than 0 MB"), ("partial.jpeg", None, "still downloading"),
        ("gone.png", None, "not downloaded")]
    assert message.attachments[0]["path"] == str(tmp_path / "Messages" / "Attachments" / "a1" / "01" / "XYZ" / "cat.jpeg")


# --- start-up problems and `bridge scan` ----------------------------------------------------------


def test_missing_file_and_not_a_database_say_what_to_do(tmp_path):
    with pytest.raises(chatdb.ChatDbProblem, match="sign in to Messages on this Mac"):
        chatdb.check_readable(tmp_path / "nope" / "chat.db")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(chatdb.ChatDbProblem, match="not an SQLite database"):
        chatdb.check_readable(tmp_path / "notes.txt")
    with sqlite3.connect(tmp_path / "other.db") as db:
        db.execute("CREATE TABLE message (ROWID INTEGER PRIMARY KEY, guid TEXT)")
    with pytest.raises(chatdb.ChatDbProblem, match="table message lacks handle_id, date, is_from_me"), \
            chatdb.connect(tmp_path / "other.db") as db:
        chatdb.probe(db)


def test_a_refused_read_names_full_disk_access_and_the_binary(tmp_path):
    if os.geteuid() == 0:
        refused = Path("/proc/sys/vm/drop_caches")  # write-only even for root: a real EACCES from the kernel
    else:
        refused = tmp_path / "chat.db"
        refused.write_bytes(b"SQLite format 3\x00")
        refused.chmod(0)
    with pytest.raises(chatdb.ChatDbProblem) as caught:
        chatdb.check_readable(refused)
    message = str(caught.value)
    assert "Full Disk Access" in message and os.path.realpath(sys.executable) in message
    assert "Privacy & Security" in message


def test_scan_prints_each_message_as_the_bridge_sees_it(tmp_path):
    db = ChatDb(tmp_path / "chat.db", "ventura")
    chat, guid = db.chat([ME])
    db.message(chat, ME, None, body="Привет 👋")
    db.message(chat, STRANGER, "hi")
    env = base_env(tmp_path) | {"M3SHD_BRIDGE_ALLOWED_SENDERS": "555-123-4567"}
    done = subprocess.run([sys.executable, "-m", "m3shd", "bridge", "scan", "--chat-db", str(db.path),
                           "--since-rowid", "0"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(m["rowid"], m["text"], m["sender"], m["chat_guid"], m["is_group"], m["skipped"]) for m in lines] == [
        (1, "Привет 👋", ME, guid, False, None), (2, "", STRANGER, guid, False, "sender not in [bridge] allowed_senders")]
    assert set(lines[0]) == {"rowid", "guid", "date", "sender", "chat_guid", "is_group", "service", "text",
                             "attachments", "skipped"}
    later = subprocess.run([sys.executable, "-m", "m3shd", "bridge", "scan", "--chat-db", str(db.path),
                            "--since-rowid", "1"], env=env, capture_output=True, text=True, timeout=30)
    assert [json.loads(line)["rowid"] for line in later.stdout.splitlines()] == [2]
    missing = subprocess.run([sys.executable, "-m", "m3shd", "bridge", "scan", "--chat-db", str(tmp_path / "x.db")],
                             env=env, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "no Messages database at" in missing.stderr


def test_a_heic_that_cannot_be_converted_is_refused_and_old_conversions_go(tmp_path):
    images = tmp_path / "images"
    old = images / "OLD-MESSAGE"
    old.mkdir(parents=True)
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    source = tmp_path / "IMG_0003.HEIC"
    source.write_bytes(HEIC)
    entries = [{"name": source.name, "kind": "heic", "path": str(source), "bytes": len(HEIC), "refused": None}]
    attachments.convert_heic(entries, images / "NEW-MESSAGE", sips=str(tmp_path / "no-sips-here"))
    assert entries == [{"name": source.name, "kind": None, "path": None, "bytes": len(HEIC),
                        "refused": "a HEIC image that could not be converted to JPEG"}]
    assert not old.exists()
