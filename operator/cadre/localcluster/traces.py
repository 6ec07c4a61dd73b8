"""An in-memory OTLP/HTTP trace receiver for the local cluster: harnesses send their spans to
it as they would to an OpenTelemetry Collector (``POST /v1/traces``, protobuf or JSON), and
tests, or a person, read them back (``GET /v1/spans``, JSON). It keeps what it receives for as
long as it runs, nothing else."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToDict, ParseDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from cadre.api.types import Obj


def _value(value: Obj) -> Any:
    for kind in ("stringValue", "boolValue", "doubleValue"):
        if kind in value:
            return value[kind]
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def _attributes(items: list[Obj]) -> Obj:
    return {a["key"]: _value(a.get("value") or {}) for a in items}


def flatten(request: ExportTraceServiceRequest) -> list[Obj]:
    """Each span of an export request as one plain dict, ids in hex (pure)."""
    found = []
    plain = MessageToDict(request, preserving_proto_field_name=False)
    for resource_spans in plain.get("resourceSpans", []):
        resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
        for scope in resource_spans.get("scopeSpans", []):
            for span in scope.get("spans", []):
                found.append({
                    "trace_id": _hex(span.get("traceId", "")),
                    "span_id": _hex(span.get("spanId", "")),
                    "parent_span_id": _hex(span.get("parentSpanId", "")),
                    "name": span.get("name", ""),
                    "start_ns": int(span.get("startTimeUnixNano", 0)),
                    "end_ns": int(span.get("endTimeUnixNano", 0)),
                    "status": (span.get("status") or {}).get("code", "STATUS_CODE_UNSET"),
                    "attributes": _attributes(span.get("attributes", [])),
                    "resource": resource,
                })  # fmt: skip
    return found


def _hex(b64: str) -> str:
    return base64.b64decode(b64).hex() if b64 else ""


class TraceCollector:
    def __init__(self) -> None:
        self.spans: list[Obj] = []

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._receive)
        app.router.add_get("/v1/spans", self._list)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        try:
            if request.content_type == "application/json":
                ParseDict(json.loads(body), export)
            else:
                export.ParseFromString(body)
        except Exception as err:  # a malformed export is the sender's error, named
            raise web.HTTPBadRequest(text=f"not an OTLP trace export: {err}\n") from err
        self.spans.extend(flatten(export))
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    async def _list(self, _: web.Request) -> web.Response:
        return web.json_response(self.spans)
