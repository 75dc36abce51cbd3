"""How a N0D3 runs one task with Claude: the Claude Code CLI, or the Messages API.

The agent runs on a Raspberry Pi, so this module imports only the stdlib, m3shd.wire and
m3shd.tool_calls;
`anthropic` (and pydantic with it) is imported inside the SDK runner when it runs.

A failure is an *infrastructure* failure (`infra_failure`: the Commander retries it elsewhere
and it counts against this node's breaker) only when the machine or the service broke: the
runner cannot start, crashes, times out, or is refused for its credentials. A failure the
task's own input causes (a model name no runner can take, a blank prompt, arguments no command
line can carry, a request the API calls invalid) fails the task on its own merits: another node
would fail it the same way.
"""

from __future__ import annotations

import base64
import errno
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from m3shd import prices, tool_calls, wire

DEFAULT_SDK_MODEL = "claude-sonnet-5-5"  # the current Sonnet
DEFAULT_TOOL_ROUNDS = 8  # [TOOL_CALL] rounds when the lease names none (the Commander's tool_rounds)
DEFAULT_SDK_TURNS = 10  # Messages API requests per task when the agent sets no max_turns (see AnthropicSdkRunner)

# The Claude Code tools the Messages API can run itself (server tools), as the SDK runner offers
# them. Types as anthropic 2.15 names them (types/web_search_tool_20250305_param.py,
# web_fetch_tool_20250910_param.py): the first versions, which every current model takes; the
# later ones (…_20260318) add options a profile has no way to set. Every other Claude Code tool
# (Read, Edit, Bash, Grep, …) acts on the node's own files and has no such equivalent.
SERVER_TOOLS = {
    "WebSearch": {"type": "web_search_20250305", "name": "web_search"},
    "WebFetch": {"type": "web_fetch_20250910", "name": "web_fetch"},
}
WEB_SEARCH_USD = 0.01  # per search (list price: $10 per 1,000), on top of the tokens

INSTALL_CLI = "install Claude Code (npm install -g @anthropic-ai/claude-code) so `claude` is on PATH"
STORE_KEY = "store an API key on the Commander (`m3shd runners set-key`)"
NO_RUNNER = f"no Claude runner: {INSTALL_CLI}, or set ANTHROPIC_API_KEY"
NO_RUNNER_YET = f"no Claude runner: {INSTALL_CLI}, set ANTHROPIC_API_KEY, or {STORE_KEY}"  # it may get one

# Runner credentials a Commander can hand a N0D3 (m3shd.wire.CredentialKind), and the variable each
# goes into for the Claude Code CLI; the SDK runner takes only an API key.
API_KEY, OAUTH_TOKEN = wire.CredentialKind.API_KEY.value, wire.CredentialKind.OAUTH_TOKEN.value
CREDENTIAL_ENV = {API_KEY: "ANTHROPIC_API_KEY", OAUTH_TOKEN: "CLAUDE_CODE_OAUTH_TOKEN"}
# What Claude Code authenticates with besides its own login, any of which makes it need no
# credential from the Commander (its documented precedence: cloud providers, then these).
CLI_CREDENTIAL_ENV = ("CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY",
                      "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")

_POLL_S = 0.1
_STDERR_TAIL_CHARS = 2000

# Messages API error types that are the service's or the account's fault, not the task's.
_SERVICE_ERRORS = {"authentication_error", "permission_error", "rate_limit_error", "api_error",
                   "overloaded_error"}

# What Claude Code prints when it cannot authenticate ("Invalid API key · Please run
# /login", "Not logged in · Please run /login", an API 401): the machine, not the task.
_CLI_AUTH_ERROR = re.compile(
    r"/login|invalid api key|missing api key|not logged in|oauth token|authentication_error",
    re.IGNORECASE,
)


@dataclass
class RunResult:
    status: str  # "succeeded" or "failed"
    output: str
    error: str | None
    usage: dict
    cost_usd: float | None
    model: str | None
    infra_failure: bool = False
    cancelled: bool = False
    notes: list[str] = field(default_factory=list)  # what the runner could not apply of the profile
    session_id: str | None = None  # the CLI's session, which a tool round resumes


