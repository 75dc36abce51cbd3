"""End to end: a row written into chat.db → `m3shd bridge run` → a task on a live Commander → the
fake `claude` on a live N0D3 → the answer sent by the fake `osascript` to the chat it came from."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys

import pytest
import requests

from bridge import daemon, osascript
from bridge.cursor import State
from bridge.settings import BridgeSettings
from chatdb_fixtures import HEIC, JPEG, PDF, ChatDb
from fakes import anthropic_api
from harness import FAKES, Process, base_env, register_node, wait_until
from m3shd.client import ApiClient, CommanderError
from webhook_payloads import kuma

ME = "+15551234567"
FRIEND = "friend@example.com"
STRANGER = "+15559876543"


class Bridge:
    """`m3shd bridge run` as its own process, with a mobile token, the fake osascript on PATH."""

    def __init__(self, commander, db: ChatDb, groups: list[str] = (), **extra_env):
        home = commander.home
        self.sent_log = home / "osascript.jsonl"
        self.state = home / "bridge-state"
        self.env = base_env(home) | {
            "M3SHD_CLIENT_URL": commander.url, "M3SHD_CLIENT_TOKEN": commander.token("imessage", role="mobile"),
            "M3SHD_BRIDGE_CHAT_DB": str(db.path), "M3SHD_BRIDGE_STATE_DIR": str(self.state),
            "M3SHD_BRIDGE_ALLOWED_SENDERS": f"(555) 123-4567,{FRIEND}",
            "M3SHD_BRIDGE_ALLOWED_GROUPS": ",".join(groups), "M3SHD_BRIDGE_MENTION": "@mesh",
            "M3SHD_BRIDGE_LOG_LEVEL": "debug", "FAKE_OSASCRIPT_LOG": str(self.sent_log),
        } | extra_env
        self.log = home / "bridge.log"
        self.start()

    def start(self) -> None:
        self.process = Process([sys.executable, "-m", "m3shd", "bridge", "run"], self.env, self.log)
        # The first look sets the cursor to the newest row: only what arrives afterwards is answered.
        wait_until(lambda: (self.state / "state.json").exists() or not self.process.alive() and self.fail(),
                   15, what="the bridge's first poll")

    def fail(self):
        raise AssertionError(f"the bridge exited:\n{self.process.text()}")

    def runs(self, chat: str | None = None) -> list[dict]:
        runs = [json.loads(line) for line in self.sent_log.read_text().splitlines()] if self.sent_log.exists() else []
        return [run for run in runs if run["script"] == osascript.SEND_SCRIPT and (chat is None or run["argv"][1] == chat)]

    def sent(self, chat: str | None = None) -> list[str]:
        return [run["argv"][0] for run in self.runs(chat)]

    def wait_reply(self, chat: str, starts: str, timeout: float = 20) -> str:
        return wait_until(lambda: next((text for text in self.sent(chat) if text.startswith(starts)), None),
                          timeout, what=f"a reply starting {starts!r} in {chat}")


@pytest.fixture
def chat_db(commander):
    return ChatDb(commander.home / "Messages" / "chat.db", "tahoe")


@pytest.fixture
def start_bridge(commander, chat_db):
    """Start bridges on this test's Commander and chat.db; each is stopped when the test ends."""
    started: list[Bridge] = []

    def start(groups: list[str] = (), **extra_env) -> Bridge:
        started.append(Bridge(commander, chat_db, groups, **extra_env))
        return started[-1]

    yield start
    for bridge in started:
        bridge.process.stop()


def answering(start_bridge, spawn_n0d3, chat_db, node: str = "alpha", first: str = "first") -> tuple[Bridge, int, str]:
    """A N0D3, a one-to-one chat with ME, and a bridge that has answered `first` there (task 1)."""
    spawn_n0d3(node)
    direct, guid = chat_db.chat([ME])
    bridge = start_bridge()
    chat_db.message(direct, ME, first)
    bridge.wait_reply(guid, "Task 1: succeeded")
    return bridge, direct, guid


