"""Compiled queries (commander/db.py) bind their parameters by name, on a real SQLite file."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from commander import keyring
from commander.db import Compiled, CompiledInsert, CompiledUpdate, Param, open_database
from commander.migrations import migrate
from commander.models import QUEUED, Task


@pytest.fixture
def database(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'compiled.db'}")
    migrate(database)
    keyring.ensure(tmp_path)
    database.box = keyring.SecretBox(tmp_path)  # prompts are sealed on the way in
    with database.connection_context():
        yield database
    database.close_all()


def make_tasks(*priorities: int) -> list[int]:
    return [Task.create(prompt=f"task {p}", priority=p, attempt=p % 3).id for p in priorities]


def test_parameters_bind_by_name_whatever_order_they_are_written_or_passed(database):
    a, b, c = make_tasks(1, 5, 9)
    # Priority comes before attempt in the SQL; the call names them the other way round.
    query = Compiled(Task, lambda: Task.select(Task.id).where(
        (Task.priority > Param("low")) & (Task.attempt == Param("attempt")) & (Task.state == QUEUED)))
    assert [row.id for row in query.rows(attempt=2, low=0)] == [b]
    assert [row.id for row in query.rows(low=6, attempt=0)] == [c]
    assert [row.id for row in query.rows(attempt=1, low=0)] == [a]


def test_a_name_may_appear_twice_and_constants_stay_as_written(database):
    make_tasks(1, 5, 9)
    # `around` is bound at both places; QUEUED and the 2 are constants peewee converted.
    window = Compiled(Task, lambda: Task.select(Task.priority).where(
        (Task.priority >= Param("around") - 2) & (Task.priority <= Param("around") + 2) & (Task.state == QUEUED))
        .order_by(Task.priority))
    assert window.tuples(around=4) == [(5,)]
    assert window.tuples(around=8) == [(9,)]
    assert window.tuples(around=3) == [(1,), (5,)]


@pytest.mark.parametrize("values, missing, unexpected", [
    (dict(low=1), ["attempt"], []),
    (dict(low=1, attempt=0, high=3), [], ["high"]),
    (dict(), ["attempt", "low"], []),
])
def test_a_missing_or_unexpected_name_is_a_type_error(database, values, missing, unexpected):
    query = Compiled(Task, lambda: Task.select().where((Task.priority > Param("low")) & (Task.attempt == Param("attempt"))))
    with pytest.raises(TypeError) as refused:
        query.rows(**values)
    assert f"missing {missing}, unexpected {unexpected}" in str(refused.value)


def test_the_check_survives_python_dash_o(tmp_path):
    """The old check was an assert, which `python -O` strips; this one must not be."""
    script = textwrap.dedent(f"""
        import sys
        from commander.db import Compiled, Param, open_database
        from commander.migrations import migrate
        from commander.models import Task
        if __debug__:
            sys.exit("asserts are on: this is not python -O")
        database = open_database("sqlite:///{tmp_path / 'optimised.db'}")
        migrate(database)
        query = Compiled(Task, lambda: Task.select().where(Task.id == Param("task_id")))
        try:
            query.rows(id=1)
        except TypeError as exc:
            print("refused:", exc)
            sys.exit(0)
        sys.exit("bound a wrong name")
    """)
    done = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "refused: Task query takes ['task_id']: missing ['task_id'], unexpected ['id']" in done.stdout


def test_in_lists_keep_one_text_per_length(database):
    ids = make_tasks(1, 2, 3, 4)
    query = Compiled(Task, lambda wanted: Task.select(Task.id).where(
        Task.id.in_(wanted) & (Task.priority >= Param("low"))).order_by(Task.id))
    assert [row.id for row in query.rows(wanted=ids[:2], low=0)] == ids[:2]
    assert [row.id for row in query.rows(wanted=[ids[3], ids[0], ids[2]], low=2)] == [ids[2], ids[3]]
    assert query.rows(wanted=[], low=0) == []  # peewee writes an empty IN as a false condition
    assert [row.id for row in query.rows(wanted=ids[2:], low=0)] == ids[2:]
    assert sorted(shape for _, shape in query._text) == [(0,), (2,), (3,)]
    with pytest.raises(TypeError):
        query.rows(low=0)  # the list is a name too


def test_compiled_update_sets_and_matches_the_same_field_apart(database):
    first, second = make_tasks(1, 2)
    take = CompiledUpdate(Task, ("state", "attempt", "requires"), match=("id", "state"))
    assert take.execute(dict(id=first, state=QUEUED), state="leased", attempt=1, requires=["gpu"]) == 1
    assert take.execute(dict(id=first, state=QUEUED), state="leased", attempt=2, requires=[]) == 0  # fenced
    row = Task.get_by_id(first)
    assert (row.state, row.attempt, row.requires) == ("leased", 1, ["gpu"])  # values through db_value
    assert Task.get_by_id(second).state == QUEUED
    with pytest.raises(TypeError):
        take.execute(dict(id=second, state=QUEUED), state="leased", attempt=1)
    with pytest.raises(TypeError):
        take.execute(dict(id=second), state="leased", attempt=1, requires=[])


def test_compiled_insert_creates_as_peewee_would(database):
    insert = CompiledInsert(Task)
    row = insert.create(prompt="compiled", requires=["b", "a"])
    stored = Task.get_by_id(row.id)
    assert (stored.prompt, stored.requires, stored.state, stored.max_attempts) == ("compiled", ["b", "a"], QUEUED, 3)


@pytest.mark.parametrize("count", [0, 1, Compiled.CHUNK - 1, Compiled.CHUNK, Compiled.CHUNK + 1, 2 * Compiled.CHUNK + 7])
def test_an_in_list_of_any_length_is_asked_in_padded_chunks_of_one_text(database, count):
    ids = make_tasks(*range(count))
    query = Compiled(Task, lambda ids: Task.select(Task.id, Task.priority).where(
        Task.id.in_(ids) & (Task.priority >= Param("low"))))
    found = query.tuples_among("ids", ids + [10**6], low=3)  # an id no task has is no row
    assert sorted(found) == [(task_id, p) for task_id, p in zip(ids, range(count)) if p >= 3]
    assert {shape for _, shape in query._text} == {(Compiled.CHUNK,)}  # one text, however many ids
