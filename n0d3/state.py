"""What a N0D3 keeps on disk: its identity, and finished results until the Commander has them."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from m3shd import provenance
from m3shd.files import write_private


def _write_private(path: Path, data: dict) -> None:
    """Atomically, readable by this user only: it holds secrets."""
    write_private(path, json.dumps(data))


def _system_machine_id() -> str:
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            return Path(candidate).read_text().strip()
        except OSError:
            continue
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"], capture_output=True,
                                 text=True, timeout=5).stdout
            for line in out.splitlines():
                if "IOPlatformUUID" in line:
                    return line.split('"')[-2]
        except (OSError, subprocess.SubprocessError):
            pass
    return ""


class State:
    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.outbox = self.dir / "outbox"
        self.outbox.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir.chmod(0o700)

    def machine_id(self, name: str) -> str:
        """Stable per machine and node name, so re-registering returns the same node; kept on disk."""
        path = self.dir / "machine-id"
        if path.exists():
            return path.read_text().strip()
        base = _system_machine_id()
        value = hashlib.sha256(f"{base}:{name}".encode()).hexdigest()[:32] if base else uuid.uuid4().hex
        path.write_text(value + "\n")
        return value

    def identity(self) -> dict | None:
        try:
            return json.loads((self.dir / "identity.json").read_text())
        except (OSError, ValueError):
            return None

    def save_identity(self, identity: dict) -> None:
        _write_private(self.dir / "identity.json", identity)

    def join_request(self) -> dict | None:
        """A tokenless join waiting for approval: the Commander's URL, the request id, the poll token."""
        try:
            return json.loads((self.dir / "join-request.json").read_text())
        except (OSError, ValueError):
            return None

    def save_join_request(self, request: dict | None) -> None:
        if request is None:
            (self.dir / "join-request.json").unlink(missing_ok=True)
        else:
            _write_private(self.dir / "join-request.json", request)

    def result_key(self) -> SigningKey:
        """The Ed25519 key this node signs results with: made once, kept here (mode 0600), so
        results stay verifiable by the same public key across restarts and re-registrations."""
        path = self.dir / "result-key.json"
        if path.exists():
            return provenance.private_key_from_hex(json.loads(path.read_text())["ed25519_private_key"])
        key = provenance.new_private_key()
        _write_private(path, {"ed25519_private_key": provenance.private_key_hex(key)})
        return key

    def seal_key(self) -> tuple[bytes, bytes]:
        """The X25519 key pair (private, public; raw bytes) the Commander seals this node's runner
        credentials to: made once, kept here (mode 0600); its public half goes with every
        registration. Both halves are kept, so a start reads them without loading `cryptography`."""
        path = self.dir / "seal-key.json"
        if path.exists():
            kept = json.loads(path.read_text())
            return bytes.fromhex(kept["x25519_private_key"]), bytes.fromhex(kept["x25519_public_key"])
        if importlib.util.find_spec("cryptography") is None:
            raise ImportError("the cryptography package opens the credentials sealed to this key")
        # PyNaCl, loaded already for signing, makes it: the X25519 keys m3shd/sealing.py opens with,
        # without loading `cryptography` (10 MB) into every idle N0D3; that comes with a credential.
        key = PrivateKey.generate()
        private, public = bytes(key), bytes(key.public_key)
        _write_private(path, {"x25519_private_key": private.hex(), "x25519_public_key": public.hex()})
        return private, public

    def hold(self, result: dict) -> Path:
        """Keep a finished result on disk until the Commander accepts (or refuses) it."""
        path = self.outbox / f"{result['task_id']}-{result['attempt']}.json"
        _write_private(path, result)
        return path

    def held(self) -> list[tuple[Path, dict]]:
        items = []
        for path in sorted(self.outbox.glob("*.json")):
            try:
                items.append((path, json.loads(path.read_text())))
            except (OSError, ValueError):
                path.rename(path.with_suffix(".corrupt"))  # keep it for a person, stop retrying it
        return items
