"""The `web_search` and `fetch_url` tools, and the SSRF guard both go through.

web_search asks a search backend (SearXNG's JSON API, `/search?format=json`, at `searxng_url`;
else Brave Search's API with `brave_api_key`) and answers title, URL and snippet per result. fetch_url answers a page's readable text
(beautifulsoup4 over the stdlib's HTML parser), cut to the tool's result cap.

The guard: a model chooses these URLs, and the Commander sits inside the operator's network, so
every host is resolved and refused if any of its addresses is private, loopback, link-local,
multicast, reserved or unspecified (an IPv4 address inside IPv6 is judged as the IPv4 one),
unless `tools_allowed_networks` allows it; redirects are followed by hand, each new location
checked the same way; and each connection resolves its name once more and connects to exactly
the address it checked (Pinned), so a DNS answer that changes after the check (rebinding) is
refused too.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Annotated, Protocol
from urllib.parse import urljoin, urlsplit

import requests
from bs4 import BeautifulSoup
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from commander.plugins.manager import ToolError

MAX_REDIRECTS = 5
MAX_PAGE_BYTES = 2_000_000
USER_AGENT = "m3shd-fetch_url/1"


class Refused(ToolError):
    """The URL leads somewhere the guard does not let tools go."""


def allowed_networks(settings) -> list:
    return [ipaddress.ip_network(entry, strict=False) for entry in settings.tools_allowed_networks]


def checked_address(host: str, port: int, allowed: list) -> str:
    """The first address `host` resolves to, once every one of them is public or allowed; else Refused."""
    try:
        found = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ToolError(f"cannot resolve {host}: {exc}") from None
    for *_, address in found:
        ip = ipaddress.ip_address(address[0].split("%")[0])
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if (not ip.is_global or ip.is_multicast) and not any(ip in network for network in allowed):
            raise Refused(f"{host} resolves to {ip}, a private, loopback, link-local or reserved address")
    return found[0][4][0]


def check_url(url: str, allowed: list) -> None:
    """Raise Refused unless `url` is http(s) to a host whose every address is public or allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"only http and https URLs with a host can be fetched, not {url[:200]!r}")
    checked_address(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), allowed)


class Pinned:
    """A urllib3 connection that connects to the address it checked: the name is resolved once,
    at connect time, so a DNS answer that changes after the check (rebinding) cannot move it. TLS
    still verifies the certificate for the name (urllib3 takes that from `host`, set back after)."""

    allowed: list = []

    def _new_conn(self):
        name = self._dns_host
        self._dns_host = checked_address(name, self.port, self.allowed)
        try:
            return super()._new_conn()
        finally:
            self._dns_host = name


def pinned_session(allowed: list) -> requests.Session:
    """A session whose every connection is Pinned, with `allowed` networks."""
    adapter = HTTPAdapter(max_retries=0)
    adapter.poolmanager.pool_classes_by_scheme = {
        "http": type("PinnedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": type(
            "PinnedHTTPConnection", (Pinned, HTTPConnection), {"allowed": allowed})}),
        "https": type("PinnedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": type(
            "PinnedHTTPSConnection", (Pinned, HTTPSConnection), {"allowed": allowed})}),
    }
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def guarded_get(url: str, settings, timeout: float, params: dict | None = None,
                headers: dict | None = None) -> requests.Response:
    """GET `url`, following at most MAX_REDIRECTS redirects, every hop checked; the body is left
    unread (stream) so the caller caps what it reads."""
    allowed = allowed_networks(settings)
    session = pinned_session(allowed)
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, allowed)  # a clear refusal before any request; the connection checks again (Pinned)
        try:
            response = session.get(url, params=params, timeout=timeout, allow_redirects=False, stream=True,
                                    headers={"User-Agent": USER_AGENT, **(headers or {})})
        except requests.RequestException as exc:
            raise ToolError(f"cannot fetch {url[:200]}: {type(exc).__name__}") from None
        if not response.is_redirect:
            return response
        # The backend's headers (Brave's key) are not for wherever a redirect leads.
        url, params, headers = urljoin(url, response.headers["Location"]), None, None
        response.close()
    raise ToolError(f"more than {MAX_REDIRECTS} redirects")


