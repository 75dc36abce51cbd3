"""The text of a message's `attributedBody`: an NSAttributedString that Messages archived with
NSArchiver, in Apple's (originally NeXT's) *typedstream* format.

Since Ventura, `message.text` is often NULL and the words live only in this blob. The format
describes itself, so it is read by its structure, not searched for byte patterns:

- a header: streamer version 4, the signature `streamtyped` (little-endian), the system version
  (1000 on every macOS);
- then typed values. Each group starts with a *type encoding* (Objective-C's `@` object, `+`
  length-prefixed bytes, `i`/`I` signed/unsigned integers, `c` char, `*` C string, `[Nc]` array,
  `{name=…}` struct, …) and holds one value per type in it;
- an object (`@`) is `0x84` (new), its class chain, its own typed groups, and `0x86` (end); a
  class chain is `0x84`, the class name and version, repeated for each superclass until `0x85`
  (nil: a root class) or a reference to a class already written;
- integers are one byte unless tagged: `0x81` + 2 bytes, `0x82` + 4, `0x87` + 8 (little-endian);
  `0x83` + 4 or 8 bytes is a float. Bytes `0x80`-`0x91` are tags, never one-byte values;
- anything written once is referred to again by number: type encodings and class names share a
  table of strings; objects, classes and C strings share a table of objects. A reference is an
  integer counted from -110 (so one byte, `0x92` onwards, for the first 110 entries).

An attributed string's groups are its string (an `NSString`/`NSMutableString` whose one `+`
value is the UTF-8 text), then one `iI` group per attribute run: the run's attribute dictionary
number and its length in UTF-16 code units, followed by the dictionary itself (`@`) the first
time its number appears. Messages marks each part of a message (`__kIMMessagePartAttributeName`)
and puts a U+FFFC placeholder, with a file-transfer attribute, where an attachment sits.

Damaged blobs give what they hold: reading stops at the first byte that does not fit (the
archive ends early, a length runs past the end, an unknown type encoding), keeping every value
read before it. A string whose declared length runs past the end of the blob keeps the bytes that
are there, up to the first byte that cannot continue UTF-8 text — the archive's own bytes after a
string start with `0x86`, which never begins a UTF-8 character — and trimmed to the last whole
character (never a U+FFFD for the cut). Bytes inside a string that are not UTF-8 become U+FFFD.
"""

from __future__ import annotations

import struct
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urljoin

ATTACHMENT_PLACEHOLDER = "\ufffc"  # U+FFFC OBJECT REPLACEMENT CHARACTER: where a file sits inline
PART = "__kIMMessagePartAttributeName"
FILE_TRANSFER = "__kIMFileTransferGUIDAttributeName"

SIGNATURE = b"streamtyped"
INT16, INT32, FLOAT, NEW, NIL, END, INT64 = 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87
TAGS = range(0x80, 0x92)         # a head byte here is a tag, never a one-byte value
FIRST_REFERENCE = -110           # 0x92 read as a signed byte: reference number 0
MAX_DEPTH = 64                   # values within values; Messages nests four deep


class Malformed(ValueError):
    """The bytes do not follow the typedstream format (or end before they should)."""


@dataclass(frozen=True)
class ArchivedClass:
    name: str
    version: int
    superclass: ArchivedClass | None


@dataclass
class Instance:
    """An archived object: its class and the values its typed groups held, in order."""
    cls: ArchivedClass
    values: list = field(default_factory=list)
    complete: bool = True      # False when the archive stopped inside it

    @property
    def classes(self) -> list[str]:
        names, cls = [], self.cls
        while cls is not None:
            names.append(cls.name)
            cls = cls.superclass
        return names

    def is_a(self, name: str) -> bool:
        return name in self.classes


