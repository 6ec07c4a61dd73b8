"""The sandbox's HTTP server: bearer-token auth, idempotent tool calls, JSON log lines.

Routes:
- ``GET /healthz``: 200 while serving (no token: it reveals nothing).
- ``GET /v1/tools``: the tool schemas.
- ``POST /v1/tool-calls`` ``{"tool_use_id", "name", "input"}``: run a tool once; the same id
  again returns the stored result (``"replayed": true``) without running anything.
- ``GET /v1/tool-calls/{tool_use_id}``: a stored result, or 404.
- ``POST /v1/bundle`` ``{"patterns", "max_bytes"}``: the text files a delegated Task delivers
  (``cadre.sandbox.bundle``); read only, so it needs no id.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import sys
import time
import traceback
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cadre.sandbox.bundle import bundle, check_request
from cadre.sandbox.config import SandboxConfig
from cadre.sandbox.protocol import TOOL_SCHEMAS, ToolInputError, check_environment, check_input
from cadre.sandbox.store import ResultStore, input_digest
from cadre.sandbox.tools import Workspace, os_error_result

MAX_BODY_BYTES = 16 * 1024 * 1024


def log(level: str, msg: str, **fields: Any) -> None:
    """One JSON object per line on stderr, as log collectors expect."""
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "level": level}
    record.update(msg=msg, **fields)
    sys.stderr.write(json.dumps(record, default=str) + "\n")
    sys.stderr.flush()


class SandboxServer(ThreadingHTTPServer):
    """Serves one session's tools. Threads are joined on close, for a graceful shutdown."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.workspace = Workspace(config.workspace, config.grep_timeout_seconds)
        self.store = ResultStore(config.state_dir)
        super().__init__((config.host, config.port), SandboxHandler)

    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        digest = hashlib.sha256(header[len("Bearer ") :].strip().encode()).hexdigest()
        return hmac.compare_digest(digest, self.config.token_sha256)

    def call_tool(self, body: dict[str, Any]) -> dict[str, Any]:
        """Run a tool call once, or answer it from the store."""
        tool_use_id = self.store.check_id(body.get("tool_use_id"))
        name = body.get("name")
        if not isinstance(name, str):
            raise ToolInputError("name: required, the tool's name")
        data = body.get("input", {})
        digest = input_digest(name, data)
        with self.store.exclusive(tool_use_id):
            stored = self.store.get(tool_use_id)
            if stored is not None:
                if stored["digest"] != digest:
                    raise ToolInputError(
                        f"tool_use_id: {tool_use_id} was already used for a different call",
                        HTTPStatus.CONFLICT,
                        "id_reused",
                    )
                if "error" in stored:
                    error = stored["error"]
                    raise ToolInputError(error["message"], error["status"], error["type"])
                return {**stored, "replayed": True}
            # Validate before journaling: a refused call never ran, so it is not recorded.
            check_input(name, data)
            environment = check_environment(body.get("environment"))
            rerun = self.store.begin(tool_use_id, name, digest)
            record: dict[str, Any] = {
                "tool_use_id": tool_use_id,
                "name": name,
                "digest": digest,
                "rerun_after_interruption": rerun,
            }
            try:
                record.update(self.workspace.run(name, data, environment).to_json())
            except ToolInputError as err:
                # Found only while running (a missing file, a bad regex): stored like a result,
                # so the same id gets the same answer.
                record["error"] = {"status": err.status, "type": err.kind, "message": str(err)}
                self.store.finish(tool_use_id, record)
                raise
            except OSError as err:
                # The system refused (EACCES, EROFS, ENOSPC...): the model reads why and can
                # try another way; stored like any result, so a retry gets the same answer.
                record.update(os_error_result(name, data, err).to_json())
            if rerun:
                # Tell the model: the first attempt may have left partial effects.
                note = "[note: an earlier attempt of this call was interrupted by a sandbox "
                note += "restart; it ran again]\n"
                record["content"] = note + record["content"]
            self.store.finish(tool_use_id, record)
            return {**record, "replayed": False}


