"""The N0D3's settings: `[n0d3]` in the config, `M3SHD_N0D3_<KEY>` in the environment.

Imports only the standard library and m3shd (a dataclass, not pydantic: a Pi's N0D3 installs
little beyond requests)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from typing import ClassVar

from m3shd import config
from m3shd.config import MDNS_TYPE, Settings, setting


@dataclass(frozen=True)
class N0d3Settings(Settings):
    """The agent on each worker machine."""

    section: ClassVar[str] = "n0d3"
    url: str = setting("", 'the Commander, e.g. `http://127.0.0.1:8470`; `""` → found with mDNS')
    mdns_type: str = setting(MDNS_TYPE, "the mDNS service type browsed for when `url` is empty")
    join_token: str = setting("", "a join token, or a join string `TOKEN#sha256:HASH` that pins the Commander's CA; "
                                  "needed only until the node has registered")
    ca_hash: str = setting("", "`sha256:HASH` of the Commander's CA key, checked when the CA is first fetched")
    ca_file: str = setting("", 'the Commander\'s CA (PEM) to verify it with; `""` → the one pinned in `state_dir`')
    state_dir: str = setting("", 'identity and held results; `""` → `<data>/n0d3`')
    name: str = setting("", '`""` → the host name')
    slots: int = setting(2, "tasks run at once")
    priority: int = setting(0, "breaks ties between equally good nodes (higher first)")
    capabilities: tuple[str, ...] = setting((), "extra labels or key=value pairs")
    runner: str = setting("auto", "auto, claude-cli or anthropic-sdk")
    claude_path: str = setting("", 'the Claude Code CLI; `""` → `claude` on PATH')
    model: str = setting("", 'model for tasks that name none; `""` → the runner\'s default')
    anthropic_base_url: str = setting("", 'the anthropic-sdk runner\'s API; `""` → `ANTHROPIC_BASE_URL`, else Anthropic\'s')
    credentials_from_commander: bool = setting(
        True, "with no API key or Claude Code login of its own, run with the runner credential the Commander "
              "holds for this node (`m3shd runners set-key`), sealed to it in each lease and kept only in memory")
    claim_wait: float = setting(30.0, "seconds a claim long-polls for work")
    task_timeout: float = setting(1800.0, "seconds a task may run before it is stopped (an infrastructure failure)")
    cancel_grace: float = setting(5.0, "a cancelled or timed-out task's process group gets SIGTERM, then SIGKILL "
                                       "after this many seconds")
    drain_timeout: float = setting(600.0, "SIGTERM waits this long for running tasks")

    def derived(self) -> N0d3Settings:
        return replace(self, state_dir=self.state_dir or str(config.data_dir() / "n0d3"),
                       name=self.name or socket.gethostname())
