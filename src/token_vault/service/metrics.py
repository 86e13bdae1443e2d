"""Prometheus metrics, in a registry per app (no module-level singletons)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    """The service's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.upserts = Counter(
            "token_vault_upserts_total", "Refresh-token upserts stored", registry=self.registry
        )
        self.refreshes = Counter(
            "token_vault_refreshes_total",
            "Refreshes at the provider, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.provider_latency = Histogram(
            "token_vault_provider_latency_seconds",
            "Latency of refresh requests to the provider",
            registry=self.registry,
        )
        self.keepalive = Counter(
            "token_vault_keepalive_total",
            "Entries the keep-alive refresher handled, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "token_vault_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=self.registry,
        )

    def observe_refresh(self, outcome: str, seconds: float) -> None:
        self.refreshes.labels(outcome=outcome).inc()
        self.provider_latency.observe(seconds)

    def observe_keepalive(self, outcome: str) -> None:
        self.keepalive.labels(outcome=outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
