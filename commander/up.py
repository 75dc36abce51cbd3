"""`m3shd up`: a whole mesh on this machine: the Commander under gunicorn and one N0D3."""

from __future__ import annotations

import getpass
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from commander import accounts, pki, tokens
from commander.app import build_commander
from commander.models import Token, User
from commander.secrets import token_hash
from commander.settings import CommanderSettings
from m3shd import config
from m3shd.cli import say
from m3shd.client import ApiClient, CommanderUnreachable
from m3shd.files import write_private
from m3shd.wire import NodeState, Role


def cli_actor() -> str:
    """How the audit log names someone acting on the Commander's machine directly."""
    return f"cli:{getpass.getuser()}"


def local_commander(config_file):
    """This machine's Commander database, opened directly (migrated, keys loaded)."""
    return build_commander(config.load(CommanderSettings, config_file))


def create_token(cmdr, name, kind="api", permissions=None, role=None, expires_in=None, agent=None) -> dict:
    """Create a token straight in the Commander's database (bootstrap: no API token yet)."""
    with cmdr.db.connection_context(), cmdr.writing():
        token, secret = tokens.create(name, cli_actor(), kind, permissions, role, expires_in, agent=agent)
    created = tokens.as_created(token, secret)
    return created | {"join": pki.join_for(cmdr.settings, created)}


def create_token_locally(config_file, name, kind="api", permissions=None, role=None, expires_in=None,
                         agent=None) -> dict:
    return create_token(local_commander(config_file), name, kind, permissions, role, expires_in, agent)


def ensure_first_admin(cmdr) -> str | None:
    """On a Commander with no accounts, create `admin` with a random password; returns it (shown once)."""
    with cmdr.db.connection_context():
        if User.select().exists():
            return None
        password = secrets.token_urlsafe(12)
        accounts.create_user(cmdr, "admin", password, Role.ADMIN, cli_actor())
    return password


def _accepted(cmdr, secret) -> bool:
    """Does this Commander's database accept the token `secret` now?"""
    if not isinstance(secret, str) or not secret:
        return False
    with cmdr.db.connection_context():
        row = Token.get_or_none(Token.token_hash == token_hash(secret))
    return tokens.refusal(row, time.time()) is None


def _saved_token(cmdr, path: Path, name: str, kind: str, role: str | None) -> str:
    """Reuse the token kept in `path` while the database still accepts it, else make a new one."""
    if path.exists():
        secret = path.read_text().strip()
        if _accepted(cmdr, secret):
            return secret
    secret = create_token(cmdr, name, kind, role=role)["token"]
    write_private(path, secret + "\n")
    return secret


def point_client_here(cmdr, client_file: Path, url: str, token: str, ca_file: str = "") -> str | None:
    """Save [client] url, token and CA file in `client_file`, so the m3shd command uses this mesh; returns
    None, or why the file was left as it is: it is another Commander's (its URL is elsewhere and
    this Commander does not know its token), or it holds more than this writes."""
    if client_file.exists():
        try:
            document = tomllib.loads(client_file.read_text())
        except (tomllib.TOMLDecodeError, OSError) as exc:
            return f"{client_file} cannot be read ({exc}), so it is left as it is"
        saved = document.get("client")
        if set(document) != {"client"} or not isinstance(saved, dict) or not set(saved) <= {"url", "token", "ca_file"}:
            return f"{client_file} holds more than a Commander URL and token, so it is left as it is"
        if saved.get("url") != url and not _accepted(cmdr, saved.get("token")):
            return f"{client_file} points at another Commander ({saved.get('url')}), so it is left as it is"
    # The whole file is rewritten: a CA pinned by an earlier `up` with TLS goes when this one has none.
    config.write_section(client_file, "client", {"url": url, "token": token} | ({"ca_file": ca_file} if ca_file else {}))
    return None


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return True
        except OSError:
            return False