@dataclass(frozen=True)
class Image:
    """An image the task takes, fetched from the Commander and checked against its SHA-256."""
    media_type: str   # one of the Messages API's image types: image/jpeg, image/png, image/gif, image/webp
    data: bytes

    def file_name(self, number: int) -> str:
        return f"image-{number}.{self.media_type.removeprefix('image/')}"


@dataclass(frozen=True)
class Credential:
    """A runner credential from the Commander, opened for one task: it lives in memory only and
    its repr never shows the secret, so no log line or traceback can."""
    kind: str  # API_KEY | OAUTH_TOKEN
    secret: str = field(repr=False)

    def environment(self) -> dict[str, str]:
        """A child process's environment: this one's, with the credential in its variable. This
        process's own environment never holds it (/proc/<pid>/environ); the child's does, as the
        Claude Code CLI reads it only from there."""
        return {**os.environ, CREDENTIAL_ENV[self.kind]: self.secret}


@dataclass
class TaskSpec:
    prompt: str
    model: str | None = None
    max_turns: int | None = None
    allowed_tools: list[str] = field(default_factory=list)     # may use without asking
    disallowed_tools: list[str] = field(default_factory=list)  # may not use at all
    system_prompt: str | None = None  # the agent's; the CLI appends it to Claude Code's own
    timeout_s: float = 1800
    images: list[Image] = field(default_factory=list)  # the lease's attachments, once fetched
    credential: Credential | None = field(default=None, repr=False)  # from the Commander, for this task
    tools: list[str] = field(default_factory=list)  # plugin tools the model may call ([TOOL_CALL])
    tool_rounds: int = DEFAULT_TOOL_ROUNDS
    # Sends a call to the Commander under the task's lease: (tool, args) -> {ok, result | error}.
    call_tool: Callable[[str, dict], dict] | None = field(default=None, repr=False)

    @classmethod
    def from_lease(cls, lease: dict) -> TaskSpec:
        # Unknown keys are ignored so the Commander can add fields before N0D3s know them;
        # None means "not set", so the defaults apply. The credential comes sealed (the agent opens it).
        known = {f.name for f in fields(cls)} - {"credential", "call_tool"}
        return cls(**{k: v for k, v in lease.items() if k in known and v is not None})


_MODEL = re.compile(wire.MODEL_PATTERN)
_TOOL = re.compile(wire.TOOL_PATTERN)


def input_problem(spec: TaskSpec) -> str | None:
    """What in the task's own input no runner could take, or None. The lease comes from the
    Commander, which refuses these at its API; this holds for a task stored before that check,
    or sent by an older Commander."""
    if not isinstance(spec.prompt, str) or not spec.prompt.strip():
        return "the prompt is empty"
    if spec.model is not None and not (isinstance(spec.model, str) and _MODEL.fullmatch(spec.model)):
        return f"invalid model name {_shown(spec.model)}: expected a Claude model id such as claude-sonnet-5-5"
    if spec.max_turns is not None and not (type(spec.max_turns) is int and spec.max_turns > 0):
        return f"invalid max_turns {_shown(spec.max_turns)}: expected a positive whole number"
    tools = spec.allowed_tools
    if not (isinstance(tools, list) and all(isinstance(tool, str) and _TOOL.fullmatch(tool) for tool in tools)):
        return f"invalid allowed tools {_shown(tools)}: expected names such as Read or Bash(git log:*)"
    if spec.system_prompt is not None and not isinstance(spec.system_prompt, str):
        return f"invalid system prompt {_shown(spec.system_prompt)}: expected text"
    return None


def _shown(value) -> str:
    """A value from the lease in an error message: its repr (escapes and all), cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _usage(input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0) -> dict:
    return {
        "input_tokens": input_tokens or 0,
        "output_tokens": output_tokens or 0,
        "cache_read_tokens": cache_read_tokens or 0,
        "cache_write_tokens": cache_write_tokens or 0,
    }


def failed(error: str, model: str | None, *, infra: bool = False, cancelled: bool = False,
            usage: dict | None = None, cost_usd: float | None = None) -> RunResult:
    return RunResult("failed", "", error, usage or _usage(), cost_usd, model,
                     infra_failure=infra, cancelled=cancelled)


def _cancelled(model: str | None) -> RunResult:
    return failed("cancelled", model, cancelled=True)


def _timed_out(timeout_s: float, model: str | None) -> RunResult:
    return failed(f"timed out after {timeout_s:g} s", model, infra=True)


def stop_process_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM proc's whole process group, then SIGKILL whatever is left after grace_s.

    proc must have been started with start_new_session=True, so its pid is the group id
    and tools it spawned (shells, servers) die with it.
    """
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(pgid):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # a member we may not signal is still a member
    return True