def test_a_text_becomes_a_task_and_the_answer_comes_back_to_its_chat(commander, spawn_n0d3, chat_db, start_bridge):
    spawn_n0d3()
    direct, direct_guid = chat_db.chat([ME])
    group, group_guid = chat_db.chat([ME, FRIEND, STRANGER], group_id="chat555")
    bridge = start_bridge(groups=[group_guid])

    chat_db.message(direct, ME, None, body="Write a haiku about meshes 🕸️")  # Ventura+: the text only in the blob
    assert bridge.wait_reply(direct_guid, "On it") == "On it: task 1."
    assert bridge.wait_reply(direct_guid, "Task 1") == "Task 1: succeeded.\n\necho: Write a haiku about meshes 🕸️"
    task = commander.api.get_task(1)
    assert task["prompt"] == "Write a haiku about meshes 🕸️" and task["state"] == "succeeded"
    assert task["submitter"] == f"api token:imessage for {ME}"  # each texter's spend and cap are their own

    chat_db.message(group, STRANGER, "@mesh summarise the thread")  # any member of an allowed group
    assert bridge.wait_reply(group_guid, "Task 2") == "Task 2: succeeded.\n\necho: summarise the thread"
    assert "Task 2" not in " ".join(bridge.sent(direct_guid))
    assert commander.api.get_task(2)["submitter"] == f"api token:imessage for {STRANGER}"

    long_prompt = "\n\n".join(f"Paragraph {n}: " + " ".join(["words"] * 150) for n in range(4))
    chat_db.message(direct, ME, long_prompt)
    bridge.wait_reply(direct_guid, "Task 3")
    wait_until(lambda: "Paragraph 3" in bridge.sent(direct_guid)[-1], 10, what="the last piece of the long answer")
    pieces = bridge.sent(direct_guid)[bridge.sent(direct_guid).index(bridge.wait_reply(direct_guid, "Task 3")):]
    assert len(pieces) == 4 and all(len(piece) <= 1500 for piece in pieces)  # ~930 characters a paragraph
    assert "\n\n".join(pieces) == f"Task 3: succeeded.\n\necho: {long_prompt}"  # cut only at paragraph breaks

    bridge.process.stop()
    assert "haiku" not in bridge.process.text() and "summarise" not in bridge.process.text()  # no bodies in logs


def test_a_very_long_answer_comes_as_a_file_staged_inside_the_messages_folder(commander, spawn_n0d3, chat_db, start_bridge):
    bridge, direct, guid = answering(start_bridge, spawn_n0d3, chat_db)
    essay = "\n\n".join(f"Section {n}. " + " ".join(["lorem ipsum"] * 100) for n in range(10))  # ~12,000 characters
    chat_db.message(direct, ME, essay)
    answer = f"Task 2: succeeded.\n\necho: {essay}"
    assert bridge.wait_reply(guid, "Task 2: succeeded.") == (
        f"Task 2: succeeded. The whole reply ({len(answer):,} characters) is in task-2.txt.")
    sent_file = wait_until(lambda: next((run for run in bridge.runs(guid) if run["file"]), None), 10,
                           what="the file to be sent")
    path = sent_file["argv"][3]
    assert sent_file["file"] == answer and sent_file["argv"][0] == ""
    assert path.startswith(str(chat_db.path.parent / "m3shd-outgoing")) and path.endswith("/task-2.txt")


