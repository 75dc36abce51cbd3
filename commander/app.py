"""The Flask app factory: one Commander per app, no module-level state."""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask, request
from werkzeug.exceptions import LengthRequired

from commander import accounts, agents, events, holds, intake, keyring, leases, memory, nodes, outcomes, pipelines
from commander import pki, planning, plugins, rekey, spend, tasks, webhooks
from commander.agents import api as agents_api
from commander.memory import api as memory_api
from commander.plugins import api as plugins_api
from commander.spend import api as spend_api
from commander.webhooks import api as webhooks_api
from commander.api import accounts as accounts_api, attachments as attachments_api, audit as audit_api
from commander.api import credentials as credentials_api
from commander.api import events as events_api
from commander.api import meta, nodes as nodes_api, pending as pending_api, pipelines as pipelines_api
from commander.api import permissions as permissions_api, pki as pki_api, tasks as tasks_api, tokens as tokens_api
from commander.context import Commander
from commander.db import WriteTurns, is_sqlite, open_database
from commander.errors import register_error_handlers
from commander.migrations import current_version, migrate
from commander.models import Nonce
from commander.routes import IdConverter
from commander.settings import CommanderSettings
from commander.wake import Dispatcher, Notifier, run_dir_for
from commander.web import site, views as dashboard
from m3shd import config, wire

log = logging.getLogger("m3shd.commander")

# What hangs on the task_finished and attempt_ended signals (commander/signals.py), in the
# order their receivers run: the final state's event first, then what follows from it. Agents
# connect nothing: their init loads the profile files; nor do webhooks (a delivery starts its work).
FEATURES = (events, outcomes, spend, memory, pipelines, agents, webhooks, plugins)

BLUEPRINTS = (meta.bp, nodes_api.bp, pending_api.bp, tasks_api.bp, pipelines_api.bp, events_api.bp, tokens_api.bp,
              permissions_api.bp, accounts_api.bp, audit_api.bp, agents_api.bp, attachments_api.bp, pki_api.bp,
              spend_api.bp, webhooks_api.bp, credentials_api.bp, memory_api.bp, plugins_api.bp)


def build_commander(settings: CommanderSettings) -> Commander:
    """Open the database (migrated to the latest schema) and the secrets, and wire each feature
    to the signals; start no threads."""
    tasks.approval_rule(settings)  # a bad value stops the start, before anything is opened
    database = open_database(settings.database_url, settings.db_pool_size, settings.db_pool_wait)
    migrate(database)
    schema_version = current_version(database)
    database.close()  # no request or thread inherits this one
    keyring.ensure(settings.data_dir)
    box = database.box = keyring.SecretBox(settings.data_dir)  # SealedTextField columns use it
    run_dir = run_dir_for(settings.data_dir)
    cmdr = Commander(settings=settings, db=database, box=box, notifier=Notifier(run_dir),
                     write_turns=WriteTurns(run_dir / "write.lock") if is_sqlite(database) else None,
                     schema_version=schema_version)
    for feature in FEATURES:
        feature.init(cmdr)
    rekey.finish_sealing(cmdr)  # once, after an upgrade from a version that kept prompts in clear
    return cmdr


def create_app(settings: CommanderSettings | None = None, background: bool = True) -> Flask:
    """The Commander as a WSGI app. Its background threads (wake socket, dispatcher, reaper)
    start with the first request, in each worker; `background=False` leaves them out for
    in-process use, where a claim then answers at once instead of long-polling."""
    settings = settings or config.load(CommanderSettings)
    cmdr = build_commander(settings)
    app = Flask("commander", static_folder=None)  # the dashboard serves its own files (web/views.py)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions["m3shd"] = cmdr
    app.wsgi_app = intake.ClientAddress(app.wsgi_app, intake.networks(settings.trusted_proxies))
    host_names = intake.own_names(settings)
    app.url_map.converters["id"] = IdConverter
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint, url_prefix="/api")
    app.register_blueprint(dashboard.bp)
    register_error_handlers(app, page=site.error_page)

    @app.before_request
    def before():
        # No database connection is taken here: the first query takes one (see intake.py).
        intake.check_host(host_names)
        intake.check_origin()
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            # Without a length the size limit cannot be enforced up front; our clients always send one.
            raise LengthRequired("send Content-Length; chunked request bodies are not accepted")
        intake.check_length(app, settings)
        intake.read_body(settings.body_timeout)
        if background:
            cmdr.ensure_started(start_background)

    @app.teardown_request
    def after(_exc):
        if not cmdr.db.is_closed():
            cmdr.db.close()

    return app


def start_background(cmdr: Commander) -> None:
    """Per worker process: the wake socket, the claim dispatcher, the reaper, and each feature's
    own threads (its `start(cmdr)`, if it has one)."""
    cmdr.notifier.start()

    def claim(node_id, token_id, open_slots, task_ids):
        with cmdr.db.connection_context():
            return leases.claim(cmdr, node_id, open_slots, task_ids, token_id=token_id)

    def choose(waiting):
        with cmdr.db.connection_context():
            return planning.who_should_claim(time.time(), cmdr.settings, waiting, cmdr.ranking)

    def waiting_in_vain(waiting):
        with cmdr.db.connection_context():
            return leases.waiting_in_vain(waiting, time.time())

    cmdr.dispatcher = Dispatcher(cmdr.notifier, claim, choose, waiting_in_vain)
    cmdr.dispatcher.start()
    threading.Thread(target=reap_forever, args=(cmdr,), name="reaper", daemon=True).start()
    pki.start_renewal(cmdr)
    for feature in FEATURES:
        if hasattr(feature, "start"):
            feature.start(cmdr)


def reap_forever(cmdr: Commander, every: float = 1.0) -> None:
    """Lost nodes and expired leases, once a second, in one worker at a time."""
    cmdr.run_alone("reaper", lambda: reap_once(cmdr), every, cap=5 * every)


def reap_once(cmdr: Commander) -> None:
    nodes.mark_lost(cmdr)
    leases.expire(cmdr)
    nodes.enforce_drain_deadlines(cmdr)
    tasks.expire_approvals(cmdr)
    holds.lapse(cmdr)
    Nonce.delete().where(Nonce.seen_at < time.time() - 2 * wire.MAX_SKEW_S).execute()
    accounts.purge_expired()
