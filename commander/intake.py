"""What every request passes before its route (commander/app.py installs each piece).

- Its client address (`ClientAddress`, a WSGI middleware, so `request.remote_addr` is the client
  for throttling, the audit log and pending joins alike): the peer's, or, when the peer is one of
  `trusted_proxies`, the right-most address in X-Forwarded-For that is not a trusted proxy. A
  client can write anything to the left of that header, but each proxy appends the peer it saw,
  so walking right to left over trusted hops ends at the first address no client wrote.
- Its Host (`check_host`): one of this Commander's own names, `allowed_hosts`, or an IP address;
  else 421. DNS rebinding points a name of the attacker's at this Commander, and the browser
  then sends that name; a browser sends an IP address only for a page whose origin is that
  address, i.e. this Commander's own.
- Its Origin (`check_origin`): a state-changing request from a page of another site is refused.
  Browsers send Origin on every POST, PUT, PATCH and DELETE; other clients send none.
- Its body (`read_body`): read in full, within `body_timeout` seconds, before anything takes a
  database connection (peewee connects at the first query): a client trickling its body holds
  a greenlet, never one of the pool's connections.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from flask import request
from werkzeug.exceptions import MisdirectedRequest, RequestTimeout

from commander.exceptions import Forbidden, TooLarge
from commander.settings import CommanderSettings
from m3shd.config import ConfigError

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: list[str]) -> tuple[Network, ...]:
    """The `trusted_proxies` setting, parsed; a typo stops the Commander with the entry named."""
    parsed = []
    for cidr in cidrs:
        try:
            parsed.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"[commander] trusted_proxies: {cidr!r} is not an address or CIDR block") from None
    return tuple(parsed)


def _within(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(peer: str, forwarded_for: str, trusted: tuple[Network, ...]) -> str:
    """The client behind `peer`: see the module docstring. A hop that is not an address (a
    proxy's mistake, or garbage a client put there) ends the walk at the last good one."""
    if not _within(peer, trusted):
        return peer
    client = peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        try:
            client = str(ipaddress.ip_address(hop))
        except ValueError:
            break
        if not _within(client, trusted):
            break
    return client


class ClientAddress:
    """WSGI middleware: REMOTE_ADDR becomes `client_address` when a trusted proxy forwarded the request."""

    def __init__(self, app, trusted: tuple[Network, ...]):
        self.app, self.trusted = app, trusted

    def __call__(self, environ, start_response):
        peer = environ.get("REMOTE_ADDR", "")
        if self.trusted and _within(peer, self.trusted):
            environ["REMOTE_ADDR"] = client_address(peer, environ.get("HTTP_X_FORWARDED_FOR", ""), self.trusted)
        return self.app(environ, start_response)


def own_names(settings: CommanderSettings) -> frozenset[str]:
    """The host names this Commander answers to: localhost, the machine's name, its `.local`
    mDNS name and fully qualified name, a name it is bound to, and `allowed_hosts`."""
    bound = settings.bind.rpartition(":")[0].strip("[]")
    machine = socket.gethostname()
    short = machine.split(".")[0]
    names = {"localhost", machine, short, f"{short}.local", socket.getfqdn(), bound, *settings.allowed_hosts}
    return frozenset(name.lower().rstrip(".") for name in names if name)


def host_name(host: str) -> str:
    """The name or address in a Host header, without its port (`[::1]:8470` → `::1`)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def check_host(names: frozenset[str]) -> None:
    name = host_name(request.host).lower().rstrip(".")
    try:
        ipaddress.ip_address(name)
        return
    except ValueError:
        pass
    if name not in names:
        raise MisdirectedRequest(
            f"this Commander does not answer to the host name {name[:100]!r}; if it is one of its names "
            f"(a reverse proxy's, say), add it to [commander] allowed_hosts")


def check_origin() -> None:
    """Hosts are compared, not schemes: behind a TLS proxy the Commander itself sees http."""
    origin = request.headers.get("Origin")
    if request.method in SAFE_METHODS or origin is None:
        return
    if urlsplit(origin).netloc.lower() != request.host.lower():
        raise Forbidden("cross_origin", "requests from another site's pages are refused: use the dashboard "
                                        "itself, the m3shd CLI or an API client")


def check_length(app, settings) -> None:
    """A route with a smaller cap than max_body_bytes (RouteSpec.body_limit, a setting's name)
    refuses a longer body by its Content-Length, before reading it."""
    spec = getattr(app.view_functions.get(request.endpoint), "route_spec", None)
    if spec is None or spec.body_limit is None:
        return
    limit = getattr(settings, spec.body_limit)
    if (request.content_length or 0) > limit:
        raise TooLarge("body_too_large", f"this route takes at most {limit:,} bytes ({spec.body_limit}); "
                                         f"this body has {request.content_length:,}")


def read_body(timeout: float) -> None:
    """The whole body, kept for the route (request.get_data and request.form reuse it); a client
    that has not sent it within `timeout` seconds gets 408. Under gevent the read yields, and the
    Timeout interrupts it; elsewhere (tests in process) the body is already in memory."""
    from gevent import Timeout

    with Timeout(timeout, RequestTimeout(f"the request body did not arrive within {timeout:g} s")):
        request.get_data(cache=True)