def test_commands_strangers_and_tapbacks(commander, spawn_n0d3, chat_db, start_bridge):
    bridge, direct, guid = answering(start_bridge, spawn_n0d3, chat_db, node="kitchen-pi", first="hello")

    for text in ("status", "nodes", "task 1", "cancel 1", "task 99", "budget", "/frobnicate", "cancel it",
                 "budget set 5"):
        chat_db.message(direct, ME, text)
    replies = {}
    for starts in ("1 of 1 nodes active", "kitchen-pi: active", "Task 1: succeeded.\n\necho: hello",
                   "Task 1 has already finished.", "There is no task 99.", "Today: $", "I don't know /frobnicate.",
                   "Usage: cancel N", "The mesh said no"):
        replies[starts] = bridge.wait_reply(guid, starts)
    assert "Running 0, queued 0" in replies["1 of 1 nodes active"]
    cost = commander.api.get_task(1)["cost_usd"]
    assert replies["Today: $"] == (f"Today: ${cost:.2f} spent. "
                                   "No daily caps are set (budget set 5 caps the mesh at $5 a day).")
    assert "`spend:manage`" in replies["The mesh said no"]  # a mobile token reads spend, sets no cap
    assert "0/1 busy, claude-cli" in replies["kitchen-pi: active"]

    stranger_chat, stranger_guid = chat_db.chat([STRANGER])
    chat_db.message(stranger_chat, STRANGER, "cancel 1")
    chat_db.message(direct, ME, "Loved “hello”", associated_type=2000)
    chat_db.message(direct, ME, "nodes")  # a marker: once it is answered, the two above were read
    wait_until(lambda: bridge.sent(guid).count(replies["kitchen-pi: active"]) == 2, 10, what="the second nodes reply")
    assert bridge.sent(stranger_guid) == [] and len(commander.api.list_tasks()) == 1


def test_budget_set_and_spend_by_text_with_a_token_that_may_set_caps(commander, spawn_n0d3, chat_db, start_bridge):
    spawn_n0d3("budget-pi")
    direct, guid = chat_db.chat([ME])
    ops = commander.token("imessage-ops", permissions="tasks:read,tasks:submit,nodes:read,spend:read,spend:manage")
    bridge = start_bridge(M3SHD_CLIENT_TOKEN=ops)
    chat_db.message(direct, ME, "hello")
    bridge.wait_reply(guid, "Task 1: succeeded")
    cost = commander.api.get_task(1)["cost_usd"]
    assert cost
    for text in ("budget set $5", "spend today", "spend week", "spend"):
        chat_db.message(direct, ME, text)
    assert bridge.wait_reply(guid, "The mesh's daily cap") == (
        f"The mesh's daily cap is now $5.00. Today: ${cost:.2f} spent. Caps reset at midnight (UTC):\n"
        f"the mesh: ${cost:.2f} of $5.00 (${5 - cost:.2f} left)")
    assert bridge.wait_reply(guid, "Spend today") == f"Spend today: ${cost:.2f} over 1 run.\ngeneral: ${cost:.2f}"
    day = commander.api.spend("day", 1)["first_day"]
    assert bridge.wait_reply(guid, "Spend over") == f"Spend over the last 7 days: ${cost:.2f} over 1 run.\n{day}: ${cost:.2f}"
    assert bridge.wait_reply(guid, "Usage: spend today")
    assert commander.api.spend_caps()["caps"][0]["cap_usd"] == 5.0



def test_spend_alerts_are_texted_to_the_operator_once_each(commander, spawn_n0d3, chat_db, start_bridge):
    spawn_n0d3("alerts-pi")
    direct, guid = chat_db.chat([ME])
    bridge = start_bridge(M3SHD_BRIDGE_ALERTS_TO="(555) 123-4567")
    chat_db.message(direct, ME, "hello")
    bridge.wait_reply(guid, "Task 1: succeeded")
    cost = commander.api.get_task(1)["cost_usd"]
    commander.api.set_spend_cap("agent", "general", cost * 1.5)  # 67 % spent, but alerts come with spend
    chat_db.message(direct, ME, "again")  # over 100 %: the 50, 80 and 100 % alerts at once
    bridge.wait_reply(guid, "Task 2: succeeded")
    caps = commander.api.spend_caps()
    spent, cap, day = f"${caps['spent_usd']:.2f}", f"${cost * 1.5:.2f}", caps["day"]
    to_me = lambda: [run["argv"][0] for run in bridge.runs("") if run["argv"][2] == ME]
    wait_until(lambda: len(to_me()) >= 3, 20, what="three alerts texted to the operator")
    assert to_me() == [f"m3shd: {threshold}% of the daily cap for agent general. {spent} of {cap} spent on {day}"
                       + ("; new work is held until midnight." if threshold == 100 else ".")
                       for threshold in (50, 80, 100)]
    bridge.process.stop()
    bridge.start()  # a restart replays no alert it already sent
    chat_db.message(direct, ME, "status")
    bridge.wait_reply(guid, "1 of 1 nodes active")
    assert len(to_me()) == 3