def calls_tool(spec: TaskSpec, answer: RunResult) -> bool:
    """Whether the model's answer asks for a tool round (m3shd/tool_calls.py): not a final answer."""
    return answer.status == "succeeded" and bool(spec.tools) and spec.call_tool is not None \
        and tool_calls.OPEN in answer.output


def tool_reply(spec: TaskSpec, answer: str) -> str:
    """The next user turn for an answer with a [TOOL_CALL]: the tool's result, or why there is
    none (a malformed marker included)."""
    try:
        call = tool_calls.find(answer)
    except tool_calls.Malformed as exc:
        return tool_calls.result_text(None, False, error=f"malformed tool call: {exc}")
    answered = spec.call_tool(call.tool, call.args)
    return tool_calls.result_text(call.tool, answered["ok"], answered.get("result"), answered.get("error"))


def with_tools(spec: TaskSpec, result: RunResult, again: Callable[[RunResult, str], RunResult]) -> RunResult:
    """Carry on the conversation while the model calls tools: `again(last, reply)` sends the
    tool's reply as the next user turn of the same conversation. At most `tool_rounds` calls;
    the usage and cost of every round add up in the result."""
    total, rounds = result, 0
    while calls_tool(spec, result):
        if rounds >= spec.tool_rounds:
            total.notes.append(f"stopped after {rounds} tool calls (the Commander's tool_rounds): the answer may be "
                               "unfinished")
            break
        rounds += 1
        result = again(result, tool_reply(spec, result.output))
        total = added(total, result)
    return total


def added(before: RunResult, after: RunResult) -> RunResult:
    """`after`, with the usage, cost and notes of both."""
    usage = {name: before.usage[name] + after.usage[name] for name in before.usage}
    costs = [cost for cost in (before.cost_usd, after.cost_usd) if cost is not None]
    return RunResult(after.status, after.output, after.error, usage, sum(costs) if costs else None,
                     before.model or after.model, after.infra_failure, after.cancelled, before.notes + after.notes,
                     after.session_id)


