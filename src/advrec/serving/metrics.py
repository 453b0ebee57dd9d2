"""Prometheus metrics of one app: request counts, latency histograms, ingested events, model version."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    """The metrics of one app, in a registry of its own (several apps may live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "advrec_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "advrec_http_request_duration_seconds",
            "Time from request to the end of the response",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter("advrec_events_ingested", "Events committed to the event store", registry=self.registry)
        self.model_info = Gauge(
            "advrec_model_info", "The model being served (value 1)", ["version", "model", "run"], registry=self.registry
        )
        self.model_loaded = Gauge(
            "advrec_model_loaded_timestamp_seconds", "When the served model was loaded", registry=self.registry
        )
        self.model_reloads = Counter("advrec_model_reloads", "Successful model reloads", registry=self.registry)

    def set_model(self, version: str, model: str, run: str, loaded_at: float) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version, model=model, run=run).set(1)
        self.model_loaded.set(loaded_at)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times each HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.latency.labels(method=method, route=route).observe(time.perf_counter() - start)
            self.metrics.requests.labels(method=method, route=route, status=str(status)).inc()
