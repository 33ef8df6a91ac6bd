"""One typed settings tree, read from environment variables once at start-up and passed down.

Names follow Tracardi's where the meaning is the same (``LOGGING_LEVEL``, ``INSTALLATION_TOKEN``,
``API_DOCS`` …); Tessera's own start with ``TESSERA_``. Every field's description is what the
generated table in ``docs/settings.md`` shows, so a field without one fails the docs test.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
import secrets
import typing
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from tessera.errors import ConfigurationError


class Environment(enum.StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class LogLevel(enum.StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


def _yes_no(value: Any) -> Any:
    """Accept Tracardi's ``yes``/``no`` spelling as well as the usual boolean words."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"yes", "y", "on"}:
            return True
        if lowered in {"no", "n", "off"}:
            return False
    return value


YesNo = Annotated[bool, BeforeValidator(_yes_no)]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# How time-partitioned Elasticsearch indices are cut (index name suffix 2024, 2024-q1, 2024-03,
# 2024-w09, 2024-03-07).
Partitioning = Annotated[
    Literal["year", "quarter", "month", "week", "day"],
    BeforeValidator(lambda value: value.strip().lower() if isinstance(value, str) else value),
]

# An Elasticsearch `refresh_interval`: a whole number of milliseconds, seconds or minutes, or -1.
RefreshInterval = Annotated[str, StringConstraints(pattern=r"^(-1|[1-9][0-9]{0,5}(ms|s|m))$")]

# Tokens that are public knowledge (Tracardi's documented default, the usual placeholders) are
# refused in production: an installation secret everybody knows protects nothing.
WEAK_SECRETS = frozenset(
    {"tessera", "tracardi", "changeme", "change-me", "admin", "password", "secret", "token"}
    # The development password of scripts/services: known to everyone who read the script.
    | {"tessera-dev-password"}
)
MIN_PRODUCTION_SECRET_LENGTH = 16
# The least estimated_secret_bits a chosen secret needs in production: 32 characters of
# secrets.token_urlsafe (about 190 bits) pass with room to spare, 20 random lower-case letters
# (about 85) too; 16 random digits (about 50), or 'aaaaaaaaaaaaaaaa' (5), do not.
MIN_PRODUCTION_SECRET_BITS = 64
# Parts of a request header's name that make it a credential, or part of one: such a header
# is never stored with events, whatever TESSERA_STORED_HEADERS says.
CREDENTIAL_WORDS = frozenset(
    {
        "auth",  # authorization, x-auth-token …
        "cookie",
        "token",
        "key",
        "secret",
        "passw",  # password, passwd
        "session",
        "signature",
        "credential",
        "jwt",
        "csrf",
        "xsrf",
    }
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]{1,128}$")