class ClaudeCliRunner:
    """Runs `claude -p --output-format json` with the prompt on stdin."""

    name = "claude-cli"

    def __init__(self, executable: str, default_model: str | None = None, grace_s: float = 5.0):
        self.executable = executable
        self.default_model = default_model
        self.grace_s = grace_s

    def _argv(self, spec: TaskSpec, resume: str | None = None) -> list[str]:
        argv = [self.executable, "-p", "--output-format", "json"]
        if resume:  # a tool round: the same session, the tool's result as the next prompt
            argv += ["--resume", resume]
        model = spec.model or self.default_model
        if model:
            argv += ["--model", model]
        if spec.max_turns:
            argv += ["--max-turns", str(spec.max_turns)]
        # One argument per tool, as the CLI documents it: a rule such as `Bash(git diff:*)` has
        # a space, which a joined list would split. The prompt goes on stdin, so no positional
        # argument follows for these variadic options to swallow.
        if spec.allowed_tools:
            argv += ["--allowedTools", *spec.allowed_tools]
        if spec.disallowed_tools:
            argv += ["--disallowedTools", *spec.disallowed_tools]
        # Appended, not replacing (--system-prompt): Claude Code's own system prompt tells the
        # model how to use its tools, the working directory and the platform; without it the
        # tools an agent is allowed would be offered with no instructions.
        if spec.system_prompt:
            argv += ["--append-system-prompt", spec.system_prompt]
        return argv

    def run(self, spec: TaskSpec, cancel: threading.Event) -> RunResult:
        if problem := input_problem(spec):
            return failed(problem, None)  # the task's own input: never its node's fault
        model = spec.model or self.default_model
        try:
            if not spec.images:
                return self._run(spec, cancel, model)
            # The images are files in a working directory of the task's own, which the prompt names.
            with tempfile.TemporaryDirectory(prefix="m3shd-task-") as workdir:
                return self._run(spec, cancel, model, workdir, with_files(spec, Path(workdir)))
        except Exception as exc:  # a runner bug must fail the task, not the agent loop
            return failed(f"claude-cli runner error: {exc!r}", model, infra=True)

    def _run(self, spec: TaskSpec, cancel: threading.Event, model: str | None, workdir: str | None = None,
             prompt: str | None = None) -> RunResult:
        deadline = time.monotonic() + spec.timeout_s
        first = self._invoke(spec, self._argv(spec), prompt or spec.prompt, cancel, model, workdir, deadline)

        def again(last: RunResult, reply: str) -> RunResult:
            if not last.session_id:
                return failed("claude answered a tool call without a session_id to resume", model, infra=True)
            return self._invoke(spec, self._argv(spec, resume=last.session_id), reply, cancel, model, workdir, deadline)

        return with_tools(spec, first, again)

    def _invoke(self, spec: TaskSpec, argv: list[str], prompt: str, cancel: threading.Event, model: str | None,
                workdir: str | None, deadline: float) -> RunResult:
        """One run of the CLI, until `deadline` (the task's, over all its tool rounds)."""
        if cancel.is_set():
            return _cancelled(model)
        try:
            # The prompt goes on stdin: no argv length limit, and not visible in `ps`. A credential
            # from the Commander goes in the child's environment only, where the CLI reads it.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                cwd=workdir,
                env=spec.credential.environment() if spec.credential else None,
            )
        except ValueError as exc:  # an argument with a NUL byte, which no command line carries
            return failed(f"this task's arguments cannot be passed to claude: {exc}", model)
        except OSError as exc:  # FileNotFoundError, PermissionError, ...
            if exc.errno == errno.E2BIG:  # an argument (the system prompt) longer than the OS takes
                return failed("this task's arguments are too long for a command line", model)
            return failed(f"could not start {self.executable}: {exc}", model, infra=True)

        # A helper thread feeds stdin (any size) and drains stdout/stderr, so this one
        # is free to watch cancel and the deadline.
        done: dict = {}
        talker = threading.Thread(target=_communicate, args=(proc, prompt.encode(), done), daemon=True)
        talker.start()
        try:
            while talker.is_alive():
                talker.join(_POLL_S)
                if not talker.is_alive():
                    break
                if cancel.is_set():
                    stopped = _cancelled(model)
                elif time.monotonic() >= deadline:
                    stopped = _timed_out(spec.timeout_s, model)
                else:
                    continue
                stop_process_group(proc, self.grace_s)
                talker.join(self.grace_s)  # the pipes close once the group is gone
                return stopped
        finally:
            if proc.poll() is None:
                stop_process_group(proc, self.grace_s)
        if "error" in done:
            return failed(f"lost the claude process's output: {done['error']!r}", model,
                           infra=True)
        stdout, stderr = done["output"]
        return _cli_result(proc.returncode, stdout, stderr, model)


