"""API keys with scopes (`read`, `write`, `admin`): parsed from a key file and `$ADVREC_API_KEYS`, checked in
constant time, and required by the routes through `require`.

One entry is `<key> <scope>[,<scope>...]`: a key file holds one entry per line (a line whose first non-blank
character is `#` is a comment; a `#` anywhere else is text, so it may be part of a key), `$ADVREC_API_KEYS` holds
entries separated by `;`. A key has at least 16 characters and no whitespace, control character or `;`. Error
messages name the file and line (or the variable and entry) and the expected form, never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from advrec.errors import ConfigError

API_KEYS_ENV = "ADVREC_API_KEYS"
MIN_KEY_LENGTH = 16
SCOPES = ("read", "write", "admin")
ENTRY_FORM = "'<key> <scope>[,<scope>...]' with scopes among read, write, admin"

Keys = dict[str, frozenset[str]]


def parse_entry(entry: str, where: str) -> tuple[str, frozenset[str]]:
    """One `<key> <scope>[,<scope>...]` entry; `where` (file and line) goes into the error, the key never does."""
    parts = entry.strip().split(None, 1)
    if len(parts) != 2:
        raise ConfigError(f"{where}: expected {ENTRY_FORM}; found no scope")
    key, scope_text = parts
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(f"{where}: an API key must be at least {MIN_KEY_LENGTH} characters; expected {ENTRY_FORM}")
    if ";" in key or not key.isprintable():
        raise ConfigError(f"{where}: an API key must not contain ';' or control characters")
    scopes = [s.strip() for s in scope_text.split(",")]
    if not all(s in SCOPES for s in scopes):  # the bad text is not shown: it may be a second key
        raise ConfigError(f"{where}: unknown scope; expected {ENTRY_FORM} (scopes separated by commas)")
    return key, frozenset(scopes)


def _add(keys: Keys, key: str, scopes: frozenset[str]) -> None:
    keys[key] = keys.get(key, frozenset()) | scopes


def parse_key_file(text: str, source: str) -> Keys:
    """Entries of a key file: one per line; blank lines and lines starting with `#` are skipped."""
    keys: Keys = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            _add(keys, *parse_entry(line, f"{source}, line {lineno}"))
    return keys


def parse_key_env(text: str, name: str = API_KEYS_ENV) -> Keys:
    """Entries of `$ADVREC_API_KEYS`, separated by `;` (or newlines)."""
    keys: Keys = {}
    entries = [e for e in text.replace("\n", ";").split(";") if e.strip()]
    for n, entry in enumerate(entries, 1):
        _add(keys, *parse_entry(entry, f"${name}, entry {n}"))
    return keys


def as_keys(entries: Mapping[str, Iterable[str]] | Iterable[str]) -> Keys:
    """Keys given in Python: a mapping key -> scopes, or entries in the key-file form."""
    if isinstance(entries, Mapping):
        keys: Keys = {}
        for n, (key, scopes) in enumerate(entries.items(), 1):
            _add(keys, *parse_entry(f"{key} {','.join(scopes)}", f"api_keys, entry {n}"))
        return keys
    return parse_key_file("\n".join(entries), "api_keys")


def load_api_keys(key_file: str | Path | None = None, env: str | None = API_KEYS_ENV) -> Keys:
    """Keys and their scopes from `$ADVREC_API_KEYS` and from `key_file`; a key listed twice has both scope sets."""
    keys: Keys = {}
    if env and os.environ.get(env, "").strip():
        keys = parse_key_env(os.environ[env], env)
    if key_file is not None:
        path = Path(key_file)
        try:
            text = path.read_text()
        except OSError as err:
            raise ConfigError(f"cannot read the API key file {path}: {err.strerror}") from err
        found = parse_key_file(text, str(path))
        if not found:
            raise ConfigError(f"the API key file {path} holds no key (one {ENTRY_FORM} per line)")
        for key, scopes in found.items():
            _add(keys, key, scopes)
    return keys


class KeyChecker:
    """Compares a presented key with every configured key in constant time (digests, `hmac.compare_digest`)."""

    def __init__(self, keys: Mapping[str, Iterable[str]]) -> None:
        self._entries = [(hashlib.sha256(k.encode()).digest(), frozenset(s)) for k, s in keys.items()]

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def scopes(self, presented: str | None) -> frozenset[str] | None:
        """The scopes of a configured key; None for a missing or unknown key."""
        if not presented or not self._entries:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found = None
        for known, scopes in self._entries:  # no early exit: the time does not tell which key matched
            if hmac.compare_digest(digest, known):
                found = scopes
        return found

    def check(self, presented: str | None) -> bool:
        return self.scopes(presented) is not None


bearer = HTTPBearer(auto_error=False, description="an API key: Authorization: Bearer <key>")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def require(*any_of: str, public: bool = False) -> Callable[..., Coroutine[Any, Any, frozenset[str]]]:
    """A dependency that admits a key holding one of the scopes `any_of`, and returns the key's scopes.

    With `public=True` a server started with public reads also admits callers without a key (no scopes). The
    check runs before the route looks anything up, so a refusal never depends on which users exist.
    """
    wanted = " or ".join(f"'{s}'" for s in any_of)

    async def check(request: Request, creds: Credentials) -> frozenset[str]:
        keys: KeyChecker = request.app.state.serving.keys
        if creds is None and public and request.app.state.serving.settings.public_reads:
            return frozenset()
        if not keys:
            detail = f"this call needs an API key with the {wanted} scope, and this server has none configured"
            raise HTTPException(401, f"{detail} (start it with --api-key-file or ${API_KEYS_ENV})", CHALLENGE)
        if creds is None:
            raise HTTPException(
                401,
                f"this call needs an API key with the {wanted} scope: send 'Authorization: Bearer <key>'",
                CHALLENGE,
            )
        scopes = keys.scopes(creds.credentials)
        if scopes is None:
            raise HTTPException(401, "the API key is not valid", CHALLENGE)
        if not scopes & set(any_of) and not (public and request.app.state.serving.settings.public_reads):
            raise HTTPException(403, f"this API key lacks the {wanted} scope")
        return scopes

    return check
