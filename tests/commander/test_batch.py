"""Group commit (commander/batch.py): writes queued while one batch runs share the next
transaction; each keeps its own result, and one that raises rolls back alone.

Real threads on a real SQLite file: the first write holds its batch open until every other
writer has queued, so the second batch is known to hold all of them."""

from __future__ import annotations

import threading

import pytest

from commander.models import Event


def publish(cmdr, kind: str):
    return lambda: Event.create(kind=kind, data={}).id


def test_a_lone_write_is_a_batch_of_one_and_commits(cmdr):
    event_id = cmdr.small_writes.run(publish(cmdr, "alone"))
    cmdr.db.close()  # another connection sees it: it committed
    assert Event.get_by_id(event_id).kind == "alone"


def test_writes_queued_meanwhile_share_one_transaction_and_a_failure_stays_its_own(cmdr):
    turns = []
    real_turn = cmdr.write_turn

    def counted_turn():
        turns.append(threading.get_ident())
        return real_turn()

    cmdr.write_turn = counted_turn
    first_running, others_queued = threading.Event(), threading.Event()

    def first():
        first_running.set()
        assert others_queued.wait(10)
        return Event.create(kind="first", data={}).id

    def broken():
        Event.create(kind="broken", data={})
        raise ValueError("this write fails")

    results, errors = {}, {}

    def writer(name, work):
        try:
            results[name] = cmdr.small_writes.run(work)
        except ValueError as exc:
            errors[name] = str(exc)
        finally:
            cmdr.db.close()

    leader = threading.Thread(target=writer, args=("first", first))
    leader.start()
    assert first_running.wait(10)
    works = {f"w{i}": publish(cmdr, f"w{i}") for i in range(8)} | {"broken": broken}
    threads = [threading.Thread(target=writer, args=item) for item in works.items()]
    for thread in threads:
        thread.start()
    # Every writer has queued behind the running batch.
    while len(cmdr.small_writes._queue) < len(works):
        threading.Event().wait(0.01)
    others_queued.set()
    for thread in [leader, *threads]:
        thread.join(10)

    assert len(turns) == 2, "the first batch, then one for the nine queued meanwhile"
    assert errors == {"broken": "this write fails"}
    assert sorted(results) == ["first", *sorted(f"w{i}" for i in range(8))]
    kinds = {e.kind for e in Event.select().where(Event.id.in_(list(results.values())))}
    assert kinds == {"first", *(f"w{i}" for i in range(8))}
    assert not Event.select().where(Event.kind == "broken").exists()  # its savepoint rolled back


def test_a_failed_commit_fails_every_write_of_its_batch(cmdr, monkeypatch):
    def no_writing(wake=True):
        raise RuntimeError("disk full")

    monkeypatch.setattr(cmdr, "writing", no_writing)
    with pytest.raises(RuntimeError, match="disk full"):
        cmdr.small_writes.run(publish(cmdr, "lost"))
    assert not Event.select().where(Event.kind == "lost").exists()
    assert not cmdr.small_writes._leading  # the next write leads again
