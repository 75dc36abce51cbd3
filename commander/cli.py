"""The Commander's commands: `commander serve`, `up`, `admin`, `keys`, and `token create --local`.

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


def read_password(args, what: str = "new password", again: bool = True, flag: str = "--password-stdin") -> str:
    """One line of standard input with `flag`, else asked at the terminal (twice when `again`)."""
    if getattr(args, flag[2:].replace("-", "_")):
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise CliError(f"no terminal to ask for the {what}: pipe it in with {flag}")
    import getpass

    first = getpass.getpass(f"{what}: ")
    if again and getpass.getpass("again: ") != first:
        raise CliError(f"the two {what}s differ")
    return first


def cmd_keys(args) -> int:
    """The keyring's commands, on the Commander's machine (commander/keyring.py, rekey.py)."""
    import json

    from commander import keyring, rekey
    from commander.settings import CommanderSettings

    settings = config.load(CommanderSettings, args.config)
    data_dir = settings.data_dir

    def ask(what: str, again: bool = True) -> str:
        return read_password(args, what, again, flag="--passphrase-stdin")

    def new_source(to: str) -> tuple[keyring.Wrap, keyring.KekSource]:
        wrap = keyring.Wrap.parse(to)
        return wrap, keyring.KekSource(ask("new KEK passphrase") if wrap.kind == "passphrase" else None)

    try:
        if args.sub == "new-kek-file":
            path = os.path.abspath(args.path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(os.urandom(32))
            say(f"wrote 32 random bytes to {path} (0600); `m3shd keys rotate-kek --to file:{path}` wraps the keyring with it")
        elif args.sub == "status":
            keyring.ensure(data_dir)
            keys, wrap, recovery = keyring.read(data_dir)
            found = {"keyring": str(keyring.path_in(data_dir)), "wrap": wrap.kind, "kek_file": wrap.kek_file or None,
                     "data_keys": len(keys.data), "rotation_under_way": bool(keys.retiring),
                     "recovery_kit": recovery is not None}
            emit(args, found, lambda f: say(f"keyring {f['keyring']}: {wrap.describe()}; {f['data_keys']} data "
                                            f"key(s){', a rotation under way' if f['rotation_under_way'] else ''}; "
                                            f"recovery kit: {'exported' if f['recovery_kit'] else 'none exported'}"))
        elif args.sub == "rotate":
            from commander.up import local_commander

            cmdr = local_commander(args.config)
            done = rekey.rotate(cmdr, args.batch, progress=lambda column, n, total: say(f"{column}: {n}/{total}"))
            emit(args, done, lambda d: say(f"re-encrypted {d['reencrypted']} values under a new data key; "
                                           "the older keys are retired"))
        elif args.sub == "rotate-kek":
            wrap, source = new_source(args.to)
            keyring.ensure(data_dir)
            keys, _, recovery = keyring.read(data_dir)
            keyring.write(data_dir, keys, wrap, keyring.recovery_public(recovery), source)
            say(f"the keyring is now {wrap.describe()}; no stored value changed")
        elif args.sub == "export-recovery":
            keyring.ensure(data_dir)
            kit, public = keyring.new_kit(ask("recovery passphrase (12 characters or more)"))
            fd = os.open(os.path.abspath(args.out), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(kit, out, indent=1)
            keys, wrap, _ = keyring.read(data_dir)
            keyring.write(data_dir, keys, wrap, public)  # every later rewrite reseals to the kit too
            say(f"wrote the recovery kit to {args.out}: keep it, and its passphrase, off this machine. "
                "It opens this keyring and every later one (rotations included)")
        else:  # recover
            with open(args.kit) as kit_file:
                kit = json.load(kit_file)
            keys = keyring.open_with_kit(data_dir, kit, ask("recovery passphrase", again=False))
            wrap, source = new_source(args.to)
            keyring.write(data_dir, keys, wrap, keyring.recovery_public(kit), source)
            say(f"recovered: the keyring is now {wrap.describe()}; the Commander starts with it")
    except (keyring.KeyringError, OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    return 0


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

    keys = line.group("keys", help="the keys that encrypt stored data, on the Commander's machine",
                      description="The Commander's keyring (<data_dir>/keyring): data keys that encrypt prompts, "
                                  "outputs, errors and secrets at rest, wrapped by a key-encryption key (KEK) if "
                                  "you give it one, and a recovery kit for when the KEK is lost.")
    p = keys.add_parser("status", parents=[common], help="how the keyring is wrapped, its keys, its recovery kit")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = keys.add_parser("rotate", parents=[common], help="add a data key, re-encrypt every stored value with it "
                        "(in batches; resumable), then retire the older keys; safe while the Commander runs")
    p.add_argument("--batch", type=int, default=500, help="values per write transaction (default 500)")
    p.add_argument("--json", action="store_true", help="print JSON")
    kek_help = "none, file:PATH (a key file of 32+ random bytes) or passphrase ($M3SHD_KEK_PASSPHRASE when serving)"
    p = keys.add_parser("rotate-kek", parents=[common], help="wrap the keyring with another KEK; no stored value changes")
    p.add_argument("--to", required=True, help=kek_help)
    p.add_argument("--passphrase-stdin", action="store_true", help="read a new passphrase from standard input")
    p = keys.add_parser("new-kek-file", parents=[common], help="write a new KEK file (32 random bytes, 0600)")
    p.add_argument("path")
    p = keys.add_parser("export-recovery", parents=[common], help="write a recovery kit, protected by a passphrase")
    p.add_argument("--out", required=True, help="the kit's file (must not exist)")
    p.add_argument("--passphrase-stdin", action="store_true", help="read the recovery passphrase from standard input")
    p = keys.add_parser("recover", parents=[common], help="open the keyring with the recovery kit after the KEK "
                        "is lost, and wrap it with a new KEK")
    p.add_argument("--kit", required=True, help="the recovery kit's file")
    p.add_argument("--to", required=True, help=kek_help)
    p.add_argument("--passphrase-stdin", action="store_true",
                   help="read the kit's passphrase, then any new KEK passphrase, from standard input")
    for parser in keys.choices.values():
        parser.set_defaults(func=cmd_keys)

    p = line.command("token", "create")
    p.add_argument("--local", action="store_true", help="write to this machine's Commander database directly")
    p.set_defaults(func=cmd_token_create)


# Everything the commander extra installs: `commander serve` loads all of it.
COMMANDS = Commands(register, needs=("flask", "gunicorn", "gevent", "peewee", "cryptography", "nacl", "pydantic",
                                     "zeroconf"), extra="commander", settings="commander.settings:CommanderSettings")
