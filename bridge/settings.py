"""The bridge's settings: `[bridge]` in the config, `M3SHD_BRIDGE_<KEY>` in the environment. It
reaches the Commander with the `[client]` url and token. Imports only the standard library and m3shd."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from m3shd import config
from m3shd.config import Settings, setting


@dataclass(frozen=True)
class BridgeSettings(Settings):
    """The iMessage bridge; it reaches the Commander with `[client]` url and token."""

    section: ClassVar[str] = "bridge"
    chat_db: str = setting("", '`""` → `~/Library/Messages/chat.db`')
    state_dir: str = setting("", 'cursor, dedup set, task → chat map; `""` → `<data>/bridge`')
    allowed_senders: tuple[str, ...] = setting((), "phone numbers (any format) and Apple ID emails that may use the mesh")
    allowed_groups: tuple[str, ...] = setting((), "chat GUIDs of group chats whose members may use it")
    mention: str = setting("", 'e.g. `@mesh`: in group chats, only texts starting with it count')
    default_country_code: str = setting("1", "for numbers written without +CC")
    sms_allowed: bool = setting(False, "SMS/RCS can be spoofed more easily than iMessage")
    poll_interval: float = setting(0.25, "seconds between chat.db reads (file changes wake it sooner)")
    recheck_delay: float = setting(0.15, "wait this long, then re-read is_from_me (it can flip)")
    window: float = setting(600.0, "ignore messages older than this many seconds")
    approval_required: bool = setting(False, "tasks from texts wait for `yes` before they run")
    alerts_to: str = setting("", "one of allowed_senders: spend alerts (a threshold of a daily cap crossed) and "
                                 "webhook tasks awaiting approval are texted to them as they happen")
    max_attachment_bytes: int = setting(3_932_160, "a larger image is refused, and the reply says so; keep it "
                                                   "at most the Commander's `max_attachment_bytes`")
    osascript: str = setting("osascript", "the program that sends replies through Messages")
    log_level: str = setting("info", "debug, info, warning or error")

    def derived(self) -> BridgeSettings:
        chat_db = Path(self.chat_db or Path.home() / "Library" / "Messages" / "chat.db").expanduser()
        return replace(self, chat_db=str(chat_db), state_dir=self.state_dir or str(config.data_dir() / "bridge"))