def with_files(spec: TaskSpec, workdir: Path) -> str:
    """Write the task's images into `workdir` (0600) and return the prompt that names them."""
    listed = []
    for number, image in enumerate(spec.images, 1):
        name = image.file_name(number)
        fd = os.open(workdir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(image.data)
        listed.append(f"- ./{name} ({image.media_type}, {len(image.data)} bytes)")
    return f"{spec.prompt}\n\nImages for this task, in the working directory:\n" + "\n".join(listed)


def _communicate(proc: subprocess.Popen, stdin: bytes, done: dict) -> None:
    try:
        done["output"] = proc.communicate(stdin)
    except Exception as exc:  # handed to run() rather than lost in this thread
        done["error"] = exc


def _cli_result(returncode: int, stdout: bytes, stderr: bytes, model: str | None) -> RunResult:
    data = _parse_cli_json(stdout.decode(errors="replace"))
    if data is None:
        tail = stderr.decode(errors="replace").strip()[-_STDERR_TAIL_CHARS:]
        reason = f"claude exited with code {returncode} and no JSON result"
        return failed(f"{reason}: {tail}" if tail else reason, model, infra=True)

    raw = data.get("usage") or {}
    usage = _usage(raw.get("input_tokens"), raw.get("output_tokens"),
                   raw.get("cache_read_input_tokens"), raw.get("cache_creation_input_tokens"))
    cost = data.get("total_cost_usd")
    cost = float(cost) if isinstance(cost, (int, float)) else None
    if model is None and isinstance(data.get("modelUsage"), dict) and data["modelUsage"]:
        model = next(iter(data["modelUsage"]))  # the CLI's own default model
    output = data.get("result") if isinstance(data.get("result"), str) else ""

    if not data.get("is_error"):
        session = data.get("session_id") if isinstance(data.get("session_id"), str) else None
        return RunResult("succeeded", output, None, usage, cost, model, session_id=session)
    error = output or "; ".join(map(str, data.get("errors") or [])) or str(data.get("subtype"))
    auth = data.get("api_error_status") in (401, 403) or bool(_CLI_AUTH_ERROR.search(error))
    return failed(error, model, infra=auth, usage=usage, cost_usd=cost)


def _parse_cli_json(text: str) -> dict | None:
    """The result object: the whole of stdout, else its last line that is a JSON object."""
    for candidate in [text, *reversed(text.splitlines())]:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, list):  # with --verbose the CLI prints every message, result last
            data = next((m for m in reversed(data) if isinstance(m, dict)
                         and m.get("type") == "result"), None)
        if isinstance(data, dict) and ("result" in data or "is_error" in data):
            return data
    return None


