"""The Commander's settings: `[commander]` in the config, `M3SHD_COMMANDER_<KEY>` in the environment.

Imports only the standard library and m3shd: `m3shd` reads this class (for the README's table)
without loading Flask or peewee.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from m3shd import config
from m3shd.config import DEFAULT_PORT, MDNS_TYPE, Settings, setting


@dataclass(frozen=True)
class CommanderSettings(Settings):
    """The hub: API, database, scheduling (docs/scheduling.md explains those keys)."""

    section: ClassVar[str] = "commander"
    bind: str = setting(f"127.0.0.1:{DEFAULT_PORT}", "HOST:PORT the API listens on")
    data_dir: str = setting("", 'database, secret keys and `up`\'s tokens; `""` → `<data>/commander`')
    database_url: str = setting("", '`""` → `sqlite:///<data_dir>/commander.db`')
    workers: int = setting(2, "gunicorn worker processes")
    heartbeat_interval: float = setting(5.0, "seconds between a node's heartbeats")
    lease_ttl: float = setting(20.0, "a lease not renewed for this long expires")
    lost_after: float = setting(20.0, "a node silent for this long is `lost`")
    max_attempts: int = setting(3, "leases per task before it fails")
    max_body_bytes: int = setting(8_388_608, "largest request body; every schema-valid body fits, even escaped "
                                             "(6 bytes a character)")
    max_wait: float = setting(60.0, "longest long-poll any request may hold (claims, task waits)")
    session_ttl: float = setting(43200.0, "browser sessions last this long (seconds)")
    trusted_proxies: tuple[str, ...] = setting((), "reverse proxies (addresses or CIDRs) whose X-Forwarded-For names the client")
    allowed_hosts: tuple[str, ...] = setting((), "more host names the Commander is reached by (a reverse proxy's); IPs always work")
    body_timeout: float = setting(30.0, "seconds a client may take to send a request body, then 408")
    db_pool_size: int = setting(64, "SQLite connections per worker process")
    db_pool_wait: float = setting(5.0, "seconds a request waits for a free connection, then 503; 0: no wait")
    log_level: str = setting("info", "debug, info, warning or error")
    ucb_c: float = setting(0.5, "exploration weight in mean + c·sqrt(ln N / n)")
    reputation_window: int = setting(20, "outcomes per node kept for reputation and breakers")
    reputation_half_life: float = setting(3600.0, "an outcome this old (seconds) counts half")
    score_slots: float = setting(0.3, "weight of the share of a node's slots that are free")
    score_freshness: float = setting(0.2, "weight of how recent its heartbeat is")
    score_prefer: float = setting(0.5, "weight of the share of a task's `prefer` it has")
    best_node_wait: float = setting(2.0, "a task waits this long for its best node, then any may take it")
    better_node_margin: float = setting(0.15, "wait for a busy node whose mean reward is this much higher, …")
    better_node_wait: float = setting(5.0, "… for up to this long (seconds), …")
    better_node_evidence: float = setting(3.0, "… once both have at least this many (decayed) outcomes")
    aging: float = setting(60.0, "a queued task gains one priority level per this many seconds")
    fairness_window: float = setting(600.0, "submitters served least within this window go first")
    retry_backoff: float = setting(0.0, "default seconds before a retry (doubles each attempt)")
    retry_backoff_max: float = setting(300.0, "longest wait before a retry (seconds)")
    pipeline_inject_limit: int = setting(16000, "characters of a parent's output a step's prompt gets")
    approval_timeout: float = setting(0.0, "seconds before an unanswered approval is rejected; 0: never")
    approver_not_submitter: str = setting("tokens", "whose tasks need another's approval: `tokens` (API tokens), "
                                                    "`all`, `off`")
    breaker_consecutive: int = setting(3, "infrastructure failures in a row that open a node's breaker")
    breaker_window: int = setting(10, "… or `breaker_ratio` of the last this many outcomes …")
    breaker_ratio: float = setting(0.5, "… (the share of them that failed) …")
    breaker_min_outcomes: int = setting(5, "… once there are at least this many")
    breaker_cooldown: float = setting(60.0, "first open period (seconds); doubles on each failed probe")
    breaker_cooldown_max: float = setting(1800.0, "longest open period (seconds)")
    breaker_max_open: float = setting(0.34, "never more than this share of live nodes open at once")
    advertise: bool = setting(True, "mDNS/DNS-SD on the LAN, when bound beyond loopback")
    mdns_type: str = setting(MDNS_TYPE, "another type keeps two meshes on one LAN apart")
    max_attachment_bytes: int = setting(3_932_160, "largest image a task may take; the default's base64 form is the "
                                                   "Messages API's 5 MB image limit")
    max_pending_nodes: int = setting(16, "tokenless joins waiting for approval, all addresses together")
    agents_dir: str = setting("", 'your agent profiles; `""` → `<config dir>/agents` (they override the shipped ones)')
    agents_check_every: float = setting(2.0, "seconds between looks for edited profile files (0: only at start and "
                                             "reload)")
    tls: str = setting("auto", "`auto`: HTTPS from the mesh CA once bound beyond loopback; `on`; `off` (plain HTTP)")
    tls_names: tuple[str, ...] = setting((), "more names or addresses the mesh-issued certificate carries (e.g. a DNS alias)")
    tls_cert_lifetime: float = setting(7_776_000.0, "seconds a mesh-issued certificate lasts (90 days); renewed at 2/3")
    tls_cert: str = setting("", "your own certificate chain (PEM) instead of the mesh CA's, e.g. from ACME")
    tls_key: str = setting("", 'its private key (PEM); `""` → in `tls_cert`\'s file')
    capability_facts: tuple[str, ...] = setting(("os=", "arch=", "runner="), "capability label prefixes that are "
                                                "facts of the machine, which a node changes by itself; any other "
                                                "label a node adds waits for an operator")
    time_zone: str = setting("UTC", "IANA time zone (e.g. `Europe/Berlin`) of the mesh's days: spend is counted per "
                                    "local day and daily caps reset at its midnight")
    spend_cap: float = setting(0.0, "daily cap on the whole mesh's spend, USD; 0: none")
    spend_caps: tuple[str, ...] = setting((), "daily caps per scope, USD: `agent:NAME=2.50`, `submitter:NAME=1`, "
                                              "`node:NAME=3` (caps set at run time override these)")
    spend_at_cap: str = setting("hold", "at a cap, new work of its scope is `hold` (queued with the reason, until "
                                        "midnight or a higher cap) or `refuse` (submits get 429)")
    spend_prices: tuple[str, ...] = setting((), "price overrides, USD per million tokens: "
                                                "`MODEL-PREFIX=INPUT,OUTPUT,CACHE_READ,CACHE_WRITE`")
    spend_alerts: tuple[str, ...] = setting(("50", "80", "100"), "percentages of each cap at which one alert is sent "
                                                                 "per scope and day (an event, and ntfy if set)")
    ntfy_url: str = setting("", "ntfy topic URL spend alerts are posted to (e.g. `https://ntfy.sh/my-mesh`); `\"\"`: "
                                "none")
    ntfy_token: str = setting("", "access token for that topic, sent as `Authorization: Bearer`")
    memory_inject_count: int = setting(8, "most memories added to a task's prompt when it is leased; 0: none")
    memory_inject_tokens: int = setting(1000, "token budget of the memories added to a prompt (a token taken as 4 "
                                              "characters)")
    memory_value_max: int = setting(4000, "longest memory value stored, in characters (a longer [REMEMBER] block "
                                          "is reported on its task, not stored)")
    memory_task_max: int = setting(20, "most [REMEMBER] blocks stored from one task's answer")
    memory_consolidate_at: str = setting("03:30", "local time (`time_zone`, HH:MM) at which near-duplicate memories "
                                                  "are merged and the search index compacted each day; `\"\"`: never by itself")
    memory_merge_similarity: float = setting(0.8, "how alike two memories' words must be to merge (Jaccard, 0-1)")
    webhook_max_body: int = setting(1_048_576, "largest webhook delivery accepted (bytes); a larger one gets 413 before "
                                               "it is read (GitHub sends up to 25 MB)")
    webhook_value_limit: int = setting(4000, "characters of one `{{ event.… }}` value a webhook's prompt gets")
    webhook_debounce: float = setting(60.0, "seconds an Uptime Kuma DOWN waits before its response starts; an UP "
                                            "within them cancels it (a hook may set its own)")
    plugins: tuple[str, ...] = setting(("notify", "web", "memory", "files"),
                                       "plugins that load, by name: an entry point of `m3shd.plugins` "
                                       "or a `NAME.py` in `plugins_dir` (docs/plugins.md)")
    plugins_dir: str = setting("", 'your plugin files; `""` → `<config dir>/plugins`')
    tool_rounds: int = setting(8, "[TOOL_CALL] rounds one attempt of a task may make")
    tool_timeout: float = setting(30.0, "longest a tool call may take (seconds); a tool may set less")
    tool_result_chars: int = setting(16000, "longest tool result a model gets (characters); a tool may set less")
    file_roots: tuple[str, ...] = setting((), "directories `file_summary` may read files from (nothing else: `..` and "
                                              "symlinks leading out are refused); none: only a task's attachments")
    summary_model: str = setting("claude-haiku-4-5", "the small model `file_summary` summarises with")
    summary_chunk_chars: int = setting(12000, "characters of a file summarised per call; longer files are cut into "
                                              "chunks whose summaries are then combined")
    summary_max_bytes: int = setting(2_000_000, "largest file `file_summary` reads")
    ntfy_server: str = setting("", 'ntfy server the `notify` tool and notify steps post to (e.g. `https://ntfy.sh`); '
                                   '`""` → `ntfy_url`\'s server; neither: no notifications')
    searxng_url: str = setting("", "SearXNG instance `web_search` asks (its JSON API must be enabled); `\"\"`: no "
                                   "`web_search` tool")
    brave_api_key: str = setting("", "Brave Search API key: `web_search` asks Brave when no `searxng_url` is set")
    brave_url: str = setting("https://api.search.brave.com/res/v1/web/search", "Brave Search's web search endpoint")
    tools_allowed_networks: tuple[str, ...] = setting((), "addresses or CIDRs `web_search` and `fetch_url` may reach "
                                                          "although private, loopback or link-local (SSRF guard)")

    def derived(self) -> CommanderSettings:
        data = self.data_dir or str(config.data_dir() / "commander")
        return replace(self, data_dir=data, database_url=self.database_url or f"sqlite:///{Path(data) / 'commander.db'}")
