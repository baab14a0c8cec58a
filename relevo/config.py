"""Settings: built once at the edge (CLI or ``create_app``) and passed down.

Precedence: explicit arguments, then ``RELEVO_*`` environment variables, then the TOML file
named by ``RELEVO_CONFIG`` (default ``relevo.toml`` if present), then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELEVO_", extra="forbid")

    # where things live
    store_url: str = Field("sqlite:///./relevo.db", description="Profile/state store URL.")
    stream_url: str = Field(
        "embedded://",
        description="Event log URL; embedded:// keeps it in a file next to the SQLite store.",
    )
    cache_url: str = Field(
        "memory://",
        description="Where profile change notices go: memory:// within one process, or"
        " redis://host:port/db so API nodes in other processes drop changed profiles from"
        " their decide cache.",
    )
    host: str = Field("127.0.0.1", description="Address `relevo serve` listens on.")
    port: int = Field(8000, description="Port `relevo serve` listens on.")

    # collection limits (Segment's defaults)
    max_event_bytes: int = Field(32 * 1024, description="Largest accepted event, in bytes.")
    max_request_bytes: int = Field(
        500 * 1024, description="Largest accepted request body (after gzip), in bytes."
    )
    max_batch_events: int = Field(2500, description="Most events in one batch.")
    max_nesting_depth: int = Field(32, description="Deepest nesting of objects/arrays in an event.")
    dedup_window_seconds: int = Field(
        7 * 24 * 3600, description="How long a (source, messageId) is remembered for dedup."
    )
    max_pending_events: int = Field(
        100_000, description="Events waiting for the log writer before collect answers 429."
    )

    # the event log
    partitions: int = Field(8, description="Number of event-log partitions (by profile key).")
    log_sync: bool = Field(
        True, description="fsync the embedded event log before acknowledging (group commit)."
    )

    # the processor and profiles
    process_batch_size: int = Field(
        1000, description="Most events applied in one transaction while keeping up."
    )
    catch_up_batch_size: int = Field(
        5000,
        description="Most events in one transaction while catching up on a backlog: after a "
        "full cycle the next may take twice as many, up to this.",
    )
    timeline_limit: int = Field(1000, description="Events kept per profile for the timeline.")
    identity_limits: dict[str, int] = Field(
        default_factory=lambda: {"anonymous_id": 100, "email": 10, "user_id": 1},
        description="Most identifiers of each type one profile may hold.",
    )
    default_identity_limit: int = Field(
        50, description="Most identifiers of a type not named in identity_limits."
    )

    # segments and computed traits
    definitions_dir: str | None = Field(
        None,
        description="Directory with segments/*.yaml and computed_traits.yaml, loaded at start.",
    )
    segment_recheck_seconds: int = Field(
        3600,
        ge=1,
        description="How often a segment using now() is evaluated again without events.",
    )

    # destinations
    outbound_allow_hosts: list[str] = Field(
        default_factory=list,
        description="Internal hosts or addresses destinations may reach (SSRF allowlist).",
    )
    delivery_retry_base_seconds: float = Field(
        2.0, description="Backoff ceiling after a destination's first failure (full jitter)."
    )
    delivery_retry_max_seconds: float = Field(
        900.0, description="Cap on the backoff between delivery attempts."
    )
    delivery_retry_budget_seconds: float = Field(
        4 * 3600.0, description="How long a delivery is retried before it is stored as failed."
    )

    rate_limit_per_second: float | None = Field(
        None,
        gt=0,
        description="Requests per second each API key may make to collect and decide (over"
        " it: 429 with Retry-After); counted across API nodes when cache_url is redis://."
        " Unset: no limit.",
    )
    holdout_percent: float = Field(
        0.0,
        ge=0,
        le=50,
        description="Share of profiles (percent) kept in the global holdout: they get each"
        " placement's default offer, as the baseline personalisation is measured against.",
    )
    identity_secret: SecretStr | None = Field(
        None,
        description="Secret of the userHash (HMAC-SHA256 of the user id) and profile tokens"
        " that browsers (write keys) must show to ask decisions for a user id.",
    )

    log_level: str = Field("INFO", description="Log level of the JSON logs.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = os.environ.get("RELEVO_CONFIG", "relevo.toml")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if Path(config_file).is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def identity_limit(self, identifier_type: str) -> int:
        return self.identity_limits.get(identifier_type, self.default_identity_limit)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment and config file, with explicit overrides."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