def test_a_webhooks_task_waiting_for_approval_is_texted_to_the_operator_whose_yes_starts_it(commander, spawn_n0d3,
                                                                                           chat_db, start_bridge):
    spawn_n0d3("hooks-pi")
    direct, guid = chat_db.chat([ME])
    bridge = start_bridge(M3SHD_BRIDGE_ALERTS_TO=ME)
    rules = [{"event": "down", "task": {"prompt": "{{ event.monitor.name }} is down", "approval_required": True}}]
    secret = commander.api.create_webhook("lab", "uptime-kuma", rules, debounce=0)["secret"]
    sent = requests.post(f"{commander.url}/api/webhooks/uptime-kuma/lab", json=kuma(0),
                         headers={"Authorization": f"Bearer {secret}"}, timeout=15)
    assert sent.status_code == 202, sent.text
    to_me = lambda: [run["argv"][0] for run in bridge.runs("") if run["argv"][2] == ME]
    asked = wait_until(lambda: next((text for text in to_me() if "waits for your approval" in text), None), 20,
                       what="the approval question texted to the operator")
    [task] = commander.api.list_tasks()
    assert task["state"] == "awaiting_approval" and asked == (
        f"Task {task['id']} from webhook:lab waits for your approval:\nhome-assistant is down\n"
        f"Reply yes {task['id']} or no {task['id']}.")
    chat_db.message(direct, ME, f"yes {task['id']}")
    assert bridge.wait_reply(guid, f"Task {task['id']} approved") == f"Task {task['id']} approved: on it."
    wait_until(lambda: f"Task {task['id']}: succeeded.\n\necho: home-assistant is down" in to_me(), 30,
               what="the answer texted to the operator")
    assert commander.api.get_task(task["id"])["decided_by"] == "api token:imessage"

def test_a_text_names_its_agent_with_at_or_ask(commander, spawn_n0d3, chat_db, start_bridge):
    commander.api.put_agent("reviewer", '+++\nname = "reviewer"\ntitle = "Reviewer"\ndescription = "Reviews diffs."\n'
                                        '+++\nYou review diffs.')
    spawn_n0d3()
    direct, guid = chat_db.chat([ME])
    group, group_guid = chat_db.chat([ME, FRIEND], group_id="chat777")
    bridge = start_bridge(groups=[group_guid])

    chat_db.message(direct, ME, "@reviewer check this diff")
    assert bridge.wait_reply(guid, "Task 1") == "Task 1: succeeded.\n\necho: check this diff"
    chat_db.message(group, FRIEND, "@mesh ask reviewer: look again")  # the group's mention first, then the agent
    assert bridge.wait_reply(group_guid, "Task 2") == "Task 2: succeeded.\n\necho: look again"
    chat_db.message(direct, ME, "ask my landlord about the rent")  # no agent called `my`: a plain prompt
    assert bridge.wait_reply(guid, "Task 3") == "Task 3: succeeded.\n\necho: ask my landlord about the rent"
    assert [(t["id"], t["agent"]) for t in commander.api.list_tasks()] == [(3, "general"), (2, "reviewer"),
                                                                         (1, "reviewer")]

    chat_db.message(direct, ME, "@ghost hello")
    unknown = bridge.wait_reply(guid, "there is no agent")  # the shipped bench, and this test's reviewer
    named = unknown.removeprefix("there is no agent named 'ghost'; the agents are: ")
    assert named.endswith(". Send agents for what each one does.")
    assert {"general", "reviewer", "summarizer"} <= set(named.removesuffix(". Send agents for what each one does.")
                                                        .split(", "))
    chat_db.message(direct, ME, "agents")
    bridge.wait_reply(guid, "Start a text with @NAME")  # the bench makes it several texts: one may come later
    wait_until(lambda: "@reviewer: Reviews diffs." in "\n".join(bridge.sent(guid)).splitlines(), 20,
               what="the test's reviewer in the list of agents")
    assert len(commander.api.list_tasks()) == 3


