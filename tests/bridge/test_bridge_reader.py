"""Reading chat.db: typedstream text, the schema probe across four macOS eras, skips, the cursor."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bridge import attachments, chatdb, typedstream
from bridge.cursor import State
from bridge.reader import Echoes, Reader, normalize_address
from bridge.settings import BridgeSettings
from chatdb_fixtures import (ERAS, FILE_TRANSFER, HEADER, HEIC, JPEG, LINK, PART, PDF, ChatDb, apple_ns,
                             attributed_body)
from harness import base_env

ME = "+15551234567"
STRANGER = "+15559876543"

# --- typedstream -------------------------------------------------------------------------------
# Two archives built byte by byte from the format's structure (bridge/typedstream.py explains it),
# each byte's meaning beside it, with the string and object table numbers it adds: they check the
# reader against the format itself, not against the fixture encoder, and the encoder against them.


def counted(text: str) -> bytes:
    """A one-byte length (below 128) and the UTF-8 bytes."""
    data = text.encode()
    assert len(data) < 0x80
    return bytes([len(data)]) + data


GUID = "at_0_5E1F1C4A-9B7D-4C2E-8F3A-6B2D0E4C9A17"
PARTS_TEXT = "Look at this\ufffcand this one"   # a text, a photo, a text: three parts
PARTS_BLOB = (
    HEADER                                                       # version 4, "streamtyped", system 1000
    + b"\x84" + counted("@") + b"\x84"                           # type "@" (string 0); a new object (object 0)
    + b"\x84\x84" + counted("NSAttributedString") + b"\x00"       # of a new class (string 1, object 1), version 0
    + b"\x84\x84" + counted("NSObject") + b"\x00" + b"\x85"       # superclass (string 2, object 2), a root class
    + b"\x92\x84"                                                # type 0 "@": its string, object 3
    + b"\x84\x84" + counted("NSString") + b"\x01" + b"\x94"       # class (string 3, object 4) v1; superclass object 2
    + b"\x84" + counted("+") + counted(PARTS_TEXT) + b"\x86"      # type "+" (string 4): length, UTF-8; end
    + b"\x84" + counted("iI") + b"\x01\x0c"                       # type "iI" (string 5): dictionary 1, 12 UTF-16 units
    + b"\x92\x84\x84\x84" + counted("NSDictionary") + b"\x00\x94"  # object 5, class (string 6, object 6)
    + b"\x84" + counted("i") + b"\x01"                           # type "i" (string 7): one entry
    + b"\x92\x84\x96\x96" + counted(PART) + b"\x86"               # key: object 7, class object 4, type string 4
    + b"\x92\x84\x84\x84" + counted("NSNumber") + b"\x00"          # value: object 8, class (string 8, object 9)
    + b"\x84\x84" + counted("NSValue") + b"\x00\x94"               # superclass (string 9, object 10), then object 2
    + b"\x84" + counted("*") + b"\x84\x84" + counted("q")          # type "*" (string 10): a new C string (object 11), "q" (string 11)
    + b"\x9d\x00\x86" + b"\x86"                                   # type string 11 "q": 0; end number; end dictionary
    + b"\x97\x02\x01"                                             # "iI": dictionary 2 over 1 unit (the photo)
    + b"\x92\x84\x98\x99\x02"                                     # object 12 of class object 6; "i": two entries
    + b"\x92\x84\x96\x96" + counted(FILE_TRANSFER) + b"\x86"      # object 13
    + b"\x92\x84\x96\x96" + counted(GUID) + b"\x86"               # object 14
    + b"\x92\x84\x96\x96" + counted(PART) + b"\x86"               # object 15
    + b"\x92\x84\x9b\x9c\x9d\x9d\x01\x86" + b"\x86"               # object 16: NSNumber, C string object 11, "q": 1
    + b"\x97\x03\x0c"                                             # "iI": dictionary 3 over 12 units
    + b"\x92\x84\x98\x99\x01" + b"\x92\x84\x96\x96" + counted(PART) + b"\x86"  # objects 17, 18
    + b"\x92\x84\x9b\x9c\x9d\x9d\x02\x86" + b"\x86"               # object 19: part 2
    + b"\x86"                                                     # end of the attributed string
)
PARTS_RUNS = [(12, {PART: 0}), (1, {FILE_TRANSFER: GUID, PART: 1}), (12, {PART: 2})]

LINK_TEXT = "\U0001f680 see https://example.com/x !"   # 🚀 is 4 UTF-8 bytes, 2 UTF-16 units
DATA_DETECTED = "__kIMDataDetectedAttributeName"
LINK_BLOB = (
    HEADER
    + b"\x84" + counted("@") + b"\x84"                           # string 0; object 0
    + b"\x84\x84" + counted("NSMutableAttributedString") + b"\x00"  # string 1, object 1
    + b"\x84\x84" + counted("NSAttributedString") + b"\x00"       # string 2, object 2
    + b"\x84\x84" + counted("NSObject") + b"\x00" + b"\x85"       # string 3, object 3
    + b"\x92\x84"                                                # "@": object 4
    + b"\x84\x84" + counted("NSMutableString") + b"\x01"          # string 4, object 5
    + b"\x84\x84" + counted("NSString") + b"\x01" + b"\x95"       # string 5, object 6; superclass object 3
    + b"\x84" + counted("+") + counted(LINK_TEXT) + b"\x86"       # string 6 "+"
    + b"\x84" + counted("iI") + b"\x01\x07"                       # string 7: dictionary 1 over "🚀 see " (7 units)
    + b"\x92\x84\x84\x84" + counted("NSDictionary") + b"\x00\x95"  # object 7; string 8, object 8
    + b"\x84" + counted("i") + b"\x01"                           # string 9
    + b"\x92\x84\x98\x98" + counted(PART) + b"\x86"               # object 9: class object 6, type string 6
    + b"\x92\x84\x84\x84" + counted("NSNumber") + b"\x00"          # object 10; string 10, object 11
    + b"\x84\x84" + counted("NSValue") + b"\x00\x95"               # string 11, object 12
    + b"\x84" + counted("*") + b"\x84\x84" + counted("q")          # string 12; C string object 13, string 13
    + b"\x9f\x00\x86" + b"\x86"
    + b"\x99\x02\x15"                                             # "iI": dictionary 2 over the URL (21 units)
    + b"\x92\x84\x9a\x9b\x03"                                     # object 14 of class object 8; three entries
    + b"\x92\x84\x98\x98" + counted(LINK) + b"\x86"               # object 15
    + b"\x92\x84\x84\x84" + counted("NSURL") + b"\x00\x95"        # object 16; string 14, object 17
    + b"\x84" + counted("c") + b"\x00"                           # string 15 "c": 0, not relative to a base URL
    + b"\x92\x84\x98\x98" + counted("https://example.com/x") + b"\x86" + b"\x86"  # object 18; end NSURL
    + b"\x92\x84\x98\x98" + counted(DATA_DETECTED) + b"\x86"      # object 19
    + b"\x92\x84\x84\x84" + counted("NSData") + b"\x00\x95"       # object 20; string 16, object 21
    + b"\x9b\x04" + b"\x84" + counted("[4c]") + b"\xde\xad\xbe\xef"  # "i": 4; type "[4c]" (string 17): the bytes
    + b"\x86"
    + b"\x92\x84\x98\x98" + counted(PART) + b"\x86"               # object 22
    + b"\x92\x84\x9d\x9e\x9f\x9f\x00\x86" + b"\x86"               # object 23: NSNumber 0; end dictionary 2
    + b"\x99\x01\x02"                                             # dictionary 1 again over " !": not written again
    + b"\x86"
)


def test_hand_built_archives_parse_to_their_last_byte_and_the_encoder_writes_the_same_bytes():
    for blob in (PARTS_BLOB, LINK_BLOB):
        reader = typedstream.Reader(blob)
        assert reader.shared() == b"@" and reader.object(reader.head()).complete
        assert (reader.at, reader.problem) == (len(blob), None)
    assert attributed_body(PARTS_TEXT, runs=PARTS_RUNS) == PARTS_BLOB
    # the encoder's mutable layout is the hand-built one up to the end of the string
    string_end = LINK_BLOB.index(counted(LINK_TEXT)) + len(counted(LINK_TEXT)) + 1
    assert attributed_body(LINK_TEXT, mutable=True)[:string_end] == LINK_BLOB[:string_end]


def test_parts_come_one_to_a_line_and_attachments_stay_out():
    body = typedstream.attributed_string(PARTS_BLOB)
    assert [run.text for run in body.runs] == ["Look at this", "\ufffc", "and this one"]
    assert body.runs[1].attributes == {FILE_TRANSFER: GUID, PART: 1} and body.complete
    assert typedstream.message_text(PARTS_BLOB) == "Look at this\nand this one"


def test_runs_are_cut_at_utf16_offsets_and_a_dictionary_is_written_once():
    body = typedstream.attributed_string(LINK_BLOB)
    assert body.text == LINK_TEXT and body.complete
    assert [run.text for run in body.runs] == ["\U0001f680 see ", "https://example.com/x", " !"]
    link = body.runs[1].attributes
    assert (link[LINK], link[PART]) == ("https://example.com/x", 0)
    assert link[DATA_DETECTED].classes == ["NSData", "NSObject"] and link[DATA_DETECTED].values == [4, b"\xde\xad\xbe\xef"]
    assert body.runs[2].attributes is body.runs[0].attributes == {PART: 0}
    assert typedstream.message_text(LINK_BLOB) == LINK_TEXT


@pytest.mark.parametrize("blob", [PARTS_BLOB, LINK_BLOB], ids=["parts", "link"])
def test_extra_trailing_data_is_ignored(blob):
    assert typedstream.attributed_string(blob + b"\x00\x86 trailing \x84\x92") == typedstream.attributed_string(blob)


def test_a_truncated_archive_gives_what_it_holds():
    start = LINK_BLOB.index(counted(LINK_TEXT)) + 1
    assert typedstream.message_text(LINK_BLOB[:start - 1]) is None       # cut before the string's length
    assert typedstream.message_text(LINK_BLOB[:start + 2]) == ""         # inside 🚀: no half character, no U+FFFD
    assert typedstream.message_text(LINK_BLOB[:start + 6]) == "\U0001f680 s"
    cut_in_runs = typedstream.attributed_string(LINK_BLOB[:-40])
    assert (cut_in_runs.text, cut_in_runs.complete) == (LINK_TEXT, False)
    assert [run.text for run in cut_in_runs.runs] == ["\U0001f680 see ", "https://example.com/x", " !"]
    for end in range(len(LINK_BLOB)):                                   # every cut: a prefix, never an error
        body = typedstream.attributed_string(LINK_BLOB[:end])
        assert body is None or (LINK_TEXT.startswith(body.text) and not body.complete)


def test_a_string_length_past_the_end_keeps_the_bytes_that_are_there():
    """Seen in captured data: the declared length runs past the blob. The text is kept up to the
    archive's own next byte (0x86, which never starts a UTF-8 character)."""
    declared = LINK_BLOB.replace(counted(LINK_TEXT), b"\x81\x00\x02" + LINK_TEXT.encode())  # 512 bytes
    assert typedstream.message_text(declared) == LINK_TEXT
    start = LINK_BLOB.index(counted(LINK_TEXT)) + 1
    assert typedstream.message_text(declared[:start + 2 + 7]) == "\U0001f680 se"  # and where nothing follows
    body = typedstream.attributed_string(declared)
    assert (body.text, body.complete) == (LINK_TEXT, False)


