"""`m3shd login URL`: trust a Commander and make it this machine's Commander for the m3shd command,
the MCP server and the bridge ([client] url, token and ca_file in client.toml).

Over HTTPS from a mesh CA, the CA certificate is fetched over a first connection that is not
verified; its hash is shown and the CA kept only after a yes at the terminal, or when it equals
--ca-hash (`m3shd commander ca` prints it on the Commander's machine). From then on every
connection is verified against the kept CA, and a Commander that cannot prove itself with it
is refused (m3shd/trust.py).
"""

from __future__ import annotations

import sys

from m3shd import config
from m3shd.cli import CliError, say
from m3shd.components import CommandLine
from m3shd.files import write_private


def cmd_login(args) -> int:
    from m3shd import trust
    from m3shd.client import ApiClient

    url = args.url.rstrip("/")
    current = config.load(config.ClientSettings, args.config)
    token = args.token or (current.token if current.url.rstrip("/") == url else "")
    try:
        expected = trust.check_hash(args.ca_hash, "--ca-hash") if args.ca_hash else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    ca_file = ""
    if not url.startswith("https://"):
        if expected:
            raise CliError(f"--ca-hash pins a TLS certificate, but {url} is plain HTTP: use its https:// URL")
        say(f"warning: {url} is plain HTTP: the token and everything you send cross the network in clear")
    else:
        try:
            pem = trust.fetch_ca(url)
        except trust.NoMeshCa as exc:
            say(f"{exc}; verifying it with this machine's trust store")
        else:
            seen = trust.pem_hash(pem)
            if expected and seen != expected:
                raise trust.mismatch(url, expected, seen)
            if not expected:
                confirm(url, seen)
            kept = config.config_dir() / "commander-ca.pem"
            write_private(kept, pem)
            ca_file = str(kept)
    ApiClient(url, token, ca_file=ca_file or None).health()  # the kept CA verifies the certificate and its name
    path = config.config_dir() / "client.toml"
    config.write_section(path, "client", {"url": url, "token": token, "ca_file": ca_file})
    pinned = f", its CA pinned in {ca_file}" if ca_file else ""
    say(f"logged in to {url}{pinned}; saved in {path}"
        + ("" if token else "; no API token yet: run it again with --token (`m3shd token create NAME` makes one)"))
    return 0


def confirm(url: str, seen: str) -> None:
    """Ask a person whether the CA the Commander showed is the one they expect."""
    question = (f"The Commander at {url} presents the mesh CA\n  {seen}\nCompare it with what `m3shd commander ca` "
                "prints on the Commander's machine. Trust it? [y/N] ")
    if not sys.stdin.isatty():
        raise CliError(f"the Commander at {url} presents the mesh CA {seen}; no terminal to ask whether to trust it: "
                       "pass --ca-hash with the hash `m3shd commander ca` prints on the Commander's machine")
    sys.stderr.write(question)
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CliError("not trusted; nothing saved")


def register(line: CommandLine) -> None:
    p = line.top.add_parser(
        "login", parents=[line.common], help="trust a Commander (pin its CA) and save it as this machine's Commander",
        description="Fetch the Commander's mesh CA, show its hash and keep it once you confirm it (or it equals "
                    "--ca-hash); save the URL, the CA and the token in client.toml, which the m3shd command, the "
                    "MCP server and the bridge use. Every later connection is verified against that CA.")
    p.add_argument("url", metavar="URL", help="the Commander, e.g. https://commander.local:8470")
    p.add_argument("--ca-hash", metavar="sha256:HEX", help="trust the CA only if its key has this hash "
                                                          "(`m3shd commander ca` on the Commander prints it); no question asked")
    p.add_argument("--token", help="the API token to save with it (default: the one saved for this URL)")
    p.set_defaults(func=cmd_login)
