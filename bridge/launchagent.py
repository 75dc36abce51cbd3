"""`m3shd bridge install-agent`: a LaunchAgent, because the bridge drives Messages.app and so must
run in the user's GUI session (a LaunchDaemon could not talk to Messages)."""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from pathlib import Path

LABEL = "com.m3shd.bridge"


def agent(python: str, config: str | None, log: Path) -> dict:
    arguments = [python, "-m", "m3shd", "bridge", "run"] + (["--config", str(Path(config).resolve())] if config else [])
    return {
        "Label": LABEL,
        "ProgramArguments": arguments,
        "RunAtLoad": True,
        "KeepAlive": True,            # launchd restarts it if it exits
        "ThrottleInterval": 30,       # … but not faster than this, e.g. while a permission is missing
        "ProcessType": "Interactive",  # it answers people: no background throttling
        "StandardOutPath": str(log),
        "StandardErrorPath": str(log),
    }


def install(config: str | None, load: bool = True, launchctl: str = "launchctl") -> Path:
    home = Path.home()
    path = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    log = home / "Library" / "Logs" / "m3shd" / "bridge.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        plistlib.dump(agent(os.path.realpath(sys.executable), config, log), out)
    if load:
        domain = f"gui/{os.getuid()}"
        # bootout fails when it was not loaded; that is fine. bootstrap must succeed.
        subprocess.run([launchctl, "bootout", f"{domain}/{LABEL}"], capture_output=True)
        subprocess.run([launchctl, "bootstrap", domain, str(path)], check=True, capture_output=True)
    return path