def test_damaged_bytes_anywhere_never_raise():
    for blob in (PARTS_BLOB, LINK_BLOB):
        for at in range(len(blob)):
            for byte in (0x00, 0x81, 0x84, 0x85, 0x86, 0x92, 0xFF):  # a value, the tags, a first reference
                text = typedstream.message_text(blob[:at] + bytes([byte]) + blob[at + 1:])
                assert text is None or isinstance(text, str)


def test_an_object_inside_itself_is_left_as_it_is():
    number = PARTS_BLOB[PARTS_BLOB.index(b"\x92\x84\x84\x84" + counted("NSNumber")):PARTS_BLOB.index(b"\x9d\x00\x86") + 3]
    looped = PARTS_BLOB.replace(number, b"\x92\x97", 1)  # dictionary 1's value: a reference to dictionary 1 (object 5)
    body = typedstream.attributed_string(looped)
    assert body.runs[0].text == "Look at this" and body.runs[0].attributes[PART].is_a("NSDictionary")
    assert typedstream.message_text(looped).startswith("Look at this")


def test_values_nested_beyond_reason_are_refused_not_a_recursion_error():
    encoding = b"[1" * 600 + b"i" + b"]" * 600
    reader = typedstream.Reader(HEADER + b"\x84\x81" + len(encoding).to_bytes(2, "little") + encoding)
    with pytest.raises(typedstream.Malformed, match="nested more than"):
        reader.group()