class AnthropicSdkRunner:
    """Sends the prompt to the Messages API, streamed so it can be cancelled, with the agent's
    system prompt, model and server tools (see `sdk_tools`)."""

    name = "anthropic-sdk"

    def __init__(self, api_key: str | None, base_url: str | None = None,
                 default_model: str = DEFAULT_SDK_MODEL, max_tokens: int = 4096):
        self.api_key = api_key
        self.base_url = base_url
        self.default_model = default_model
        self.max_tokens = max_tokens

    def key_for(self, spec: TaskSpec) -> str | None:
        """This machine's API key, else the one the Commander sent with the task."""
        given = spec.credential
        return self.api_key or (given.secret if given and given.kind == API_KEY else None)

    def run(self, spec: TaskSpec, cancel: threading.Event) -> RunResult:
        if problem := input_problem(spec):
            return failed(problem, None)  # the task's own input: never its node's fault
        model = spec.model or self.default_model
        try:
            import anthropic  # lazily: heavy (pydantic, httpx) for a Pi that may use the CLI
        except ImportError:
            return failed("the anthropic package is missing: pip install 'm3shd[n0d3]'",
                           model, infra=True)
        if not self.key_for(spec):  # the Commander stopped supplying one between heartbeat and claim
            return failed("no API key for this task: none here, and its lease brought none from the Commander",
                          model, infra=True)
        deadline = time.monotonic() + spec.timeout_s
        try:
            return self._run(anthropic, spec, cancel, model, deadline)
        except anthropic.AuthenticationError as exc:
            return failed(f"{_api_error_text(exc)} (check the API key)", model, infra=True)
        except (anthropic.PermissionDeniedError, anthropic.RateLimitError,
                anthropic.InternalServerError) as exc:
            return failed(_api_error_text(exc), model, infra=True)
        except anthropic.APITimeoutError:
            return _timed_out(spec.timeout_s, model)
        except anthropic.APIConnectionError as exc:
            return failed(f"cannot reach the Anthropic API: {exc}", model, infra=True)
        except anthropic.APIStatusError as exc:
            # A 400 and the like: this task's request is wrong. An error event mid-stream
            # comes on a 200 response, so its type tells whether the service failed.
            infra = _api_error_type(exc) in _SERVICE_ERRORS
            return failed(_api_error_text(exc), model, infra=infra)
        except Exception as exc:  # mid-stream transport errors arrive unwrapped
            if time.monotonic() >= deadline:  # e.g. a read timeout: the server went quiet
                return _timed_out(spec.timeout_s, model)
            return failed(f"anthropic-sdk runner error: {exc!r}", model, infra=True)

    def _run(self, anthropic, spec: TaskSpec, cancel: threading.Event, model: str,
             deadline: float) -> RunResult:
        """The agent's turn loop: one request, then more only while the API pauses a long turn
        of its server tools (stop_reason pause_turn: the answer so far goes back as-is and the
        model carries on), at most `max_turns` requests in all."""
        if cancel.is_set():
            return _cancelled(model)
        request = {
            "model": model,
            "max_tokens": self.max_tokens,
            "timeout": spec.timeout_s,  # bounds each wait for the server
        }
        if spec.system_prompt:
            request["system"] = spec.system_prompt
        tools, notes = sdk_tools(spec.allowed_tools, spec.disallowed_tools)
        if tools:
            request["tools"] = tools
        messages = [{"role": "user", "content": user_content(spec)}]
        with anthropic.Anthropic(api_key=self.key_for(spec), base_url=self.base_url) as client:
            first = self._answer(client, request, messages, spec, cancel, model, deadline)
            first.notes[:0] = notes

            def again(_last: RunResult, reply: str) -> RunResult:
                messages.append({"role": "user", "content": reply})  # a tool round: the same conversation
                return self._answer(client, request, messages, spec, cancel, model, deadline)

            return with_tools(spec, first, again)

    def _answer(self, client, request: dict, messages: list, spec: TaskSpec, cancel: threading.Event, model: str,
                deadline: float) -> RunResult:
        """One answer of the model to `messages`, which it extends with the assistant's turns."""
        turns = spec.max_turns or DEFAULT_SDK_TURNS
        usage, searches, texts, notes = _usage(), 0, [], []
        for _turn in range(turns):
            with client.messages.stream(**request, messages=list(messages)) as stream:
                # Cancel and the deadline are seen between events; the API pings while busy.
                for _event in stream:
                    if cancel.is_set():
                        return _cancelled(model)
                    if time.monotonic() >= deadline:
                        return _timed_out(spec.timeout_s, model)
                message = stream.get_final_message()
            u = message.usage
            for name, value in _usage(u.input_tokens, u.output_tokens, u.cache_read_input_tokens,
                                      u.cache_creation_input_tokens).items():
                usage[name] += value
            searches += getattr(u.server_tool_use, "web_search_requests", 0) or 0
            texts += [block.text for block in message.content if block.type == "text"]
            messages.append({"role": "assistant", "content": [block.to_dict(mode="json") for block in message.content]})
            if message.stop_reason != "pause_turn":
                break
        else:
            notes.append(f"stopped after {turns} requests (the agent's max_turns): the answer may be unfinished")
        cost = price_usd(model, usage)
        if cost is not None:
            cost += searches * WEB_SEARCH_USD
        return RunResult("succeeded", "".join(texts), None, usage, cost, model, notes=notes)


def sdk_tools(allowed: list[str], disallowed: list[str]) -> tuple[list[dict], list[str]]:
    """The server tools the Messages API gets for an agent's allowed tools, and a note naming the
    allowed tools it has no equivalent for (dropped, and said so in the result). A rule with an
    argument (`WebFetch(domain:x)`) is dropped too: the runner cannot hold the tool to it."""
    tools, dropped = [], []
    for name in allowed:
        if name in disallowed:
            continue
        if name in SERVER_TOOLS:
            tools.append(SERVER_TOOLS[name])
        else:
            dropped.append(name)
    notes = [f"the anthropic-sdk runner cannot offer {', '.join(dropped)} (no Messages API equivalent); "
             f"the task ran without {'it' if len(dropped) == 1 else 'them'}"] if dropped else []
    return tools, notes


def user_content(spec: TaskSpec) -> str | list[dict]:
    """The user message's content: the prompt alone, or image blocks (base64) and then the prompt,
    the order the Messages API documents as working best."""
    if not spec.images:
        return spec.prompt
    blocks = [{"type": "image", "source": {"type": "base64", "media_type": image.media_type,
                                           "data": base64.b64encode(image.data).decode()}} for image in spec.images]
    return [*blocks, {"type": "text", "text": spec.prompt}]


def _api_error(exc) -> dict:
    body = getattr(exc, "body", None)
    return body["error"] if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}


