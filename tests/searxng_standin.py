"""A loopback SearXNG instance for the web tools' tests: it speaks SearXNG's JSON search API
(GET /search?q=…&format=json: {"query", "number_of_results", "results": [{"title", "url",
"content", "engine", …}]}; without format=json it answers 403, as an instance whose settings do
not list json does); Brave Search's web search API too (GET /res/v1/web/search?q=…&count=N with
the key BRAVE_KEY in X-Subscription-Token, else 401: {"web": {"results": [{"title", "url",
"description"}]}}); and serves pages for fetch_url: /page.html (HTML with a script and a
style), /redirect?to=URL (302), /big.txt. Every request is recorded as (path, query)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BRAVE_KEY = "brave-test-key"
PAGE = b"""<!doctype html><html><head><title>Pi 5 power</title><style>body{color:red}</style>
<script>var secret = "not text";</script></head><body><h1>Power</h1><p>The Pi 5 wants 5 V at 5 A.</p>
<nav>menu</nav></body></html>"""


class SearxNG:
    def __init__(self):
        self.requests: list[tuple[str, dict]] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                query = {key: values[0] for key, values in parse_qs(parts.query).items()}
                standin.requests.append((parts.path, query))
                if parts.path == "/search":
                    if query.get("format") != "json":
                        return self.answer(403, b"Forbidden", "text/html")
                    found = [{"title": f"Result {n} for {query.get('q', '')}", "url": f"https://example.org/{n}",
                              "content": f"snippet {n}", "engine": "duckduckgo", "score": 1.0 / n} for n in (1, 2, 3)]
                    body = {"query": query.get("q", ""), "number_of_results": len(found), "results": found,
                            "answers": [], "suggestions": [], "unresponsive_engines": []}
                    return self.answer(200, json.dumps(body).encode(), "application/json")
                if parts.path == "/res/v1/web/search":
                    if self.headers.get("X-Subscription-Token") != BRAVE_KEY:
                        return self.answer(401, b'{"type":"ErrorResponse"}', "application/json")
                    found = [{"title": f"Brave {n}: {query.get('q', '')}", "url": f"https://brave.example/{n}",
                              "description": f"about {n}", "type": "search_result"}
                             for n in range(1, int(query.get("count", "20")) + 1)]
                    body = {"type": "search", "query": {"original": query.get("q", "")}, "web": {"results": found}}
                    return self.answer(200, json.dumps(body).encode(), "application/json")
                if parts.path == "/page.html":
                    return self.answer(200, PAGE, "text/html; charset=utf-8")
                if parts.path == "/big.txt":
                    return self.answer(200, b"x" * 100_000, "text/plain")
                if parts.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", query["to"])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return self.answer(404, b"not found", "text/plain")

            def answer(self, status: int, body: bytes, kind: str):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
