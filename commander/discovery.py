"""Advertise the Commander on the LAN with mDNS/DNS-SD (`_m3shd._tcp`), so a N0D3 without a URL
(a freshly flashed Pi) finds it.

The advertiser is a small process of its own, started and stopped by the gunicorn master:
zeroconf runs an asyncio loop in a thread, which the master's gevent patching would turn into
a greenlet sharing the arbiter's loop.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading

from commander.settings import CommanderSettings

log = logging.getLogger("m3shd.commander")


def addresses_for(host: str) -> list[str]:
    """The IPv4 addresses to announce for a bind host: every non-loopback one for a wildcard,
    none for loopback (nobody else could reach it)."""
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        import ifaddr   # zeroconf's own dependency for listing interfaces

        found = [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)]
        return [a for a in found if not ipaddress.ip_address(a).is_loopback and not ipaddress.ip_address(a).is_link_local]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = ipaddress.ip_address(socket.gethostbyname(host))
    return [] if address.is_loopback or address.version != 4 else [str(address)]


def start(settings: CommanderSettings) -> subprocess.Popen | None:
    host, _, port = settings.bind.rpartition(":")
    if not settings.advertise or not port.isdigit():
        return None
    addresses = addresses_for(host)
    if not addresses:
        log.info("not advertising on the LAN: the Commander listens on loopback only")
        return None
    from commander import pki   # here: the advertiser process itself needs none of it

    scheme = "https" if pki.enabled(settings) else "http"
    log.info("advertising %s (%s) on port %s at %s", settings.mdns_type, scheme, port, ", ".join(addresses))
    return subprocess.Popen([sys.executable, "-m", "commander.discovery", settings.mdns_type, scheme, port,
                             *addresses])


def stop(advertiser: subprocess.Popen | None) -> None:
    if advertiser and advertiser.poll() is None:
        advertiser.terminate()
        advertiser.wait(10)


def advertise(service_type: str, scheme: str, port: int, addresses: list[str]) -> None:
    """Announce until SIGTERM, or until the master that started us is gone."""
    from zeroconf import ServiceInfo, Zeroconf

    from m3shd import __version__

    host = socket.gethostname().split(".")[0]
    info = ServiceInfo(service_type, f"M3SHD Commander on {host}.{service_type}", port=port,
                       properties={"version": __version__, "scheme": scheme},
                       addresses=[socket.inet_aton(a) for a in addresses], server=f"{host}.local.")
    zc = Zeroconf(interfaces=addresses)
    zc.register_service(info, allow_name_change=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    parent = os.getppid()
    try:
        while not stopping.wait(1.0) and os.getppid() == parent:
            pass
    finally:
        zc.unregister_all_services()
        zc.close()


if __name__ == "__main__":
    advertise(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:])
