"""The image builder's command: `image build`. Imports only the standard library and m3shd at its
top (see m3shd/components.py); the builder loads when it runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from m3shd.cli import CliError, say
from m3shd.components import CommandLine, Commands


def cmd_image_build(args) -> int:
    """Build a flashable Pi 5 image; all its logic lives in images.pi5."""
    from images.pi5.boot_files import Spec, Wifi
    from images.pi5.build import build
    from images.pi5.tools import ImageError

    wifi = None
    if args.wifi_country and not args.wifi:
        raise CliError("--wifi-country needs --wifi SSID")
    if args.wifi:
        if not args.wifi_country:
            raise CliError("--wifi needs --wifi-country (a two-letter code such as GB or US)")
        passphrase = os.environ.get("M3SHD_WIFI_PASSPHRASE")
        if passphrase is None:
            if not sys.stdin.isatty():
                raise CliError("no Wi-Fi passphrase: set M3SHD_WIFI_PASSPHRASE (it never goes on the command line)")
            import getpass

            passphrase = getpass.getpass(f"passphrase for Wi-Fi {args.wifi}: ")
        wifi = Wifi(args.wifi, passphrase, args.wifi_country.upper())
    try:
        keys = tuple(line.strip() for path in args.ssh_key for line in Path(path).read_text().splitlines()
                     if line.strip() and not line.startswith("#"))
    except OSError as exc:
        raise CliError(f"reading an SSH key: {exc}") from None
    if not keys:
        say("note: no --ssh-key given; the board will accept logins on its console only")
    if not args.url:
        say("note: no --url; the N0D3 will look for the Commander on the LAN (mDNS)")
    if not args.join_token:
        say("note: no --join-token; the N0D3 will wait as pending until you approve it (`m3shd nodes approve ID`)")
    capabilities = tuple(c.strip() for c in (args.capabilities or "").split(",") if c.strip())
    spec = Spec(url=args.url or "", join_token=args.join_token or "", user=args.user, hostname=args.hostname,
                ssh_keys=keys, capabilities=capabilities, wifi=wifi)
    try:
        build(Path(args.base), Path(args.output), spec, sha256=args.sha256,
              wheel=Path(args.wheel) if args.wheel else None, say=say,
              claude_code=args.claude_code_version if args.claude_code else None,
              claude_code_package=Path(args.claude_code_package) if args.claude_code_package else None)
    except ImageError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:  # unreadable input, full disk, ...: the partial output is already gone
        where = args.output if str(exc.filename or "").endswith(".partial") else exc.filename or args.output
        raise CliError(f"{where}: {exc.strerror or exc}") from None
    return 0


def register(line: CommandLine) -> None:
    p = line.group("image", help="flashable images that join the mesh").add_parser(
        "build", help="make a Raspberry Pi 5 image that joins the mesh on first boot",
        description="Copy a Raspberry Pi OS Lite (64-bit) image and add, on its boot partition, the N0D3 (offline "
                    "wheels, settings, systemd unit) and a first-boot hook (cloud-init on Trixie-based images, "
                    "firstrun.sh on Bookworm-based ones). No root needed. Flash the result with Raspberry Pi Imager "
                    "(Use custom) or dd.")
    p.add_argument("base", metavar="BASE", help="the downloaded Raspberry Pi OS Lite arm64 image (.img or .img.xz)")
    p.add_argument("-o", "--output", default="m3shd-n0d3-pi5.img.xz",
                   help="the image to write, NAME.img or NAME.img.xz (default %(default)s); NAME.sha256 beside it")
    p.add_argument("--sha256", metavar="HEX", help="refuse BASE unless it has this SHA-256 (from the download page)")
    p.add_argument("--url", help="the Commander, e.g. https://commander.local:8470 (default: find it with mDNS)")
    p.add_argument("--join-token", help="the join string `m3shd token create NAME --kind join` prints (m3j_…#sha256:…, "
                                        "which pins the Commander's CA); without one the node waits as pending "
                                        "for your approval")
    p.add_argument("--wifi", metavar="SSID", help="join this Wi-Fi network (passphrase from M3SHD_WIFI_PASSPHRASE "
                                                 "or asked for)")
    p.add_argument("--wifi-country", metavar="CC", help="Wi-Fi regulatory country, e.g. GB")
    p.add_argument("--ssh-key", action="append", default=[], metavar="FILE",
                   help="authorize the public keys in FILE for the login user (repeatable)")
    p.add_argument("--user", default="m3shd", help="login user (password locked; SSH keys only; default %(default)s)")
    p.add_argument("--hostname", default="n0d3-{serial}",
                   help="host name pattern; {serial} becomes the board's serial number (default %(default)s)")
    p.add_argument("--capabilities", help="comma-separated labels the node advertises, besides board=pi5")
    p.add_argument("--wheel", help="an m3shd wheel to ship (default: build one from this checkout)")
    p.add_argument("--claude-code", action="store_true",
                   help="carry Claude Code (its native linux-arm64 build, about 180 MB, fetched from the npm "
                        "registry and cached) and install it at first boot, so the N0D3's CLI runner works on the "
                        "Commander's `m3shd runners set-token`. Without it the N0D3 runs tasks with the anthropic "
                        "SDK on the Commander's `m3shd runners set-key`")
    p.add_argument("--claude-code-version", default="latest", metavar="V", help="which (default %(default)s)")
    p.add_argument("--claude-code-package", metavar="TGZ",
                   help="carry Claude Code from a tarball fetched already "
                        "(`npm pack @anthropic-ai/claude-code-linux-arm64`), for a builder offline")
    p.set_defaults(func=cmd_image_build)


# The builder runs external programs (xz, mtools, ...), which `images.pi5.tools.need` names with
# their install hints when one is missing; in Python it needs nothing beyond the standard library.
COMMANDS = Commands(register)
