"""Cross-process wake-ups: a commit in one worker wakes waiters in another."""

from __future__ import annotations

import subprocess
import sys
import time

from commander.wake import Notifier, run_dir_for


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
    import socket

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
