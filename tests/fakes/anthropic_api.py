"""A loopback stand-in for the Anthropic Messages API (POST /v1/messages).

It checks requests as the real API does (the key as x-api-key or a bearer token,
anthropic-version, the body) and answers "echo: <last user text>", whole or as the
real SSE event sequence. Image blocks are checked as the real API checks them (base64 source,
one of its four media types, bytes that are that type, at most 5 MB of base64) and the answer
names each: "echo: [image image/png 68 bytes sha256 ab12…] <text>". A "[sleep=N]" directive in the prompt delays the answer,
and for streams each chunk, so cancellation can be observed; "[overloaded]" makes a
stream end in an overloaded_error event after its first chunk, as the real API can.
"[pause=N]", when the request offers the web search server tool, makes the first N answers
a web search that pauses the turn (stop_reason pause_turn, with the server_tool_use and
web_search_tool_result blocks the real API sends); each request that sends such an answer
back as the assistant's turn moves it on, and the N+1th is the echo.
A tool round of the [TOOL_CALL] loop (m3shd/tool_calls.py) must continue the conversation: a
last user turn that is a [TOOL_RESULT] is refused (400) unless the turn before it is the
assistant's answer with the [TOOL_CALL] it answers. When the first user turn has
"[repeat-call]", every tool round's answer repeats the first answer (and its call).
Every request is recorded on `server.requests` (headers without the key, and the
body) for assertions, and the key it carried on `server.keys`.

    python tests/fakes/anthropic_api.py [--port N] [--api-key KEY]   # prints the base URL
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET_HEADERS = {"x-api-key", "authorization"}
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
MAX_IMAGE_BASE64 = 5 * 1024 * 1024
MAGIC = {"image/jpeg": (b"\xff\xd8\xff",), "image/png": (b"\x89PNG\r\n\x1a\n",), "image/gif": (b"GIF87a", b"GIF89a"),
         "image/webp": (b"RIFF",)}


class FakeAnthropicServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, api_key: str):
        super().__init__(address, _Handler)
        self.api_key = api_key
        self.requests: list[dict] = []
        self.keys: list[str | None] = []


def serve(port: int = 0, api_key: str = "test-key") -> tuple[FakeAnthropicServer, str]:
    """Start the fake on 127.0.0.1 in a daemon thread; stop it with server.shutdown()."""
    server = FakeAnthropicServer(("127.0.0.1", port), api_key)
    # A short poll interval keeps shutdown() quick.
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _user_text(messages: list) -> str:
    """The last user message's text, each image block in it named where it stands."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message)
    return ""


def _text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") if b["type"] == "text" else _describe_image(b["source"])
                   for b in content if b["type"] in ("text", "image"))


def _tool_round(messages: list) -> str | None:
    """None, or why this request is no proper tool round (see the module's docstring)."""
    if not _user_text(messages).startswith("[TOOL_RESULT]"):
        return None
    if len(messages) < 2 or messages[-2]["role"] != "assistant" or "[TOOL_CALL]" not in _text(messages[-2]):
        return "fake: a [TOOL_RESULT] must follow the assistant turn with the [TOOL_CALL] it answers"
    return None


# The server tools the real API knows (anthropic 2.15's types); any other typed tool is refused.
SERVER_TOOL_TYPES = {"web_search_20250305", "web_search_20260209", "web_search_20260318", "web_fetch_20250910",
                     "web_fetch_20260209", "web_fetch_20260309", "web_fetch_20260318"}


def _describe_image(source: dict) -> str:
    data = base64.b64decode(source["data"])
    return f"[image {source['media_type']} {len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()}] "


def _image_problem(where: str, block: dict) -> str | None:
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64":
        return f"{where}.source: this stand-in takes only base64 image sources"
    if source.get("media_type") not in IMAGE_TYPES:
        return (f"{where}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' "
                "or 'image/webp'")
    data = source.get("data")
    if not isinstance(data, str):
        return f"{where}.source.base64.data: Input should be a valid string"
    if len(data) > MAX_IMAGE_BASE64:
        return f"{where}.source.base64: image exceeds 5 MB maximum: {len(data)} bytes > {MAX_IMAGE_BASE64} bytes"
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error:
        return f"{where}.source.base64.data: invalid base64 data"
    if not raw.startswith(MAGIC[source["media_type"]]):
        return f"{where}.source.base64.data: Image does not match the provided media type {source['media_type']}"
    return None