@pytest.mark.parametrize("encoding, data, value", [
    (b"c", b"\xff", -1), (b"C", b"\xff", 255), (b"B", b"\x01", 1),         # chars are never tagged
    (b"i", b"\x7f", 127), (b"i", b"\xff", -1), (b"I", b"\xff", 255),
    (b"i", b"\x81\x50\xc3", -15536), (b"I", b"\x81\x50\xc3", 50_000),   # 0x81: two bytes
    (b"q", b"\x82\x70\x11\x01\x00", 70_000),                              # 0x82: four
    (b"q", b"\x87\x00\xe6\x8e\xe7\xfd\xff\xff\xff", -9_000_000_000),       # 0x87: eight
    (b"d", b"\x83" + struct.pack("<d", 2.5), 2.5), (b"f", b"\x83" + struct.pack("<f", 0.5), 0.5),
    (b"d", b"\x05", 5.0),                                                  # a whole number is written as one
    (b"[3c]", b"abc", b"abc"), (b"[2i]", b"\x01\x81\x00\x01", [1, 256]),
    (b"{_NSRange=QQ}", b"\x03\x04", (3, 4)), (b"{CGSize=dd}", b"\x01\x83" + struct.pack("<d", 0.25), (1.0, 0.25)),
    (b"+", b"\x02ok", b"ok"), (b"*", b"\x85", None), (b"@", b"\x85", None), (b"!", b"", None),
])
def test_each_kind_of_value(encoding, data, value):
    reader = typedstream.Reader(HEADER + data)
    assert reader.value(encoding) == value and reader.at == len(HEADER + data)


