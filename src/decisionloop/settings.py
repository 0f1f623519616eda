"""Service settings: defaults < ``decisionloop.yaml`` < ``DECISIONLOOP_*`` environment < arguments.

Backends are chosen by ``type:`` (Feast style) so that a PostgreSQL or Redis adapter can be added
later as one more member of a discriminated union, without touching callers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from decisionloop.errors import ConfigError, Problem


class DuckDBSourceConfig(BaseModel):
    """Append-only source layer in one DuckDB file (the embedded default)."""

    type: Literal["duckdb"] = "duckdb"
    path: Path | None = Field(
        default=None, description="DuckDB file; defaults to <data_dir>/source.duckdb"
    )
    max_group: int = Field(
        default=1024, ge=1, description="Most events in one group commit of the writer thread"
    )


class MemorySourceConfig(BaseModel):
    """Volatile source layer for tests and throwaway experiments: nothing survives a restart."""

    type: Literal["memory"] = "memory"


SourceConfig = Annotated[DuckDBSourceConfig | MemorySourceConfig, Field(discriminator="type")]


KEEP_ALIVE_S = 75  # the default of ``keep_alive_s`` and of BackgroundServer's


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DECISIONLOOP_",
        env_nested_delimiter="__",
        yaml_file="decisionloop.yaml",
        extra="forbid",
    )

    project_dir: Path = Field(default=Path("."), description="Folder of YAML/SQL definitions")
    data_dir: Path = Field(default=Path(".decisionloop"), description="Where state files live")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Larger bodies get 413")
    keep_alive_s: int = Field(
        default=KEEP_ALIVE_S,
        ge=1,
        description="Idle HTTP keep-alive connections are closed after this long: longer than "
        "the idle timeout of common load balancers (60 s), so that the balancer, not the "
        "service, closes an idle connection and never sends on one being closed",
    )
    max_batch_events: int = Field(default=1000, ge=1)
    recent_decisions: int = Field(default=200, ge=0, description="Kept in memory for the live page")
    max_future_skew_s: int = Field(
        default=300,
        ge=0,
        description="Events dated further ahead of the service clock are refused (422): one "
        "such event would move the feature watermark and make every later event late",
    )
    source: SourceConfig = Field(default_factory=DuckDBSourceConfig)
    ops_store_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the labels and lists store; default: a SQLite file "
        "<data_dir>/ops.sqlite",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))

    def source_path(self) -> Path | None:
        if isinstance(self.source, DuckDBSourceConfig):
            return self.source.path or self.data_dir / "source.duckdb"
        return None


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's error into a :class:`ConfigError` with field paths."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [
            Problem(where=".".join(str(p) for p in err["loc"]), reason=err["msg"])
            for err in exc.errors()
        ]
        raise ConfigError("invalid settings", problems) from exc
