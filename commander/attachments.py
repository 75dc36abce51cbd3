"""Attachments: images a task takes, stored by the Commander and fetched by the node that runs it.

An attachment is named by the SHA-256 of its bytes (content-addressed): the same image sent
twice is stored once, a task names its images by hash, and a node checks what it fetched
against that name. The bytes are a file `<data_dir>/attachments/<aa>/<sha256>` (0600, in
0700 directories), the row beside it says media type and size. They are not encrypted at rest
yet: that waits for the data keys of issue 21 (SECURITY.md says so).

Only the images the Messages API takes in an image block are accepted (m3shd/images.py), and
the bytes must be what the declared type says (magic bytes), so a node never carries to
Claude a file the API would refuse. A node may fetch an attachment only while it holds a
live lease on a task that takes it.
"""

from __future__ import annotations

from pathlib import Path

from commander.context import Commander
from commander.exceptions import Forbidden, Invalid, NotFound, TooLarge
from commander.models import LEASED, Attachment, Task, now
from m3shd import files, wire
from m3shd.images import MEDIA_TYPES, media_type_of

FOLDER = "attachments"


def path_of(cmdr: Commander, sha256: str) -> Path:
    return Path(cmdr.settings.data_dir) / FOLDER / sha256[:2] / sha256


def store(cmdr: Commander, data: bytes, media_type: str, actor: str) -> tuple[Attachment, bool]:
    """Keep `data` (declared as `media_type`); returns its row and whether it is new. The file is
    written (atomically: whole or not at all) before its row, so a row always has its file."""
    check_size(cmdr, len(data))
    if media_type not in MEDIA_TYPES:
        raise Invalid("unsupported_media_type",
                      f"send an image as {', '.join(MEDIA_TYPES)} (Content-Type), not {media_type or 'nothing'}")
    if media_type_of(data[:12]) != media_type:
        raise Invalid("media_type_mismatch", f"the body is not a {media_type} image (its first bytes say otherwise)")
    sha256 = wire.sha256_hex(data)
    path = path_of(cmdr, sha256)
    if not path.exists():  # (a file lost from the data directory comes back with the next upload)
        for folder in (path.parent.parent, path.parent):
            folder.mkdir(mode=0o700, exist_ok=True)
        files.write_private(path, data)
    existing = Attachment.get_or_none(Attachment.sha256 == sha256)
    if existing:
        return existing, False
    with cmdr.write_turn():
        Attachment.insert(sha256=sha256, media_type=media_type, size=len(data), created_at=now(),
                          created_by=actor).on_conflict_ignore().execute()
    return Attachment.get(Attachment.sha256 == sha256), True


def check_size(cmdr: Commander, size: int | None) -> None:
    """Refuse a body of `size` bytes (None: unknown yet) that is empty or over the cap."""
    cap = cmdr.settings.max_attachment_bytes
    if size is not None and size > cap:
        raise TooLarge("attachment_too_large", f"an attachment may be at most {cap:,} bytes; this one is {size:,}")
    if size == 0:
        raise Invalid("empty_attachment", "the request body is empty: send the image's bytes")


def refs(hashes: list[str]) -> list[dict]:
    """What a new task stores of the attachments it names (each once, in order); an unknown hash
    is refused."""
    wanted = list(dict.fromkeys(hashes))
    found = {row.sha256: row for row in Attachment.select().where(Attachment.sha256.in_(wanted))} if wanted else {}
    for sha256 in wanted:
        if sha256 not in found:
            raise Invalid("unknown_attachment",
                          f"no attachment {sha256} is stored: upload it with POST /api/attachments first")
    return [dict(sha256=h, media_type=found[h].media_type, size=found[h].size) for h in wanted]


def get(sha256: str) -> Attachment:
    found = Attachment.get_or_none(Attachment.sha256 == sha256)
    if found is None:
        raise NotFound("not_found", f"no attachment {sha256} is stored")
    return found


def for_node(cmdr: Commander, node_id: int, sha256: str) -> tuple[Attachment, bytes]:
    """An attachment's row and bytes, for a node holding a live lease on a task that takes it."""
    attachment = get(sha256)
    leased = Task.select(Task.attachments).where(
        (Task.node == node_id) & (Task.state == LEASED) & (Task.lease_until > now()))
    if not any(ref["sha256"] == sha256 for task in leased for ref in task.attachments):
        raise Forbidden("not_leased", f"node {node_id} holds no live lease on a task that takes attachment {sha256}")
    try:
        with open(path_of(cmdr, sha256), "rb") as file:
            return attachment, file.read()
    except FileNotFoundError:
        raise NotFound("attachment_missing", f"attachment {sha256} is recorded but its file is gone from "
                                             f"{Path(cmdr.settings.data_dir) / FOLDER}; uploading the image "
                                             "again restores it") from None
