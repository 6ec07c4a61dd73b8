"""A real MCP server for tests, built with the official ``mcp`` SDK (streamable HTTP over
HTTPS): it requires a bearer token on every request, records the tickets it creates, and never
echoes the token. ``python -m tests.harness.mcp_server --token T --tls DIR --record FILE``
prints ``ready PORT`` once it serves on 127.0.0.1 (a port the kernel chose).

``McpServerProcess`` starts it from a test and stops it by PID."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadre.localcluster.node.network import NODE_IP

REPO = Path(__file__).resolve().parents[2]


def _app(token: str, record: Path) -> Any:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("tickets")
    tickets: list[str] = []

    @server.tool()
    def create_ticket(title: str) -> str:
        """Open a ticket with this title; returns its id."""
        tickets.append(title)
        with record.open("a") as out:
            out.write(json.dumps({"tool": "create_ticket", "title": title}) + "\n")
        return f"TICKET-{len(tickets)}: {title}"

    @server.tool()
    def whoami() -> str:
        """Who the server thinks is calling."""
        return "an authenticated Cadre harness"

    @server.tool()
    def delete_everything() -> str:
        """Never offered: the Agent's allow-list leaves it out."""
        with record.open("a") as out:
            out.write(json.dumps({"tool": "delete_everything"}) + "\n")
        return "deleted"

    from mcp.server.transport_security import TransportSecuritySettings

    # DNS-rebinding protection as the SDK sets it up, naming where clients reach it: loopback,
    # and the node's address, from pods with a network of their own.
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", f"{NODE_IP}:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", f"https://{NODE_IP}:*"],
    )
    app = server.streamable_http_app(json_response=True, transport_security=security)
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization")
            if given != expected:
                with record.open("a") as out:
                    out.write(json.dumps({"refused": scope.get("path")}) + "\n")
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
                await send({"type": "http.response.body", "body": b"a bearer token is required"})
                return
        await app(scope, receive, send)

    return guarded


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--token", required=True)
    parser.add_argument("--tls", type=Path, required=True)
    parser.add_argument("--record", type=Path, required=True)
    args = parser.parse_args()
    sock = socket.socket()
    # Accepted connections inherit it: without, uvicorn's answers wait ~40 ms on Nagle and
    # the client's delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections made before uvicorn's loop runs wait in the backlog
    config = uvicorn.Config(
        _app(args.token, args.record), log_level="warning", lifespan="on",
        ssl_certfile=str(args.tls / "cert.pem"), ssl_keyfile=str(args.tls / "key.pem"),
    )  # fmt: skip
    server = uvicorn.Server(config)
    print(f"ready {sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


@dataclass
class McpServerProcess:
    """The server as a child process of the test."""

    token: str
    tls: Path
    record: Path
    ca_bundle: str = ""
    """Base64 PEM of the CA that signed the server's certificate."""
    port: int = 0
    process: subprocess.Popen[str] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'operator'}"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.harness.mcp_server", "--token", self.token,
             "--tls", str(self.tls), "--record", str(self.record)],
            stdout=subprocess.PIPE, text=True, env=env, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError(f"the MCP server did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def calls(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]


@contextlib.contextmanager
def serve_mcp(folder: Path) -> Iterator[McpServerProcess]:
    """A running server with its own CA (trustme) and a fresh token, stopped at the end."""
    import trustme

    ca = trustme.CA()
    tls = folder / "mcp-tls"
    tls.mkdir()
    # Also valid at the node's address, where pods with a network of their own reach it.
    issued = ca.issue_cert("127.0.0.1", NODE_IP)
    issued.cert_chain_pems[0].write_to_path(str(tls / "cert.pem"))
    issued.private_key_pem.write_to_path(str(tls / "key.pem"))
    server = McpServerProcess(
        token="mcp-" + secrets.token_hex(16), tls=tls, record=folder / "mcp-calls.jsonl",
        ca_bundle=base64.b64encode(ca.cert_pem.bytes()).decode(),
    )  # fmt: skip
    try:
        server.start()
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    main()
