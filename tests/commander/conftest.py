"""The Commander of the `app` fixture (tests/conftest.py), with a database connection open, for
tests that call its services directly (helpers in tests/commander/mesh.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def cmdr(app):
    commander = app.extensions["m3shd"]
    with commander.db.connection_context():
        yield commander
