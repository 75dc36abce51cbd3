"""Sending through the fake `osascript` (it records the script and argv), splitting, parsing commands,
the start-up probe and the supervisor."""

from __future__ import annotations

import json
import os
import plistlib
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

from bridge import commands, daemon, osascript, staging
from bridge.settings import BridgeSettings
from chatdb_fixtures import ChatDb
from harness import FAKES, base_env, wait_until
from m3shd.client import ApiClient

GROUP = "any;+;chat123456789"
DIRECT = "any;-;+15551234567"


@pytest.fixture
def fake_osascript(tmp_path, monkeypatch):
    log = tmp_path / "osascript.jsonl"
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_OSASCRIPT_LOG", str(log))

    def runs():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return runs


def test_text_and_chat_travel_as_arguments_never_inside_the_script(fake_osascript):
    hostile = 'hi" & (do shell script "touch /tmp/pwned") & "'
    osascript.send(hostile, GROUP)
    (run,) = fake_osascript()
    assert run["argv"] == [hostile, GROUP, "", ""]
    assert run["script"] == osascript.SEND_SCRIPT
    assert hostile not in run["script"] and GROUP not in run["script"]
    assert "set theTarget to chat id chatId" in run["script"] and "send theText to theTarget" in run["script"]


def test_a_file_travels_as_its_path(fake_osascript, tmp_path):
    path = staging.stage(tmp_path / "Messages", "task-7.txt", "the long answer".encode())
    osascript.send("", GROUP, file=path)
    (run,) = fake_osascript()
    assert run["argv"] == ["", GROUP, "", str(path)] and run["file"] == "the long answer"
    assert "if filePath is not \"\" then set theFile to POSIX file filePath" in run["script"]
    assert "send theFile to theTarget" in run["script"]


def test_staged_files_live_inside_the_messages_folder_for_a_minute(tmp_path):
    messages = tmp_path / "Messages"
    fresh = staging.stage(messages, "reply.txt", b"new")
    old = staging.stage(messages, "reply.txt", b"old")
    assert fresh.parent.parent == old.parent.parent == messages / "m3shd-outgoing" and fresh != old
    assert oct(fresh.stat().st_mode & 0o777) == "0o600"
    os.utime(old.parent, (time.time() - 61,) * 2)
    staging.sweep(messages / "m3shd-outgoing")
    assert fresh.read_bytes() == b"new" and not old.parent.exists()


def test_nul_characters_from_a_task_are_dropped(fake_osascript):
    osascript.send("a\0b", GROUP)
    assert fake_osascript()[0]["argv"][0] == "ab"


def test_a_chat_messages_cannot_find_is_retried_then_sent_to_the_person(fake_osascript, monkeypatch):
    monkeypatch.setenv("FAKE_OSASCRIPT_ERRORS", "-1728,-1728,-1728")
    osascript.send("answer", DIRECT, "+15551234567", pauses=(0.01, 0.01))
    runs = fake_osascript()
    assert [run["argv"] for run in runs] == [["answer", DIRECT, "", ""]] * 3 + [["answer", "", "+15551234567", ""]]
    assert "participant theAddress of (1st account whose service type = iMessage)" in runs[-1]["script"]


def test_with_no_chat_it_goes_to_the_person_at_once(fake_osascript):
    osascript.send("m3shd: 80% of the daily cap", "", "+15551234567", "osascript", pauses=(60.0,))
    assert [run["argv"] for run in fake_osascript()] == [["m3shd: 80% of the daily cap", "", "+15551234567", ""]]


def test_a_group_messages_cannot_find_fails_after_the_retries(fake_osascript, monkeypatch):
    monkeypatch.setenv("FAKE_OSASCRIPT_ERRORS", "-1728,-1728,-1728")
    with pytest.raises(osascript.OsascriptError) as caught:
        osascript.send("answer", GROUP, None, pauses=(0.01, 0.01))
    assert caught.value.number == -1728 and len(fake_osascript()) == 3


def test_missing_automation_permission_says_what_to_allow(fake_osascript, monkeypatch):
    monkeypatch.setenv("FAKE_OSASCRIPT_ERRORS", "-1743")
    with pytest.raises(osascript.OsascriptError) as caught:
        osascript.send("answer", GROUP)
    assert caught.value.number == -1743 and len(fake_osascript()) == 1  # never retried
    assert "Privacy & Security → Automation" in str(caught.value)
    assert os.path.realpath(sys.executable) in str(caught.value)