def _stop(process: subprocess.Popen, grace: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def up(args) -> int:
    settings = config.load(CommanderSettings, args.config, bind=args.bind)
    host, _, port = settings.bind.rpartition(":")
    tls = pki.enabled(settings)
    # This machine's clients reach a wildcard bind on loopback, which the certificate names.
    url = f"{'https' if tls else 'http'}://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}"
    if not _port_free(host, int(port)):
        say(f"m3shd up: {settings.bind} is already in use (another m3shd up?). "
            f"Stop it, or pick another address with --bind HOST:PORT.")
        return 2
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    say(f"preparing the Commander's database in {data} …")
    local = local_commander(args.config)
    admin = _saved_token(local, data / "admin.token", "admin (m3shd up)", "api", Role.ADMIN)
    join = _saved_token(local, data / "local-join.token", "local N0D3 (m3shd up)", "join", None)
    first_password = ensure_first_admin(local)
    ca_file = ""
    if pki.mesh_issued(settings):
        pki.ensure_ca(settings)  # now: this machine's clients pin it before the Commander has started
        ca_file = str(pki.directory(settings) / "ca.pem")
    client_file = config.config_dir() / "client.toml"
    client_kept = point_client_here(local, client_file, url, admin, ca_file)
    getattr(local.db, "close_all", local.db.close)()  # the Commander we start opens its own

    env = dict(os.environ, M3SHD_COMMANDER_BIND=settings.bind, M3SHD_N0D3_URL=url, M3SHD_N0D3_JOIN_TOKEN=join,
               M3SHD_N0D3_CA_FILE=ca_file)
    if args.slots:
        env["M3SHD_N0D3_SLOTS"] = str(args.slots)
    extra = ["--config", args.config] if args.config else []
    say(f"starting the Commander on {url} …")
    # Own sessions: Ctrl-C reaches only us, and we stop the N0D3 (it drains) before the Commander.
    commander = subprocess.Popen([sys.executable, "-m", "m3shd", "commander", "serve", *extra], env=env,
                                 start_new_session=True)
    children = [commander]

    def stop_all(*_):
        for child in reversed(children):  # the N0D3 first: it drains, then deregisters
            _stop(child, 30)

    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(0)))
    try:
        api = ApiClient(url, admin, timeout=2, ca_file=ca_file)
        deadline = time.time() + 30
        while True:
            if commander.poll() is not None:
                say("m3shd up: the Commander exited during start-up; its log is above")
                return 1
            try:
                api.health()
                break
            except CommanderUnreachable:
                if time.time() > deadline:
                    say("m3shd up: the Commander did not answer within 30 s")
                    stop_all()
                    return 1
                time.sleep(0.2)
        say("starting the local N0D3 …")
        children.append(subprocess.Popen([sys.executable, "-m", "m3shd", "n0d3", "run", *extra], env=env,
                                         start_new_session=True))
        node = _wait_for_node(api, children[-1])
        _banner(url, admin, client_file, client_kept, node, first_password, pki.ca_hash(settings) if tls else None,
                pki.beyond_loopback(settings.bind))
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        say("m3shd up: a part of the mesh exited; stopping the rest")
        return 1
    except KeyboardInterrupt:
        say("\nstopping: the N0D3 finishes its running tasks first …")
        return 0
    finally:
        stop_all()


def _wait_for_node(api: ApiClient, process: subprocess.Popen) -> dict | None:
    deadline = time.time() + 20
    while time.time() < deadline and process.poll() is None:
        found = [n for n in api.list_nodes() if n["state"] == NodeState.ACTIVE]
        if found:
            return found[-1]
        time.sleep(0.3)
    return None


def _banner(url: str, admin: str, client_file: Path, client_kept: str | None, node: dict | None,
            first_password: str | None, ca_hash: str | None, on_the_lan: bool) -> None:
    lines = ["", "M3SHD is up.",
             f"  Dashboard    {url}   (log in below; API description: {url}/api/openapi.json)",
             f"  Admin token  {admin}"]
    if client_kept is None:
        lines.append(f"               saved in {client_file}, so the m3shd command uses it")
    else:
        lines += [f"               NOT saved: {client_kept}.",
                  f"               Point the m3shd command here with --url {url} --token <the admin token>",
                  "               (or M3SHD_CLIENT_URL and M3SHD_CLIENT_TOKEN), or remove that file and start again."]
    if ca_hash:
        lines += [f"  TLS          from the mesh CA {ca_hash}",
                  "               other machines pin it: `m3shd login URL`, and join with the string "
                  "`m3shd token create NAME --kind join` prints"]
    elif on_the_lan:
        lines.append("  TLS          OFF: tokens, cookies, prompts and answers cross the network in clear")
    if first_password:
        lines += [f"  Login        admin / {first_password}",
                  "               shown once; change it with `m3shd admin reset-password admin`"]
    if node is None:
        lines.append("  N0D3         did not register; see its log above")
    elif node["runner"]:
        lines.append(f"  N0D3         {node['name']} (node {node['id']}), runner {node['runner']}, {node['slots']} slots")
    else:
        lines.append(f"  N0D3         {node['name']} (node {node['id']}) has NO runner: {node['problem']}")
        lines.append("               tasks wait, with this reason shown, until it is fixed")
    lines += ["", 'Try it from another terminal:  m3shd task submit "Write a haiku about meshes"',
              "Stop with Ctrl-C (the N0D3 finishes its running tasks first).", ""]
    say("\n".join(lines))
