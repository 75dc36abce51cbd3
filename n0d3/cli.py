"""The N0D3's commands: `n0d3 run` and `n0d3 join`. Imports only the standard library and m3shd at
its top (see m3shd/components.py); the agent loads when a command runs."""

from __future__ import annotations

from m3shd import config
from m3shd.cli import CliError, say
from m3shd.components import CommandLine, Commands


def cmd_n0d3_run(args) -> int:
    from n0d3 import agent
    from n0d3.settings import N0d3Settings

    settings = config.load(N0d3Settings, args.config, url=args.url, join_token=args.join_token, slots=args.slots,
                           name=args.name)
    return agent.run(settings)


def cmd_n0d3_join(args) -> int:
    """Save the Commander URL and join token, and register once to prove they work."""
    from n0d3.agent import Agent, FatalConfig
    from n0d3.settings import N0d3Settings

    values = {"url": args.url, "join_token": args.token}
    if args.ca_hash:
        values["ca_hash"] = args.ca_hash
    if args.name:
        values["name"] = args.name
    if args.slots:
        values["slots"] = args.slots
    if args.capabilities:
        values["capabilities"] = [c.strip() for c in args.capabilities.split(",") if c.strip()]
    settings = config.load(N0d3Settings, None, **values)
    agent = Agent(settings)
    agent.detect_runner()
    try:
        agent.connect(fall_back=False)
    except FatalConfig as exc:
        raise CliError(str(exc)) from None
    path = config.config_dir() / "n0d3.toml"
    config.write_section(path, "n0d3", values)
    pinned = f"; the Commander's CA is pinned in {agent.ca_file}" if agent.ca_file else ""
    say(f"joined as node {agent.identity['node_id']}{pinned}; settings saved in {path}; start it with `m3shd n0d3 run`")
    return 0


def register(line: CommandLine) -> None:
    n0d3 = line.group("n0d3", help="the agent on a worker machine")
    p = n0d3.add_parser("run", parents=[line.common], help="run the agent (SIGTERM drains: running tasks finish)")
    p.add_argument("--url", help="Commander URL")
    p.add_argument("--join-token", help="join string or token (needed only until the node has registered)")
    p.add_argument("--name", help="node name (default: host name)")
    p.add_argument("--slots", type=int, help="tasks run at once")
    p.set_defaults(func=cmd_n0d3_run)
    p = n0d3.add_parser("join", help="register with a Commander, pin its CA, and save its URL and join token")
    p.add_argument("url", metavar="URL")
    p.add_argument("token", metavar="TOKEN", help="the join string `m3shd token create --kind join` prints "
                                                  "(TOKEN#sha256:HASH: the hash pins the Commander's CA), or a bare token")
    p.add_argument("--ca-hash", metavar="sha256:HEX", help="the Commander's CA hash, for a bare token: the CA fetched "
                                                          "over the first connection must match it")
    p.add_argument("--name")
    p.add_argument("--slots", type=int)
    p.add_argument("--capabilities", help="comma-separated labels or key=value pairs")
    p.set_defaults(func=cmd_n0d3_join)


# PyNaCl signs every result (n0d3/state.py); the Anthropic SDK and zeroconf, which the extra also
# installs, are optional: a N0D3 without them says so (no SDK runner, no mDNS) and runs on.
COMMANDS = Commands(register, needs=("nacl",), extra="n0d3", settings="n0d3.settings:N0d3Settings")