@pytest.mark.parametrize("text, length_bytes", [
    ("hello mesh", b"\x0a"),                                   # < 128 bytes: one byte
    ("a" * 200, b"\x81" + (200).to_bytes(2, "little")),        # 0x81 + 16 bits
    ("b" * 30_000, b"\x81" + (30_000).to_bytes(2, "little")),
    ("c" * 40_000, b"\x82" + (40_000).to_bytes(4, "little")),  # beyond i16: 0x82 + 32 bits
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


def test_bytes_that_are_not_utf8_are_replaced_not_lost():
    assert typedstream.message_text(attributed_body("ok").replace(b"+\x02ok", b"+\x02\xff\xfe")) == "\ufffd\ufffd"


STRING_ONLY = HEADER + b"\x84\x01@\x84\x84\x84\x08NSString\x01\x84\x84\x08NSObject\x00\x85\x84\x01+\x02ok\x86"


@pytest.mark.parametrize("blob", [
    None, b"", b"not a typedstream at all", HEADER, HEADER[:10],
    HEADER.replace(b"\x04", b"\x03", 1) + PARTS_BLOB[len(HEADER):],   # another streamer version
    STRING_ONLY,                                                      # a typedstream, but not an attributed string
    attributed_body("ok").replace(b"\x01+", b"\x01i"),                # its string typed as an integer
    PARTS_BLOB[:len(HEADER) + 40],                                    # cut before the string
])
def test_blobs_without_an_attributed_string_give_none(blob):
    assert typedstream.message_text(blob) is None


# --- helpers -------------------------------------------------------------------------------------


def settings_for(path: Path, **overrides) -> BridgeSettings:
    return BridgeSettings(**dict(chat_db=str(path), allowed_senders=("(555) 123-4567",), recheck_delay=0.0) | overrides)


def read_all(settings: BridgeSettings, state: State | None = None, diagnose: bool = False) -> list:
    state = state or State(None)
    if state.rowid is None:
        state.rowid = 0
    return Reader(settings, state, diagnose=diagnose).poll()


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
    found = read_all(settings_for(path, allowed_groups=("iMessage;+;chat42",)))
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
    settings = settings_for(era_db.path, allowed_groups=(group_guid,), mention="@mesh")
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
    texts = {m.rowid: m.text for m in read_all(settings)}
    assert texts[rows["stranger"]] == texts[rows["other group"]] == ""  # the bridge never decodes what is not allowed
    diagnosed = read_all(settings, diagnose=True)                       # `bridge scan` does, with the same verdicts
    assert {m.rowid: m.skipped for m in diagnosed} == skipped
    assert {m.rowid: m.text for m in diagnosed}[rows["stranger"]] == "cancel 1"
    assert read_all(replace(settings, sms_allowed=True))[5].skipped is None


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
    assert oct(path.stat().st_mode & 0o777) == "0o600" and [p.name for p in path.parent.iterdir()] == ["state.json"]


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
        db.received_file("partial.jpeg", JPEG, transfer_state=3), gone,
        db.received_file("scan.tiff", b"II*\x00" + bytes(200))])
    (message,) = read_all(settings_for(db.path, max_attachment_bytes=1000))
    assert message.text == "what is this?"
    # TIFF is not among the Commander's (and Claude's) image types: refused here, before any upload.
    assert [(a["name"], a["kind"], a["refused"]) for a in message.attachments] == [
        ("cat.jpeg", "jpeg", None), ("IMG_0001.HEIC", "heic", None),
        ("invoice.jpg", None, "not a JPEG, PNG, GIF, WebP or HEIC image"),
        ("big.jpeg", None, "larger than 1,000 bytes"), ("partial.jpeg", None, "still downloading"),
        ("gone.png", None, "not downloaded"), ("scan.tiff", None, "not a JPEG, PNG, GIF, WebP or HEIC image")]
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