def test_other_errors_keep_osascripts_words(fake_osascript, monkeypatch):
    monkeypatch.setenv("FAKE_OSASCRIPT_ERRORS", "-600")
    with pytest.raises(osascript.OsascriptError, match=r"\(-600\)") as caught:
        osascript.send("answer", GROUP)
    assert caught.value.number == -600


def test_no_osascript_at_all(tmp_path):
    with pytest.raises(osascript.OsascriptError, match="runs on macOS"):
        osascript.send("answer", GROUP, osascript=str(tmp_path / "missing"))


# --- splitting -----------------------------------------------------------------------------------

def test_long_replies_split_at_paragraphs_first():
    paragraphs = ["p" * 900, "q" * 900, "r" * 400]
    assert osascript.split("\n\n".join(paragraphs)) == ["p" * 900, "q" * 900 + "\n\n" + "r" * 400]


def test_then_at_lines_then_at_spaces_then_anywhere():
    lines = "\n".join(["l" * 700] * 3)
    assert [len(piece) for piece in osascript.split(lines)] == [1401, 700]
    words = " ".join(["w" * 9] * 400)  # 3,999 characters
    pieces = osascript.split(words)
    assert all(len(piece) <= 1500 for piece in pieces) and " ".join(pieces) == words
    assert all(piece.endswith("w") and piece.startswith("w") for piece in pieces)
    assert osascript.split("x" * 3200) == ["x" * 1500, "x" * 1500, "x" * 200]
    assert osascript.split("short") == ["short"] and osascript.split("   ") == []


def test_a_paragraph_break_too_early_is_passed_over_for_a_later_line_break():
    text = "intro\n\n" + ("s" * 1000 + "\n") * 2
    pieces = osascript.split(text)
    assert pieces[0] == "intro\n\n" + "s" * 1000 and all(len(piece) <= 1500 for piece in pieces)


# --- parsing commands ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("status", commands.Command("status")), ("Status", commands.Command("status")),
    ("/nodes", commands.Command("nodes")), ("task 12", commands.Command("task", 12)),
    ("cancel #7", commands.Command("cancel", 7)), ("yes", commands.Command("yes")),
    ("YES 4", commands.Command("yes", 4)), ("no", commands.Command("no")), ("budget", commands.Command("budget")),
    ("help", commands.Command("help")),
    ("cancel it", commands.Command("usage", text=commands.USAGE["cancel"])),
    ("task", commands.Command("usage", text=commands.USAGE["task"])),
    ("task ²", commands.Command("usage", text=commands.USAGE["task"])),  # a digit to Unicode, not to int()
    ("cancel 0", commands.Command("usage", text=commands.USAGE["cancel"])),
    ("yes please now", commands.Command("usage", text=commands.USAGE["yes"])),
    ("/frobnicate", commands.Command("unknown", text="frobnicate")),
    ("/status of the build", commands.Command("usage", text=commands.USAGE["status"])),
    ("status of the build server and its disks", commands.Command(
        "prompt", text="status of the build server and its disks")),
    ("Write a haiku about meshes", commands.Command("prompt", text="Write a haiku about meshes")),
    ("no way that is right, check again", commands.Command("prompt", text="no way that is right, check again")),
    ("agents", commands.Command("agents")),
    ("budget set 5", commands.Command("budget_set", text="5")), ("Budget SET $2.50", commands.Command("budget_set", text="2.50")),
    ("budget set 0", commands.Command("usage", text=commands.USAGE["budget"])),
    ("budget set lots", commands.Command("usage", text=commands.USAGE["budget"])),
    ("spend today", commands.Command("spend", text="today")), ("spend WEEK", commands.Command("spend", text="week")),
    ("spend", commands.Command("usage", text=commands.USAGE["spend"])),
    ("remember the gate code is 4411", commands.Command("remember", text="the gate code is 4411")),
    ("Recall gate code", commands.Command("recall", text="gate code")),
    ("forget 3", commands.Command("forget", 3)), ("forget", commands.Command("usage", text=commands.USAGE["forget"])),
    ("remember", commands.Command("usage", text=commands.USAGE["remember"])),
    ("forget about it", commands.Command("usage", text=commands.USAGE["forget"])),
    ("spend less on coffee this month", commands.Command("prompt", text="spend less on coffee this month")),
    ("@code-reviewer check this diff", commands.Command("prompt", text="check this diff", agent="code-reviewer")),
    ("@Researcher who\nwon?", commands.Command("prompt", text="who\nwon?", agent="researcher")),
    ("@reviewer", commands.Command("usage", text="@reviewer your request: run it as agent reviewer")),
    ("ask summarizer: this thread", commands.Command("ask", text="this thread", agent="summarizer",
                                                     whole="ask summarizer: this thread")),
    ("ask", commands.Command("prompt", text="ask")),
    ("email me @noon", commands.Command("prompt", text="email me @noon")),
])
def test_parse(text, expected):
    assert commands.parse(text) == expected