def read_capped(response: requests.Response, limit: int = MAX_PAGE_BYTES) -> bytes:
    body = b""
    for chunk in response.iter_content(65536):
        body += chunk
        if len(body) >= limit:
            break
    response.close()
    return body[:limit]


class SearchBackend(Protocol):
    """A web search: results as [{title, url, snippet}], at most `count`."""

    def search(self, query: str, count: int, timeout: float) -> list[dict]: ...


def search_json(url: str, settings, timeout: float, params: dict, headers: dict | None = None):
    """A search backend's JSON answer to a GET, through the guard."""
    response = guarded_get(url, settings, timeout, params=params, headers=headers)
    if response.status_code != 200:
        response.close()
        raise ToolError(f"the search backend answered {response.status_code}")
    try:
        return json.loads(read_capped(response))
    except ValueError:
        raise ToolError("the search backend's answer is not JSON") from None


def results(items, count: int, snippet: str) -> list[dict]:
    """title, url and snippet (the backend's `snippet` key) of the first `count` results."""
    if not isinstance(items, list):
        raise ToolError("the search backend's answer has no list of results")
    return [dict(title=str(item.get("title", "")), url=str(item.get("url", "")), snippet=str(item.get(snippet, "")))
            for item in items[:count] if isinstance(item, dict)]


class SearxNG:
    """A SearXNG instance's JSON API (its settings must list `json` under search.formats)."""

    def __init__(self, settings):
        self.settings = settings
        self.url = settings.searxng_url.rstrip("/") + "/search"

    def search(self, query: str, count: int, timeout: float) -> list[dict]:
        found = search_json(self.url, self.settings, timeout, {"q": query, "format": "json"})
        return results(found.get("results") if isinstance(found, dict) else None, count, "content")


class Brave:
    """Brave Search's web search API: the key goes in `X-Subscription-Token`."""

    def __init__(self, settings):
        self.settings = settings

    def search(self, query: str, count: int, timeout: float) -> list[dict]:
        found = search_json(self.settings.brave_url, self.settings, timeout, {"q": query, "count": count},
                            headers={"Accept": "application/json", "X-Subscription-Token": self.settings.brave_api_key})
        web = found.get("web") if isinstance(found, dict) else None
        return results(web.get("results") if isinstance(web, dict) else None, count, "description")


def backend(settings) -> SearchBackend | None:
    """The configured search backend: SearXNG, else Brave, else none (no web_search tool)."""
    if settings.searxng_url:
        return SearxNG(settings)
    if settings.brave_api_key:
        return Brave(settings)
    return None


class SearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: Annotated[str, StringConstraints(min_length=1, max_length=400)]
    count: Annotated[int, Field(ge=1, le=20)] = 5


class FetchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S{1,2000}$")]


def readable_text(html: bytes, encoding: str | None) -> str:
    """The page's visible text, one block per line, without scripts, styles and templates."""
    soup = BeautifulSoup(html, "html.parser", from_encoding=encoding)
    for element in soup(["script", "style", "noscript", "template", "svg"]):
        element.decompose()
    return soup.get_text("\n", strip=True)


def fetch(settings, url: str, timeout: float) -> dict:
    response = guarded_get(url, settings, timeout)
    kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    status, final_url = response.status_code, response.url
    body = read_capped(response)
    if status >= 400:
        raise ToolError(f"{url[:200]} answered {status}")
    if kind in ("text/html", "application/xhtml+xml"):
        text = readable_text(body, response.encoding)
    elif kind.startswith("text/") or kind in ("application/json", ""):
        text = body.decode(response.encoding or "utf-8", errors="replace")
    else:
        raise ToolError(f"{url[:200]} is {kind}, not text")
    return dict(url=final_url, status=status, text=text)


def setup(manager) -> None:
    searching = backend(manager.settings)
    if searching:
        manager.tool("web_search", "Search the web; answers title, url and snippet per result.", SearchArgs,
                     lambda call, args: searching.search(args.query, args.count, call.timeout))
    manager.tool("fetch_url", "Fetch a web page (http or https) and answer its readable text.", FetchArgs,
                 lambda call, args: fetch(call.cmdr.settings, args.url, call.timeout))