def _validate(body) -> str | None:
    """The first thing wrong with a request body, worded like the real API, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return f"{name}: Field required"
    if not isinstance(body["model"], str) or not body["model"]:
        return "model: Input should be a valid string"
    if not isinstance(body["max_tokens"], int) or isinstance(body["max_tokens"], bool):
        return "max_tokens: Input should be a valid integer"
    if body["max_tokens"] < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = message.get("content")
        if not isinstance(content, (str, list)):
            return f"messages.{i}.content: Input should be a valid string or list"
        if isinstance(content, list) and not all(isinstance(b, dict) and "type" in b
                                                 for b in content):
            return f"messages.{i}.content: each block needs a type"
        for j, block in enumerate(content if isinstance(content, list) else ()):
            if block["type"] == "image" and (problem := _image_problem(f"messages.{i}.content.{j}.image", block)):
                return problem
    system = body.get("system", "")
    if not isinstance(system, (str, list)):
        return "system: Input should be a valid string or list of text blocks"
    for i, tool in enumerate(body.get("tools", [])):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            return f"tools.{i}.name: Field required"
        if "type" in tool and tool["type"] not in SERVER_TOOL_TYPES | {"custom"}:
            return f"tools.{i}: Input tag '{tool['type']}' found using 'type' does not match any of the expected tags"
        if "type" not in tool and "input_schema" not in tool:
            return f"tools.{i}.input_schema: Field required"
    return None


def _pause(text: str, body: dict) -> dict | None:
    """The content and usage of a web search that pauses the turn, if this request gets one."""
    wanted = re.search(r"\[pause=(\d+)\]", text)
    offered = {tool.get("name") for tool in body.get("tools", [])}
    resumed = sum(1 for message in body["messages"] if message["role"] == "assistant")
    if not wanted or "web_search" not in offered or resumed >= int(wanted.group(1)):
        return None
    use = "srvtoolu_" + uuid.uuid4().hex[:24]
    return {"content": [
        {"type": "server_tool_use", "id": use, "name": "web_search", "input": {"query": f"search {resumed + 1}"}},
        {"type": "web_search_tool_result", "tool_use_id": use, "content": [
            {"type": "web_search_result", "url": "https://example.com/", "title": "Example",
             "encrypted_content": "e30=", "page_age": None}]},
        {"type": "text", "text": f"(searched {resumed + 1}) "},
    ], "server_tool_use": {"web_search_requests": 1}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeAnthropicServer

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() not in SECRET_HEADERS}
        self.server.requests.append({"path": self.path, "headers": headers, "body": body})

        if self.path.split("?")[0] != "/v1/messages":
            return self._error(404, "not_found_error", "Not found")
        key = self._api_key()
        self.server.keys.append(key)
        if not key:
            return self._error(401, "authentication_error", "x-api-key header is required")
        if key != self.server.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if not self.headers.get("anthropic-version"):
            return self._error(400, "invalid_request_error",
                               "anthropic-version: header is required")
        problem = "There was an error parsing the body" if body is None else (_validate(body) or _tool_round(body["messages"]))
        if problem:
            return self._error(400, "invalid_request_error", problem)

        text = _user_text(body["messages"])
        first = _text(body["messages"][0])
        repeat = "[repeat-call]" in first and text.startswith("[TOOL_RESULT]")
        answer = "echo: " + (first if repeat else text)
        usage = {
            "input_tokens": len(text) + 7,
            "cache_creation_input_tokens": 2 * len(text),
            "cache_read_input_tokens": 4 * len(text),
            "output_tokens": len(answer),
        }
        sleep = re.search(r"\[sleep=([0-9.]+)\]", text)
        delay = float(sleep.group(1)) if sleep else 0.0
        message = {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": answer}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        paused = _pause(text, body)
        if paused:
            message.update(content=paused["content"], stop_reason="pause_turn",
                           usage={**usage, "server_tool_use": paused["server_tool_use"]})
        if body.get("stream"):
            return self._stream(message, delay, overloaded="[overloaded]" in text)
        time.sleep(delay)
        self._json(200, message)

    def _api_key(self) -> str | None:
        # The API takes the key as x-api-key, or as a bearer token: anthropic 2.x sends that.
        bearer = self.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            return bearer[len("bearer "):].strip()
        return self.headers.get("x-api-key")

    def _json(self, status: int, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", "req_" + uuid.uuid4().hex[:24])
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, kind: str, message: str):
        self._json(status, {"type": "error", "error": {"type": kind, "message": message},
                            "request_id": "req_" + uuid.uuid4().hex[:24]})

    def _stream(self, message: dict, delay: float, overloaded: bool):
        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None,
                 "usage": {**usage, "output_tokens": 1}}
        head = [("message_start", {"type": "message_start", "message": start}), ("ping", {"type": "ping"})]
        blocks = [_block_events(index, block) for index, block in enumerate(message["content"])]
        deltas = [event for events in blocks for event in events]
        if overloaded:
            deltas = deltas[:2]
            tail = [("error", {"type": "error",
                               "error": {"type": "overloaded_error", "message": "Overloaded"}})]
        else:
            tail = [
                # Usage on message_delta is cumulative, as the real API sends it.
                ("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                   "usage": usage}),
                ("message_stop", {"type": "message_stop"}),
            ]
        # No content-length: the stream ends when the connection closes.
        self.close_connection = True
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        try:
            for name, data in head + deltas + tail:
                if name == "content_block_delta":
                    time.sleep(delay)
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: a cancelled stream


def _block_events(index: int, block: dict) -> list[tuple[str, dict]]:
    """One content block as the stream sends it: text in chunks of 8 characters, a tool's input
    as JSON deltas, anything else whole in its start event."""
    def delta(payload: dict) -> tuple[str, dict]:
        return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": payload}

    if block["type"] == "text":
        first, pieces = {"type": "text", "text": ""}, [
            delta({"type": "text_delta", "text": block["text"][i:i + 8]}) for i in range(0, len(block["text"]), 8)]
    elif block["type"] == "server_tool_use":
        first = {**block, "input": {}}
        pieces = [delta({"type": "input_json_delta", "partial_json": json.dumps(block["input"])})]
    else:
        first, pieces = block, []
    return [("content_block_start", {"type": "content_block_start", "index": index, "content_block": first}),
            *pieces, ("content_block_stop", {"type": "content_block_stop", "index": index})]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="test-key")
    args = parser.parse_args()
    server, base_url = serve(args.port, args.api_key)
    print(base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