def test_the_mention_is_no_agent():
    assert commands.parse("@mesh hello there", "@mesh") == commands.Command("prompt", text="hello there")
    assert commands.parse("@mesh @researcher who won?", "@mesh") == commands.Command(
        "prompt", text="who won?", agent="researcher")


def test_usage_and_unknown_replies_point_to_help():
    session = commands.Session(None, None, {}, None)
    assert session.reply(commands.parse("cancel it")) == "Usage: cancel N: stop task N. Send help for all commands."
    unknown = session.reply(commands.parse("/frobnicate"))
    assert unknown.startswith("I don't know /frobnicate.") and "task N" in unknown


def test_a_spend_alert_as_a_text():
    alert = {"scope": "agent", "name": "researcher", "threshold": 100, "spent_usd": 5.004, "cap_usd": 5.0,
             "day": "2026-12-02"}
    assert commands.alert_text(alert) == ("m3shd: 100% of the daily cap for agent researcher. $5.00 of $5.00 spent "
                                          "on 2026-12-02; new work is held until midnight.")
    assert commands.alert_text({**alert, "scope": "all", "name": "", "threshold": 50, "spent_usd": 2.5}) == (
        "m3shd: 50% of the daily cap for the mesh. $2.50 of $5.00 spent on 2026-12-02.")


def test_describe_a_task_as_a_text():
    task = {"id": 3, "state": "succeeded", "output": "42", "error": None}
    assert commands.describe(task) == "Task 3: succeeded.\n\n42"
    assert commands.describe(dict(task, state="failed", error="boom")) == "Task 3: failed: boom"
    assert commands.describe(dict(task, state="queued", waiting_reason="waiting for a free slot")) == \
        "Task 3: queued (waiting for a free slot)."


# --- start-up probe --------------------------------------------------------------------------------

def test_the_start_up_probe_lists_each_problem_once(tmp_path, fake_osascript, monkeypatch):
    monkeypatch.setenv("FAKE_OSASCRIPT_ACCOUNTS", "0")
    settings = BridgeSettings(chat_db=str(tmp_path / "Messages" / "chat.db"))
    unreachable = ApiClient("http://127.0.0.1:9", "m3a_x", timeout=1)
    problems = daemon.startup_problems(settings, unreachable)
    assert problems == [
        f"no Messages database at {tmp_path / 'Messages' / 'chat.db'}: sign in to Messages on this Mac with your "
        "Apple ID and open it once (that creates the file), or set [bridge] chat_db",
        daemon.NOT_SIGNED_IN,
        "nobody may use the bridge: set [bridge] allowed_senders (your phone number or Apple ID email) or "
        "allowed_groups (chat GUIDs; `m3shd bridge scan` shows them)",
    ]
    assert "count (every account whose service type = iMessage and enabled is true)" in fake_osascript()[0]["script"]
    ChatDb(tmp_path / "Messages" / "chat.db")
    monkeypatch.setenv("FAKE_OSASCRIPT_ACCOUNTS", "1")
    assert daemon.startup_problems(replace(settings, allowed_senders=("+15551234567",)), unreachable) == []
    # Alerts go only to someone allowed to use the mesh (the same number written another way is).
    assert daemon.startup_problems(replace(settings, allowed_senders=("+15551234567",), alerts_to="555-123-4567"),
                                   unreachable) == []
    assert daemon.startup_problems(replace(settings, allowed_senders=("+15551234567",), alerts_to="+15550000000"),
                                   unreachable) == [
        "[bridge] alerts_to '+15550000000' is not one of allowed_senders: alerts go only to someone who may use the mesh"]


