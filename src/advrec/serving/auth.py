"""API keys: loaded from an environment variable and/or a file, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from pathlib import Path

from advrec.errors import ConfigError

API_KEYS_ENV = "ADVREC_API_KEYS"
MIN_KEY_LENGTH = 16


def parse_keys(text: str, source: str) -> list[str]:
    """Keys from text: one per line or comma-separated; blank lines and `#` comments are skipped."""
    keys: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0]
        for key in (k.strip() for k in line.split(",")):
            if not key:
                continue
            if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
                raise ConfigError(
                    f"{source}, line {lineno}: an API key must be at least {MIN_KEY_LENGTH} characters without spaces"
                )
            keys.append(key)
    return keys


def load_api_keys(key_file: str | Path | None = None, env: str | None = API_KEYS_ENV) -> list[str]:
    """Keys from `$ADVREC_API_KEYS` (comma-separated) and from `key_file` (one per line), without duplicates."""
    keys: list[str] = []
    if env and os.environ.get(env, "").strip():
        keys += parse_keys(os.environ[env], f"${env}")
    if key_file is not None:
        path = Path(key_file)
        try:
            text = path.read_text()
        except OSError as err:
            raise ConfigError(f"cannot read the API key file {path}: {err.strerror}") from err
        found = parse_keys(text, str(path))
        if not found:
            raise ConfigError(f"the API key file {path} holds no key (one per line, at least {MIN_KEY_LENGTH} chars)")
        keys += found
    return list(dict.fromkeys(keys))


class KeyChecker:
    """Compares a presented key with every configured key in constant time (digests, `hmac.compare_digest`)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def check(self, presented: str | None) -> bool:
        if not presented or not self._digests:
            return False
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        ok = False
        for known in self._digests:  # no early exit: the time does not tell which key matched
            ok |= hmac.compare_digest(digest, known)
        return ok