def _api_error_type(exc) -> str | None:
    return _api_error(exc).get("type")


def _api_error_text(exc) -> str:
    error = _api_error(exc)
    kind = error.get("type") or f"HTTP {exc.status_code}"
    return f"Anthropic API {kind}: {error.get('message') or exc}"


def price_usd(model: str | None, usage: dict) -> float | None:
    """What the usage cost at list price (m3shd/prices.py), or None for a model not in the table."""
    key = prices.listed(model)
    if key is None:
        return None
    return prices.cost_usd(prices.PRICES[key], usage["input_tokens"], usage["output_tokens"],
                           usage["cache_read_tokens"], usage["cache_write_tokens"])


@dataclass
class Detection:
    runner: object | None
    capabilities: list[str]
    problem: str | None
    wants: list[str] = field(default_factory=list)  # credential kinds to take from the Commander, preferred first


def claude_login() -> bool:
    """Whether Claude Code has a credential of its own here, which then wins over any the
    Commander holds: one of its environment variables, its credentials file (Linux:
    $CLAUDE_CONFIG_DIR or ~/.claude, .credentials.json) or its Keychain item (macOS)."""
    if any(os.environ.get(name) for name in CLI_CREDENTIAL_ENV):
        return True
    config = Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude")
    if (config / ".credentials.json").is_file():
        return True
    if sys.platform == "darwin":  # asks whether the item exists; without -w nothing secret is printed
        found = subprocess.run(["security", "find-generic-password", "-s", "Claude Code-credentials"],
                               capture_output=True)
        return found.returncode == 0
    return False


def detect(prefer: str = "auto", claude_path: str | None = None, api_key: str | None = None,
           base_url: str | None = None, default_model: str | None = None, grace_s: float = 5.0, *,
           from_commander: bool = False, offered: str | None = None) -> Detection:
    """Pick how this machine runs tasks: the Claude Code CLI first, else the API with a key.
    `grace_s`: a stopped CLI task's process group gets this long between SIGTERM and SIGKILL.

    `from_commander`: a runner with no credential of its own here asks the Commander for one
    (`wants`); the CLI runs either way (a login we cannot see may serve it), the SDK runner only
    once an API key is `offered` (the kind the Commander last said this node's leases carry)."""
    if prefer not in ("auto", "claude-cli", "anthropic-sdk"):
        return Detection(None, [],
                         f"unknown runner {prefer!r}: use auto, claude-cli or anthropic-sdk")
    claude = shutil.which(claude_path or "claude")
    key = api_key or os.environ.get("ANTHROPIC_API_KEY")
    base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL")
    # find_spec, not import: importing anthropic costs a Pi seconds and tens of MB.
    has_sdk = importlib.util.find_spec("anthropic") is not None

    if prefer != "anthropic-sdk" and claude:
        runner = ClaudeCliRunner(claude, default_model=default_model, grace_s=grace_s)
        wants = [OAUTH_TOKEN, API_KEY] if from_commander and not claude_login() else []
        return Detection(runner, [f"runner={runner.name}"], None, wants)
    wants = [API_KEY] if from_commander and has_sdk and not key and prefer != "claude-cli" else []
    if prefer != "claude-cli" and has_sdk and (key or (wants and offered == API_KEY)):
        runner = AnthropicSdkRunner(key, base_url=base_url,
                                    default_model=default_model or DEFAULT_SDK_MODEL)
        return Detection(runner, [f"runner={runner.name}"], None, wants)

    if prefer == "claude-cli":
        where = f"at {claude_path}" if claude_path else "on PATH"
        problem = f"no Claude Code CLI {where}: {INSTALL_CLI}"
    elif key and not has_sdk:
        problem = ("no Claude runner: an Anthropic API key is set but the anthropic package "
                   "is missing: pip install 'm3shd[n0d3]'")
    elif prefer == "anthropic-sdk":
        problem = "no API key for the anthropic-sdk runner: set ANTHROPIC_API_KEY" + (
            f", or {STORE_KEY}" if wants else "")
    else:
        problem = NO_RUNNER_YET if wants else NO_RUNNER
    return Detection(None, [], problem, wants)
