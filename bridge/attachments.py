"""Images that arrive with a text: accepted only when finished downloading, within the size cap,
and when their first bytes say they are JPEG, PNG, GIF, WebP or HEIC (the name and the MIME type
in chat.db are the sender's claim; the magic bytes are the file's). HEIC becomes JPEG here, so
every image is one the Commander keeps and Claude reads; each is uploaded to the Commander, and
the task names it by its SHA-256, so whichever N0D3 runs the task can fetch it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bridge import staging
from m3shd import images
from m3shd.client import ApiClient, CommanderError

TRANSFER_FINISHED = 5      # attachment.transfer_state once the file is complete on disk
KEEP_CONVERTED = 86400     # seconds a converted image stays for the task that reads it
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
ACCEPTED = "JPEG, PNG, GIF, WebP or HEIC"  # the Commander's types (m3shd/images.py), and HEIC converted to JPEG


def image_kind(head: bytes) -> str | None:
    """The image format named by a file's first 16 bytes (jpeg, png, gif, webp or heic), or None."""
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return "heic"
    media_type = images.media_type_of(head)
    return media_type.removeprefix("image/") if media_type else None


def local_path(filename: str, messages_dir: Path) -> Path:
    """chat.db stores `~/Library/Messages/Attachments/…`; resolve it next to this chat.db."""
    prefix = "~/Library/Messages/"
    if filename.startswith(prefix):
        return messages_dir / filename[len(prefix):]
    return Path(filename).expanduser()


def describe(rows, messages_dir: Path, max_bytes: int) -> list[dict]:
    """One entry per attachment: its name, kind and path, or `refused` with the reason. `max_bytes`
    is the Commander's cap (`[commander] max_attachment_bytes`), checked here to spare an upload."""
    found = []
    for row in rows:
        name = row["transfer_name"] or Path(row["filename"] or "attachment").name
        entry = {"name": name, "kind": None, "path": None, "bytes": None, "refused": None}
        found.append(entry)
        if not row["filename"]:
            entry["refused"] = "not downloaded"
            continue
        path = local_path(row["filename"], messages_dir)
        try:
            size = path.stat().st_size
            with open(path, "rb") as file:
                head = file.read(16)
        except OSError:
            entry["refused"] = "not downloaded"
            continue
        entry["bytes"] = size
        if row["transfer_state"] not in (None, TRANSFER_FINISHED) or (row["total_bytes"] or size) != size:
            entry["refused"] = "still downloading"
        elif size > max_bytes:
            entry["refused"] = f"larger than {max_bytes:,} bytes"
        elif (kind := image_kind(head)) is None:
            entry["refused"] = f"not a {ACCEPTED} image"
        else:
            entry.update(kind=kind, path=str(path))
    return found


def convert_heic(entries: list[dict], out_dir: Path, sips: str = "sips") -> None:
    """HEIC → JPEG with macOS's `sips` (few readers take HEIC) into `out_dir`; an image that
    cannot be converted is refused. Older conversions in `out_dir`'s parent are removed."""
    heic = [entry for entry in entries if entry["kind"] == "heic"]
    if not heic:
        return
    staging.sweep(out_dir.parent, KEEP_CONVERTED)
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in heic:
        out = out_dir / (Path(entry["path"]).stem + ".jpg")
        try:
            subprocess.run([sips, "-s", "format", "jpeg", entry["path"], "--out", str(out)], check=True,
                           capture_output=True, timeout=60)
            with open(out, "rb") as converted:
                if image_kind(converted.read(16)) != "jpeg":
                    raise OSError("sips wrote no JPEG")
        except (OSError, subprocess.SubprocessError):
            entry.update(kind=None, path=None, refused="a HEIC image that could not be converted to JPEG")
            continue
        entry.update(kind="jpeg", path=str(out), bytes=out.stat().st_size)


def upload(entries: list[dict], client: ApiClient) -> list[str]:
    """Upload each accepted image to the Commander; returns their SHA-256s, by which the task names
    them. An image the Commander refuses is marked refused with its reason; an outage (or a 5xx)
    raises, so the message is tried again later (the same bytes upload to the same name)."""
    hashes = []
    for entry in entries:
        if not entry["path"]:
            continue
        with open(entry["path"], "rb") as file:
            data = file.read()
        try:
            hashes.append(client.upload_attachment(data, f"image/{entry['kind']}")["sha256"])
        except CommanderError as exc:
            if exc.status >= 500:
                raise
            entry.update(kind=None, path=None, refused=exc.message)
    return hashes


def refusal(entries: list[dict]) -> str | None:
    """The polite reply for what we could not take, or None."""
    refused = [f"{entry['name']} ({entry['refused']})" for entry in entries if entry["refused"]]
    if not refused:
        return None
    return f"I can only take finished {ACCEPTED} images; I left out: " + "; ".join(refused) + "."