class Reader:
    """One pass over a typedstream: its header, then values on request."""

    def __init__(self, blob: bytes):
        self.blob = blob
        self.at = 0
        self.strings: list[bytes] = []   # shared strings: type encodings, class names, C strings' text
        self.objects: list = []          # objects, classes and C strings, in the order first written
        self.problem: str | None = None  # why reading stopped early, if it did
        self.depth = 0                   # objects and compound values being read, one inside another
        version, length = self.take(1)[0], self.take(1)[0]
        if version != 4 or self.take(length) != SIGNATURE:
            raise Malformed("not a little-endian typedstream (version 4, `streamtyped`)")
        self.integer(signed=False)       # the system version (1000): nothing depends on it

    # --- bytes and numbers -----------------------------------------------------------------

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.blob):
            raise Malformed(f"the archive ends at byte {len(self.blob)}, inside a value")
        data = self.blob[self.at:self.at + count]
        self.at += count
        return data

    def head(self) -> int:
        return self.take(1)[0]

    def integer(self, head: int | None = None, *, signed: bool) -> int:
        head = self.head() if head is None else head
        width = {INT16: 2, INT32: 4, INT64: 8}.get(head)
        if width:
            return int.from_bytes(self.take(width), "little", signed=signed)
        if head in TAGS:
            raise Malformed(f"tag {head:#04x} where an integer belongs")
        return head - 256 if signed and head >= 0x80 else head

    def real(self, head: int, size: int) -> float:
        if head == FLOAT:
            return struct.unpack("<f" if size == 4 else "<d", self.take(size))[0]
        return float(self.integer(head, signed=True))  # whole numbers are written as integers

    def reference(self, head: int, table: list):
        number = self.integer(head, signed=True) - FIRST_REFERENCE
        if not 0 <= number < len(table) or table[number] is None:
            raise Malformed(f"reference {number} to an entry not written yet")
        return table[number]

    @contextmanager
    def deeper(self):
        if self.depth >= MAX_DEPTH:
            raise Malformed(f"values nested more than {MAX_DEPTH} deep")
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    # --- strings -------------------------------------------------------------------------

    def counted(self) -> bytes:
        """A length and that many bytes (the `+` type). A length running past the end keeps what is there."""
        length = self.integer(signed=False)
        data = self.blob[self.at:self.at + length]
        self.at += len(data)
        if len(data) < length:
            self.problem = f"a string declares {length} bytes but the archive holds {len(data)} more"
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as cut:
                data = data[:cut.start]
        return data

    def shared(self, head: int | None = None) -> bytes | None:
        head = self.head() if head is None else head
        if head == NIL:
            return None
        if head == NEW:
            self.strings.append(self.counted())
            return self.strings[-1]
        return self.reference(head, self.strings)

    # --- classes and objects -------------------------------------------------------------

    def archived_class(self, head: int) -> ArchivedClass | None:
        """A class chain: new classes, most derived first, ending in nil or a known class."""
        new = []
        while head == NEW:
            name = self.shared()
            if name is None:
                raise Malformed("a class without a name")
            new.append((name.decode("utf-8", "replace"), self.integer(signed=True), len(self.objects)))
            self.objects.append(None)       # numbered now; filled in once its superclass is known
            head = self.head()
        superclass = None if head == NIL else self.reference(head, self.objects)
        if superclass is not None and not isinstance(superclass, ArchivedClass):
            raise Malformed("a superclass reference to something that is not a class")
        for name, version, number in reversed(new):
            superclass = ArchivedClass(name, version, superclass)
            self.objects[number] = superclass
        return superclass

    def object(self, head: int):
        if head == NIL:
            return None
        if head != NEW:
            found = self.reference(head, self.objects)
            if not isinstance(found, Instance):
                raise Malformed("an object reference to something that is not an object")
            return found
        self.objects.append(None)           # numbered before its class, as the writer did
        number = len(self.objects) - 1
        cls = self.archived_class(self.head())
        if cls is None:
            raise Malformed("an object without a class")
        instance = self.objects[number] = Instance(cls)
        try:
            with self.deeper():
                while (head := self.head()) != END:
                    instance.values.extend(self.group(head))
        except Malformed as problem:
            # Nothing after a bad byte can be trusted: keep what was read, and end every
            # enclosing object here too.
            self.problem = self.problem or str(problem)
            self.at = len(self.blob)
            instance.complete = False
        return instance

    # --- typed values --------------------------------------------------------------------

    def group(self, head: int | None = None) -> list:
        """One type encoding and a value for each type in it."""
        encoding = self.shared(head)
        if not encoding:
            raise Malformed("a value group without a type")
        return [self.value(single) for single in split_types(encoding)]

    def value(self, encoding: bytes):
        kind = encoding[:1]
        if kind in (b"c", b"C", b"B"):
            return int.from_bytes(self.take(1), "little", signed=kind == b"c")  # chars are never tagged
        if kind in (b"s", b"i", b"l", b"q", b"S", b"I", b"L", b"Q"):
            return self.integer(signed=kind.islower())
        if kind in (b"f", b"d"):
            return self.real(self.head(), 4 if kind == b"f" else 8)
        if kind == b"+":
            return self.counted()
        if kind in (b"%", b":"):
            return self.shared()
        if kind == b"*":
            return self.c_string(self.head())
        if kind == b"#":
            return self.archived_class(self.head())
        if kind == b"@":
            return self.object(self.head())
        if kind == b"!":
            return None                     # an ignored int-sized field: nothing is written
        if kind == b"[":
            count, element = array_type(encoding)
            if element in (b"c", b"C"):
                return self.take(count)
            if count > len(self.blob):
                raise Malformed(f"an array of {count} values in a {len(self.blob)}-byte archive")
            with self.deeper():
                return [self.value(element) for _ in range(count)]
        if kind == b"{":
            with self.deeper():
                return tuple(self.value(member) for member in split_types(struct_members(encoding)))
        raise Malformed(f"type encoding {encoding!r} is not one NSArchiver writes")

    def c_string(self, head: int) -> bytes | None:
        if head == NIL:
            return None
        if head == NEW:
            text = self.shared()
            self.objects.append(text)
            return text
        found = self.reference(head, self.objects)
        if not isinstance(found, bytes):
            raise Malformed("a C string reference to something that is not a C string")
        return found


