"""The Commander's keys at rest, in one file: `<data_dir>/keyring` (mode 0600, JSON).

It holds the data keys (Fernet, newest first: the first encrypts, all decrypt) and the
blind-index key (HMAC over words; rotating data keys must not change what an index token means),
wrapped by a key-encryption key (KEK) when one is set:

- `"wrap": "none"`: the keys in clear, so `m3shd up` starts unattended (the default, and what
  every Commander had before the keyring: its `secret.keys` is adopted on first start);
- `"wrap": "file"`: sealed with a key derived (HKDF-SHA256) from a key file the keyring names,
  e.g. on a USB stick or a systemd credential; at least 32 random bytes (`m3shd keys new-kek-file`);
- `"wrap": "passphrase"`: sealed with a key derived by scrypt from `$M3SHD_KEK_PASSPHRASE`.

The file describes its own wrapping, so there is no setting to disagree with it; `m3shd keys
rotate-kek` changes both at once. A `"recovery"` entry, present once `m3shd keys export-recovery`
ran, holds the same keys sealed to the recovery kit's X25519 public key (m3shd/sealing.py): every
rewrite of the keyring (a rotation, a new KEK) reseals them to it without asking for the kit's
passphrase, so one kit, kept offline, opens every later keyring (`m3shd keys recover`).

Workers notice a rewritten keyring by its file's identity (inode, size, mtime), looked at no more
than once every RELOAD seconds and whenever a value fails to decrypt; commander/rekey.py relies on
that bound.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from m3shd import sealing

FILE = "keyring"
LEGACY_FILE = "secret.keys"  # the Fernet keys, one per line, of Commanders before the keyring
PASSPHRASE_ENV = "M3SHD_KEK_PASSPHRASE"
RELOAD = 1.0
SCRYPT = dict(n=2 ** 15, r=8, p=1)  # 32 MiB and about 0.1 s here: once per start and per rewrite
RECOVERY_CONTEXT = b"m3shd recovery kit v1"
KIT_KIND = "m3shd-recovery-kit"


class KeyringError(Exception):
    """The keyring cannot be read, opened or written; the message says what to do."""


@dataclass(frozen=True)
class Keys:
    data: tuple[bytes, ...]            # Fernet keys, newest first
    index: bytes                       # 32 bytes
    retiring: tuple[bytes, ...] = ()   # those of `data` a rotation under way is moving rows away from

    def as_json(self) -> bytes:
        return json.dumps({"data": [k.decode() for k in self.data], "index": self.index.hex(),
                           "retiring": [k.decode() for k in self.retiring]}).encode()

    @classmethod
    def from_json(cls, text: bytes | dict) -> Keys:
        found = json.loads(text) if isinstance(text, bytes) else text
        return cls(tuple(k.encode() for k in found["data"]), bytes.fromhex(found["index"]),
                   tuple(k.encode() for k in found.get("retiring", ())))


@dataclass(frozen=True)
class Wrap:
    """How the keys are sealed in the file: kind none, file (with its path) or passphrase."""
    kind: str = "none"
    kek_file: str = ""
    salt: bytes = b""

    @classmethod
    def parse(cls, source: str) -> Wrap:
        """`none`, `file:PATH` or `passphrase`, as `m3shd keys rotate-kek --to` takes it."""
        if source == "none":
            return cls()
        if source == "passphrase":
            return cls("passphrase", salt=secrets.token_bytes(16))
        if source.startswith("file:") and len(source) > 5:
            return cls("file", kek_file=str(Path(source[5:]).expanduser().resolve()))
        raise KeyringError(f"unknown KEK source {source!r}: say none, file:PATH or passphrase")

    def describe(self) -> str:
        return {"none": "not wrapped (keys in clear, file mode 0600)", "file": f"wrapped by the key file {self.kek_file}",
                "passphrase": f"wrapped by a passphrase (scrypt; ${PASSPHRASE_ENV})"}[self.kind]


def derive_from_passphrase(passphrase: str, salt: bytes) -> bytes:
    if not passphrase:
        raise KeyringError(f"the keyring is wrapped by a passphrase: set ${PASSPHRASE_ENV}")
    return base64.urlsafe_b64encode(Scrypt(salt=salt, length=32, **SCRYPT).derive(passphrase.encode()))


def derive_from_file(path: str) -> bytes:
    try:
        material = Path(path).read_bytes()
    except OSError as exc:
        raise KeyringError(f"the keyring is wrapped by the key file {path}, which cannot be read "
                           f"({exc.strerror}); without it, `m3shd keys recover` with the recovery kit") from None
    if len(material) < 32:
        raise KeyringError(f"the key file {path} holds {len(material)} bytes; a KEK file needs at least 32 random bytes")
    return base64.urlsafe_b64encode(HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                                         info=b"m3shd keyring kek").derive(material))


class KekSource:
    """Where the KEK comes from: the environment's passphrase, or one given (commands that set a new one).
    A derived key is remembered per salt, so a worker's reload costs no second scrypt."""

    def __init__(self, passphrase: str | None = None):
        self.passphrase = passphrase
        self._derived: dict[tuple, bytes] = {}

    def kek(self, wrap: Wrap) -> bytes:
        if wrap.kind == "file":
            return derive_from_file(wrap.kek_file)
        key = (wrap.salt,)
        if key not in self._derived:
            passphrase = self.passphrase if self.passphrase is not None else os.environ.get(PASSPHRASE_ENV, "")
            self._derived[key] = derive_from_passphrase(passphrase, wrap.salt)
        return self._derived[key]


