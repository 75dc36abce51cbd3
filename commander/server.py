"""Run the Commander under gunicorn.

Worker class: gevent. Every connected N0D3 holds a long-poll open and every dashboard an SSE
stream, so most connections sit idle; a greenlet per connection costs kilobytes where a
thread costs a stack, and one worker per core serves thousands of them. (sync workers would
need a process per waiting node; gthread a thread each, bounded by `threads`.)
"""

from __future__ import annotations

import functools
import gc
import logging

from gunicorn.app.base import BaseApplication

from commander import discovery, pki
from commander.app import build_commander, create_app
from commander.leases import grace_after_restart
from commander.settings import CommanderSettings


class CommanderServer(BaseApplication):
    def __init__(self, settings: CommanderSettings, tls: tuple[str, str] | None = None):
        self.settings = settings
        self.tls = tls  # (certfile, keyfile), from pki.prepare
        self.advertiser = None
        super().__init__()

    def load_config(self):
        settings = self.settings
        options = {
            "bind": settings.bind,
            "workers": settings.workers,
            "worker_class": "gevent",
            "worker_connections": 4000,
            "keepalive": 75,            # nodes reuse their connection between requests
            # gunicorn's most: a search's `q` (memory) percent-encoded; a longer line gets gunicorn's
            # own 400, which is not our JSON error.
            "limit_request_line": 8190,
            "timeout": 60,
            "graceful_timeout": 5,       # idle keep-alive connections would hold a stop this long
            "loglevel": settings.log_level,
            "errorlog": "-",
            "proc_name": "m3shd-commander",
            "on_starting": self.on_starting,
            "on_exit": lambda _arbiter: discovery.stop(self.advertiser),
        }
        if self.tls:
            options |= {"certfile": self.tls[0], "keyfile": self.tls[1], "ssl_context": self.ssl_context}
        for key, value in options.items():
            self.cfg.set(key, value)

    def ssl_context(self, _conf, default_context):
        """Per worker, once: gunicorn's context (its certificate and key), kept on the newest
        certificate file by a Reloader (commander/pki.py says why not restarting workers)."""
        context = default_context()
        # The handshake then happens in gunicorn's request handler, not in gevent's accept: a
        # client that fails it (plain HTTP, or refusing our certificate) costs one debug line, as
        # in gunicorn's other workers, instead of a traceback in the error log.
        context.wrap_socket = functools.partial(context.wrap_socket, do_handshake_on_connect=False)
        pki.Reloader(context, *self.tls).start(min(5.0, pki.check_every(self.settings)))
        return context

    def on_starting(self, _arbiter):
        # Once, in the master, before any worker: migrate, then give leases a fresh term
        # because nobody could heartbeat while the Commander was down.
        cmdr = build_commander(self.settings)
        with cmdr.db.connection_context():
            grace_after_restart(cmdr)
        getattr(cmdr.db, "close_all", cmdr.db.close)()  # no connection may cross the fork
        self.advertiser = discovery.start(self.settings)

    def load(self):
        configure_logging(self.settings)
        app = create_app(self.settings)
        settle_garbage_collector()
        return app


def settle_garbage_collector() -> None:
    """Per worker, once its app is built. A full collection walks every object the worker holds,
    and with a thousand nodes connected (a greenlet, socket and parser each) it took 20-65 ms,
    during which no request in the worker moved: that was the tail of submit → claim at 1,000
    nodes. Reference counting frees nearly all our garbage (each collection found at most a few
    hundred cyclic objects), so what exists at startup is frozen out of collection, young
    collections run 14 times less often and full ones far less."""
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def configure_logging(settings: CommanderSettings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s commander %(levelname)s %(message)s")


def serve(settings: CommanderSettings) -> None:
    configure_logging(settings)  # in the master too: what pki.prepare says about the certificate
    CommanderServer(settings, pki.prepare(settings)).run()
