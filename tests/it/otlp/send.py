"""Sends spans, metrics and logs with the OpenTelemetry Python SDK and its OTLP exporters.

Usage: send.py grpc|http WEIR_ENDPOINT REFERENCE_GRPC_ENDPOINT TAG

Every export goes both to Weir (over the given protocol) and, unchanged, to the reference
receiver over gRPC, so the checker compares what Weir forwarded with exactly what the SDK
sent. TAG distinguishes the runs (it is in every resource as `run`).
"""
import sys
import time

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode


class TeeMetrics(MetricExporter):
    """Exports the same collected data to several exporters."""

    def __init__(self, exporters):
        super().__init__(preferred_temporality=exporters[0]._preferred_temporality)
        self.exporters = exporters

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        results = [e.export(metrics_data, timeout_millis=timeout_millis) for e in self.exporters]
        ok = all(r == MetricExportResult.SUCCESS for r in results)
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis=10_000):
        return True

    def shutdown(self, timeout_millis=30_000, **kwargs):
        for e in self.exporters:
            e.shutdown()


def main():
    proto, weir, reference, tag = sys.argv[1:5]
    if proto == "grpc":
        spans, metrics, logs = GrpcSpans(endpoint=weir, insecure=True), GrpcMetrics(endpoint=weir, insecure=True), GrpcLogs(endpoint=weir, insecure=True)
    else:
        spans = HttpSpans(endpoint=weir + "/v1/traces")
        metrics = HttpMetrics(endpoint=weir + "/v1/metrics")
        logs = HttpLogs(endpoint=weir + "/v1/logs")
    ref = dict(endpoint=reference, insecure=True)
    resource = Resource.create({
        "service.name": "checkout-" + tag,
        "run": tag,
        "k8s.pod.name": "checkout-7d9f-xk2p",
        "host.cores": 2,
    })

    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(spans))
    tp.add_span_processor(SimpleSpanProcessor(GrpcSpans(**ref)))
    tracer = tp.get_tracer("weir.test.tracer", "1.2.3")

    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs))
    lp.add_log_record_processor(SimpleLogRecordProcessor(GrpcLogs(**ref)))
    logger = lp.get_logger("weir.test.logger", "4.5.6")

    reader = PeriodicExportingMetricReader(TeeMetrics([metrics, GrpcMetrics(**ref)]), export_interval_millis=3_600_000)
    mp = MeterProvider(resource=resource, metric_readers=[reader])
    meter = mp.get_meter("weir.test.meter", "7.8.9")

    with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER, attributes={
        "http.method": "GET", "http.status_code": 200, "ratio": 0.25, "cached": True,
        "tags": ["a", "b"], "ids": [1, 2, 3],
    }) as root:
        root.add_event("cache miss", {"key": "cart:42", "attempt": 2})
        with tracer.start_as_current_span("SELECT carts", kind=SpanKind.CLIENT,
                                          links=[Link(root.get_span_context(), {"why": "batch"})]) as child:
            child.set_attribute("db.system", "postgresql")
            child.set_status(Status(StatusCode.ERROR, "deadlock detected"))
            logger.emit(
                timestamp=1_764_000_000_123_456_789,
                observed_timestamp=1_764_000_000_223_456_789,
                severity_number=SeverityNumber.WARN,
                severity_text="WARN",
                body="slow query: 1.2s",
                attributes={"db.rows": 17, "slow": True, "query": "SELECT * FROM carts"},
                event_name="db.slow",
            )
        logger.emit(severity_number=SeverityNumber.INFO, severity_text="INFO",
                    body="cart served", attributes={"items": 3}, timestamp=time.time_ns())

    requests = meter.create_counter("http.server.requests")
    requests.add(5, {"route": "/cart", "code": "200"})
    requests.add(2, {"route": "/pay", "code": "500"})
    latency = meter.create_histogram("http.server.duration")
    for v in (3.0, 7.5, 120.0, 2600.0):
        latency.record(v, {"route": "/cart"})
    meter.create_observable_gauge("queue.depth", callbacks=[
        lambda options: [__import__("opentelemetry.metrics", fromlist=["Observation"]).Observation(42.5, {"queue": "orders"})]
    ])

    tp.shutdown()
    lp.shutdown()
    mp.shutdown()


if __name__ == "__main__":
    main()
