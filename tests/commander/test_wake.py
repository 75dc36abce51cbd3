"""Cross-process wake-ups: a commit in one worker wakes waiters in another."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

from commander.wake import Dispatcher, Notifier, run_dir_for
from harness import wait_until


def test_a_notify_from_another_process_wakes_this_one(tmp_path):
    notifier = Notifier(run_dir_for(str(tmp_path)))
    notifier.start()
    try:
        generation = notifier.generation
        script = ("import sys; from pathlib import Path; from commander.wake import Notifier; "
                  "Notifier(Path(sys.argv[1])).notify()")
        subprocess.run([sys.executable, "-c", script, str(notifier.run_dir)], check=True, timeout=30)
        # Generous bound: this asserts that the wake arrives at all, not how fast (see bench/).
        assert notifier.wait(generation, timeout=20) != generation
    finally:
        notifier.stop()


def test_stale_sockets_of_dead_workers_are_cleaned_up(tmp_path):
    run_dir = run_dir_for(str(tmp_path))
    dead = run_dir / "wake-999999.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(dead))
    sock.close()  # bound then closed: the path stays, nobody listens
    Notifier(run_dir).notify()
    assert not dead.exists()


def test_a_long_data_dir_gets_a_short_socket_dir(tmp_path):
    deep = tmp_path / ("x" * 120)
    run_dir = run_dir_for(str(deep))
    assert len(str(run_dir / "wake-4194304.sock")) <= 100
    assert run_dir_for(str(deep)) == run_dir  # stable for every worker of one Commander


def test_wait_times_out_without_a_notify(tmp_path):
    notifier = Notifier(run_dir_for(str(tmp_path)))
    started = time.monotonic()
    assert notifier.wait(notifier.generation, timeout=0.2) == notifier.generation
    assert time.monotonic() - started >= 0.2


def test_only_a_change_that_may_give_work_wakes_the_dispatchers_of_other_workers(tmp_path):
    notifier = Notifier(run_dir_for(str(tmp_path)))
    notifier.start()
    script = ("import sys; from pathlib import Path; from commander.wake import Notifier; "
              "Notifier(Path(sys.argv[1])).notify(work=sys.argv[2] == 'work')")
    try:
        for kind, wakes_dispatcher in (("lease", False), ("work", True)):
            generation, work_generation = notifier.generation, notifier.work_generation
            subprocess.run([sys.executable, "-c", script, str(notifier.run_dir), kind], check=True, timeout=30)
            assert notifier.wait(generation, timeout=20) != generation  # followers always wake
            assert (notifier.work_generation != work_generation) is wakes_dispatcher, kind
    finally:
        notifier.stop()


def dispatcher_for(notifier, claimed, leases_for):
    """A Dispatcher whose plan gives nothing here (its work comes by hand-off) and whose claims
    are recorded in `claimed` and answered by `leases_for(task_ids)`."""
    from commander.planning import Handout

    def claim(node_id, token_id, open_slots, task_ids):
        claimed.append((node_id, task_ids))
        return leases_for(task_ids)

    return Dispatcher(notifier, claim, lambda waiting: Handout({}, {}, None), lambda waiting: [])


def hand_off_from_another_process(run_dir, node_id, task_ids):
    script = ("import sys, json; from pathlib import Path; from commander.wake import Notifier; "
              "Notifier(Path(sys.argv[1])).hand_off(int(sys.argv[2]), json.loads(sys.argv[3]))")
    subprocess.run([sys.executable, "-c", script, str(run_dir), str(node_id), json.dumps(task_ids)],
                   check=True, timeout=30)


def test_a_task_handed_off_by_another_worker_is_claimed_for_the_node_waiting_here(tmp_path):
    notifier = Notifier(run_dir_for(str(tmp_path)))
    notifier.start()
    claimed = []
    dispatcher = dispatcher_for(notifier, claimed, lambda task_ids: [{"task_id": task_ids[0]}])
    try:
        answer = []
        waiting = threading.Thread(target=lambda: answer.extend(dispatcher.wait_for_work(7, 70, 1, timeout=20)))
        waiting.start()
        wait_until(lambda: 7 in dispatcher._waiters, 10, what="node 7 to wait")
        hand_off_from_another_process(notifier.run_dir, 8, [41])  # a node not waiting here: ignored
        hand_off_from_another_process(notifier.run_dir, 7, [42, 43])
        waiting.join(20)
        assert answer == [{"task_id": 42}]
        assert claimed == [(7, [42, 43])]
    finally:
        notifier.stop()


def test_a_hand_off_another_node_was_quicker_to_leaves_the_node_waiting(tmp_path):
    notifier = Notifier(run_dir_for(str(tmp_path)))
    notifier.start()
    claimed = []
    dispatcher = dispatcher_for(notifier, claimed, lambda task_ids: [])
    try:
        started = time.monotonic()
        answer = []
        waiting = threading.Thread(target=lambda: answer.append(dispatcher.wait_for_work(7, 70, 1, timeout=1.5)))
        waiting.start()
        wait_until(lambda: 7 in dispatcher._waiters, 10, what="node 7 to wait")
        # From a second socket in this process: a new interpreter can take longer than the wait to start.
        Notifier(notifier.run_dir).hand_off(7, [42])
        wait_until(lambda: claimed, 10, what="the handed-off claim")
        waiting.join(20)
        assert answer == [[]]
        assert time.monotonic() - started >= 1.5  # its long-poll ran its course, not cut short
    finally:
        notifier.stop()


def test_a_newer_claim_that_comes_while_the_older_is_claimed_for_takes_its_place(tmp_path):
    """The older claim's hand-off finds nothing, and it does not go back in line ahead of the newer."""
    notifier = Notifier(run_dir_for(str(tmp_path)))
    trying, done = threading.Event(), threading.Event()

    def nothing_once_the_newer_waits(task_ids):
        trying.set()
        done.wait(10)
        return []  # another node was quicker

    dispatcher = dispatcher_for(notifier, [], nothing_once_the_newer_waits)
    answers = {}
    older = threading.Thread(target=lambda: answers.update(older=dispatcher.wait_for_work(7, 70, 1, timeout=20)))
    older.start()
    wait_until(lambda: 7 in dispatcher._waiters, 10, what="the older claim to wait")
    dispatcher._take_handoff(7, [42])
    wait_until(trying.is_set, 10, what="the claim for the older")
    newer = threading.Thread(target=lambda: answers.update(newer=dispatcher.wait_for_work(7, 71, 1, timeout=20)))
    newer.start()
    wait_until(lambda: 7 in dispatcher._waiters, 10, what="the newer claim to wait")
    done.set()
    older.join(20)
    assert answers == {"older": None}  # ended: the newer one waits for the node
    assert dispatcher._waiters[7].token_id == 71
    dispatcher._release(dispatcher._waiters[7], [])
    newer.join(20)
    assert answers == {"older": None, "newer": []}


def test_a_malformed_datagram_does_not_end_the_wake_listener(tmp_path, caplog):
    notifier = Notifier(run_dir_for(str(tmp_path)))
    handed = []
    notifier.on_handoff = lambda node_id, task_ids: handed.append((node_id, task_ids))
    notifier.start()
    try:
        with caplog.at_level("ERROR", logger="m3shd.commander"), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stranger:
            for junk in (b"h", b"hseven:1", b"h7:1,x", b"h\xff\xfe:1"):
                stranger.sendto(junk, str(notifier._own))
            stranger.sendto(b"h7:42", str(notifier._own))
            wait_until(lambda: handed, 10, what="the well-formed hand-off after the junk")
            generation = notifier.generation
            Notifier(notifier.run_dir).notify()
            assert notifier.wait(generation, timeout=20) != generation  # still listening
        assert handed == [(7, [42])]
        # Four bad datagrams, two distinct failures: each said once, with its traceback.
        tracebacks = [r for r in caplog.records if r.exc_info]
        assert all(r.getMessage().startswith("wake-listener failed") for r in tracebacks)
        assert sorted(r.exc_info[0].__name__ for r in tracebacks) == ["UnicodeDecodeError", "ValueError"]
    finally:
        notifier.stop()