def test_messages_that_arrive_while_it_is_down_are_answered_once_after_a_restart(commander, spawn_n0d3, chat_db, start_bridge):
    bridge, direct, guid = answering(start_bridge, spawn_n0d3, chat_db)
    bridge.process.stop()

    chat_db.message(direct, ME, "second")
    chat_db.message(direct, ME, "third")
    bridge.start()
    bridge.wait_reply(guid, "Task 3: succeeded")
    bridge.wait_reply(guid, "Task 2: succeeded")
    assert sorted(task["prompt"] for task in commander.api.list_tasks()) == ["first", "second", "third"]
    assert [text for text in bridge.sent(guid) if text.startswith("On it")] == [
        "On it: task 1.", "On it: task 2.", "On it: task 3."]


def test_an_answer_that_finishes_while_the_bridge_is_down_is_still_delivered(commander, spawn_n0d3, chat_db, start_bridge):
    direct, guid = chat_db.chat([ME])
    bridge = start_bridge()
    chat_db.message(direct, ME, "[sleep=1] slow one")
    bridge.wait_reply(guid, "On it: task 1.")
    bridge.process.stop()
    spawn_n0d3()
    commander.wait_task(1)
    bridge.start()
    assert bridge.wait_reply(guid, "Task 1") == "Task 1: succeeded.\n\necho: [sleep=1] slow one"


def test_a_bad_token_stops_it_at_start_with_the_fix(commander, chat_db):
    done = Process([sys.executable, "-m", "m3shd", "bridge", "run"],
                   base_env(commander.home) | {"M3SHD_CLIENT_URL": commander.url, "M3SHD_CLIENT_TOKEN": "m3a_wrong",
                                               "M3SHD_BRIDGE_CHAT_DB": str(chat_db.path),
                                               "M3SHD_BRIDGE_ALLOWED_SENDERS": ME},
                   commander.home / "bad-bridge.log")
    assert done.proc.wait(30) == 2
    assert "`m3shd token create imessage-bridge --role mobile` and set [client] token" in done.text()


def test_yes_and_no_answer_the_approvals_waiting_in_this_chat(commander, spawn_n0d3, chat_db, start_bridge):
    # The texter confirms their own texts: the bridge's token approves what it submitted, which the
    # Commander allows only with approver_not_submitter off (see the next test for the default).
    commander.stop()
    commander.env["M3SHD_COMMANDER_APPROVER_NOT_SUBMITTER"] = "off"
    commander.start()
    spawn_n0d3()
    direct, guid = chat_db.chat([ME])
    bridge = start_bridge(M3SHD_BRIDGE_APPROVAL_REQUIRED="true")
    chat_db.message(direct, ME, "no")
    assert bridge.wait_reply(guid, "Nothing") == "Nothing from this chat is waiting for approval."

    chat_db.message(direct, ME, "deploy the docs")
    assert bridge.wait_reply(guid, "Task 1 waits") == \
        "Task 1 waits for your approval: reply yes to run it, or no to drop it."
    assert commander.api.get_task(1)["state"] == "awaiting_approval"
    chat_db.message(direct, ME, "yes")
    assert bridge.wait_reply(guid, "Task 1 approved") == "Task 1 approved: on it."
    assert bridge.wait_reply(guid, "Task 1:") == "Task 1: succeeded.\n\necho: deploy the docs"

    chat_db.message(direct, ME, "rotate the logs")
    chat_db.message(direct, ME, "delete the cache")
    bridge.wait_reply(guid, "Task 3 waits")
    chat_db.message(direct, ME, "yes")
    assert bridge.wait_reply(guid, "Tasks") == "Tasks 2, 3 are waiting. Reply yes N or no N for one of them."
    chat_db.message(direct, ME, "no 3")
    assert bridge.wait_reply(guid, "Task 3 dropped") == "Task 3 dropped."
    chat_db.message(direct, ME, "yes 2")
    assert bridge.wait_reply(guid, "Task 2:") == "Task 2: succeeded.\n\necho: rotate the logs"
    rejected = commander.api.get_task(3)
    assert rejected["state"] == "cancelled" and rejected["decided_by"]
    chat_db.message(direct, ME, "yes 3")
    assert bridge.wait_reply(guid, "Task 3 is not") == "Task 3 is not waiting for approval."
    assert not [text for text in bridge.sent(guid) if text.startswith("Task 3: cancelled")]  # said once, not twice


