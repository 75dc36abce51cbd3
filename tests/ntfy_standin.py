"""A loopback ntfy topic server for the spend alert tests: it speaks ntfy's publish API (POST a
message to the topic's URL, with Title, Priority and Tags headers), records each request as
(path, headers, body) and answers `status` (200 with a message's JSON, or an error)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Ntfy:
    def __init__(self):
        self.requests, self.status = [], 200
        ntfy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ntfy.requests.append((self.path, dict(self.headers), body.decode()))
                reply = b'{"id":"x1","event":"message"}' if ntfy.status == 200 else b'{"error":"boom"}'
                self.send_response(ntfy.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/mesh-spend"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
