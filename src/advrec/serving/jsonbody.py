"""Strict JSON request bodies and validation errors that never echo a body back.

Request bodies are parsed as RFC 8259 JSON in UTF-8: `NaN`, `Infinity`, `-Infinity`, numbers beyond a double
(`1e400`), integers of more than 100 digits and lone surrogates (`"\\ud800"`) are refused with a 422 that names
the problem and its position. `StrictJSONRoute` does it for every route of a router; `validation_error` answers
422 with each offending input cut to 100 characters; `BodyLimitMiddleware` answers 413 to a body over the limit,
announced (Content-Length) or streamed, before it is read whole.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_INT_DIGITS = 100
MAX_ECHO = 100  # characters of an offending input shown back in a validation error

_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_TOKENS = re.compile(rf"({_STRING})|(-?Infinity|NaN)|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Refused(ValueError):
    """A token that JSON does not allow (raised while parsing, located afterwards)."""

    def __init__(self, message: str, token: str) -> None:
        super().__init__(message)
        self.message, self.token = message, token


def _constant(text: str) -> float:
    raise _Refused(f"{text} is not JSON (send a finite number or null)", text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is out of range (beyond ±1.8e308)", text)
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits is out of range", text)
    return int(text)


def _position(text: str, token: str) -> int:
    """Where `token` first occurs outside strings (the parser refused it, so it is there)."""
    for m in _TOKENS.finditer(text):
        if m.group(1) is None and m.group(0) == token:
            return m.start()
    return 0


def _lone_surrogate(text: str) -> int | None:
    """Position of the first string holding a lone surrogate escape, or None."""
    if not _SURROGATE_ESCAPE.search(text):
        return None
    for m in _TOKENS.finditer(text):
        if m.group(1) is not None and _SURROGATE_ESCAPE.search(m.group(1)):
            try:
                json.loads(m.group(1)).encode("utf-8")
            except UnicodeEncodeError:
                return m.start()
    return None


def strict_loads(body: bytes) -> Any:
    """Parses a JSON body; `json.JSONDecodeError` names what JSON does not allow and where (character offset)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise json.JSONDecodeError("the body is not UTF-8 text", body.decode("utf-8", "replace"), err.start) from None
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except _Refused as err:
        raise json.JSONDecodeError(err.message, text, _position(text, err.token)) from None
    except RecursionError:
        raise json.JSONDecodeError("arrays or objects nested too deeply", text, 0) from None
    pos = _lone_surrogate(text)
    if pos is not None:
        raise json.JSONDecodeError("a string holds a lone surrogate (\\ud800-\\udfff without its pair)", text, pos)
    return value


class StrictJSONRequest(Request):
    """A request whose `json()` is `strict_loads`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route that parses its JSON body with `strict_loads`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


def clip(value: Any, limit: int = MAX_ECHO) -> Any:
    """A value safe to show back: short scalars as they are, anything else as text of at most `limit` characters."""
    if value is None or isinstance(value, bool) or (isinstance(value, int) and abs(value) < 10**15):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str, ensure_ascii=False)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates become visible escapes
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _error(e: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": e.get("type"), "loc": [clip(x) for x in e.get("loc", ())], "msg": clip(e.get("msg"))}
    ctx = e.get("ctx") or {}
    if e.get("type") == "json_invalid":
        out["msg"] = f"invalid JSON at character {out['loc'][-1]}: {clip(ctx.get('error'), 300)}"
    else:
        out["input"] = clip(e.get("input"))
        if ctx:
            out["ctx"] = {str(k): clip(v) for k, v in ctx.items()}
    return out


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    """422 listing each error with its location, message and the offending input cut short (never the body)."""
    errors = [_error(e) for e in exc.errors()[:20]]
    content = json.dumps({"detail": errors}, ensure_ascii=True, separators=(",", ":"))
    return Response(content, status_code=422, media_type="application/json")


class BodyLimitMiddleware:
    """Pure ASGI middleware: a request whose body exceeds `max_bytes` gets 413 (a Content-Length over it before
    anything is read; a streamed body as soon as the bytes received pass it, raised to the route reading it)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"the request body is over {self.max_bytes} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, counted, send)