def test_the_start_up_probe_catches_missing_automation_permission(tmp_path, fake_osascript, monkeypatch):
    monkeypatch.setenv("FAKE_OSASCRIPT_ERRORS", "-1743")
    ChatDb(tmp_path / "chat.db")
    settings = BridgeSettings(chat_db=str(tmp_path / "chat.db"), allowed_senders=("+15551234567",))
    (problem,) = daemon.startup_problems(settings, ApiClient("http://127.0.0.1:9", "m3a_x", timeout=1))
    assert problem == f"cannot ask Messages for its accounts: {osascript.automation_advice()}"


# --- supervisor ----------------------------------------------------------------------------------

def test_a_failed_round_is_tried_again_said_once_and_the_other_threads_are_left_alone(caplog):
    stop = threading.Event()
    flaky_runs, steady_runs = [], []

    def flaky():
        flaky_runs.append(time.monotonic())
        if len(flaky_runs) < 4:
            raise RuntimeError("poll failed")
        stop.wait()

    def steady():
        steady_runs.append(threading.get_ident())
        stop.wait()

    supervisor = threading.Thread(target=daemon.supervise, args=({"flaky": flaky, "steady": steady}, stop),
                                  kwargs={"first_backoff": 0.05, "max_backoff": 1.0})
    with caplog.at_level("INFO", logger="m3shd.bridge"):
        supervisor.start()
        try:
            wait_until(lambda: len(flaky_runs) >= 4, 10, every=0.02, what="the fourth round")
        finally:
            stop.set()
            supervisor.join(5)
    assert len(flaky_runs) == 4 and len(steady_runs) == 1
    said = [(r.getMessage(), r.exc_info is not None) for r in caplog.records if r.name == "m3shd.bridge"]
    # Three failures: the first with its traceback, the second as a count, the third not at all.
    assert said == [("bridge-flaky failed (RuntimeError: poll failed); it goes on after a back-off", True),
                    ("bridge-flaky failed again (2 times so far): RuntimeError: poll failed", False)]


# --- install-agent -------------------------------------------------------------------------------

def test_install_agent_writes_a_launch_agent_and_loads_it(tmp_path):
    config = tmp_path / "bridge.toml"
    config.write_text('[bridge]\nallowed_senders = ["+15551234567"]\n')
    calls = tmp_path / "launchctl.jsonl"
    env = base_env(tmp_path) | {"HOME": str(tmp_path), "FAKE_LAUNCHCTL_LOG": str(calls)}
    done = subprocess.run([sys.executable, "-m", "m3shd", "bridge", "install-agent", "--config", str(config)],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "Library" / "LaunchAgents" / "com.m3shd.bridge.plist"
    agent = plistlib.loads(path.read_bytes())
    log = str(tmp_path / "Library" / "Logs" / "m3shd" / "bridge.log")
    assert agent == {
        "Label": "com.m3shd.bridge",
        "ProgramArguments": [os.path.realpath(sys.executable), "-m", "m3shd", "bridge", "run", "--config", str(config)],
        "RunAtLoad": True, "KeepAlive": True, "ThrottleInterval": 30, "ProcessType": "Interactive",
        "StandardOutPath": log, "StandardErrorPath": log,
    }
    domain = f"gui/{os.getuid()}"
    assert [json.loads(line) for line in calls.read_text().splitlines()] == [
        ["bootout", f"{domain}/com.m3shd.bridge"], ["bootstrap", domain, str(path)]]
    assert f"wrote {path} and loaded it" in done.stderr

    path.unlink()
    calls.unlink()
    done = subprocess.run([sys.executable, "-m", "m3shd", "bridge", "install-agent", "--no-load"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and path.exists() and not calls.exists()
    assert plistlib.loads(path.read_bytes())["ProgramArguments"][-1] == "run"


def test_the_file_watch_wakes_on_a_write_and_looks_once_more_soon_after(tmp_path):
    db = ChatDb(tmp_path / "chat.db")
    chat, _ = db.chat(["+15551234567"])
    watch, stop = daemon.FileWatch(db.path), threading.Event()
    db.message(chat, "+15551234567", "hi")
    started = time.monotonic()
    watch.wait(60, stop)      # returns on the change, long before the interval
    assert watch.settling
    watch.wait(60, stop)      # the follow-up look: no change needed
    assert not watch.settling and time.monotonic() - started < 30