class SandboxHandler(BaseHTTPRequestHandler):
    """One request. Every route but /healthz needs the session's bearer token."""

    protocol_version = "HTTP/1.1"  # keep-alive: the harness sends many calls on one connection
    # Headers and body go out in two writes; with Nagle on, the second waits for the client's
    # delayed ACK (40 ms on Linux) on every call.
    disable_nagle_algorithm = True
    # Buffer the response so status line, headers and body leave in one send(); http.server
    # flushes after every request.
    wbufsize = -1
    server: SandboxServer
    server_version = "cadre-sandbox"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are logged as JSON in _reply

    def _reply(self, status: int, payload: dict[str, Any], **log_fields: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="cadre-sandbox"')
        self.end_headers()
        self.wfile.write(body)
        log(
            "info" if status < 400 else "warning",
            "request",
            method=self.command,
            path=self.path,
            status=status,
            **log_fields,
        )

    def _error(self, status: int, kind: str, message: str) -> None:
        self._reply(status, {"error": {"type": kind, "message": message}}, error=message)

    def _read_body(self) -> dict[str, Any] | None:
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self._error(HTTPStatus.LENGTH_REQUIRED, "length_required", "Content-Length is required")
            return None
        # int() would take " -1", "+5" or "1_0": only plain digits are a length. The body of a
        # refused request is never read, so the connection cannot carry another one.
        if not length_header.isascii() or not length_header.isdigit():
            self.close_connection = True
            self._error(
                HTTPStatus.BAD_REQUEST,
                "invalid_request",
                f"Content-Length: {length_header[:40]!r} is not a non-negative whole number",
            )
            return None
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body would corrupt the next request
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "body_too_large",
                f"body: {length} bytes is more than the limit of {MAX_BODY_BYTES}",
            )
            return None
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            self._error(HTTPStatus.BAD_REQUEST, "invalid_json", f"body: invalid JSON: {err}")
            return None
        except RecursionError:
            self._error(HTTPStatus.BAD_REQUEST, "invalid_json", "body: JSON nested too deeply")
            return None
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "invalid_request", "body: expected a JSON object")
            return None
        return body

    def _check_auth(self) -> bool:
        if self.server.authorized(self.headers.get("Authorization")):
            return True
        self._error(HTTPStatus.UNAUTHORIZED, "unauthorized", "a valid bearer token is required")
        return False

    def _guarded(self, route: Callable[[], None]) -> None:
        """Run a route; whatever it raises is answered (a JSON 500) and logged, never a
        connection closed without an answer, which a client can only retry blindly."""
        try:
            route()
        except Exception as err:  # the last line of defence, logged in full
            log("error", "unhandled", path=self.path, traceback=traceback.format_exc())
            self.close_connection = True  # the request may be half read
            with contextlib.suppress(OSError):
                self._error(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    "internal_error",
                    f"the sandbox failed on this request: {type(err).__name__}: {err}",
                )

    def do_GET(self) -> None:
        self._guarded(self._get)

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _get(self) -> None:
        if self.path == "/healthz":
            self._reply(HTTPStatus.OK, {"status": "ok"})
            return
        if not self._check_auth():
            return
        if self.path == "/v1/tools":
            self._reply(HTTPStatus.OK, {"tools": TOOL_SCHEMAS})
        elif self.path.startswith("/v1/tool-calls/"):
            tool_use_id = self.path.rsplit("/", 1)[-1]
            try:
                self.server.store.check_id(tool_use_id)
            except ToolInputError as err:
                self._error(err.status, err.kind, str(err))
                return
            stored = self.server.store.get(tool_use_id)
            if stored is None:
                self._error(HTTPStatus.NOT_FOUND, "not_found", f"no result for {tool_use_id}")
            else:
                self._reply(HTTPStatus.OK, {**stored, "replayed": True})
        else:
            self._error(HTTPStatus.NOT_FOUND, "not_found", f"no route {self.path}")

    def _post(self) -> None:
        if not self._check_auth():
            return
        if self.path not in ("/v1/tool-calls", "/v1/bundle"):
            self._error(HTTPStatus.NOT_FOUND, "not_found", f"no route {self.path}")
            return
        body = self._read_body()
        if body is None:
            return
        if self.path == "/v1/bundle":
            try:
                patterns, max_bytes = check_request(body)
            except ToolInputError as err:
                self._error(err.status, err.kind, str(err))
                return
            delivered = bundle(self.server.config.workspace, patterns, max_bytes)
            self._reply(HTTPStatus.OK, delivered, files=len(delivered["files"]))
            return
        started = time.monotonic()
        try:
            result = self.server.call_tool(body)
        except ToolInputError as err:
            self._error(err.status, err.kind, str(err))
            return
        self._reply(
            HTTPStatus.OK,
            result,
            tool=result["name"],
            tool_use_id=result["tool_use_id"],
            replayed=result["replayed"],
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )

    def do_PUT(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", "use GET or POST")

    do_DELETE = do_PATCH = do_PUT  # noqa: N815 - http.server dispatches on these names
