"""An OTLP/HTTP logs receiver for tests/all/log_export.rs: decodes what the
host exports with the OpenTelemetry project's own protobuf definitions
(`opentelemetry-proto`) and prints one JSON line per log record on stdout.

    python receiver.py PORT      # 0: any free port; the first line says which

Each line: {"service": …, "version": …, "severity": n, "severityText": …,
"body": …, "timeNanos": n, "attributes": {…}, "apiKey": …}.
"""
import gzip
import http.server
import json
import sys

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportLogsServiceRequest()
        request.ParseFromString(body)
        for resource_logs in request.resource_logs:
            resource = {kv.key: value(kv.value) for kv in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    line = {
                        "service": resource.get("service.name"),
                        "version": resource.get("service.version"),
                        "scope": scope_logs.scope.name,
                        "severity": record.severity_number,
                        "severityText": record.severity_text,
                        "body": value(record.body),
                        "timeNanos": record.time_unix_nano,
                        "attributes": {kv.key: value(kv.value) for kv in record.attributes},
                        "apiKey": self.headers.get("x-api-key"),
                        "contentType": self.headers.get("content-type"),
                    }
                    print(json.dumps(line), flush=True)
        answer = ExportLogsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass  # stdout carries records only


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
