"""The server's settings as one object (pydantic-settings), and their round trip through the environment: `advrec
serve` writes them as `ADVREC_SERVE_*` variables, and each uvicorn worker reads them back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from advrec.errors import ConfigError
from advrec.serving.ann import DEFAULT_EF_SEARCH, DEFAULT_M
from advrec.serving.schemas import MAX_BATCH
from advrec.serving.store import MAX_EVENTS_PER_USER

DEFAULT_BODY_BYTES = 4 * 1024 * 1024
MAX_ENTRIES = 100_000  # users × k of one batch request

ENV_PREFIX = "ADVREC_SERVE_"
# settings field -> environment variable (without the prefix); api keys travel in their own file or variable
ENV_NAMES = {
    "run_dir": "RUN_DIR",
    "store_url": "STORE",
    "api_key_file": "API_KEY_FILE",
    "public_reads": "PUBLIC_READS",
    "runs_root": "RUNS_ROOT",
    "max_batch": "MAX_BATCH",
    "max_body_bytes": "MAX_BODY_BYTES",
    "max_events_per_user": "MAX_EVENTS_PER_USER",
    "max_entries": "MAX_ENTRIES",
    "ann": "ANN",
    "ann_m": "ANN_M",
    "ann_ef_search": "ANN_EF_SEARCH",
    "torch_threads": "TORCH_THREADS",
}


def _env(field: str) -> str:
    return ENV_PREFIX + ENV_NAMES[field]


class ServingSettings(BaseSettings):
    """Everything `create_app` needs besides the keys themselves, read from `ADVREC_SERVE_*` variables
    (`ENV_NAMES`; an unset or empty variable keeps the default) or given as keyword arguments; a bad value is
    refused naming the setting.

    `public_reads` lets anonymous callers have ad-hoc recommendations, similar items, popular items and the API
    docs; a stored user's answers always need a key with the `read` scope. `runs_root` bounds the run directories
    an admin reload may load (default: the parent of `run_dir`). `max_events_per_user` bounds the events of one
    user that a read uses (the most recent ones), `max_entries` the users × k of one batch request.
    """

    model_config = SettingsConfigDict(frozen=True, env_ignore_empty=True, populate_by_name=True, extra="forbid")

    run_dir: Path = Field(validation_alias=_env("run_dir"))
    store_url: str | None = Field(None, validation_alias=_env("store_url"))
    api_key_file: Path | None = Field(None, validation_alias=_env("api_key_file"))
    public_reads: bool = Field(False, validation_alias=_env("public_reads"))
    runs_root: Path | None = Field(None, validation_alias=_env("runs_root"))
    max_batch: int = Field(MAX_BATCH, ge=1, le=MAX_BATCH, validation_alias=_env("max_batch"))
    max_body_bytes: int = Field(DEFAULT_BODY_BYTES, ge=1, validation_alias=_env("max_body_bytes"))
    max_events_per_user: int = Field(MAX_EVENTS_PER_USER, ge=1, validation_alias=_env("max_events_per_user"))
    max_entries: int = Field(MAX_ENTRIES, ge=1, validation_alias=_env("max_entries"))
    ann: str = Field("none", validation_alias=_env("ann"))
    ann_m: int = Field(DEFAULT_M, validation_alias=_env("ann_m"))
    ann_ef_search: int = Field(DEFAULT_EF_SEARCH, validation_alias=_env("ann_ef_search"))
    torch_threads: int = Field(1, ge=1, validation_alias=_env("torch_threads"))

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            first = err.errors()[0]
            name = str(first["loc"][0]) if first["loc"] else "settings"
            field = next((f for f, env in ENV_NAMES.items() if name in (f, ENV_PREFIX + env)), name)
            if first["type"] == "missing" and field == "run_dir":
                raise ConfigError(f"${ENV_PREFIX}RUN_DIR must name the run directory to serve") from None
            if field not in ENV_NAMES:
                raise ConfigError(f"unknown serving setting {field!r}; settings: {', '.join(ENV_NAMES)}") from None
            raise ConfigError(f"serving setting {field} (${ENV_PREFIX}{ENV_NAMES.get(field, '?')}): {first['msg']}, "
                              f"got {first.get('input')!r}") from None  # fmt: skip

    @property
    def resolved_runs_root(self) -> Path:
        """The folder under which reloads may pick run directories (symlinks resolved)."""
        return Path(os.path.realpath(self.runs_root or Path(self.run_dir).resolve().parent))

    def replace(self, **changes: Any) -> ServingSettings:
        """A copy with `changes` (validated as the original was)."""
        return type(self)(**{**self.model_dump(), **changes})

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables (`ADVREC_SERVE_*`); unset values are empty strings."""
        out = {}
        for name, env in ENV_NAMES.items():
            value = getattr(self, name)
            if isinstance(value, bool):
                text = "1" if value else ""
            elif isinstance(value, Path):
                text = str(value.resolve())
            else:
                text = "" if value is None else str(value)
            out[ENV_PREFIX + env] = text
        return out

    @classmethod
    def from_env(cls) -> ServingSettings:
        """Settings from the `ADVREC_SERVE_*` variables of this process (what `to_env` wrote for a worker)."""
        return cls()