# --- type encodings ------------------------------------------------------------------------

def split_types(encoding: bytes) -> list[bytes]:
    """`iI` → [i, I]; `{_NSRange=QQ}i` → [{_NSRange=QQ}, i]; `[4c]@` → [[4c], @]."""
    types, at = [], 0
    while at < len(encoding):
        end = at + 1
        if encoding[at:at + 1] in (b"[", b"{", b"("):
            depth = 0
            for end in range(at, len(encoding) + 1):
                if end == len(encoding):
                    raise Malformed(f"unbalanced type encoding {encoding!r}")
                depth += (encoding[end] in b"[{(") - (encoding[end] in b"]})")
                if depth == 0:
                    end += 1
                    break
        types.append(encoding[at:end])
        at = end
    return types


def array_type(encoding: bytes) -> tuple[int, bytes]:
    digits = encoding[1:-1]
    count = len(digits) - len(digits.lstrip(b"0123456789"))
    if not count:
        raise Malformed(f"array type {encoding!r} without a length")
    return int(digits[:count]), digits[count:]


def struct_members(encoding: bytes) -> bytes:
    inner = encoding[1:-1]
    return inner.partition(b"=")[2] if b"=" in inner else inner


# --- Foundation objects as plain values ----------------------------------------------------

def plain(value, within: tuple = ()):
    """NSString → str, NSNumber → number, NSURL → str, NSDictionary → dict (its string keys);
    anything else, anything the archive cut short, or an object inside itself, as it is."""
    if not isinstance(value, Instance) or len(within) >= MAX_DEPTH or any(value is outer for outer in within):
        return value
    within, values = within + (value,), value.values
    if value.is_a("NSString") and values and isinstance(values[0], bytes):
        return values[0].decode("utf-8", "replace")
    if value.is_a("NSValue") and len(values) == 2:   # NSNumber: its C type, then the number
        return values[1]
    if value.is_a("NSURL"):                          # relative flag, [base URL], the string
        texts = [plain(item, within) for item in values[1:]]
        if texts and all(isinstance(text, str) for text in texts):
            return urljoin(texts[0], texts[-1])
    if value.is_a("NSDictionary"):                   # a count, then key, value, key, value …
        pairs = ((plain(key, within), plain(item, within)) for key, item in zip(values[1::2], values[2::2]))
        return {key: item for key, item in pairs if isinstance(key, str)}
    return value


@dataclass(frozen=True)
class Run:
    text: str
    attributes: dict


@dataclass(frozen=True)
class AttributedString:
    text: str
    runs: tuple[Run, ...]
    complete: bool          # False: the blob ended early or went wrong; `text` is what was there


def attributed_string(blob: bytes | None) -> AttributedString | None:
    """The string and its attribute runs, or None when the blob holds no attributed string."""
    if not blob:
        return None
    try:
        reader = Reader(blob)
        root = reader.object(reader.head()) if reader.shared() == b"@" else None
    except Malformed:
        return None
    if not (isinstance(root, Instance) and root.is_a("NSAttributedString") and root.values):
        return None
    text = plain(root.values[0])
    if not isinstance(text, str):
        return None
    runs = split_runs(text, root.values[1:])
    return AttributedString(text, runs, reader.problem is None and root.complete)


def split_runs(text: str, values: list) -> tuple[Run, ...]:
    """(dictionary number, UTF-16 length, [the dictionary when new]) … → runs covering `text`."""
    utf16 = text.encode("utf-16-le")
    runs, dictionaries, at = [], [], 0
    values = list(values)
    while len(values) >= 2 and all(isinstance(v, int) for v in values[:2]) and at * 2 < len(utf16):
        number, length = values.pop(0), values.pop(0)
        if number == len(dictionaries) + 1:
            dictionaries.append(plain(values.pop(0)) if values else {})
        attributes = dictionaries[number - 1] if 0 < number <= len(dictionaries) else {}
        piece = utf16[at * 2:(at + length) * 2]
        runs.append(Run(piece.decode("utf-16-le", "replace"), attributes if isinstance(attributes, dict) else {}))
        at += length
    if at * 2 < len(utf16):  # text no run covers (the runs were cut off): it still counts
        runs.append(Run(utf16[at * 2:].decode("utf-16-le", "replace"), {}))
    return tuple(runs)


def message_text(blob: bytes | None) -> str | None:
    """The message's words: its parts one to a line, attachments left out; None if the blob holds none."""
    body = attributed_string(blob)
    if body is None:
        return None
    parts, current, part = [], [], None
    for run in body.runs:
        number = run.attributes.get(PART, part)
        if FILE_TRANSFER in run.attributes or number != part:
            parts.append("".join(current))
            current = []
        if FILE_TRANSFER not in run.attributes:
            current.append(run.text)
        part = number
    parts.append("".join(current))
    words = (piece.replace(ATTACHMENT_PLACEHOLDER, "").strip() for piece in parts)
    return "\n".join(piece for piece in words if piece)
