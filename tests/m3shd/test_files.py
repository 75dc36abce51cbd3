"""m3shd.files.write_private: whole, private, durable replacement of a file."""

from __future__ import annotations

import os
import stat

import pytest

from m3shd import files


def test_it_writes_text_and_bytes_readable_by_this_user_only(tmp_path):
    old_umask = os.umask(0)  # even a umask that would leave everything open
    try:
        files.write_private(tmp_path / "new" / "dir" / "token", "m3a_secret ✓\n")
        files.write_private(tmp_path / "blob", b"\x00\xff")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "new" / "dir" / "token").read_text(encoding="utf-8") == "m3a_secret ✓\n"
    assert (tmp_path / "blob").read_bytes() == b"\x00\xff"
    assert stat.S_IMODE((tmp_path / "blob").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "new" / "dir" / "token").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob", "new"]  # no temporary file left


def test_an_existing_file_is_replaced_not_rewritten_in_place(tmp_path):
    """A reader that opened the old file still reads it whole; the new file is another inode, with
    mode 0600 even though the old one was world-readable."""
    path = tmp_path / "settings.toml"
    path.write_text("old = 1\n")
    path.chmod(0o644)
    before = path.stat().st_ino
    with open(path) as reader:
        files.write_private(path, "new = 2\n")
        assert reader.read() == "old = 1\n"
    assert path.read_text() == "new = 2\n" and path.stat().st_ino != before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["settings.toml"]


def test_the_data_is_private_and_on_disk_before_the_rename_and_the_rename_is_flushed_too(tmp_path, monkeypatch):
    synced = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        mode = os.fstat(fd).st_mode
        synced.append(("directory" if stat.S_ISDIR(mode) else "file", stat.S_IMODE(mode)))
        real_fsync(fd)

    def replace(source, destination):
        synced.append(("rename", None))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    files.write_private(tmp_path / "identity.json", "{}")
    assert synced[0] == ("file", 0o600) and synced[1] == ("rename", None) and synced[2][0] == "directory"


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    path.write_text('{"rowid": 7}')

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        files.write_private(path, '{"rowid": 8}')
    assert path.read_text() == '{"rowid": 7}'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