def scan(db: ChatDb, env: dict, *args: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "m3shd", "bridge", "scan", "--chat-db", str(db.path), *args],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_scan_prints_each_message_as_the_bridge_sees_it(tmp_path):
    db = ChatDb(tmp_path / "chat.db", "ventura")
    chat, guid = db.chat([ME])
    stranger_chat, stranger_guid = db.chat([STRANGER])
    db.message(chat, ME, None, body="Привет 👋")
    db.message(stranger_chat, STRANGER, "hi")
    db.message(stranger_chat, STRANGER, None, body=PARTS_BLOB)   # the text only in a blob, two parts and a photo
    env = base_env(tmp_path) | {"M3SHD_BRIDGE_ALLOWED_SENDERS": "555-123-4567"}
    lines = scan(db, env, "--since-rowid", "0")
    # a diagnostic: every message decoded, and the reason the bridge would skip it beside it
    assert [(m["rowid"], m["text"], m["sender"], m["chat_guid"], m["is_group"], m["skipped"]) for m in lines] == [
        (1, "Привет 👋", ME, guid, False, None),
        (2, "hi", STRANGER, stranger_guid, False, "sender not in [bridge] allowed_senders"),
        (3, "Look at this\nand this one", STRANGER, stranger_guid, False, "sender not in [bridge] allowed_senders")]
    assert set(lines[0]) == {"rowid", "guid", "date", "sender", "chat_guid", "is_group", "service", "text",
                             "attachments", "skipped"}
    assert [m["rowid"] for m in scan(db, env, "--since-rowid", "1")] == [2, 3]
    # with the default config nobody is allowed yet: still every text, each marked
    assert [(m["text"], m["skipped"]) for m in scan(db, base_env(tmp_path), "--since-rowid", "0")] == [
        ("Привет 👋", "sender not in [bridge] allowed_senders"), ("hi", "sender not in [bridge] allowed_senders"),
        ("Look at this\nand this one", "sender not in [bridge] allowed_senders")]
    missing = subprocess.run([sys.executable, "-m", "m3shd", "bridge", "scan", "--chat-db", str(tmp_path / "x.db")],
                             env=env, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "no Messages database at" in missing.stderr


def test_a_scan_whose_reader_stops_early_ends_quietly(tmp_path):
    """`m3shd bridge scan | head`: the reader closes the pipe; no traceback, the exit status of SIGPIPE.
    (The fix sits where m3shd's main runs, so every command that writes to stdout has it.)"""
    db = ChatDb(tmp_path / "chat.db", "tahoe")
    chat, _ = db.chat([ME])
    for n in range(40):
        db.message(chat, ME, None, body=f"message {n} " + "x" * 500)
    done = subprocess.Popen([sys.executable, "-m", "m3shd", "bridge", "scan", "--chat-db", str(db.path), "--window", "0"],
                            env=base_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done.stdout.close()  # as `head` does once it has its lines
    _, stderr = done.communicate(timeout=30)
    assert (done.returncode, stderr.decode()) == (128 + signal.SIGPIPE, "")


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
