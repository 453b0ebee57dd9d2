"""The server's settings as one object, and their round trip through the environment (one copy per worker)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class ServingSettings:
    """Everything `create_app` needs besides the keys themselves.

    `public_reads` lets anonymous callers have ad-hoc recommendations, similar items, popular items and the API
    docs; a stored user's answers always need a key with the `read` scope. `runs_root` bounds the run directories
    an admin reload may load (default: the parent of `run_dir`). `max_events_per_user` bounds the events of one
    user that a read uses (the most recent ones), `max_entries` the users × k of one batch request.
    """

    run_dir: Path
    store_url: str | None = None
    api_key_file: Path | None = None
    public_reads: bool = False
    runs_root: Path | None = None
    max_batch: int = MAX_BATCH
    max_body_bytes: int = DEFAULT_BODY_BYTES
    max_events_per_user: int = MAX_EVENTS_PER_USER
    max_entries: int = MAX_ENTRIES
    ann: str = "none"
    ann_m: int = DEFAULT_M
    ann_ef_search: int = DEFAULT_EF_SEARCH
    torch_threads: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch <= MAX_BATCH:
            raise ConfigError(f"max_batch must lie in 1..{MAX_BATCH}, got {self.max_batch}")
        for name in ("max_body_bytes", "max_events_per_user", "max_entries", "torch_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def resolved_runs_root(self) -> Path:
        """The folder under which reloads may pick run directories (symlinks resolved)."""
        return Path(os.path.realpath(self.runs_root or Path(self.run_dir).resolve().parent))

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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        """Settings from `ADVREC_SERVE_*` variables; a variable that is unset or empty keeps the default."""
        environ = os.environ if environ is None else environ
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, object] = {}
        for name, env in ENV_NAMES.items():
            text = environ.get(ENV_PREFIX + env, "")
            if not text:
                continue
            kind = str(types[name])
            try:
                if kind == "bool":
                    values[name] = text == "1"
                elif kind == "int":
                    values[name] = int(text)
                elif "Path" in kind:
                    values[name] = Path(text)
                else:
                    values[name] = text
            except ValueError:
                raise ConfigError(f"${ENV_PREFIX}{env} must be an integer, got {text!r}") from None
        if "run_dir" not in values:
            raise ConfigError(f"${ENV_PREFIX}RUN_DIR must name the run directory to serve")
        return cls(**values)  # type: ignore[arg-type]
