"""The Commander's commands: `commander serve`, `up`, `admin`, and `token create --local`.

Imports only the standard library and m3shd at its top (see m3shd/components.py): `commander
serve` must patch gevent in before peewee, Flask or requests are loaded.
"""

from __future__ import annotations

import os
import sys

from m3shd import config
from m3shd.cli import CliError, emit, say
from m3shd.commands import tokens
from m3shd.components import CommandLine, Commands
from m3shd.wire import Role


def cmd_up(args) -> int:
    from commander.up import up

    return up(args)


def cmd_commander_serve(args) -> int:
    # Patch before peewee and the Commander are imported: modules that bind threading.local
    # or Lock at import would otherwise share real thread state across every greenlet.
    from gevent import monkey

    monkey.patch_all()
    from commander.settings import CommanderSettings

    os.umask(0o077)  # whatever the Commander writes in its data directory is its own (the database holds secrets)
    settings = config.load(CommanderSettings, args.config, bind=args.bind, workers=args.workers)
    from commander.server import serve

    serve(settings)
    return 0


def cmd_commander_ca(args) -> int:
    """The mesh CA's hash (made now if this Commander will serve HTTPS from it and has none yet)."""
    from commander import pki
    from commander.settings import CommanderSettings

    settings = config.load(CommanderSettings, args.config)
    if not pki.mesh_issued(settings):
        why = "it serves the certificate in [commander] tls_cert" if settings.tls_cert else \
            f"TLS is off for bind {settings.bind} ([commander] tls = {settings.tls!r})"
        raise CliError(f"this Commander has no mesh CA: {why}")
    certificate = pki.ensure_ca(settings)
    found = {"ca_hash": pki.spki_hash(certificate), "file": str(pki.directory(settings) / "ca.pem")}
    emit(args, found, lambda f: (print(f["ca_hash"]), say(f"the mesh CA, in {f['file']}: joins and "
                                                            "`m3shd login` pin it by this hash")))
    return 0


def cmd_token_create(args) -> int:
    """`token create` over the API, or with --local straight in this machine's Commander database."""
    if not args.local:
        return tokens.cmd_token_create(args)
    from commander.exceptions import CommanderError
    from commander.up import create_token_locally

    try:
        created = create_token_locally(args.config, args.name, args.kind, tokens.token_permissions(args), args.role,
                                       args.expires_in, args.agent)
    except CommanderError as exc:
        raise CliError(exc.message) from None
    return tokens.show_token(args, created)


def read_password(args) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask for the password: pipe it in with --password-stdin")
    import getpass

    first = getpass.getpass("new password: ")
    if getpass.getpass("again: ") != first:
        raise CliError("the two passwords differ")
    return first


def cmd_admin_user(args) -> int:
    """create-user and reset-password: straight in this machine's Commander database."""
    from commander import accounts
    from commander.exceptions import CommanderError
    from commander.models import User
    from commander.up import cli_actor, local_commander

    password = read_password(args)
    cmdr = local_commander(args.config)
    try:
        with cmdr.db.connection_context():
            if args.sub == "create-user":
                accounts.create_user(cmdr, args.username, password, args.role, cli_actor())
                say(f"user {args.username} created with role {args.role}")
            else:
                user = User.get_or_none(User.username == args.username)
                if user is None:
                    raise CliError(f"no user named {args.username}")
                accounts.update_user(cmdr, user.id, cli_actor(), password=password)
                say(f"password of {args.username} reset; its sessions have ended")
    except CommanderError as exc:
        raise CliError(exc.message) from None
    return 0


def register(line: CommandLine) -> None:
    common = line.common
    p = line.top.add_parser("up", parents=[common], help="start a local mesh: Commander + one N0D3",
                            description="Start the Commander under gunicorn and one N0D3 on this machine; "
                                        "print the URL and the admin token. Ctrl-C stops both.")
    p.add_argument("--bind", help=f"HOST:PORT for the Commander (default 127.0.0.1:{config.DEFAULT_PORT})")
    p.add_argument("--slots", type=int, help="tasks the local N0D3 runs at once (default 2)")
    p.set_defaults(func=cmd_up)

    p = line.group("commander", help="the Commander").add_parser(
        "serve", parents=[common], help="serve the API under gunicorn (gevent workers)")
    p.add_argument("--bind", help="HOST:PORT")
    p.add_argument("--workers", type=int, help="worker processes (default 2)")
    p.set_defaults(func=cmd_commander_serve)
    p = line.groups["commander"].add_parser(
        "ca", parents=[common], help="print the hash of the mesh CA that joins and `m3shd login` pin")
    p.add_argument("--json", action="store_true", help="print JSON (ca_hash, file)")
    p.set_defaults(func=cmd_commander_ca)

    admin = line.group("admin", help="operator accounts, on the Commander's machine")
    p = admin.add_parser("create-user", parents=[common], help="create a dashboard account")
    p.add_argument("username")
    p.add_argument("--role", choices=tuple(Role), default=Role.COMMANDER)
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=cmd_admin_user)
    p = admin.add_parser("reset-password", parents=[common], help="set a new password (ends the user's sessions)")
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=cmd_admin_user)

    p = line.command("token", "create")
    p.add_argument("--local", action="store_true", help="write to this machine's Commander database directly")
    p.set_defaults(func=cmd_token_create)


# Everything the commander extra installs: `commander serve` loads all of it.
COMMANDS = Commands(register, needs=("flask", "gunicorn", "gevent", "peewee", "cryptography", "nacl", "pydantic",
                                     "zeroconf"), extra="commander", settings="commander.settings:CommanderSettings")