def path_in(data_dir: str | Path) -> Path:
    return Path(data_dir) / FILE


def read(data_dir: str | Path, source: KekSource | None = None) -> tuple[Keys, Wrap, dict | None]:
    """The keys, how they are wrapped, and the recovery entry (None without a kit)."""
    path = path_in(data_dir)
    try:
        found = json.loads(path.read_text())
        wrap = Wrap(found["wrap"], found.get("kek_file", ""), base64.b64decode(found.get("salt", "")))
    except (OSError, ValueError, KeyError) as exc:
        raise KeyringError(f"the keyring {path} cannot be read: {exc}") from None
    if wrap.kind == "none":
        return Keys.from_json(found["keys"]), wrap, found.get("recovery")
    try:
        plain = Fernet((source or KekSource()).kek(wrap)).decrypt(found["sealed"].encode())
    except InvalidToken:
        why = "the passphrase is wrong" if wrap.kind == "passphrase" else f"{wrap.kek_file} is not its KEK"
        raise KeyringError(f"the keyring {path} does not open: {why}; lost it? `m3shd keys recover`") from None
    return Keys.from_json(plain), wrap, found.get("recovery")


def write(data_dir: str | Path, keys: Keys, wrap: Wrap, recovery_public: bytes | None,
          source: KekSource | None = None) -> None:
    """Replace the keyring atomically (write aside, fsync, rename): a crash leaves the old or the new."""
    document: dict = {"format": 1, "wrap": wrap.kind}
    if wrap.kind == "none":
        document["keys"] = json.loads(keys.as_json())
    else:
        if wrap.kind == "file":
            document["kek_file"] = wrap.kek_file
        else:
            document["salt"] = base64.b64encode(wrap.salt).decode()
        document["sealed"] = Fernet((source or KekSource()).kek(wrap)).encrypt(keys.as_json()).decode()
    if recovery_public is not None:
        document["recovery"] = {"public": base64.b64encode(recovery_public).decode(),
                                "sealed": sealing.seal(recovery_public, keys.as_json(), RECOVERY_CONTEXT)}
    path = path_in(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    aside = path.with_name(f".{FILE}.{os.getpid()}.tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(document, indent=1) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(aside, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def recovery_public(recovery: dict | None) -> bytes | None:
    return base64.b64decode(recovery["public"]) if recovery else None


def ensure(data_dir: str | Path) -> None:
    """Create the keyring on first start: from the legacy `secret.keys` if there is one, else new keys."""
    if path_in(data_dir).exists():
        return
    legacy = Path(data_dir) / LEGACY_FILE
    if legacy.exists():
        data = tuple(line.strip().encode() for line in legacy.read_text().splitlines() if line.strip())
    else:
        data = (Fernet.generate_key(),)
    write(data_dir, Keys(data, secrets.token_bytes(32)), Wrap(), None)
    legacy.unlink(missing_ok=True)  # its keys are in the keyring now, which was fsynced first


def update(data_dir: str | Path, change, source: KekSource | None = None, wrap: Wrap | None = None) -> Keys:
    """Rewrite the keyring with `change(keys)`, resealed for the kit if there is one; `wrap`: a new KEK."""
    keys, old_wrap, recovery = read(data_dir, source)
    changed = change(keys)
    write(data_dir, changed, wrap or old_wrap, recovery_public(recovery), source)
    return changed


def add_data_key(keys: Keys) -> Keys:
    """A rotation's start: a new key encrypts from now on; the others are retiring until rows move."""
    if keys.retiring:
        return keys  # a rotation under way: finish it first (resumed, not restarted)
    return replace(keys, data=(Fernet.generate_key(), *keys.data), retiring=keys.data)


def retire(keys: Keys) -> Keys:
    return replace(keys, data=tuple(k for k in keys.data if k not in keys.retiring), retiring=())


def new_kit(passphrase: str) -> tuple[dict, bytes]:
    """A recovery kit (its private key sealed by scrypt over `passphrase`) and its public key."""
    if len(passphrase) < 12:
        raise KeyringError("a recovery passphrase needs at least 12 characters")
    private, public = sealing.new_private_key()
    salt = secrets.token_bytes(16)
    sealed = Fernet(derive_from_passphrase(passphrase, salt)).encrypt(private).decode()
    return {"kind": KIT_KIND, "format": 1, "salt": base64.b64encode(salt).decode(), "private": sealed,
            "public": base64.b64encode(public).decode()}, public


def open_with_kit(data_dir: str | Path, kit: dict, passphrase: str) -> Keys:
    """The keys, opened with the kit's private key (no KEK needed)."""
    if kit.get("kind") != KIT_KIND:
        raise KeyringError("that file is not an m3shd recovery kit")
    try:
        found = json.loads(path_in(data_dir).read_text())
    except (OSError, ValueError) as exc:
        raise KeyringError(f"the keyring cannot be read: {exc}") from None
    recovery = found.get("recovery")
    if not recovery or recovery["public"] != kit["public"]:
        raise KeyringError("this keyring is not sealed to that kit (it was made for another Commander, "
                           "or before this kit was exported)")
    try:
        private = Fernet(derive_from_passphrase(passphrase, base64.b64decode(kit["salt"]))).decrypt(kit["private"].encode())
    except InvalidToken:
        raise KeyringError("the recovery passphrase is wrong") from None
    try:
        return Keys.from_json(sealing.open_sealed(private, recovery["sealed"], RECOVERY_CONTEXT))
    except sealing.Unsealable:
        raise KeyringError("the keyring's recovery entry does not open with that kit") from None


class SecretBox:
    """What the Commander encrypts with: the keyring's keys, reloaded when its file changes.

    `encrypt` uses the newest data key; `decrypt` tries all (MultiFernet), and on a miss reloads
    the keyring once, since another process may have added the key a value was sealed with."""

    RECENT, RECENT_BYTES = 512, 32_768  # values remembered by their token (see `_remember`)

    def __init__(self, data_dir: str | Path, source: KekSource | None = None):
        self.data_dir, self._source = Path(data_dir), source or KekSource()
        self._recent: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._seen: tuple | None = None
        self._next_look = 0.0
        self._load()

    def _identity(self) -> tuple:
        st = os.stat(path_in(self.data_dir))
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _load(self) -> None:
        seen = self._identity()
        keys, _, _ = read(self.data_dir, self._source)
        self._fernet = MultiFernet([Fernet(k) for k in keys.data])
        self.primary = Fernet(keys.data[0])
        self.index_key = keys.index
        self._seen = seen

    def _fresh(self, force: bool = False) -> None:
        t = time.monotonic()
        if not force and t < self._next_look:
            return
        with self._lock:
            self._next_look = t + RELOAD
            if self._identity() != self._seen:
                self._load()

    def encrypt(self, plain: bytes) -> str:
        self._fresh()
        sealed = self._fernet.encrypt(plain).decode()
        self._remember(sealed, plain)
        return sealed

    def decrypt(self, sealed: str) -> bytes:
        known = self._recent.get(sealed)
        if known is not None:
            return known
        try:
            plain = self._fernet.decrypt(sealed.encode())
        except InvalidToken:
            self._fresh(force=True)
            try:
                plain = self._fernet.decrypt(sealed.encode())
            except InvalidToken:
                raise ValueError("a stored secret cannot be decrypted with the keyring's keys") from None
        self._remember(sealed, plain)
        return plain

    def _remember(self, sealed: str, plain: bytes) -> None:
        """The last few values by their token: a result is read back (its task, by the receivers
        of the task-finished signal) right after it was sealed, and a prompt sealed at submit is read
        at claim and at result. Fernet tokens are authenticated and never reused, so a token found
        here is the value it seals; a token read from the database still opens only with the keys."""
        if len(plain) <= self.RECENT_BYTES:
            with self._lock:
                if len(self._recent) >= self.RECENT:
                    self._recent.pop(next(iter(self._recent)))
                self._recent[sealed] = plain

    def reload(self) -> None:
        self._fresh(force=True)

    def rotated(self, sealed: str) -> str | None:
        """`sealed` under the newest data key (its timestamp kept), or None if it is already."""
        try:
            self.primary.decrypt(sealed.encode())
            return None
        except InvalidToken:
            return self._fernet.rotate(sealed.encode()).decode()
