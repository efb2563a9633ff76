"""
The admin site: a second listener (``--admin ENDPOINT``), because every
path of the main site is a resource name.

- ``/metrics``: Prometheus text, through prometheus_client's Twisted
  resource.  Every figure is read from the registry when scraped (its
  `records.Counters`, its open streams), so serving requests costs no
  metrics bookkeeping beyond the counters the registry keeps anyway.
- ``/healthz``: ``200 ok`` while the process answers.
- ``/readyz``: ``200 ready`` while the registry runs and its storage root
  takes a write; ``503`` with the reason otherwise.

prometheus_client is the one extra dependency: it is the reference
implementation of the exposition format (text and OpenMetrics, content
negotiation), kept by the Prometheus project, and ships a Twisted resource.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.twisted import MetricsResource
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from ..core.records import LATENCY_BUCKETS, Kind, Latency
from ..core.registry import StreamRegistry
from ..core.stream import Stream

__all__ = ["make_admin_site"]


class _Collector:
    """Reads a registry's figures at each scrape."""

    def __init__(self, registry: StreamRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        counters = self._registry.counters
        streams = self._registry.open_streams()
        appenders = GaugeMetricFamily(
            "httpfstream_appenders", "Append sessions in progress.", labels=["kind"]
        )
        for kind in (Kind.APPEND, Kind.POST):
            appenders.add_metric([kind.value], counters.open[kind])
        yield appenders
        readers = GaugeMetricFamily(
            "httpfstream_readers",
            "Readers in progress, by transport.",
            labels=["transport"],
        )
        for kind in (
            Kind.FOLLOW_WS,
            Kind.FOLLOW_HTTP,
            Kind.FOLLOW_EVENTS,
            Kind.SNAPSHOT,
            Kind.SEARCH,
        ):
            readers.add_metric([kind.value], counters.open[kind])
        yield readers
        behind = sum(stream.behind for stream in streams)
        source = GaugeMetricFamily(
            "httpfstream_readers_by_source",
            "Readers reading from the file (behind the in-memory tail) or the tail.",
            labels=["source"],
        )
        source.add_metric(["file"], behind)
        source.add_metric(["tail"], sum(s.followers for s in streams) - behind)
        yield source
        yield GaugeMetricFamily(
            "httpfstream_open_streams", "Resources open in the registry.", len(streams)
        )
        yield _most_followed(streams)
        yield CounterMetricFamily(
            "httpfstream_appended_bytes",
            "Bytes appended and persisted.",
            counters.bytes_appended,
        )
        yield CounterMetricFamily(
            "httpfstream_delivered_bytes",
            "Bytes sent to readers.",
            counters.bytes_delivered,
        )
        ended = CounterMetricFamily(
            "httpfstream_sessions_ended",
            "Sessions ended, by kind and outcome (close code, status, or a word).",
            labels=["kind", "outcome"],
        )
        for (kind, outcome), count in sorted(
            counters.ended.items(), key=lambda item: (item[0][0].value, item[0][1])
        ):
            ended.add_metric([kind.value, outcome], count)
        yield ended
        refused = CounterMetricFamily(
            "httpfstream_refusals", "Error responses, by status.", labels=["status"]
        )
        for status, count in sorted(counters.refused.items()):
            refused.add_metric([str(status)], count)
        yield refused
        yield CounterMetricFamily(
            "httpfstream_no_space_appends",
            "Appends that found no space left on the storage (507 or 1011).",
            counters.no_space,
        )
        yield CounterMetricFamily(
            "httpfstream_swept_resources",
            "Resources removed for being older than --max-age.",
            counters.swept,
        )
        yield _histogram(
            "httpfstream_write_seconds",
            "From a batch of appended bytes queued to persisted.",
            counters.write_seconds,
        )
        yield _histogram(
            "httpfstream_fsync_seconds",
            "fsync of a resource file.",
            counters.sync_seconds,
        )


#: The most resources `_most_followed` names: a label set that cannot grow
#: with the number of resources.
MOST_FOLLOWED = 20


def _most_followed(streams: list[Stream]) -> Metric:
    """
    Live followers per resource, for the `MOST_FOLLOWED` resources with the
    most (and at least one): one series per resource would grow with every
    log ever followed, so the label set is bounded by that number at every
    scrape, and a resource's series ends when it leaves the list.
    """
    gauge = GaugeMetricFamily(
        "httpfstream_resource_followers",
        f"Live followers of the {MOST_FOLLOWED} most-followed resources.",
        labels=["resource"],
    )
    # By name: a deleted resource's stream, still read, and the new one of
    # the same name are one series.
    counted: Counter[str] = Counter()
    for stream in streams:
        counted["/".join(stream.name)] += stream.state.followers
    ranked = sorted(
        ((n, name) for name, n in counted.items() if n > 0),
        key=lambda c: (-c[0], c[1]),
    )
    for followers, name in ranked[:MOST_FOLLOWED]:
        gauge.add_metric([name], followers)
    return gauge


def _histogram(name: str, documentation: str, latency: Latency) -> Metric:
    buckets = []
    cumulative = 0
    for bound, count in zip(LATENCY_BUCKETS, latency.counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return HistogramMetricFamily(
        name, documentation, buckets=buckets, sum_value=latency.total
    )


def _writable(path: str) -> None:
    fd, probe = tempfile.mkstemp(prefix=".httpfstream-ready-", dir=path)
    os.close(fd)
    os.unlink(probe)


class _Health(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return b"ok\n"


class _Ready(Resource):
    isLeaf = True

    def __init__(self, registry: StreamRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        if not self._registry.running:
            request.setResponseCode(503)
            return b"not ready: the registry is not running\n"
        checked: Deferred[None] = deferToThread(_writable, self._registry.root.path)

        def ready(_: None) -> None:
            request.write(b"ready\n")
            request.finish()

        def not_ready(reason: Any) -> None:
            request.setResponseCode(503)
            request.write(
                b"not ready: the storage root takes no write: %s\n"
                % reason.getErrorMessage().encode()
            )
            request.finish()

        checked.addCallbacks(ready, not_ready)
        return NOT_DONE_YET


class _AdminSite(Site):
    def logPrefix(self) -> str:
        return "httpfstream-admin"


def make_admin_site(registry: StreamRegistry) -> Site:
    """The admin site of ``registry``: ``/metrics``, ``/healthz``, ``/readyz``."""
    metrics = CollectorRegistry()
    metrics.register(_Collector(registry))
    root = Resource()
    root.putChild(b"metrics", MetricsResource(metrics))
    root.putChild(b"healthz", _Health())
    root.putChild(b"readyz", _Ready(registry))
    return _AdminSite(root)