def test_by_default_an_operator_approves_what_the_bridge_submitted(commander, spawn_n0d3, chat_db, start_bridge):
    """Audit 2, item 12: the bridge's token submits for the texter, so a yes it relays would be the
    submitter approving its own task; an operator approves it, and the record shows both."""
    spawn_n0d3()
    direct, guid = chat_db.chat([ME])
    bridge = start_bridge(M3SHD_BRIDGE_APPROVAL_REQUIRED="true")
    chat_db.message(direct, ME, "deploy the docs")
    assert bridge.wait_reply(guid, "Task 1 waits") == \
        "Task 1 waits for an operator's approval (dashboard or m3shd task approve); reply no to drop it."
    chat_db.message(direct, ME, "yes")
    assert bridge.wait_reply(guid, "Only") == "Only an operator can approve task 1: a yes from a text cannot."
    assert commander.api.get_task(1)["state"] == "awaiting_approval"
    approved = commander.api.approve_task(1)
    assert (approved["submitter"], approved["decided_by"], approved["approver_must_differ"]) == \
        (f"api token:imessage for {ME}", "api token:admin", True)
    assert bridge.wait_reply(guid, "Task 1:") == "Task 1: succeeded.\n\necho: deploy the docs"


def test_a_commander_outage_delays_messages_and_loses_none(commander, spawn_n0d3, chat_db, start_bridge):
    bridge, direct, guid = answering(start_bridge, spawn_n0d3, chat_db, first="before")
    commander.stop()
    chat_db.message(direct, ME, "during")
    wait_until(lambda: "bridge-poller failed (CommanderUnreachable" in bridge.process.text(), 15,
               what="the poller to meet the outage")
    commander.start()
    assert bridge.wait_reply(guid, "Task 2:", timeout=45) == "Task 2: succeeded.\n\necho: during"
    assert [task["prompt"] for task in commander.api.list_tasks()] == ["during", "before"]


def in_process(commander, chat_db) -> daemon.Bridge:
    """The bridge's parts in this process (no threads), reading from the first row, against the live Commander."""
    settings = BridgeSettings(chat_db=str(chat_db.path), state_dir=str(commander.home / "bridge-state"),
                              allowed_senders=(ME,), recheck_delay=0.0)
    state = State(None)
    state.rowid = 0
    return daemon.Bridge(settings, ApiClient(commander.url, commander.token("imessage", role="mobile")), state)


def test_a_task_the_commander_no_longer_knows_is_dropped_not_retried_forever(commander, chat_db):
    bridge = in_process(commander, chat_db)
    bridge.state.track(999, "any;-;+15551234567", ME)
    bridge.follow(999)
    assert bridge.state.thread(999) is None and bridge.outbox.empty()


def test_a_followed_task_that_ends_skipped_gets_its_answer_and_is_forgotten(commander, chat_db):
    """`skipped` is final (m3shd.wire.FINAL_STATES): the bridge once waited on it for ever."""
    bridge = in_process(commander, chat_db)
    pipeline = commander.api.submit_pipeline({"steps": [{"key": "a", "prompt": "first"},
                                                        {"key": "b", "prompt": "then", "depends_on": ["a"]}]})
    first, then = (step["task_id"] for step in pipeline["steps"])
    bridge.state.track(then, "any;-;+15551234567", ME)
    commander.api.cancel_task(first)  # no node: `a` was still queued; `b` needed it, so it is skipped
    assert commander.api.get_task(then)["state"] == "skipped"
    bridge.follow(then)
    assert bridge.outbox.get_nowait().text == f"Task {then}: skipped."
    assert bridge.state.thread(then) is None


