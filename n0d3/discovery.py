"""Finding the Commander on the LAN: browse mDNS/DNS-SD for its service type (`_m3shd._tcp`)."""

from __future__ import annotations

import queue

from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf


def find_commander(service_type: str, timeout: float) -> str | None:
    """The URL of the first Commander that answers within `timeout` seconds, or None."""
    zc = Zeroconf(ip_version=IPVersion.V4Only)
    names: queue.Queue[str] = queue.Queue()

    def on_change(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Added:
            names.put(name)

    browser = ServiceBrowser(zc, service_type, handlers=[on_change])
    try:
        name = names.get(timeout=timeout)
        info = zc.get_service_info(service_type, name, timeout=3000)
        if info is None or not info.parsed_addresses():
            return None
        # A Commander serving TLS says so (older ones say nothing: plain HTTP).
        scheme = "https" if (info.properties or {}).get(b"scheme") == b"https" else "http"
        return f"{scheme}://{info.parsed_addresses()[0]}:{info.port}"
    except queue.Empty:
        return None
    finally:
        browser.cancel()
        zc.close()
