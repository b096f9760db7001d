"""Prometheus metrics, one registry per running service (so tests can build many)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "kb_http_requests", "HTTP requests served", ["route", "status"], registry=self.registry
        )
        self.questions = Counter(
            "kb_questions",
            "Questions answered, by channel and outcome",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.answer_seconds = Histogram(
            "kb_answer_seconds",
            "Time from question to answer",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.guard_events = Counter(
            "kb_guard_events",
            "Input and output guard actions: refused (by category), withheld, redacted (by kind)",
            ["event", "detail"],
            registry=self.registry,
        )
        self.documents = Gauge("kb_documents", "Documents in the knowledge base", registry=self.registry)
        self.chunks = Gauge("kb_chunks", "Chunks in the knowledge base", registry=self.registry)

    def count_guard(self, event: str, detail: str, count: int = 1) -> None:
        self.guard_events.labels(event=event, detail=detail).inc(count)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
