"""The N0D3 agent: register, heartbeat, claim, run, sign, report.

Threads: the main one claims (long-poll) and starts tasks; one heartbeats; one delivers held
results; one per running task. The agent never crashes on a Commander that is down: it backs
off (full jitter, so a fleet does not retry in step) and retries, and a finished result stays
on disk until the Commander has answered for it. Each loop survives its own bugs (m3shd.loops).
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import signal
import threading
import time
from dataclasses import dataclass, field

from m3shd import __version__, loops, provenance, trust, wire
from m3shd.client import ApiClient, CommanderError, CommanderUnreachable, CommanderUntrusted, NodeClient
from n0d3.runners import Credential, Image, RunResult, TaskSpec, detect, failed
from n0d3.settings import N0d3Settings
from n0d3.state import State

log = logging.getLogger("m3shd.n0d3")

TOOL_CALL_WAIT = 120.0  # seconds a tool call may take to answer; the Commander bounds each tool below that


class FatalConfig(Exception):
    """Nothing to retry: the configuration must change (exit status 2)."""


@dataclass
class Running:
    lease: dict
    cancel: threading.Event = field(default_factory=threading.Event)


def base_capabilities() -> list[str]:
    arch = platform.machine().lower()
    arch = {"aarch64": "arm64", "amd64": "x86_64"}.get(arch, arch)
    return [f"os={platform.system().lower()}", f"arch={arch}"]


class Agent:
    def __init__(self, settings: N0d3Settings):
        self.settings = settings
        self.state = State(settings.state_dir)
        self.result_key = self.state.result_key()
        # Opens the runner credentials the Commander seals to this node (m3shd/sealing.py).
        self.seal_private, self.seal_public = self.seal_key()
        self.slots = settings.slots
        self.client: NodeClient | None = None
        self.running: dict[str, Running] = {}
        self.lock = threading.Lock()
        self.connecting = threading.Lock()     # one loop at a time registers again (on_refused)
        self.slot_freed = threading.Condition(self.lock)
        self.stopping = threading.Event()      # SIGTERM: finish running work, take nothing new
        self.done = threading.Event()          # everything has stopped
        self.poke_heartbeat = threading.Event()
        self.poke_outbox = threading.Event()
        self.node_state = wire.NodeState.ACTIVE  # as the Commander last said; claims only while active
        self.heartbeat_interval = 5.0          # as the Commander last said
        self.offered: str | None = None        # the runner credential it last said our leases carry
        self.detection = None
        self.ca_file: str | None = None          # the Commander's pinned CA (see trusted_ca)

    # --- set-up ------------------------------------------------------------------------------

    def detect_runner(self) -> None:
        s = self.settings
        found = detect(prefer=s.runner, claude_path=s.claude_path or None,
                       base_url=s.anthropic_base_url or None, default_model=s.model or None, grace_s=s.cancel_grace,
                       from_commander=self.seal_public is not None, offered=self.offered)
        previous = self.detection
        self.detection = found
        if previous is None or (previous.runner is None) != (found.runner is None):
            if found.runner is None:
                log.warning("%s; this N0D3 stays connected and tasks wait until it is fixed", found.problem)
            else:
                log.info("runner: %s%s", found.runner.name,
                         " (credential from the Commander)" if self.offered and found.wants else "")

    def seal_key(self) -> tuple[bytes | None, bytes | None]:
        """This node's seal key pair; none where `cryptography` is missing (an install from before
        it joined the n0d3 extra): the node then runs only with credentials of its own."""
        if not self.settings.credentials_from_commander:
            return None, None
        try:
            return self.state.seal_key()
        except ImportError:
            log.warning("the cryptography package is missing (pip install 'm3shd[n0d3]'): this N0D3 takes no runner "
                        "credential from the Commander")
            return None, None

    def take_offer(self, offered: str | None) -> None:
        """The Commander says which runner credential our leases carry now: a runner waiting for
        one may be ready (or no longer), and the Commander should hear of it at once."""
        if offered == self.offered:
            return
        self.offered = offered
        log.info("the Commander %s", f"supplies this node's runner credential ({offered})" if offered
                 else "no longer supplies a runner credential for this node")
        before = self.detection.runner
        self.detect_runner()
        if (before is None) != (self.detection.runner is None):
            self.poke_heartbeat.set()

    def capabilities(self) -> list[str]:
        return sorted({*base_capabilities(), *self.detection.capabilities, *self.settings.capabilities})

    def registration(self) -> dict:
        return dict(machine_id=self.state.machine_id(self.settings.name), name=self.settings.name,
                    capabilities=self.capabilities(), slots=self.slots, priority=self.settings.priority,
                    version=__version__,
                    runner=self.detection.runner.name if self.detection.runner else None,
                    problem=self.detection.problem, public_key=provenance.public_key_hex(self.result_key),
                    seal_key=self.seal_public and self.seal_public.hex())

    def connect(self, fall_back: bool = True) -> None:
        """Become this machine's node. With a saved identity, register again, proving its key:
        no join token is needed, however old the one it joined with. Without one, or when the
        Commander no longer knows it (the node was removed), register as a new machine with the
        join token; with neither, ask to join and wait for an operator's approval (`fall_back`;
        an explicit `join` never waits). Without a URL, find the Commander on the LAN first."""
        s = self.settings
        url = s.url or self.discover()
        identity = self.state.identity()
        try:
            join_token, pinned = trust.split_join(s.join_token)
            expected = pinned or (trust.check_hash(s.ca_hash, "[n0d3] ca_hash") if s.ca_hash else None)
        except ValueError as exc:
            raise FatalConfig(str(exc)) from None
        self.ca_file = self.trusted_ca(url, expected, first_use=not join_token and identity is None)
        if identity is not None:
            identity = self.register_again(url, identity, patient=fall_back)
        if identity is None and join_token:
            identity = self.register_new(url, join_token, patient=fall_back)
        elif identity is None and fall_back:
            identity = self.wait_for_approval(url)
        if identity is None:
            if self.stopping.is_set():
                raise FatalConfig("stopped before this N0D3 had registered")
            raise FatalConfig("no join token and no saved identity: run `m3shd n0d3 join URL TOKEN` first")
        self.identity = identity
        self.client = self.node_client(identity)
        log.info("N0D3 %s is node %s at %s (%d slots)", s.name, identity["node_id"], identity["url"], self.slots)

    def node_client(self, identity: dict) -> NodeClient:
        return NodeClient(identity["url"], identity["node_id"], identity["node_token"], identity["signing_key"],
                          sign_document=functools.partial(provenance.sign, self.result_key), ca_file=self.ca_file)

    def until_answered(self, what: str, call, retry=lambda exc: exc.status >= 500, patient: bool = True):
        """`call()` until the Commander answers it, backing off while it is unreachable or gives a
        refusal that `retry(exc)` says may pass; any other refusal is raised. None if stopped.
        A Commander that cannot prove who it is (CommanderUntrusted) is retried while `patient`
        (an impostor may leave), else fatal: `n0d3 join` says so at once."""
        backoff = loops.Backoff(what, log)
        while not self.stopping.is_set():
            try:
                reply = call()
            except CommanderUntrusted as exc:
                if not patient:
                    raise FatalConfig(str(exc)) from None
                self.stopping.wait(backoff.failed(exc))
                continue
            except CommanderUnreachable as exc:
                self.stopping.wait(backoff.failed(exc))
                continue
            except CommanderError as exc:
                if not retry(exc):
                    raise
                self.stopping.wait(backoff.failed(exc))
                continue
            backoff.ok()
            return reply
        return None

    def register_again(self, url: str, identity: dict, patient: bool = True) -> dict | None:
        """Register again as the node of the saved `identity`, with a request signed by its key
        (the node may have changed: slots, version, capabilities); it keeps its token and key.
        Returns the identity, or None if the Commander at `url` does not know that node (removed,
        or another Commander's) or this N0D3 stopped. A refused signature (a wrong clock, or a
        key gone stale) is retried while `patient`, else fatal."""
        node_id = identity["node_id"]
        identity = dict(identity, url=url)
        client = self.node_client(identity)
        said = set()

        def stale(exc: CommanderError) -> str:
            return (f"the Commander refused node {node_id}'s signature ({exc.message}). If this machine's clock is "
                    f"right, its saved key is stale (its state directory restored from a backup?): on the "
                    f"Commander, remove node {node_id} (`m3shd nodes remove {node_id}`), then join again")

        def passing(exc: CommanderError) -> bool:
            if exc.code == "bad_signature" and patient and exc.message not in said:
                said.add(exc.message)
                log.error("%s", stale(exc))
            return (exc.code == "bad_signature" and patient) or exc.code == "replayed_request" or exc.status >= 500

        try:
            reply = self.until_answered("registering again", lambda: client.register_again(**self.registration()),
                                        retry=passing, patient=patient)
        except CommanderError as exc:
            if exc.status == 401 and exc.code == "unauthenticated":
                log.warning("the Commander at %s does not know node %s (it was removed, or this identity is another "
                            "Commander's): this N0D3 joins as a new machine", url, node_id)
                return None
            raise FatalConfig(stale(exc) if exc.code == "bad_signature" else
                              f"the Commander refused node {node_id}'s registration: {exc.message}") from None
        if reply is None:
            return None
        if reply["requested_capabilities"]:
            asked = sorted(set(reply["requested_capabilities"]) - set(reply["capabilities"]))
            log.warning("capabilities %s wait for an operator's approval; until then tasks needing them go "
                        "elsewhere (on the Commander: `m3shd nodes approve-capabilities %s`)", ", ".join(asked), node_id)
        identity["heartbeat_interval"] = reply["heartbeat_interval"]
        self.state.save_identity(identity)
        return identity

    def register_new(self, url: str, join_token: str, patient: bool = True) -> dict | None:
        """Register this machine as a new node with the join token; None if stopped meanwhile."""
        client = ApiClient(url, join_token, ca_file=self.ca_file)
        try:
            reply = self.until_answered("registering", lambda: client.register(**self.registration()), patient=patient)
        except CommanderError as exc:
            if exc.code == "machine_known":
                raise FatalConfig(f"{exc.message}. (This N0D3 has no identity that proves it is that node: "
                                  f"{self.state.dir / 'identity.json'} is missing or belongs to another node.)") from None
            if exc.status == 401:
                raise FatalConfig(f"the Commander refused the join token ({exc.message}): make a new one "
                                  f"(`m3shd token create NAME --kind join`) and join with it "
                                  f"(`m3shd n0d3 join URL TOKEN`)") from None
            raise FatalConfig(f"the Commander refused to register this N0D3: {exc.message}") from None
        return None if reply is None else self.adopt(url, reply)

    def trusted_ca(self, url: str, expected: str | None, first_use: bool) -> str | None:
        """The CA file every connection to `url` is verified against (m3shd/trust.py); None for
        plain HTTP or the system's trust store. `expected`: the hash a join string or [n0d3]
        ca_hash pins; the CA is fetched and checked against it (again, when it differs from the
        one kept). `first_use`: a tokenless join with nothing to check the CA against keeps the
        one it is shown first, and says so."""
        s = self.settings
        if not url.startswith("https://"):
            if expected:
                raise FatalConfig(f"a CA hash pins the Commander's TLS certificate, but {url} is plain HTTP: "
                                  "use its https:// URL")
            return None
        if s.ca_file:
            if expected and trust.file_hash(s.ca_file) != expected:
                raise FatalConfig(str(trust.mismatch(url, expected, trust.file_hash(s.ca_file))))
            return s.ca_file
        kept = self.state.dir / "ca.pem"
        if kept.exists() and expected in (None, trust.file_hash(kept)):
            return str(kept)
        if expected is None and not first_use:
            return None
        backoff = loops.Backoff("fetching the Commander's CA", log)
        while not self.stopping.is_set():
            try:
                seen = trust.pin(url, kept, expected)
            except CommanderUntrusted as exc:
                raise FatalConfig(str(exc)) from None
            except trust.NoMeshCa as exc:
                if expected:
                    raise FatalConfig(f"{exc}; a CA hash cannot be checked against it") from None
                return None
            except CommanderUnreachable as exc:
                self.stopping.wait(backoff.failed(exc))
                continue
            if expected:
                log.info("the Commander's CA matches the join's hash %s; every connection is verified with it", seen)
            else:
                log.warning("trusting the Commander's CA %s on first use: nothing came with this N0D3 to check it "
                            "against. `m3shd commander ca` on the Commander prints its own; compare them.", seen)
            return str(kept)
        raise FatalConfig("stopped before the Commander's CA was fetched")

    def adopt(self, url: str, reply: dict) -> dict:
        """Keep the secrets a registration returned: this machine's identity from now on."""
        identity = dict(url=url, node_id=reply["node_id"], node_token=reply["node_token"],
                        signing_key=reply["signing_key"], heartbeat_interval=reply["heartbeat_interval"])
        self.state.save_identity(identity)
        return identity

    def discover(self) -> str:
        try:
            from n0d3.discovery import find_commander   # zeroconf comes with the n0d3 extra
        except ImportError:
            raise FatalConfig("no Commander URL: set [n0d3] url (M3SHD_N0D3_URL), or install m3shd[n0d3] "
                              "to find the Commander on the LAN") from None
        log.info("no Commander URL set: looking for one on the LAN (mDNS %s)", self.settings.mdns_type)
        while not self.stopping.is_set():
            url = find_commander(self.settings.mdns_type, timeout=5.0)
            if url:
                log.info("found the Commander at %s", url)
                return url
            self.stopping.wait(loops.retry_delay(0, base=5.0, cap=5.0))  # freshly flashed Pis look apart
        raise FatalConfig("stopped before a Commander was found")

    def wait_for_approval(self, url: str) -> dict | None:
        """A tokenless join: ask once (the request survives restarts), then poll until an operator
        approves it; the approving answer carries this node's secrets."""
        client = ApiClient(url, "", ca_file=self.ca_file)
        backoff = loops.Backoff("asking to join", log)
        said = False
        while not self.stopping.is_set():
            try:
                request = self.state.join_request()
                if request is None or request["url"] != url:
                    reply = client.request_join(**self.registration())
                    request = dict(url=url, id=reply["id"], poll_token=reply["poll_token"])
                    self.state.save_join_request(request)
                answer = client.poll_join(request["poll_token"])
                backoff.ok()
            except CommanderUnreachable as exc:
                self.stopping.wait(backoff.failed(exc))
                continue
            except CommanderError as exc:
                if exc.status == 429:  # the waiting list is full: ask again later
                    self.stopping.wait(backoff.failed(exc))
                    continue
                self.state.save_join_request(None)
                raise FatalConfig(f"the Commander turned this N0D3 away: {exc.message}") from None
            if answer["state"] == "approved":
                self.state.save_join_request(None)
                log.info("approved")
                return self.adopt(url, answer["registration"])
            if not said:
                # p3, as `m3shd nodes pending` shows it: a pending id is not a node id. The key lets the
                # operator tell this machine from another asking under the same name.
                log.warning("waiting for approval as pending machine p%s with key %s: on the Commander, check that "
                            "`m3shd nodes pending` shows this key, then `m3shd nodes approve p%s`", request["id"],
                            trust.key_fingerprint(provenance.public_key_hex(self.result_key)), request["id"])
                said = True
            self.stopping.wait(3.0)
        return None

    # --- the loops ---------------------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.shutdown())
        self.detect_runner()
        try:
            self.connect()
        except FatalConfig as exc:
            log.error("%s", exc)
            return 2
        threads = [threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True),
                   threading.Thread(target=self.outbox_loop, name="outbox", daemon=True)]
        for thread in threads:
            thread.start()
        self.claim_loop()
        self.drain()
        return 0

    def shutdown(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: finishing running tasks, taking nothing new")
            self.stopping.set()
            self.poke_heartbeat.set()  # tell the Commander now, which also ends our long-poll

    def claim_loop(self) -> None:
        backoff = loops.Backoff("claiming work", log)
        loops.run_forever("claiming work", lambda: self.claim_once(backoff), stop=self.stopping, logger=log)

    def claim_once(self, backoff: loops.Backoff) -> None:
        with self.lock:
            free = self.slots - len(self.running)
            if free <= 0:
                self.slot_freed.wait(1.0)
                return
        if self.detection.runner is None or self.node_state != wire.NodeState.ACTIVE:
            self.stopping.wait(1.0)
            return
        started = time.monotonic()
        client = self.client
        try:
            leases = client.claim(free, self.settings.claim_wait, self.detection.wants)
            backoff.ok()
            early = min(1.0, wire.shortest_long_poll(self.settings.claim_wait) / 2)
            if not leases and time.monotonic() - started < early:
                # The Commander only answers a long-poll early and empty when this node may
                # not take work (lost, paused): ask again after the next heartbeat, not now.
                self.stopping.wait(1.0)
        except CommanderUnreachable as exc:
            self.stopping.wait(backoff.failed(exc))
            return
        except CommanderError as exc:
            self.stopping.wait(self.on_refused(exc, backoff, client))
            return
        for lease in leases:
            self.start_task(lease)

    def on_refused(self, exc: CommanderError, backoff: loops.Backoff, client: NodeClient) -> float:
        """A request made with `client` was refused; a token the Commander no longer knows means
        registering again (once, whichever loop notices first)."""
        if exc.status == 401 and exc.code not in ("bad_signature", "replayed_request"):
            with self.connecting:
                if self.client is client:
                    log.warning("the Commander no longer knows this node's token; registering again")
                    try:
                        self.connect()
                    except FatalConfig as fatal:
                        log.error("%s", fatal)
        return backoff.failed(exc)

    def heartbeat_loop(self) -> None:
        backoff = loops.Backoff("heartbeat", log)
        self.heartbeat_interval = self.identity.get("heartbeat_interval", self.heartbeat_interval)
        loops.run_forever("heartbeat", lambda: self.heartbeat_once(backoff), stop=self.done, logger=log)

    def heartbeat_once(self, backoff: loops.Backoff) -> None:
        if self.detection.runner is None:
            self.detect_runner()
        client = self.client
        try:
            reply = client.heartbeat(**self.heartbeat_body())
            backoff.ok()
            self.heartbeat_interval = reply["heartbeat_interval"]
            self.node_state = reply["state"]
            self.obey(reply["orders"])
            self.take_offer(reply.get("credential"))
            wait = self.heartbeat_interval
        except CommanderUnreachable as exc:
            wait = min(backoff.failed(exc), self.heartbeat_interval)
        except CommanderError as exc:
            wait = min(self.on_refused(exc, backoff, client), self.heartbeat_interval)
        self.poke_heartbeat.wait(wait)
        self.poke_heartbeat.clear()

    def heartbeat_body(self) -> dict:
        with self.lock:
            running = [r.lease for r in self.running.values()]
        # Results still on disk keep their leases alive too, so a Commander outage loses nothing.
        held = [result for _, result in self.state.held()]
        refs = {(x["task_id"], x["attempt"]): dict(task_id=x["task_id"], attempt=x["attempt"], lease_token=x["lease_token"])
                for x in running + held}
        runner = self.detection.runner
        return dict(open_slots=max(0, self.slots - len(running)), running=list(refs.values())[:64],
                    runner=runner.name if runner else None, problem=self.detection.problem,
                    capabilities=self.capabilities(), draining=self.stopping.is_set(),
                    credential_kinds=self.detection.wants)

    def obey(self, orders: dict) -> None:
        if orders.get("rotate_key"):
            self.rotate_key(orders["rotate_key"])
        for order in orders["cancel"]:
            with self.lock:
                item = self.running.get(order["lease_token"])
            if item and not item.cancel.is_set():
                log.info("cancelling task %s (attempt %s) on the Commander's order", order["task_id"], order["attempt"])
                item.cancel.set()

    def rotate_key(self, signing_key: str) -> None:
        """On disk first: a restart must never come back with a key the Commander may have retired.
        Results still held are signed when sent, so they go out with the new key."""
        if signing_key == self.identity["signing_key"]:
            return
        self.identity = dict(self.identity, signing_key=signing_key)
        self.state.save_identity(self.identity)
        self.client.use_key(signing_key)
        log.info("switched to a new request-signing key on the Commander's order")
        self.poke_heartbeat.set()  # sign with it now, so the Commander retires the old one soon

    # --- tasks -------------------------------------------------------------------------------

    def start_task(self, lease: dict) -> None:
        sealed = lease.pop("runner_credential", None)  # opened only where the task runs, kept nowhere else
        item = Running(lease)
        with self.lock:
            self.running[lease["lease_token"]] = item
        log.info("task %s attempt %s: started", lease["task_id"], lease["attempt"])
        threading.Thread(target=self.execute, args=(item, sealed), name=f"task-{lease['task_id']}",
                         daemon=True).start()

    def open_credential(self, lease: dict, sealed: dict | None) -> Credential | None:
        """A lease's runner credential, opened with this node's seal key for that lease. It lives
        in this task's TaskSpec only (memory: never written, never logged) and goes when the task
        ends."""
        if not sealed:
            return None
        from m3shd import sealing  # cryptography: loaded only once a credential comes

        try:
            kind = sealed["kind"]
            secret = sealing.open_sealed(self.seal_private, sealed["sealed"], sealing.context(
                self.identity["node_id"], lease["task_id"], lease["attempt"], kind))
            return Credential(kind, secret.decode())
        except (sealing.Unsealable, KeyError, TypeError, UnicodeDecodeError):
            log.warning("task %s: its runner credential does not open with this node's seal key; running without "
                        "it", lease["task_id"])
            return None

    def execute(self, item: Running, sealed: dict | None = None) -> None:
        lease = item.lease
        # The agent's time limit, within this node's own.
        timeout = min(lease.get("timeout_s") or self.settings.task_timeout, self.settings.task_timeout)
        spec = TaskSpec.from_lease(dict(lease, timeout_s=timeout))
        spec.credential = self.open_credential(lease, sealed)
        spec.call_tool = functools.partial(self.call_tool, lease)
        started = time.time()
        try:
            result = self.fetch_images(lease, spec) or self.detection.runner.run(spec, item.cancel)
            finished = time.time()
            if result.cancelled:
                log.info("task %s attempt %s: cancelled", lease["task_id"], lease["attempt"])
                return
            # On disk before the slot frees: a draining agent must never see neither.
            self.state.hold(dict(
                task_id=lease["task_id"], attempt=lease["attempt"], lease_token=lease["lease_token"],
                status=result.status, output=result.output, error=result.error, infra_failure=result.infra_failure,
                usage=result.usage, cost_usd=result.cost_usd, runner=self.detection.runner.name, model=result.model,
                started_at=started, finished_at=finished, duration_ms=int((finished - started) * 1000),
                prompt_sha256=wire.sha256_hex(lease["prompt"].encode()), **wire.binding(lease),
                **(dict(runner_notes=result.notes) if result.notes else {}),
            ))
            log.info("task %s attempt %s: %s in %.1f s", lease["task_id"], lease["attempt"], result.status,
                     finished - started)
            self.poke_outbox.set()
        finally:
            with self.lock:
                self.running.pop(lease["lease_token"], None)
                self.slot_freed.notify_all()

    def call_tool(self, lease: dict, tool: str, args: dict) -> dict:
        """A model's [TOOL_CALL], sent to the Commander under the task's lease; a call it cannot
        answer is an answer too (ok false, and why), which goes back to the model."""
        try:
            return self.client.call_tool(lease["task_id"], lease["attempt"], lease["lease_token"], tool, args,
                                         timeout=TOOL_CALL_WAIT)
        except CommanderUnreachable as exc:
            return dict(tool=tool, ok=False, error=f"the Commander could not be reached: {exc}")
        except CommanderError as exc:
            return dict(tool=tool, ok=False, error=exc.message)

    def fetch_images(self, lease: dict, spec: TaskSpec) -> RunResult | None:
        """Fetch the lease's attachments into `spec` (signed requests; each checked against its
        SHA-256); a failure to get them ends the attempt: this node's fault when the Commander
        could not be reached or sent other bytes, the task's when it refused."""
        try:
            spec.images = [Image(ref["media_type"], self.client.fetch_attachment(ref["sha256"]))
                           for ref in lease.get("attachments") or ()]
        except CommanderUnreachable as exc:
            return failed(f"could not fetch the task's images: {exc}", spec.model, infra=True)
        except CommanderError as exc:
            return failed(f"could not fetch the task's images: {exc.message}", spec.model,
                          infra=exc.status >= 500)
        return None

    def outbox_loop(self) -> None:
        backoff = loops.Backoff("delivering results", log)
        loops.run_forever("delivering results", lambda: self.deliver_held(backoff), stop=self.done, logger=log)

    def deliver_held(self, backoff: loops.Backoff) -> None:
        wait = 5.0
        for path, result in self.state.held():
            client = self.client
            try:
                reply = client.post_result(result)
                backoff.ok()
                if reply["duplicate"]:
                    log.info("task %s: result was already accepted", result["task_id"])
            except CommanderUnreachable as exc:
                wait = backoff.failed(exc)
                break
            except CommanderError as exc:
                if exc.status in (404, 409):
                    log.warning("task %s attempt %s: result refused: %s", result["task_id"], result["attempt"], exc.message)
                elif exc.status >= 500 or exc.status == 401:
                    wait = self.on_refused(exc, backoff, client) if exc.status == 401 else backoff.failed(exc)
                    break
                else:
                    log.error("task %s: result rejected, kept in %s: %s", result["task_id"], path, exc.message)
                    path.rename(path.with_suffix(".rejected"))
                    continue
            path.unlink(missing_ok=True)
        self.poke_outbox.wait(wait)
        self.poke_outbox.clear()

    def drain(self) -> None:
        """After SIGTERM: let running tasks finish (bounded), deliver their results, deregister."""
        deadline = time.time() + self.settings.drain_timeout
        with self.lock:
            while self.running and time.time() < deadline:
                self.slot_freed.wait(1.0)
            leftover = list(self.running.values())
        for item in leftover:
            item.cancel.set()  # out of time: end them; their leases expire and are retried elsewhere
        flush_until = time.time() + 15
        while self.state.held() and time.time() < flush_until:
            self.poke_outbox.set()
            time.sleep(0.2)
        left = len(self.state.held())
        if left:
            # Deregistering would expire their leases; they are delivered at the next start instead.
            log.warning("%d result(s) kept in %s for the next start", left, self.state.outbox)
            self.done.set()
            return
        try:
            self.client.deregister()
            log.info("deregistered; goodbye")
        except (CommanderUnreachable, CommanderError) as exc:
            log.warning("could not deregister: %s", exc)
        self.done.set()


def run(settings: N0d3Settings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s n0d3 %(levelname)s %(message)s")
    os.umask(0o077)
    return Agent(settings).run()
