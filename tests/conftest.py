"""Fixtures for every tier.

In process (tests/commander/ and the like): `app`, the Commander's Flask app on a SQLite file
under tmp_path with no background threads, its `client`, and `bearer` for a token's header.
Real processes (tests/e2e/): `commander`, `cmd` (one per module) and `spawn_n0d3`, started by
harness.py, which the benchmarks share.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ROOT, Commander, N0D3


def pytest_addoption(parser):
    parser.addoption("--tls", action="store_true",
                     help="every Commander the harness starts serves HTTPS from a mesh CA, and every client pins it")


def pytest_configure(config):
    if config.getoption("--tls"):
        os.environ["M3SHD_TEST_TLS"] = "1"  # read by harness.tls_by_default, in this process only


# --- in process ------------------------------------------------------------------------------

@pytest.fixture
def make_app(tmp_path, monkeypatch):
    """`make_app(**settings)`: the Commander as create_app builds it, on a fresh SQLite file in
    tmp_path, with those settings changed. No background threads: a claim answers at once
    instead of long-polling, and nothing is reaped by itself."""
    from commander import create_app
    from commander.settings import CommanderSettings
    from m3shd import config

    for name in [name for name in os.environ if name.startswith("M3SHD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("M3SHD_CONFIG_DIR", str(tmp_path / "conf"))  # no /etc/m3shd, no ~/.config
    built = []

    def make(**settings):
        built.append(create_app(config.load(CommanderSettings, data_dir=str(tmp_path / "data" / "commander"), **settings),
                                background=False))
        return built[-1]

    yield make
    for application in built:
        database = application.extensions["m3shd"].db
        getattr(database, "close_all", database.close)()


@pytest.fixture
def app(make_app):
    """The Commander's app with its default settings (see make_app)."""
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def bearer(app):
    """`bearer(role="admin")` or `bearer(permissions=[...])`: the Authorization header of a new
    API token, made in process as `m3shd token create --local` makes it."""
    from commander import tokens

    cmdr = app.extensions["m3shd"]

    def make(role: str | None = "admin", permissions: list[str] | None = None) -> dict:
        with cmdr.db.connection_context(), cmdr.writing(wake=False):
            _, secret = tokens.create("test", actor="test", permissions=permissions, role=role)
        return {"Authorization": f"Bearer {secret}"}

    return make


# --- real processes --------------------------------------------------------------------------

@pytest.fixture
def commander(tmp_path):
    started = Commander(tmp_path)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def cmd(tmp_path_factory, request):
    """One Commander for a whole module whose tests each make their own tasks, tokens and users."""
    started = Commander(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2].removeprefix("test_")))
    yield started
    started.stop()


@pytest.fixture
def spawn_n0d3(commander):
    started: list[N0D3] = []

    def spawn(name: str = "alpha", slots: int = 1, env: dict | None = None, wait: bool = True) -> N0D3:
        node = N0D3(commander, name, slots, env)
        started.append(node)
        if wait:
            node.wait_registered()
        return node

    yield spawn
    for node in started:
        node.process.stop()


@pytest.fixture(scope="session")
def m3shd_wheel(tmp_path_factory) -> Path:
    """This checkout as a wheel, built once per run (the image tiers ship it)."""
    dest = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest),
                    str(ROOT)], check=True, capture_output=True)
    return next(dest.glob("m3shd-*.whl"))
