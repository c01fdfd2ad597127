"""An OTLP/gRPC receiver built from the official protobufs (opentelemetry-proto + grpcio).

Usage: receiver.py OUT_DIR LABEL=PORT[,CERT_PEM,KEY_PEM] [LABEL=PORT[,CERT_PEM,KEY_PEM] ...]

Serves the trace, metrics and logs Export services on each port (with TLS when a certificate
and key are given) and appends every request it
receives, as protobuf JSON (MessageToJson), to OUT_DIR/LABEL.jsonl, one line per request:
{"signal": "traces"|"metrics"|"logs", "request": {...}}. Writes OUT_DIR/ready when listening.
"""
import json
import os
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

LOCK = threading.Lock()


def record(path, signal, request):
    line = json.dumps({"signal": signal, "request": MessageToDict(request)})
    with LOCK, open(path, "a") as f:
        f.write(line + "\n")


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, path):
        self.path = path

    def Export(self, request, context):
        record(self.path, "traces", request)
        return trace_service_pb2.ExportTraceServiceResponse()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, path):
        self.path = path

    def Export(self, request, context):
        record(self.path, "metrics", request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, path):
        self.path = path

    def Export(self, request, context):
        record(self.path, "logs", request)
        return logs_service_pb2.ExportLogsServiceResponse()


def main():
    out = sys.argv[1]
    servers = []
    for spec in sys.argv[2:]:
        label, rest = spec.split("=")
        port, *tls = rest.split(",")
        path = os.path.join(out, label + ".jsonl")
        open(path, "a").close()
        s = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(path), s)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(path), s)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(path), s)
        if tls:
            cert, key = (open(p, "rb").read() for p in tls)
            s.add_secure_port("127.0.0.1:" + port, grpc.ssl_server_credentials([(key, cert)]))
        else:
            s.add_insecure_port("127.0.0.1:" + port)
        s.start()
        servers.append(s)
    open(os.path.join(out, "ready"), "w").close()
    for s in servers:
        s.wait_for_termination()


if __name__ == "__main__":
    main()