def test_images_are_uploaded_heic_as_jpeg_and_the_task_names_them_by_hash(commander, chat_db, monkeypatch):
    """No path on the bridge's Mac reaches the task (a N0D3 elsewhere could not open it): the
    images are stored by the Commander and the task names them by SHA-256."""
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")  # the fake sips
    direct, guid = chat_db.chat([ME])
    bridge = in_process(commander, chat_db)
    state_dir = commander.home / "bridge-state"
    photo, heic = chat_db.received_file("cat.jpeg", JPEG), chat_db.received_file("IMG_0002.HEIC", HEIC)
    message_guid = "MSG-WITH-IMAGES"
    chat_db.message(direct, ME, None, body="\ufffc\ufffc\ufffcwhat are these?", guid=message_guid,
                    attachments=[photo, heic, chat_db.received_file("invoice.jpg", PDF)])
    bridge.poll_once()
    replies = [bridge.outbox.get_nowait().text for _ in range(bridge.outbox.qsize())]
    assert replies == ["I can only take finished JPEG, PNG, GIF, WebP or HEIC images; I left out: "
                       "invoice.jpg (not a JPEG, PNG, GIF, WebP or HEIC image).", "On it: task 1."]
    converted = (state_dir / "images" / message_guid / "IMG_0002.jpg").read_bytes()
    assert converted.startswith(b"\xff\xd8\xff")
    task = commander.api.get_task(1)
    assert task["prompt"] == "what are these?"
    assert task["attachments"] == [
        {"sha256": hashlib.sha256(data).hexdigest(), "media_type": "image/jpeg", "size": len(data)}
        for data in (JPEG, converted)]


def test_images_without_text_still_make_a_task(commander, chat_db):
    direct, _ = chat_db.chat([ME])
    bridge = in_process(commander, chat_db)
    chat_db.message(direct, ME, None, body="\ufffc", attachments=[chat_db.received_file("cat.jpeg", JPEG)])
    bridge.poll_once()
    assert bridge.outbox.get_nowait().text == "On it: task 1."
    task = commander.api.get_task(1)
    assert (task["prompt"], len(task["attachments"])) == (daemon.IMAGES_ONLY, 1)


def test_an_image_the_commander_refuses_is_left_out_and_said_so(commander, chat_db):
    """The Commander's cap is the last word (a HEIC converted here can outgrow the bridge's check)."""
    commander.stop()
    commander.env["M3SHD_COMMANDER_MAX_ATTACHMENT_BYTES"] = str(len(JPEG) - 1)
    commander.start()
    direct, _ = chat_db.chat([ME])
    bridge = in_process(commander, chat_db)
    chat_db.message(direct, ME, None, body="\ufffcwhat is this?", attachments=[chat_db.received_file("cat.jpeg", JPEG)])
    bridge.poll_once()
    replies = [bridge.outbox.get_nowait().text for _ in range(bridge.outbox.qsize())]
    assert replies == [f"I can only take finished JPEG, PNG, GIF, WebP or HEIC images; I left out: cat.jpeg "
                       f"(an attachment may be at most {len(JPEG) - 1:,} bytes; this one is {len(JPEG):,}).",
                       "On it: task 1."]
    assert commander.api.get_task(1)["attachments"] == []


def test_an_image_texted_to_the_bridge_reaches_claude_on_a_n0d3_as_a_file(commander, spawn_n0d3, chat_db,
                                                                          start_bridge):
    claude_log = commander.home / "claude.jsonl"
    spawn_n0d3(env={"FAKE_CLAUDE_LOG": str(claude_log)})
    direct, guid = chat_db.chat([ME])
    bridge = start_bridge()
    chat_db.message(direct, ME, None, body="\ufffcwhat is this?", attachments=[chat_db.received_file("cat.jpeg", JPEG)])
    listed = f"Images for this task, in the working directory:\n- ./image-1.jpeg (image/jpeg, {len(JPEG)} bytes)"
    assert bridge.wait_reply(guid, "Task 1") == f"Task 1: succeeded.\n\necho: what is this?\n\n{listed}"
    [run] = [json.loads(line) for line in claude_log.read_text().splitlines()]
    assert run["files"] == {"image-1.jpeg": hashlib.sha256(JPEG).hexdigest()}  # fetched from the Commander
    assert str(chat_db.path.parent) not in run["prompt"]