def _networks(checked: str) -> tuple[IPNetwork, ...]:
    """The networks of a list a validator of Settings checked already."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in checked.split(",") if entry)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        populate_by_name=False,
    )

    environment: Environment = Field(
        Environment.DEVELOPMENT,
        validation_alias="TESSERA_ENV",
        description=(
            "`development` (embedded, local) or `production`. Production refuses a missing "
            "installation token, a guessable one or admin password, and a well-known or short "
            "value in any other secret setting."
        ),
    )
    data_dir: Path = Field(
        Path(".tessera"),
        validation_alias="TESSERA_DATA_DIR",
        description="Folder of the embedded SQLite store (created when missing).",
    )
    host: str = Field(
        "127.0.0.1",
        validation_alias="TESSERA_HOST",
        description="Address `tessera serve` listens on. Use `0.0.0.0` to accept remote traffic.",
    )
    port: int = Field(
        8686,
        ge=1,
        le=65535,
        validation_alias="TESSERA_PORT",
        description="Port `tessera serve` listens on.",
    )
    api_workers: int | None = Field(
        None,
        ge=1,
        le=256,
        validation_alias="TESSERA_API_WORKERS",
        description=(
            "API processes `tessera serve` runs on one listening socket (`--workers` overrides "
            "it). Unset: 1 in the embedded mode, the number of CPUs this process may use when "
            "`ELASTIC_HOST`, `MYSQL_HOST` and `REDIS_HOST` are all set. More than 1 needs all "
            "three (locks, caches and the SQLite stores of the embedded mode live in one "
            "process). SIGHUP replaces the processes one at a time; SIGTERM drains and stops "
            "them (docs/distributed.md)."
        ),
    )
    trusted_proxies: str = Field(
        "",
        validation_alias="TESSERA_TRUSTED_PROXIES",
        description=(
            "Comma-separated addresses or networks (`10.0.0.5`, `10.0.0.0/8`, `fd00::/8`) of "
            "the reverse proxies in front of Tessera. Only a request from one of them may name "
            "its client with `X-Forwarded-For` (the right-most address not of a trusted proxy "
            "is taken). Empty (the default): the header is ignored and the client is the peer "
            "of the connection."
        ),
    )
    logging_level: LogLevel = Field(
        LogLevel.WARNING,
        validation_alias="LOGGING_LEVEL",
        description="Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    )
    installation_token: SecretStr | None = Field(
        None,
        validation_alias="INSTALLATION_TOKEN",
        description=(
            "Secret that `POST /install` must present. Required in production: at least 16 "
            "characters, not a well-known default, and hard to guess (no repeated characters, "
            "runs such as `abcd`, or repeated pairs: the rule is in docs/distributed.md). In "
            "development a random one is generated and kept in `<data dir>/installation-token` "
            "when unset."
        ),
    )
    admin_email: str | None = Field(
        None,
        validation_alias="TESSERA_ADMIN_EMAIL",
        description="When set with `TESSERA_ADMIN_PASSWORD`, the first start creates this admin.",
    )
    admin_password: SecretStr | None = Field(
        None,
        validation_alias="TESSERA_ADMIN_PASSWORD",
        description=(
            "Password of the admin created at first start (never logged). In production it "
            "must pass the same strength rule as `INSTALLATION_TOKEN`."
        ),
    )
    api_docs: YesNo = Field(
        True,
        validation_alias="API_DOCS",
        description="`yes` serves OpenAPI docs at `/docs` and `/openapi.json`; `no` hides them.",
    )
    token_ttl_seconds: int = Field(
        3600,
        ge=60,
        le=30 * 24 * 3600,
        validation_alias="TESSERA_TOKEN_TTL",
        description="Lifetime of an access token from `POST /user/token`, in seconds.",
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        validation_alias="TESSERA_MAX_BODY_BYTES",
        description="Largest request body the server accepts, on any endpoint (larger: 413).",
    )
    max_events_per_request: int = Field(
        1000,
        ge=1,
        validation_alias="TESSERA_MAX_EVENTS_PER_REQUEST",
        description="Most events one `/track` request may carry (more get 422).",
    )
    max_json_depth: int = Field(
        32,
        ge=4,
        le=512,
        validation_alias="TESSERA_MAX_JSON_DEPTH",
        description="Deepest nesting of objects/arrays accepted in event properties and context.",
    )
    writer_batch_size: int = Field(
        500,
        ge=1,
        le=100_000,
        validation_alias="TESSERA_WRITER_BATCH_SIZE",
        description="Most records the storage writer commits in one transaction (group commit).",
    )
    writer_flush_interval_ms: float = Field(
        2.0,
        ge=0,
        le=10_000,
        validation_alias="TESSERA_WRITER_FLUSH_INTERVAL_MS",
        description=(
            "Longest time, in milliseconds, the embedded store's writer waits for a batch to "
            "fill before it commits what it has; 0 commits as soon as the queue is empty. The "
            "Elasticsearch writer never waits: its next bulk fills while one is on its way."
        ),
    )
    sqlite_synchronous: str = Field(
        "NORMAL",
        validation_alias="TESSERA_SQLITE_SYNCHRONOUS",
        description=(
            "SQLite `synchronous` pragma for the event store: `NORMAL` survives a crash or "
            "`kill -9` of the server; `FULL` also survives a power loss, at a cost per commit."
        ),
    )
    sqlite_readers: int = Field(
        4,
        ge=1,
        le=64,
        validation_alias="TESSERA_SQLITE_READERS",
        description="Reader threads (each with its own SQLite connection) for the embedded store.",
    )
    keep_profile_in_cache_for: int = Field(
        3600,
        ge=0,
        validation_alias="KEEP_PROFILE_IN_CACHE_FOR",
        description="Seconds a profile stays in the in-process cache after its last use (0: off).",
    )
    keep_session_in_cache_for: int = Field(
        1800,
        ge=0,
        validation_alias="KEEP_SESSION_IN_CACHE_FOR",
        description="Seconds a session stays in the in-process cache after its last use (0: off).",
    )
    cache_max_entries: int = Field(
        100_000,
        ge=0,
        validation_alias="TESSERA_CACHE_MAX_ENTRIES",
        description="Most profiles (and, separately, sessions) held in the in-process cache.",
    )
    # --- Redis: what several API processes must share (locks, caches, tokens, memory) ---
    redis_host: str | None = Field(
        None,
        validation_alias="REDIS_HOST",
        description=(
            "Redis host for locks, the profile/session cache, access tokens, workflow memory "
            "and deduplication keys shared by every API process. Unset: kept in-process."
        ),
    )
    redis_port: int = Field(
        6379, ge=1, le=65535, validation_alias="REDIS_PORT", description="Redis port."
    )
    redis_password: SecretStr | None = Field(
        None,
        validation_alias="REDIS_PASSWORD",
        description="Redis password (AUTH); unset: none. Never logged.",
    )
    redis_db: int = Field(
        0, ge=0, validation_alias="REDIS_DB", description="Redis logical database number."
    )
    redis_connect_timeout_seconds: float = Field(
        2.0,
        gt=0,
        le=60,
        validation_alias="TESSERA_REDIS_CONNECT_TIMEOUT_SECONDS",
        description="Seconds to open a connection to Redis before the request answers 503.",
    )
    redis_timeout_seconds: float = Field(
        5.0,
        gt=1.0,
        le=300,
        validation_alias="TESSERA_REDIS_TIMEOUT_SECONDS",
        description=(
            "Seconds Redis may take to answer one command before the request answers 503 "
            "(commands are not retried). More than 1 s: the Redis Streams queue's reads block "
            "for up to a second."
        ),
    )
    redis_pool_size: int = Field(
        100,
        ge=1,
        le=10_000,
        validation_alias="TESSERA_REDIS_POOL_SIZE",
        description=(
            "Pooled connections to Redis per process at most; more requests wait for one. "
            "The lock scripts of `/track` run on two connections of their own (pipelined)."
        ),
    )
    redis_pool_timeout_seconds: float = Field(
        2.0,
        gt=0,
        le=300,
        validation_alias="TESSERA_REDIS_POOL_TIMEOUT_SECONDS",
        description=(
            "Seconds a request waits for a free Redis connection when all "
            "`TESSERA_REDIS_POOL_SIZE` are busy, before it answers 503."
        ),
    )
    redis_prefix: str = Field(
        "tessera",
        min_length=1,
        validation_alias="TESSERA_REDIS_PREFIX",
        description=(
            "Prefix of every Redis key Tessera writes, so several installations can share "
            "one Redis."
        ),
    )
    lock_ttl_seconds: float = Field(
        10.0,
        gt=0,
        validation_alias="TESSERA_LOCK_TTL_SECONDS",
        description=(
            "Seconds a Redis lock outlives a holder that stopped renewing it (crashed "
            "process); live holders renew it every third of this time."
        ),
    )
    lock_wait_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        validation_alias="TESSERA_LOCK_WAIT_SECONDS",
        description=(
            "Seconds a request waits for a profile or session another request holds (Redis "
            "locks) before it answers 503. A lock whose holder lost Redis mid-request stays "
            "taken until `TESSERA_LOCK_TTL_SECONDS` runs out."
        ),
    )
    source_cache_seconds: float = Field(
        5.0,
        ge=0,
        validation_alias="TESSERA_SOURCE_CACHE_SECONDS",
        description=(
            "Seconds event sources, processing rules, consent types, segments and destinations "
            "stay cached for `/track`; changes made through this server's API take effect at "
            "once, changes from elsewhere within this time."
        ),
    )

    auto_profile_merging: SecretStr | None = Field(
        None,
        validation_alias="AUTO_PROFILE_MERGING",
        description=(
            "Salt of the hashes under which merge-key values (e-mail, phone, customer id) are "
            "indexed; at least 20 characters. Unset: one is generated once and kept in the "
            "configuration store. Changing it later makes stored hashes unmatchable."
        ),
    )
    profile_merging: YesNo = Field(
        True,
        validation_alias="TESSERA_PROFILE_MERGING",
        description="`no` turns automatic merging of profiles that share a merge-key value off.",
    )
    merge_keys: str = Field(
        "data.contact.email.main,data.contact.phone.main,data.identifier.id",
        validation_alias="TESSERA_MERGE_KEYS",
        description="Comma-separated profile paths whose values identify a person.",
    )
    merge_blocked_values: str = Field(
        "",
        validation_alias="TESSERA_MERGE_BLOCKED_VALUES",
        description=(
            "Comma-separated values that never merge, besides the built-in ones (empty, null, "
            "none, undefined, anonymous, 0, -1, all zeros…)."
        ),
    )
    merge_key_limit: int = Field(
        10,
        ge=1,
        le=1000,
        validation_alias="TESSERA_MERGE_KEY_LIMIT",
        description=(
            "Most distinct values of one merge key a profile may hold; past it a new value is "
            "not taken and the answer warns (stops one shared device from joining everyone)."
        ),
    )
    close_visit_after: int = Field(
        1800,
        ge=1,
        validation_alias="CLOSE_VISIT_AFTER",
        description="Seconds of inactivity after which a visit ends; the next event starts one.",
    )
    delivery_poll_seconds: float = Field(
        1.0,
        gt=0,
        le=3600,
        validation_alias="TESSERA_DELIVERY_POLL_SECONDS",
        description=(
            "Seconds between two looks at the destination outbox for messages due (retries, "
            "messages queued by other processes); messages queued here are sent at once."
        ),
    )
    delivery_backoff_seconds: float = Field(
        2.0,
        gt=0,
        validation_alias="TESSERA_DELIVERY_BACKOFF_SECONDS",
        description=(
            "Wait before a destination message's first retry, in seconds; doubled after each "
            "failed attempt (with jitter) up to `TESSERA_DELIVERY_BACKOFF_MAX_SECONDS`."
        ),
    )
    delivery_backoff_max_seconds: float = Field(
        600.0,
        gt=0,
        validation_alias="TESSERA_DELIVERY_BACKOFF_MAX_SECONDS",
        description="Longest wait, in seconds, between two attempts to deliver a message.",
    )
    delivery_concurrency: int = Field(
        8,
        ge=1,
        le=1000,
        validation_alias="TESSERA_DELIVERY_CONCURRENCY",
        description="Most destination messages this process sends at the same time.",
    )
    enable_workflow: YesNo = Field(
        True,
        validation_alias="ENABLE_WORKFLOW",
        description=(
            "`no` turns the workflow stage off: rules match nothing and no workflow runs "
            "(segments are still evaluated)."
        ),
    )
    track_debug: YesNo = Field(
        False,
        validation_alias="TRACK_DEBUG",
        description=(
            "`yes` lets a `/track` request with `options.debugger: true` get the workflow "
            "traces in its answer (`debug`). Keep it off in production: traces show data."
        ),
    )
    workflow_cache_seconds: float = Field(
        5.0,
        ge=0,
        validation_alias="TESSERA_WORKFLOW_CACHE_SECONDS",
        description=(
            "How long another process's change to rules and workflows may take to apply here "
            "(changes through this server's API apply at once)."
        ),
    )
    scheduler_poll_seconds: float = Field(
        1.0,
        gt=0,
        le=3600,
        validation_alias="TESSERA_SCHEDULER_POLL_SECONDS",
        description="How often delayed workflow steps that are due are looked for.",
    )
    http_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        validation_alias="TESSERA_HTTP_TIMEOUT_SECONDS",
        description=(
            "Timeout of the shared outbound HTTP client: what a plugin action gets when it sets "
            "none (built-in actions and destinations always set their own per request)."
        ),
    )

    # --- Calls to other systems: the request-forgery policy (docs/security.md#outbound-calls) --
    outbound_allow_loopback: YesNo | None = Field(
        None,
        validation_alias="TESSERA_OUTBOUND_ALLOW_LOOPBACK",
        description=(
            "`yes` lets destinations, `http_call`, `send_email` and `send_slack_message` reach "
            "loopback addresses (127.0.0.0/8, ::1, `localhost`). Unset: allowed in "
            "development, refused in production."
        ),
    )
    outbound_allow_private: YesNo = Field(
        False,
        validation_alias="TESSERA_OUTBOUND_ALLOW_PRIVATE",
        description=(
            "`yes` lets outbound calls reach private networks (10.0.0.0/8, 172.16.0.0/12, "
            "192.168.0.0/16, 100.64.0.0/10, fc00::/7). Link-local addresses (169.254.0.0/16, "
            "fe80::/10: cloud metadata services) stay refused unless "
            "`TESSERA_OUTBOUND_ALLOW_CIDRS` names them."
        ),
    )
    outbound_allow_cidrs: str = Field(
        "",
        validation_alias="TESSERA_OUTBOUND_ALLOW_CIDRS",
        description=(
            "Comma-separated networks outbound calls may reach whatever their kind, e.g. "
            "`10.20.0.0/16,192.168.1.5/32` (an internal CRM): narrower than "
            "`TESSERA_OUTBOUND_ALLOW_PRIVATE`."
        ),
    )

    # --- What is kept of a request (docs/security.md#secrets) ----------------------------------
    stored_headers: str = Field(
        "",
        validation_alias="TESSERA_STORED_HEADERS",
        description=(
            "Comma-separated request headers stored with events besides the built-in "
            "allow-list (User-Agent, Accept-Language, Referer, Origin, client hints … see "
            "docs/security.md). Names that look like credentials (authorization, cookie, "
            "token, key, secret, password, session, signature) are refused."
        ),
    )

    # --- MySQL/MariaDB configuration store (None host: the embedded SQLite file) ---------------
    mysql_host: str | None = Field(
        None,
        validation_alias="MYSQL_HOST",
        description=(
            "Host of the MySQL/MariaDB server that keeps the configuration (sources, users, "
            "rules, workflows, destinations …). Unset: the embedded SQLite file in the data dir."
        ),
    )
    mysql_port: int = Field(
        3306, ge=1, le=65535, validation_alias="MYSQL_PORT", description="MySQL/MariaDB port."
    )
    mysql_username: str | None = Field(
        None,
        validation_alias="MYSQL_USERNAME",
        description="MySQL/MariaDB user; required when `MYSQL_HOST` is set.",
    )
    mysql_password: SecretStr | None = Field(
        None,
        validation_alias="MYSQL_PASSWORD",
        description=(
            "Password of `MYSQL_USERNAME` (never logged). Production refuses a well-known or "
            "short one, including the development password of `scripts/services`."
        ),
    )
    mysql_database: str = Field(
        "tessera",
        min_length=1,
        max_length=64,
        validation_alias="MYSQL_DATABASE",
        description="Database (schema) on the MySQL/MariaDB server; `tessera migrate` fills it.",
    )
    mysql_pool_size: int = Field(
        20,
        ge=1,
        le=1000,
        validation_alias="MYSQL_CONNECTION__POOL",
        description="Connections to MySQL/MariaDB kept open per process.",
    )
    mysql_max_overflow: int = Field(
        10,
        ge=0,
        le=1000,
        validation_alias="MYSQL_CONNECTION__MAX_OVERFLOW",
        description="Extra connections opened beyond the pool under load, closed when returned.",
    )
    mysql_pool_timeout: float = Field(
        2.0,
        gt=0,
        le=3600,
        validation_alias="MYSQL_CONNECTION__POOL_TIMEOUT",
        description=(
            "Seconds a request waits for a free MySQL/MariaDB connection when the pool and its "
            "overflow are all busy, before it answers 503."
        ),
    )
    mysql_connect_timeout_seconds: float = Field(
        2.0,
        gt=0,
        le=60,
        validation_alias="TESSERA_MYSQL_CONNECT_TIMEOUT_SECONDS",
        description=(
            "Seconds to open a TCP connection to MySQL/MariaDB before the request answers 503."
        ),
    )
    mysql_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        validation_alias="TESSERA_MYSQL_TIMEOUT_SECONDS",
        description=(
            "Seconds MySQL/MariaDB may stay silent while Tessera waits for an answer (the "
            "greeting of a new connection, or a statement's result) before the request "
            "answers 503. `tessera migrate` does not use it: a migration may take long."
        ),
    )
    mysql_pool_recycle: int = Field(
        3600,
        ge=1,
        validation_alias="MYSQL_CONNECTION__POOL_RECYCLE",
        description=(
            "Seconds after which a pooled connection is replaced; keep it below the server's "
            "`wait_timeout` so no request meets a connection the server already closed."
        ),
    )

    # --- Elasticsearch: events, sessions and profiles (None host: the embedded SQLite file) ---
    elastic_host: str | None = Field(
        None,
        validation_alias="ELASTIC_HOST",
        description=(
            "Elasticsearch URL(s) for events, sessions and profiles, comma-separated (e.g. "
            "`http://es1:9200,http://es2:9200`). Unset: the embedded SQLite store."
        ),
    )
    elastic_username: str | None = Field(
        None,
        validation_alias="ELASTIC_USERNAME",
        description="Elasticsearch user (basic authentication); unset: none.",
    )
    elastic_password: SecretStr | None = Field(
        None,
        validation_alias="ELASTIC_PASSWORD",
        description=(
            "Password of `ELASTIC_USERNAME` (never logged). Production refuses a well-known or "
            "short one."
        ),
    )
    elastic_verify_certs: YesNo = Field(
        True,
        validation_alias="ELASTIC_VERIFY_CERTS",
        description="`no` accepts any TLS certificate from Elasticsearch (development only).",
    )
    elastic_index_shards: int = Field(
        3,
        ge=1,
        le=1024,
        validation_alias="ELASTIC_INDEX_SHARDS",
        description="Primary shards of every index Tessera creates, unless a kind overrides it.",
    )
    elastic_index_replicas: int = Field(
        1,
        ge=0,
        le=32,
        validation_alias="ELASTIC_INDEX_REPLICAS",
        description="Replicas of every index Tessera creates, unless a kind overrides it.",
    )
    elastic_event_shards: int | None = Field(
        None,
        ge=1,
        le=1024,
        validation_alias="TESSERA_ELASTIC_EVENT_SHARDS",
        description="Primary shards of event indices; unset: `ELASTIC_INDEX_SHARDS`.",
    )
    elastic_event_replicas: int | None = Field(
        None,
        ge=0,
        le=32,
        validation_alias="TESSERA_ELASTIC_EVENT_REPLICAS",
        description="Replicas of event indices; unset: `ELASTIC_INDEX_REPLICAS`.",
    )
    elastic_session_shards: int | None = Field(
        None,
        ge=1,
        le=1024,
        validation_alias="TESSERA_ELASTIC_SESSION_SHARDS",
        description="Primary shards of session indices; unset: `ELASTIC_INDEX_SHARDS`.",
    )
    elastic_session_replicas: int | None = Field(
        None,
        ge=0,
        le=32,
        validation_alias="TESSERA_ELASTIC_SESSION_REPLICAS",
        description="Replicas of session indices; unset: `ELASTIC_INDEX_REPLICAS`.",
    )
    elastic_profile_shards: int | None = Field(
        None,
        ge=1,
        le=1024,
        validation_alias="TESSERA_ELASTIC_PROFILE_SHARDS",
        description=(
            "Primary shards of profile indices and of the identity and retired-profile "
            "indices beside them; unset: `ELASTIC_INDEX_SHARDS`."
        ),
    )
    elastic_profile_replicas: int | None = Field(
        None,
        ge=0,
        le=32,
        validation_alias="TESSERA_ELASTIC_PROFILE_REPLICAS",
        description="Replicas of profile (and identity) indices; unset: `ELASTIC_INDEX_REPLICAS`.",
    )
    elastic_bulks_in_flight: int = Field(
        4,
        ge=1,
        le=64,
        validation_alias="TESSERA_ELASTIC_BULKS_IN_FLIGHT",
        description=(
            "Most bulk requests the Elasticsearch writer has on their way at once. A bulk goes "
            "out beside one on its way only when 64 records or more are queued (many small "
            "bulks cost Elasticsearch more per record than a few full ones)."
        ),
    )
    elastic_write_refresh: Literal["false", "wait_for", "true"] = Field(
        "false",
        validation_alias="TESSERA_ELASTIC_WRITE_REFRESH",
        description=(
            "Whether each bulk write waits for the records to be searchable: `false` (the "
            "default: reads by id see a write at once, searches after the next scheduled "
            "refresh, see the refresh intervals), `wait_for` (each write waits for that "
            "refresh) or `true` (each write forces a refresh: searches see it at once, at "
            "several times the Elasticsearch CPU per event)."
        ),
    )
    elastic_event_refresh_interval: RefreshInterval = Field(
        "10s",
        validation_alias="TESSERA_ELASTIC_EVENT_REFRESH_INTERVAL",
        description=(
            "How often event partitions are refreshed (`refresh_interval`, e.g. `500ms`, `10s`, "
            "`-1` for never): the most an event search lags behind the writes."
        ),
    )
    elastic_session_refresh_interval: RefreshInterval = Field(
        "5s",
        validation_alias="TESSERA_ELASTIC_SESSION_REFRESH_INTERVAL",
        description="How often session partitions are refreshed (as the event setting).",
    )
    elastic_profile_refresh_interval: RefreshInterval = Field(
        "1s",
        validation_alias="TESSERA_ELASTIC_PROFILE_REFRESH_INTERVAL",
        description=(
            "How often profile partitions (and identity links) are refreshed: the most a "
            "profile search or segment lags behind the writes."
        ),
    )
    elastic_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=600,
        validation_alias="TESSERA_ELASTIC_TIMEOUT_SECONDS",
        description=(
            "Seconds one Elasticsearch request (connecting included) may take while serving "
            "before it counts as failed; a request that timed out is not sent again by the "
            "client. The `tessera storage` and `tessera backup` commands wait longer (30 s)."
        ),
    )
    elastic_retries: int = Field(
        2,
        ge=0,
        le=10,
        validation_alias="TESSERA_ELASTIC_RETRIES",
        description=(
            "Times the Elasticsearch client sends a request again, to another node where "
            "there is one, when the connection failed (refused, reset); never after a timeout."
        ),
    )
    elastic_retry_budget_seconds: float = Field(
        5.0,
        ge=0,
        le=600,
        validation_alias="TESSERA_ELASTIC_RETRY_BUDGET_SECONDS",
        description=(
            "Seconds the record writer keeps retrying a batch that failed for a reason that "
            "may pass (no answer, 429, 5xx) before its callers answer 503. A write already "
            "running when the budget ends still gets its full `TESSERA_ELASTIC_TIMEOUT_SECONDS`."
        ),
    )
    elastic_index_prefix: str = Field(
        "tessera",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$",
        validation_alias="TESSERA_ELASTIC_INDEX_PREFIX",
        description=(
            "First part of every index, alias and template name (`<prefix>.<tenant>.event`), so "
            "several installations can share one cluster. Lower-case letters, digits, `-`, `_`."
        ),
    )
    event_partitioning: Partitioning = Field(
        "month",
        validation_alias="EVENT_PARTITIONING",
        description=(
            "How event indices are cut by event time: `year`, `quarter`, `month`, `week` (ISO) "
            "or `day`."
        ),
    )
    session_partitioning: Partitioning = Field(
        "quarter",
        validation_alias="SESSION_PARTITIONING",
        description="How session indices are cut by the session's first-seen time.",
    )
    profile_partitioning: Partitioning = Field(
        "year",
        validation_alias="PROFILE_PARTITIONING",
        description="How profile indices are cut by the profile's first-seen time.",
    )

    # --- Elasticsearch: retention and snapshots (`tessera storage retention`, `tessera backup`) ---
    retention_event_days: int | None = Field(
        None,
        ge=1,
        validation_alias="TESSERA_RETENTION_EVENT_DAYS",
        description=(
            "Days an event partition is kept after its whole time range ended; then "
            "`tessera storage retention` deletes it. Unset: kept forever."
        ),
    )
    retention_session_days: int | None = Field(
        None,
        ge=1,
        validation_alias="TESSERA_RETENTION_SESSION_DAYS",
        description="Days a session partition is kept after its time range ended; unset: forever.",
    )
    retention_profile_days: int | None = Field(
        None,
        ge=1,
        validation_alias="TESSERA_RETENTION_PROFILE_DAYS",
        description="Days a profile partition is kept after its time range ended; unset: forever.",
    )
    snapshot_repository: str = Field(
        "tessera-backups",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$",
        validation_alias="TESSERA_SNAPSHOT_REPOSITORY",
        description="Name of the Elasticsearch snapshot repository `tessera backup` uses.",
    )
    snapshot_type: Literal["fs", "s3"] = Field(
        "fs",
        validation_alias="TESSERA_SNAPSHOT_TYPE",
        description=(
            "`fs` (a folder shared by every Elasticsearch node, under their `path.repo`) or "
            "`s3` (needs the repository-s3 module on the cluster)."
        ),
    )
    snapshot_location: str | None = Field(
        None,
        validation_alias="TESSERA_SNAPSHOT_LOCATION",
        description=(
            "`fs` folder of the snapshots: absolute (inside `path.repo`) or relative to the "
            "first `path.repo`. Unset: a folder named after the repository."
        ),
    )
    snapshot_s3_bucket: str | None = Field(
        None,
        validation_alias="TESSERA_SNAPSHOT_S3_BUCKET",
        description="`s3`: the bucket of the snapshots (required for `s3`).",
    )
    snapshot_s3_region: str | None = Field(
        None,
        validation_alias="TESSERA_SNAPSHOT_S3_REGION",
        description=(
            "`s3`: the bucket's region, e.g. `eu-west-1`. A client setting of the nodes "
            "(`s3.client.<client>.region` in elasticsearch.yml): checked, and shown to copy there."
        ),
    )
    snapshot_s3_endpoint: str | None = Field(
        None,
        validation_alias="TESSERA_SNAPSHOT_S3_ENDPOINT",
        description=(
            "`s3`: URL of an S3-compatible service (MinIO, …); unset: AWS. A node setting "
            "(`s3.client.<client>.endpoint`): checked, and shown to copy there."
        ),
    )
    snapshot_s3_base_path: str | None = Field(
        None,
        validation_alias="TESSERA_SNAPSHOT_S3_BASE_PATH",
        description="`s3`: folder inside the bucket, e.g. `tessera/prod`; unset: the bucket root.",
    )
    snapshot_s3_client: str = Field(
        "default",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        validation_alias="TESSERA_SNAPSHOT_S3_CLIENT",
        description=(
            "`s3`: the nodes' S3 client (`s3.client.<name>.*` settings and keystore "
            "credentials) the repository uses."
        ),
    )

    # --- Ingest queue and workers (async intake; sync: the pipeline runs in the request) ---
    ingest_mode: Literal["sync", "async"] = Field(
        "sync",
        validation_alias="TESSERA_INGEST_MODE",
        description=(
            "`sync`: `/track` runs the pipeline inside the request. `async`: the API checks the "
            "request, stamps profile/session/event ids, publishes it to the ingest queue and "
            "answers once the queue acknowledged it; workers run the pipeline."
        ),
    )
    queue_backend: Literal["auto", "embedded", "redis", "kafka", "pulsar"] = Field(
        "auto",
        validation_alias="TESSERA_QUEUE",
        description=(
            "Ingest queue: `embedded` (a durable SQLite log in the data dir), `redis` (Redis "
            "Streams on `REDIS_HOST`), `kafka` (`KAFKA_BOOTSTRAP_SERVERS`) or `pulsar` "
            "(`PULSAR_HOST`). `auto`: Pulsar when `PULSAR_HOST` is set, else Kafka when "
            "`KAFKA_BOOTSTRAP_SERVERS` is set, else embedded."
        ),
    )
    queue_topic: str = Field(
        "tessera-ingest",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$",
        validation_alias="TESSERA_QUEUE_TOPIC",
        description="Name of the ingest topic (Kafka/Pulsar topic, Redis stream prefix).",
    )
    queue_partitions: int = Field(
        8,
        ge=1,
        le=1024,
        validation_alias="TESSERA_QUEUE_PARTITIONS",
        description=(
            "Partitions of the ingest topic. One profile's messages stay on one partition and "
            "one worker reads a partition at a time, so this caps how many workers share the "
            "work. Set before the topic is created."
        ),
    )
    queue_publish_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=120,
        validation_alias="TESSERA_QUEUE_PUBLISH_TIMEOUT_SECONDS",
        description=(
            "Longest wait for the queue to acknowledge a publish; past it the API answers 503 "
            "with `Retry-After`."
        ),
    )
    queue_lease_seconds: float = Field(
        10.0,
        ge=1,
        le=600,
        validation_alias="TESSERA_QUEUE_LEASE_SECONDS",
        description=(
            "Embedded and Redis queues: seconds a worker's hold on a partition outlives the "
            "worker (crash); others take the partition over after it."
        ),
    )
    queue_retention_hours: float = Field(
        720.0,
        gt=0,
        validation_alias="TESSERA_QUEUE_RETENTION_HOURS",
        description=(
            "How long the queue keeps *processed* messages after the workers are done with "
            "them (Pulsar namespace retention; Tessera trims the embedded log, the Redis "
            "streams and the Kafka topic). Unprocessed messages are never removed. Applied by "
            "`tessera install`."
        ),
    )
    queue_retention_mb: int = Field(
        1024,
        ge=1,
        validation_alias="TESSERA_QUEUE_RETENTION_MB",
        description=(
            "Most megabytes of *processed* messages the queue keeps (Pulsar namespace "
            "retention size; Kafka: this divided by the partitions, per partition; embedded: "
            "processed messages go while the log file is larger). Unprocessed messages are "
            "never removed: `TESSERA_QUEUE_MAX_BACKLOG_MB` bounds them."
        ),
    )
    queue_max_backlog_mb: int = Field(
        1024,
        ge=1,
        validation_alias="TESSERA_QUEUE_MAX_BACKLOG_MB",
        description=(
            "Most megabytes of *unprocessed* messages the queue accepts. Before a publish "
            "would pass it, async `/track` and `/collect` answer 503 with `Retry-After` "
            "(back-pressure) instead of keeping more; they accept again as the workers catch "
            "up. Each API process measures the backlog every second in the background (Pulsar "
            "also sets it as the broker's backlog quota, divided by the partitions)."
        ),
    )
    kafka_bootstrap_servers: str | None = Field(
        None,
        validation_alias="KAFKA_BOOTSTRAP_SERVERS",
        description="Kafka brokers, e.g. `kafka1:9092,kafka2:9092` (the `kafka` queue).",
    )
    pulsar_host: str | None = Field(
        None,
        validation_alias="PULSAR_HOST",
        description="Pulsar service URL, e.g. `pulsar://pulsar:6650` (the `pulsar` queue).",
    )
    pulsar_admin_url: str | None = Field(
        None,
        validation_alias="PULSAR_ADMIN_URL",
        description=(
            "Pulsar admin REST URL (topics, retention). Unset: `PULSAR_HOST`'s host on port 8080."
        ),
    )
    pulsar_auth_token: SecretStr | None = Field(
        None,
        validation_alias="PULSAR_AUTH_TOKEN",
        description=(
            "Pulsar token (JWT) for the client and the admin API. Never logged. Production "
            "refuses a well-known or short one."
        ),
    )
    pulsar_namespace: str = Field(
        "public/tessera",
        pattern=r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$",
        validation_alias="PULSAR_NAMESPACE",
        description=(
            "Pulsar `tenant/namespace` of the ingest topic, Tessera's own: `tessera install` "
            "creates it and sets its retention and backlog quota (refused for the shared "
            "`public/default`)."
        ),
    )
    workers: int = Field(
        1,
        ge=0,
        le=64,
        validation_alias="TESSERA_WORKERS",
        description=(
            "Async mode: queue workers `tessera serve` runs in its own process (0: none, "
            "separate `tessera worker` processes drain the queue)."
        ),
    )
    worker_processes: int = Field(
        1,
        ge=1,
        le=64,
        validation_alias="TESSERA_WORKER_PROCESSES",
        description="Processes one `tessera worker` command starts, each one queue consumer.",
    )
    worker_concurrency: int = Field(
        64,
        ge=1,
        le=4096,
        validation_alias="TESSERA_WORKER_CONCURRENCY",
        description=(
            "Messages of different profiles one worker processes at once (one profile's "
            "messages always one after the other); their writes share the storage batches."
        ),
    )
    worker_fetch: int = Field(
        500,
        ge=1,
        le=100_000,
        validation_alias="TESSERA_WORKER_FETCH",
        description="Most messages a worker takes from the queue in one round.",
    )
    worker_max_attempts: int = Field(
        5,
        ge=1,
        le=100,
        validation_alias="TESSERA_WORKER_MAX_ATTEMPTS",
        description=(
            "Attempts at a message that fails with an error that is not the storage being "
            "down, before it goes to the dead letters."
        ),
    )
    worker_retry_backoff_ms: float = Field(
        200.0,
        ge=1,
        le=60_000,
        validation_alias="TESSERA_WORKER_RETRY_BACKOFF_MS",
        description=(
            "First wait before a failed message is tried again; it doubles per attempt up to "
            "30 s, each wait a random point in its upper half (storage outages are retried for "
            "as long as they last)."
        ),
    )

    # --- Bounds: what one client may make the server hold or spend (docs/security.md) -------
    max_number: float = Field(
        9007199254740991,
        gt=0,
        le=1e300,
        validation_alias="TESSERA_MAX_NUMBER",
        description=(
            "Largest magnitude of a number a profile's `stats` and `interests` hold and of any "
            "sum or result Tessera computes (mapping `increment`, workflow calculations, "
            "merged counters). A change past it, or to a number that is not finite, is refused "
            "with a warning and the value stays. Default 2^53-1, the largest integer a double "
            "holds exactly."
        ),
    )
    max_profile_bytes: int = Field(
        512 * 1024,
        ge=4096,
        validation_alias="TESSERA_MAX_PROFILE_BYTES",
        description=(
            "Largest size of one profile as stored (JSON bytes). A mapping or workflow change "
            "that would pass it is refused with a warning (the rest of the request is taken); "
            "a merge whose result would pass it is not made."
        ),
    )
    max_profile_traits: int = Field(
        1000,
        ge=1,
        validation_alias="TESSERA_MAX_PROFILE_TRAITS",
        description=(
            "Most keys (at every depth) under one profile's `traits`; a change that would add "
            "more is refused with a warning, a merge that would is not made."
        ),
    )
    max_profile_ids: int = Field(
        1000,
        ge=2,
        validation_alias="TESSERA_MAX_PROFILE_IDS",
        description=(
            "Most ids (its own and those of profiles merged into it) one profile holds; a merge "
            "that would take it past this is not made and the answer warns."
        ),
    )
    max_profile_merges: int = Field(
        100,
        ge=1,
        validation_alias="TESSERA_MAX_PROFILE_MERGES",
        description=(
            "Merge log entries (`metadata.merges`) a profile keeps in full; older ones are "
            "folded into one summary entry (how many, first and last time)."
        ),
    )
    cache_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        validation_alias="TESSERA_CACHE_MAX_BYTES",
        description=(
            "Most bytes (encoded size) the in-process profile cache holds, and the session "
            "cache separately; the least recently used entries go first."
        ),
    )
    cache_max_entry_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        validation_alias="TESSERA_CACHE_MAX_ENTRY_BYTES",
        description=(
            "Largest profile or session (encoded) kept in a cache, in-process or Redis; a "
            "larger one is read from storage each time."
        ),
    )
    regex_max_length: int = Field(
        1000,
        ge=16,
        le=100_000,
        validation_alias="TESSERA_REGEX_MAX_LENGTH",
        description=(
            "Longest regular expression a rule may save (JSON Schema `pattern` and "
            "`patternProperties` of validation rules, workflow `regex_match` nodes): 422 past it."
        ),
    )
    regex_max_repeat: int = Field(
        1000,
        ge=1,
        le=65535,
        validation_alias="TESSERA_REGEX_MAX_REPEAT",
        description=(
            "Largest counted repetition (`a{n}`, `a{n,m}`) a saved regular expression may use, "
            "and, multiplied through nested groups, 100 times this for the whole pattern: "
            "compiling `a{8000000}` would take seconds and gigabytes (422 instead)."
        ),
    )
    regex_budget_seconds: float = Field(
        0.5,
        gt=0,
        le=60,
        validation_alias="TESSERA_REGEX_BUDGET_SECONDS",
        description=(
            "Time one request's regular expressions may take together, off the event loop: "
            "once for its validation rules, once for its workflows' `regex_match` nodes. An "
            "event whose validation runs out of it is marked invalid; a `regex_match` that "
            "does fails its workflow run. Both say so in the answer's warnings."
        ),
    )
    search_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        validation_alias="TESSERA_SEARCH_TIMEOUT_SECONDS",
        description=(
            "Time one search (`POST /profiles/search`, `/events/search`) may take; the query "
            "is then stopped (SQLite interrupted, Elasticsearch's `timeout`) and the answer is "
            "503 with `Retry-After`."
        ),
    )
    max_condition_size: int = Field(
        200,
        ge=8,
        le=100_000,
        validation_alias="TESSERA_MAX_CONDITION_SIZE",
        description=(
            "Most comparisons one search condition may hold (each `==`, `<`, `EXISTS` … "
            "counts one); a larger one is refused with 422."
        ),
    )
    shutdown_grace_seconds: int = Field(
        10,
        ge=0,
        le=3600,
        validation_alias="TESSERA_SHUTDOWN_GRACE_SECONDS",
        description=(
            "On SIGTERM, how long `tessera serve` lets requests in flight finish before it "
            "cancels them (a search is then interrupted at once) and stops."
        ),
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        validation_alias="TESSERA_HEADER_TIMEOUT_SECONDS",
        description=(
            "Time a client has to send a request's headers after it connected (or after its "
            "previous request); past it the connection is closed."
        ),
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        validation_alias="TESSERA_BODY_TIMEOUT_SECONDS",
        description=(
            "Time a client has to send a request's whole body once its headers arrived; past "
            "it the answer is 408 and the connection is closed."
        ),
    )
    keep_alive_seconds: int = Field(
        5,
        gt=0,
        le=600,
        validation_alias="TESSERA_KEEP_ALIVE_SECONDS",
        description="Time an idle keep-alive connection stays open between requests.",
    )
    throttle_login_per_minute: int = Field(
        10,
        ge=0,
        validation_alias="TESSERA_THROTTLE_LOGIN_PER_MINUTE",
        description=(
            "Sign-ins (`POST /user/token`) one client address may try per minute; more get "
            "429 with `Retry-After` (0: no limit). Shared by every process through Redis when "
            "`REDIS_HOST` is set."
        ),
    )
    throttle_install_per_minute: int = Field(
        5,
        ge=0,
        validation_alias="TESSERA_THROTTLE_INSTALL_PER_MINUTE",
        description=(
            "`POST /install` attempts (which check the installation token) one client address "
            "may make per minute; more get 429 with `Retry-After` (0: no limit). Shared through "
            "Redis when `REDIS_HOST` is set."
        ),
    )
    throttle_new_profiles_per_minute: int = Field(
        120,
        ge=0,
        validation_alias="TESSERA_THROTTLE_NEW_PROFILES_PER_MINUTE",
        description=(
            "`/track` requests that start a new profile (no known profile or session id) one "
            "client address may send per minute; more get 429 with `Retry-After` (0: no "
            "limit). Shared by every process through Redis when `REDIS_HOST` is set."
        ),
    )

    @field_validator("auto_profile_merging")
    @classmethod
    def _long_salt(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 20:
            raise ValueError("must have at least 20 characters")
        return value

    @field_validator("merge_keys")
    @classmethod
    def _merge_key_paths(cls, value: str) -> str:
        paths = [path.strip() for path in value.split(",") if path.strip()]
        for path in paths:
            if not path.startswith(("data.", "traits.")) or ".." in path:
                raise ValueError(f"{path!r} is not a profile path under data. or traits.")
        return ",".join(paths)

    @property
    def merge_key_paths(self) -> tuple[str, ...]:
        return tuple(self.merge_keys.split(",")) if self.merge_keys else ()

    @property
    def blocked_merge_values(self) -> frozenset[str]:
        values = self.merge_blocked_values.split(",")
        return frozenset(value.strip().lower() for value in values if value.strip())

    @field_validator("trusted_proxies", "outbound_allow_cidrs")
    @classmethod
    def _network_list(cls, value: str) -> str:
        """Comma-separated IP addresses or networks (10.1.0.0/16), each checked."""
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or a network such as 10.1.0.0/16"
                ) from None
        return ",".join(entries)

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        return _networks(self.trusted_proxies)

    @property
    def outbound_allowed_networks(self) -> tuple[IPNetwork, ...]:
        return _networks(self.outbound_allow_cidrs)

    @property
    def outbound_loopback_allowed(self) -> bool:
        """TESSERA_OUTBOUND_ALLOW_LOOPBACK, or when unset: in development only."""
        if self.outbound_allow_loopback is None:
            return not self.is_production
        return self.outbound_allow_loopback

    @field_validator("stored_headers")
    @classmethod
    def _plain_header_names(cls, value: str) -> str:
        names = [name.strip().lower() for name in value.split(",") if name.strip()]
        for name in names:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a header name")
            # Anywhere in the name: "xauthtoken" is as much a credential as "x-auth-token".
            if any(word in name for word in CREDENTIAL_WORDS):
                raise ValueError(f"{name!r} may carry a credential; it is never stored")
        return ",".join(names)

    @property
    def stored_header_names(self) -> frozenset[str]:
        """The extra request headers TESSERA_STORED_HEADERS names, lower-case."""
        return frozenset(self.stored_headers.split(",")) - {""}

    @field_validator("sqlite_synchronous")
    @classmethod
    def _known_synchronous(cls, value: str) -> str:
        upper = value.strip().upper()
        if upper not in {"NORMAL", "FULL", "EXTRA"}:
            raise ValueError("must be NORMAL, FULL or EXTRA")
        return upper

    @field_validator("logging_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("environment", mode="before")
    @classmethod
    def _lower_environment(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def queue_kind(self) -> str:
        """The queue backend ``auto`` stands for."""
        if self.queue_backend != "auto":
            return self.queue_backend
        if self.pulsar_host:
            return "pulsar"
        if self.kafka_bootstrap_servers:
            return "kafka"
        return "embedded"

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    def __repr_args__(self) -> Any:
        # Secrets print as "**********" by their type; a password written into a URL setting
        # (https://user:password@host) is masked too.
        for name, value in super().__repr_args__():
            yield name, without_url_passwords(value) if isinstance(value, str) else value


def env_name(field_name: str) -> str:
    """The environment variable that sets ``field_name``."""
    alias = Settings.model_fields[field_name].validation_alias
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field_name.upper()


def is_secret_field(field_name: str) -> bool:
    """Whether the field holds a secret: decided by its type, never by a list of names."""
    field = Settings.model_fields.get(field_name)
    if field is None:
        return False
    annotation = field.annotation
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def secret_value(secret: SecretStr | None) -> str | None:
    """The secret itself, for the one client that needs it; None when unset."""
    return None if secret is None else secret.get_secret_value()


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold, to scrub from text that might quote one (a server's
    error message)."""
    found = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and value.get_secret_value():
            found.append(value.get_secret_value())
    return found


