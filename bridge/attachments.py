"""Images that arrive with a text: accepted only when finished downloading, within the size cap,
and when their first bytes say they are JPEG, PNG, GIF, WebP, HEIC or TIFF (the name and the
MIME type in chat.db are the sender's claim; the magic bytes are the file's)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bridge import staging

TRANSFER_FINISHED = 5      # attachment.transfer_state once the file is complete on disk
KEEP_CONVERTED = 86400     # seconds a converted image stays for the task that reads it
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


def image_kind(head: bytes) -> str | None:
    """The image format named by a file's first 16 bytes, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return "heic"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def local_path(filename: str, messages_dir: Path) -> Path:
    """chat.db stores `~/Library/Messages/Attachments/…`; resolve it next to this chat.db."""
    prefix = "~/Library/Messages/"
    if filename.startswith(prefix):
        return messages_dir / filename[len(prefix):]
    return Path(filename).expanduser()


def describe(rows, messages_dir: Path, max_bytes: int) -> list[dict]:
    """One entry per attachment: its name, kind and path, or `refused` with the reason."""
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
            entry["refused"] = f"larger than {max_bytes // 1_000_000} MB"
        elif (kind := image_kind(head)) is None:
            entry["refused"] = "not a JPEG, PNG, GIF, WebP, HEIC or TIFF image"
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


def refusal(entries: list[dict]) -> str | None:
    """The polite reply for what we could not take, or None."""
    refused = [f"{entry['name']} ({entry['refused']})" for entry in entries if entry["refused"]]
    if not refused:
        return None
    return ("I can only take finished JPEG, PNG, GIF, WebP, HEIC or TIFF images; I left out: "
            + "; ".join(refused) + ".")