def test_an_image_texted_to_the_bridge_reaches_the_messages_api_as_an_image_block(commander, spawn_n0d3, chat_db,
                                                                                  start_bridge):
    server, base_url = anthropic_api.serve()
    try:
        spawn_n0d3("sdk", env={"PATH": str(FAKES.parent / "no-claude-here"), "ANTHROPIC_API_KEY": "test-key",
                               "ANTHROPIC_BASE_URL": base_url, "M3SHD_N0D3_RUNNER": "anthropic-sdk"})
        direct, guid = chat_db.chat([ME])
        bridge = start_bridge()
        chat_db.message(direct, ME, None, body="\ufffcwhat is this?",
                        attachments=[chat_db.received_file("cat.jpeg", JPEG)])
        answer = bridge.wait_reply(guid, "Task 1")
    finally:
        server.shutdown()
    digest = hashlib.sha256(JPEG).hexdigest()
    assert answer == f"Task 1: succeeded.\n\necho: [image image/jpeg {len(JPEG)} bytes sha256 {digest}] what is this?"
    [sent] = [r for r in server.requests if r["path"].startswith("/v1/messages")]
    assert sent["body"]["messages"] == [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                     "data": base64.b64encode(JPEG).decode()}},
        {"type": "text", "text": "what is this?"}]}]


def test_only_the_node_holding_the_lease_may_fetch_a_tasks_image(commander):
    photo = commander.api.upload_attachment(JPEG, "image/jpeg")
    task = commander.api.submit_task("look", attachments=[photo["sha256"]])
    holder = register_node(commander.url, commander.join_token, "holder")
    stranger = register_node(commander.url, commander.join_token, "stranger")
    [lease] = holder.claim(open_slots=1, wait=5)
    assert lease["task_id"] == task["id"] and lease["attachments"] == [photo]
    assert holder.fetch_attachment(photo["sha256"]) == JPEG
    with pytest.raises(CommanderError) as refused:
        stranger.fetch_attachment(photo["sha256"])
    assert (refused.value.status, refused.value.code) == (403, "not_leased")
    with pytest.raises(CommanderError) as unknown:
        holder.fetch_attachment("0" * 64)
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    with pytest.raises(CommanderError) as too_big:
        commander.api.upload_attachment(JPEG + bytes(4_000_000), "image/jpeg")
    assert (too_big.value.status, too_big.value.code) == (413, "attachment_too_large")
    with pytest.raises(CommanderError) as unknown_hash:
        commander.api.submit_task("look", attachments=["1" * 64])
    assert (unknown_hash.value.status, unknown_hash.value.code) == (400, "unknown_attachment")


def test_remember_recall_and_forget_by_text(commander, spawn_n0d3, chat_db, start_bridge):
    spawn_n0d3("memory-pi")
    direct, guid = chat_db.chat([ME])
    bridge = start_bridge()
    chat_db.message(direct, ME, "remember the gate code is 4411")
    reply = bridge.wait_reply(guid, "Remembered")
    [memory] = commander.api.memories("general")
    assert reply == f"Remembered (memory {memory['id']}). Send forget {memory['id']} to drop it."
    assert memory["value"] == "the gate code is 4411"
    chat_db.message(direct, ME, "recall gate code")
    assert bridge.wait_reply(guid, f"{memory['id']}: ") == f"{memory['id']}: the gate code is 4411"
    chat_db.message(direct, ME, "what is the gate code?")  # the next task is given it
    assert "(memory" in bridge.wait_reply(guid, "Task 1: succeeded")
    chat_db.message(direct, ME, f"forget {memory['id']}")
    assert bridge.wait_reply(guid, "Memory ") == f"Memory {memory['id']} forgotten."
    chat_db.message(direct, ME, f"forget {memory['id']}")
    assert bridge.wait_reply(guid, "There is no memory") == f"There is no memory {memory['id']}."
    assert commander.api.memories("general") == []
