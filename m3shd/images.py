"""The images a task can take: the Messages API's image-block media types, told by their first
bytes (a file's name or a declared type is a claim; the magic bytes are the file's). The
Commander, the bridge and the CLI share this one list."""

from __future__ import annotations

import os

MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")  # HEIC and TIFF are not among them
NAMES = "JPEG, PNG, GIF or WebP"


def media_type_of(head: bytes) -> str | None:
    """The media type a file's first 12 bytes announce, if it is one of MEDIA_TYPES; else None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def read(path: str | os.PathLike) -> tuple[bytes, str]:
    """An image file's bytes and media type; OSError or ValueError with what is wrong."""
    with open(path, "rb") as file:
        data = file.read()
    media_type = media_type_of(data[:12])
    if media_type is None:
        raise ValueError(f"{path} is not a {NAMES} image (the images Claude reads)")
    return data, media_type