def shown_settings(settings: Settings) -> dict[str, Any]:
    """Every setting as it may be shown: secrets as ``(hidden)``, the password of a URL with
    ``user:password@`` as ``***``."""
    shown: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            shown[name] = "(hidden)" if value.get_secret_value() else ""
        elif isinstance(value, str):
            shown[name] = without_url_passwords(value)
        elif isinstance(value, enum.Enum):
            shown[name] = value.value
        else:
            shown[name] = value
    return shown


# ``scheme://user:password@`` anywhere in a value (several comma-separated URLs included).
_URL_PASSWORD = re.compile(r"(?P<start>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s,]*):[^/?#\s,]*@")


def without_url_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it replaced by
    ``***``."""
    return _URL_PASSWORD.sub(r"\g<start>:***@", text)


_FIELD_OF_VARIABLE = {env_name(name).upper(): name for name in Settings.model_fields}


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; a bad value raises ConfigurationError naming the variable."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            # The location is the environment variable (the alias) or, for a value given by
            # field name, the field.
            where = str(error["loc"][0]) if error["loc"] else "?"
            field = _FIELD_OF_VARIABLE.get(where.upper(), where)
            variable = env_name(field) if field in Settings.model_fields else where
            shown = "hidden" if is_secret_field(field) else repr(error.get("input"))
            problems.append(f"{variable}: {error['msg']} (got {shown})")
        raise ConfigurationError("invalid setting: " + "; ".join(problems)) from None
    check_production_secrets(settings)
    return settings


def is_weak_secret(secret: str | SecretStr) -> bool:
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    return value.strip().lower() in WEAK_SECRETS or len(value) < MIN_PRODUCTION_SECRET_LENGTH


def estimated_secret_bits(value: str) -> float:
    """A rough, deliberately simple estimate of how hard ``value`` is to guess, in bits.

    Each character is worth log2 of the size of the character classes the secret uses
    (lower case 26, upper case 26, digits 10, ASCII punctuation and space 33, anything else
    100), except a predictable one, worth nothing: one equal or next to the character before
    it (``aaaa``, ``abcd``, ``4321``), or one that repeats a pair of characters met earlier
    (``abcabc``, ``passwordpassword``). It refuses the obviously weak, not every weak secret:
    make secrets with a generator (``python -c "import secrets;
    print(secrets.token_urlsafe(32))"``).
    """
    pool = sum(
        size
        for size, present in (
            (26, any("a" <= char <= "z" for char in value)),
            (26, any("A" <= char <= "Z" for char in value)),
            (10, any(char.isascii() and char.isdigit() for char in value)),
            (33, any(char.isascii() and not char.isalnum() for char in value)),
            (100, any(not char.isascii() for char in value)),
        )
        if present
    )
    if pool == 0:
        return 0.0
    full = math.log2(pool)
    bits = 0.0
    pairs: set[tuple[str, str]] = set()
    previous: str | None = None
    for char in value:
        predictable = previous is not None and (
            abs(ord(char) - ord(previous)) <= 1 or (previous, char) in pairs
        )
        bits += 0.0 if predictable else full
        if previous is not None:
            pairs.add((previous, char))
        previous = char
    return bits


def weak_secret_problem(secret: str | SecretStr) -> str | None:
    """Why a secret the operator chooses for Tessera (INSTALLATION_TOKEN, the admin password)
    is too weak for production, without quoting it; None when it is strong enough."""
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if value.strip().lower() in WEAK_SECRETS:
        return "it is a well-known default"
    if len(value) < MIN_PRODUCTION_SECRET_LENGTH:
        return f"it has fewer than {MIN_PRODUCTION_SECRET_LENGTH} characters"
    bits = estimated_secret_bits(value)
    if bits < MIN_PRODUCTION_SECRET_BITS:
        return (
            f"it is too predictable (about {bits:.0f} bits of the {MIN_PRODUCTION_SECRET_BITS} "
            "needed: repeated characters, runs such as abcd or 1234, repeated pairs, or a "
            "single kind of character)"
        )
    return None


# The secrets Tessera asks the operator to choose: judged by how guessable they are (and the
# installation token is required). Every other secret setting, found by its type, needs at
# least MIN_PRODUCTION_SECRET_LENGTH characters and must not be a well-known default.
CHOSEN_SECRETS: Final = ("installation_token", "admin_password")
REQUIRED_SECRETS: Final = frozenset({"installation_token"})


def check_production_secrets(settings: Settings) -> None:
    """No insecure default reaches production: refuse missing or well-known secrets there,
    and for the ones Tessera asks the operator to choose, guessable ones too. A secret setting
    added later is covered by its type (SecretStr), not by a list to keep up to date."""
    if not settings.is_production:
        return
    for name in Settings.model_fields:
        if not is_secret_field(name):
            continue
        secret: SecretStr | None = getattr(settings, name)
        variable = env_name(name)
        what = "password" if "password" in name else "secret"
        if name in CHOSEN_SECRETS:
            if secret is None and name not in REQUIRED_SECRETS:
                continue
            problem = "it is not set" if secret is None else weak_secret_problem(secret)
            if problem is not None:
                raise ConfigurationError(
                    f"{variable}: production needs a hard-to-guess {what} of at least "
                    f"{MIN_PRODUCTION_SECRET_LENGTH} characters; {problem}"
                )
        elif secret is not None and is_weak_secret(secret):
            raise ConfigurationError(
                f"{variable}: production needs a {what} of at least "
                f"{MIN_PRODUCTION_SECRET_LENGTH} characters that is not a well-known default"
            )


def generate_secret() -> str:
    return secrets.token_urlsafe(24)
