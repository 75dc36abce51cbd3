"""The text of a message's `attributedBody`: an NSAttributedString archived as a typedstream.

Since Ventura, `message.text` is often NULL and the words live only in this blob. We need
just the string, not a full unarchiver: the first `NSString` (or `NSMutableString`) object
is followed by its type signature `+` (bytes `84 01 2B`: a new one-character type string)
and then the byte count of its UTF-8 contents, in typedstream's integer encoding:
one byte below 0x80, or the tag 0x81 and a little-endian u16, or 0x82 and a u32.
"""

from __future__ import annotations

ATTACHMENT_PLACEHOLDER = "\ufffc"  # U+FFFC OBJECT REPLACEMENT CHARACTER: where a file sits inline

_CLASS_NAMES = (b"NSString", b"NSMutableString")
_STRING_TYPE = b"\x01+"            # a one-character type string: "+" (bytes of UTF-8 text)
_SIGNATURE_WITHIN = 8              # the type follows the class name's version and superclass refs
_INT16, _INT32 = 0x81, 0x82


def read_length(blob: bytes, at: int) -> tuple[int, int] | None:
    """(length, offset of the first byte after it), or None when the bytes are not a length."""
    if at >= len(blob):
        return None
    tag = blob[at]
    if tag < 0x80:
        return tag, at + 1
    width = {_INT16: 2, _INT32: 4}.get(tag)
    if width is None or at + 1 + width > len(blob):
        return None
    return int.from_bytes(blob[at + 1:at + 1 + width], "little"), at + 1 + width


def message_text(blob: bytes | None) -> str | None:
    """The message's text with attachment placeholders removed; None if the blob holds none."""
    if not blob:
        return None
    for name in _CLASS_NAMES:
        start = blob.find(name)
        if start < 0:
            continue
        after = start + len(name)
        signature = blob.find(_STRING_TYPE, after, after + _SIGNATURE_WITHIN + len(_STRING_TYPE))
        if signature < 0:
            return None
        parsed = read_length(blob, signature + len(_STRING_TYPE))
        if parsed is None:
            return None
        length, begin = parsed
        if begin + length > len(blob):
            return None
        try:
            text = blob[begin:begin + length].decode("utf-8")
        except UnicodeDecodeError:
            return None
        return text.replace(ATTACHMENT_PLACEHOLDER, "")
    return None
